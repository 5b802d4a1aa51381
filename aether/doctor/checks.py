"""Per-image validation for the dataset doctor: named faults, run in parallel, cached in SQLite.

`check_file` looks at one file and returns a `FileReport`: whether it is usable for training
(`ok`), a list of issue codes (fatal ones and non-fatal notes) and, when the file decodes, its
format, mode, size, frame count, byte size, SHA-256 and a 64-bit perceptual difference hash.
It never raises: every exception becomes a fatal issue with the reason in `detail`.

`check_files` runs `check_file` over many paths in a process pool, streams the reports back
in input order with bounded memory, and remembers them in an SQLite cache keyed by
(absolute path, size, mtime_ns, limits) so that re-checking an unchanged folder is a lookup.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import multiprocessing
import logging
import os
import sqlite3
import stat as stat_module
import time
import warnings
from collections import deque
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# ----------------------------------------------------------------------------------------------
# Issue codes
# ----------------------------------------------------------------------------------------------

BROKEN_SYMLINK = "broken_symlink"
MISSING = "missing"  # the path does not exist (vanished between listing and checking)
UNREADABLE = "unreadable"
EMPTY = "empty"
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
DECOMPRESSION_BOMB = "decompression_bomb"
TOO_SMALL = "too_small"
TOO_LARGE = "too_large"
MODE_CMYK = "mode_cmyk"
MODE_16BIT = "mode_16bit"
MODE_PALETTE_ALPHA = "mode_palette_alpha"
MODE_LA = "mode_la"
EXIF_ROTATED = "exif_rotated"
ANIMATED = "animated"
EXTENSION_MISMATCH = "extension_mismatch"

#: Issues that make a file unusable for training (`FileReport.ok` is False).
FATAL_ISSUES = frozenset(
    {
        BROKEN_SYMLINK,
        MISSING,
        UNREADABLE,
        EMPTY,
        NOT_AN_IMAGE,
        UNSUPPORTED_FORMAT,
        TRUNCATED,
        CORRUPT,
        DECOMPRESSION_BOMB,
        TOO_SMALL,
    }
)
#: Non-fatal notes: the file trains fine, but the user may want to know.
WARNING_ISSUES = frozenset(
    {TOO_LARGE, MODE_CMYK, MODE_16BIT, MODE_PALETTE_ALPHA, MODE_LA, EXIF_ROTATED, ANIMATED, EXTENSION_MISMATCH}
)
ALL_ISSUES = FATAL_ISSUES | WARNING_ISSUES

#: Pillow format names we train on ("MPO" is how Pillow names many phone-camera JPEGs;
#: "PPM" covers PPM, PGM and PBM).
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM"})

#: Which Pillow formats each extension may hold (unknown extensions are never a mismatch).
EXTENSION_FORMATS: Dict[str, frozenset] = {
    ".jpg": frozenset({"JPEG", "MPO"}),
    ".jpeg": frozenset({"JPEG", "MPO"}),
    ".jfif": frozenset({"JPEG", "MPO"}),
    ".jpe": frozenset({"JPEG", "MPO"}),
    ".png": frozenset({"PNG"}),
    ".bmp": frozenset({"BMP"}),
    ".dib": frozenset({"BMP", "DIB"}),
    ".gif": frozenset({"GIF"}),
    ".tif": frozenset({"TIFF"}),
    ".tiff": frozenset({"TIFF"}),
    ".webp": frozenset({"WEBP"}),
    ".ppm": frozenset({"PPM"}),
    ".pgm": frozenset({"PPM"}),
    ".pbm": frozenset({"PPM"}),
    ".pnm": frozenset({"PPM"}),
}

DEFAULT_LIMITS: Dict[str, int] = {"max_pixels": 89_478_485, "min_side": 8, "max_side": 20_000}

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_EXIF_ORIENTATION = 0x0112
_READ_IN_MEMORY_MAX = 256 * 1024 * 1024  # larger files are hashed by streaming, decoded from disk


@dataclass
class FileReport:
    """What the doctor found out about one file."""

    path: str
    ok: bool
    issues: List[str] = field(default_factory=list)
    detail: str = ""  # human reason for the first fatal issue ("" when ok)
    format: Optional[str] = None
    mode: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    frames: Optional[int] = None
    bytes: Optional[int] = None
    sha256: Optional[str] = None
    dhash: Optional[str] = None  # 16 hex chars (64 bits); None when the file did not decode

    @property
    def fatal(self) -> List[str]:
        return [i for i in self.issues if i in FATAL_ISSUES]

    @property
    def warnings(self) -> List[str]:
        return [i for i in self.issues if i not in FATAL_ISSUES]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "FileReport":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def hamming(a: str, b: str) -> int:
    """Hamming distance between two hex hashes (e.g. two `FileReport.dhash` values)."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


# ----------------------------------------------------------------------------------------------
# One file
# ----------------------------------------------------------------------------------------------


class _Fatal(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _fail(report: FileReport, code: str, detail: str) -> FileReport:
    if code not in report.issues:
        report.issues.append(code)
    if not report.detail:  # the detail describes the first fatal issue
        report.detail = detail
    report.ok = False
    return report


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode_error_code(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return TRUNCATED
    text = str(exc).lower()
    if "truncated" in text or "premature end" in text or "unexpected end" in text:
        return TRUNCATED
    return CORRUPT


def _read_and_hash(path: str, size: int) -> Tuple[Optional[bytes], str]:
    """Read the file (into memory when it is not huge) and its SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= _READ_IN_MEMORY_MAX:
            data = fh.read()
            digest.update(data)
            return data, digest.hexdigest()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return None, digest.hexdigest()


def dhash_image(im: Image.Image) -> str:
    """64-bit difference hash of `im` (9x8 greyscale thumbnail, left > right per row), as 16 hex."""
    if im.mode in _HIGH_BIT_MODES:
        f = im.convert("F")
        lo, hi = f.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        grey = f.point(lambda v: (v - lo) * scale).convert("L")
    else:
        grey = im.convert("L")
    thumb = grey.resize((9, 8), Image.Resampling.BOX)
    px = list(thumb.getdata())
    value = 0
    for row in range(8):
        base = row * 9
        for col in range(8):
            value = (value << 1) | (1 if px[base + col] > px[base + col + 1] else 0)
    return f"{value:016x}"


def _mode_notes(im: Image.Image) -> List[str]:
    notes = []
    mode = im.mode
    if mode == "CMYK":
        notes.append(MODE_CMYK)
    elif mode in _HIGH_BIT_MODES or mode.startswith("I;16"):
        notes.append(MODE_16BIT)
    elif mode == "PA" or (mode == "P" and "transparency" in im.info):
        notes.append(MODE_PALETTE_ALPHA)
    elif mode == "LA":
        notes.append(MODE_LA)
    return notes


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block is not worth failing the image over
        return 1


def check_file(
    path: str,
    *,
    max_pixels: int = DEFAULT_LIMITS["max_pixels"],
    min_side: int = DEFAULT_LIMITS["min_side"],
    max_side: int = DEFAULT_LIMITS["max_side"],
) -> FileReport:
    """Fully validate one image file. Never raises; every failure is a fatal issue."""
    path = os.fspath(path)
    report = FileReport(path=path, ok=True)
    # Never let a caller's global `LOAD_TRUNCATED_IMAGES = True` hide a truncated file: Pillow
    # consults it both while opening and while decoding. (Worker processes always run with False;
    # in-process the caller's value is restored afterwards.)
    truncated_flag = ImageFile.LOAD_TRUNCATED_IMAGES
    if truncated_flag:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        return _check(report, path, max_pixels=max_pixels, min_side=min_side, max_side=max_side)
    except _Fatal as fatal:
        return _fail(report, fatal.code, fatal.detail)
    except MemoryError:
        return _fail(report, CORRUPT, "out of memory while decoding")
    except Exception as exc:  # never crash on any input
        return _fail(report, CORRUPT, f"unexpected error: {_describe(exc)}")
    finally:
        if truncated_flag:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated_flag


def _check(report: FileReport, path: str, *, max_pixels: int, min_side: int, max_side: int) -> FileReport:
    # --- the file itself -------------------------------------------------------------------------
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _Fatal(BROKEN_SYMLINK, f"broken symlink -> {os.readlink(path)}")
        raise _Fatal(MISSING, "file not found")
    except PermissionError as exc:
        raise _Fatal(UNREADABLE, f"permission denied: {_describe(exc)}")
    except OSError as exc:
        if os.path.islink(path):  # e.g. a symlink loop
            raise _Fatal(BROKEN_SYMLINK, f"broken symlink: {_describe(exc)}")
        raise _Fatal(UNREADABLE, f"cannot stat: {_describe(exc)}")
    if not stat_module.S_ISREG(st.st_mode):
        raise _Fatal(NOT_AN_IMAGE, "not a regular file")
    report.bytes = st.st_size
    if st.st_size == 0:
        raise _Fatal(EMPTY, "empty file (0 bytes)")
    try:
        data, report.sha256 = _read_and_hash(path, st.st_size)
    except PermissionError as exc:
        raise _Fatal(UNREADABLE, f"permission denied: {_describe(exc)}")
    except OSError as exc:
        raise _Fatal(UNREADABLE, f"cannot read: {_describe(exc)}")
    if data is not None:
        report.bytes = len(data)
        if not data:
            raise _Fatal(EMPTY, "empty file (0 bytes)")
    source: Any = io.BytesIO(data) if data is not None else path

    # --- identify from the header (no pixel decoding yet) ----------------------------------------
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning, EXIF / palette chatter
        try:
            im = Image.open(source)
        except UnidentifiedImageError:
            raise _Fatal(NOT_AN_IMAGE, "not an image Pillow can identify (unknown format or garbage bytes)")
        except Image.DecompressionBombError as exc:
            raise _Fatal(DECOMPRESSION_BOMB, f"decompression bomb refused: {exc}")
        except (OSError, EOFError, SyntaxError, ValueError, IndexError, TypeError, KeyError) as exc:
            code = _decode_error_code(exc)
            raise _Fatal(code, f"cannot read image header: {_describe(exc)}")
        with im:
            return _inspect(report, im, path, max_pixels=max_pixels, min_side=min_side, max_side=max_side)


def _inspect(
    report: FileReport, im: Image.Image, path: str, *, max_pixels: int, min_side: int, max_side: int
) -> FileReport:
    report.format = im.format
    report.mode = im.mode
    width, height = im.size
    report.width, report.height = width, height
    try:
        report.frames = int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # counting frames walks the file; a broken tail is found by load() below
        report.frames = 1

    if im.format not in SUPPORTED_FORMATS:
        raise _Fatal(UNSUPPORTED_FORMAT, f"unsupported format {im.format} (supported: {', '.join(sorted(SUPPORTED_FORMATS))})")
    ext = os.path.splitext(path)[1].lower()
    expected = EXTENSION_FORMATS.get(ext)
    if expected is not None and im.format not in expected:
        report.issues.append(EXTENSION_MISMATCH)
    if width * height > max_pixels:  # decided from the header: the pixels are never decoded
        raise _Fatal(
            DECOMPRESSION_BOMB,
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} (not decoded)",
        )
    report.issues.extend(_mode_notes(im))
    if _exif_orientation(im) != 1:
        report.issues.append(EXIF_ROTATED)
    if report.frames > 1:
        report.issues.append(ANIMATED)
    if max(width, height) > max_side:
        report.issues.append(TOO_LARGE)

    # --- full decode of the first frame ----------------------------------------------------------
    if im.format in ("JPEG", "MPO"):
        # DCT scaling: decodes every byte of the entropy-coded data (so truncation and corruption
        # are still found) but produces a reduced image, which is all the hash needs.
        im.draft(None, (64, 64))
    try:
        im.load()
    except (OSError, EOFError, SyntaxError, ValueError, IndexError, TypeError, KeyError, ZeroDivisionError) as exc:
        raise _Fatal(_decode_error_code(exc), f"cannot decode: {_describe(exc)}")

    if min(width, height) < min_side:
        _fail(report, TOO_SMALL, f"{width}x{height} is smaller than {min_side} px on its short side")

    try:
        oriented = ImageOps.exif_transpose(im) if EXIF_ROTATED in report.issues else im
        report.dhash = dhash_image(oriented if oriented is not None else im)
    except Exception:  # the pixels decoded; a hash failure must not fail the file
        report.dhash = None
    return report


# ----------------------------------------------------------------------------------------------
# Many files: process pool + SQLite cache
# ----------------------------------------------------------------------------------------------


@dataclass
class CheckStats:
    """Counters filled in by `check_files` (pass one in as `stats=`)."""

    total: int = 0
    cache_hits: int = 0
    checked: int = 0  # files actually opened by check_file (cache misses and uncached runs)
    worker_crashes: int = 0
    seconds: float = 0.0


def _limits_key(limits: Dict[str, int]) -> str:
    return json.dumps(limits, sort_keys=True)


def _worker_init() -> None:
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.simplefilter("ignore")


def _check_chunk(paths: Sequence[str], limits: Dict[str, int]) -> List[Tuple[FileReport, Optional[Tuple[int, int]]]]:
    """Worker entry point: check a chunk and return each report with the (size, mtime_ns) it saw."""
    out = []
    for path in paths:
        key = _stat_key(path)
        out.append((check_file(path, **limits), key))
    return out


def _stat_key(path: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat_module.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


class _Cache:
    """SQLite cache of reports: one row per (absolute path, limits), valid for one (size, mtime_ns).

    The cache is an optimisation only: if the database cannot be opened, read or written (a
    corrupt file, a full disk, a read-only folder), it is switched off with a warning and the
    files are simply checked.
    """

    BATCH = 256

    def __init__(self, cache_path: Path, limits_key: str) -> None:
        self.limits = limits_key
        self.pending: List[Tuple[str, str, int, int, str]] = []
        self.db: Optional[sqlite3.Connection] = None
        try:
            cache_path = Path(cache_path)
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(cache_path), timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS file_reports ("
                " path TEXT NOT NULL, limits TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
                " report TEXT NOT NULL, PRIMARY KEY (path, limits))"
            )
            self.db.commit()
        except (sqlite3.Error, OSError) as exc:
            self._disable(f"cannot open the check cache {cache_path}: {exc}")

    def _disable(self, why: str) -> None:
        # one log line, not a Python warning with its source line: a read-only cache is a
        # supported set-up (data.cache=off), it only makes the next check slower
        logging.getLogger("aether").warning("%s; checking without a cache", why)
        self._close_db()
        self.pending.clear()

    def _close_db(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:  # closing a broken database: nothing left to save
                pass
        self.db = None

    def get(self, abspath: str, key: Tuple[int, int]) -> Optional[FileReport]:
        if self.db is None:
            return None
        try:
            row = self.db.execute(
                "SELECT size, mtime_ns, report FROM file_reports WHERE path = ? AND limits = ?", (abspath, self.limits)
            ).fetchone()
        except sqlite3.Error as exc:
            self._disable(f"cannot read the check cache: {exc}")
            return None
        if row is None or (row[0], row[1]) != tuple(key):
            return None
        try:
            return FileReport.from_dict(json.loads(row[2]))
        except Exception:  # an unreadable row is just a miss
            return None

    def put(self, abspath: str, key: Tuple[int, int], report: FileReport) -> None:
        if self.db is None:
            return
        self.pending.append((abspath, self.limits, key[0], key[1], json.dumps(report.to_dict())))
        if len(self.pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.db is None or not self.pending:
            return
        try:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO file_reports (path, limits, size, mtime_ns, report) VALUES (?, ?, ?, ?, ?)",
                    self.pending,
                )
        except sqlite3.Error as exc:
            self._disable(f"cannot write the check cache: {exc}")
        self.pending.clear()

    def close(self) -> None:
        self.flush()
        self._close_db()


class _Entry:
    """One chunk of input paths on its way through the pipeline (kept in input order)."""

    __slots__ = ("paths", "reports", "misses", "future", "pool")

    def __init__(self, paths: List[str]) -> None:
        self.paths = paths
        self.reports: List[Optional[FileReport]] = [None] * len(paths)
        self.misses: List[int] = []  # indexes still to check
        self.future: Optional[Future] = None
        self.pool: Optional[ProcessPoolExecutor] = None  # the pool `future` was submitted to


def check_files(
    paths: Iterable[str],
    *,
    workers: Optional[int] = None,
    cache_path: Optional[Path] = None,
    progress: Optional[Callable[[int], None]] = None,
    stats: Optional[CheckStats] = None,
    chunksize: int = 16,
    **limits: int,
) -> Iterator[FileReport]:
    """Check many files in parallel; yield one `FileReport` per path, in input order.

    - `workers`: processes (default `os.cpu_count()`); 0 or 1 checks in this process.
    - `cache_path`: SQLite file of earlier reports; a file whose (size, mtime_ns) and limits are
      unchanged is answered from it without being opened. None: no cache.
    - `progress(n)`: called with the number of files finished since the previous call.
    - `stats`: a `CheckStats` to fill in (cache hits, files checked, ...).
    - `limits`: `max_pixels`, `min_side`, `max_side` (see `check_file`).

    Memory stays bounded: paths are consumed lazily and at most a few chunks per worker are in
    flight. The process pool (spawn start method) is only started when a file needs checking.
    """
    unknown = set(limits) - set(DEFAULT_LIMITS)
    if unknown:
        raise TypeError(f"check_files() got unexpected limit(s): {', '.join(sorted(unknown))}")
    full_limits = {**DEFAULT_LIMITS, **limits}
    return _check_files(
        paths,
        workers=(os.cpu_count() or 1) if workers is None else int(workers),
        cache_path=cache_path,
        progress=progress,
        stats=stats if stats is not None else CheckStats(),
        chunksize=max(1, int(chunksize)),
        limits=full_limits,
    )


def _check_files(
    paths: Iterable[str],
    *,
    workers: int,
    cache_path: Optional[Path],
    progress: Optional[Callable[[int], None]],
    stats: CheckStats,
    chunksize: int,
    limits: Dict[str, int],
) -> Iterator[FileReport]:
    started = time.perf_counter()
    cache = _Cache(cache_path, _limits_key(limits)) if cache_path is not None else None
    pool: Optional[ProcessPoolExecutor] = None
    max_in_flight = max(2, workers * 4)
    queue: Deque[_Entry] = deque()
    path_iter = iter(paths)

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
        )

    def prepare(chunk: List[str]) -> _Entry:
        nonlocal pool
        entry = _Entry(chunk)
        for i, p in enumerate(chunk):
            if cache is not None:
                key = _stat_key(p)
                if key is not None:
                    hit = cache.get(os.path.abspath(p), key)
                    if hit is not None:
                        hit.path = p  # report under the caller's spelling of the path
                        entry.reports[i] = hit
                        stats.cache_hits += 1
                        continue
            entry.misses.append(i)
        if entry.misses and workers > 1:
            if pool is None:
                pool = new_pool()
            entry.pool = pool
            entry.future = pool.submit(_check_chunk, [chunk[i] for i in entry.misses], limits)
        return entry

    def run_isolated(path: str) -> Tuple[FileReport, Optional[Tuple[int, int]]]:
        """Check one path alone in the pool; a file that kills the worker twice is reported corrupt."""
        nonlocal pool
        for _attempt in range(2):
            if pool is None:
                pool = new_pool()
            try:
                return pool.submit(_check_chunk, [path], limits).result()[0]
            except (BrokenProcessPool, CancelledError):
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
        stats.worker_crashes += 1
        report = FileReport(path=path, ok=False)
        _fail(report, CORRUPT, "decoding this file crashed the worker process")
        return report, None

    def recover(paths: List[str], dead: Optional[ProcessPoolExecutor]) -> List[Tuple[FileReport, Optional[Tuple[int, int]]]]:
        """A worker died while this chunk was in flight: re-check its paths one by one."""
        nonlocal pool
        if pool is None or pool is dead:  # else a fresh pool already replaced the dead one
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            pool = new_pool()
        singles = [pool.submit(_check_chunk, [p], limits) for p in paths]
        results = []
        for p, fut in zip(paths, singles):
            try:
                results.append(fut.result()[0])
            except (BrokenProcessPool, CancelledError):
                results.append(run_isolated(p))
        return results

    def finish(entry: _Entry) -> List[FileReport]:
        if entry.misses:
            todo = [entry.paths[i] for i in entry.misses]
            if entry.future is None:
                results = _check_chunk(todo, limits)
            else:
                try:
                    results = entry.future.result()
                except (BrokenProcessPool, CancelledError):
                    results = recover(todo, entry.pool)
            for i, (report, key) in zip(entry.misses, results):
                entry.reports[i] = report
                stats.checked += 1
                if cache is not None and key is not None:
                    cache.put(os.path.abspath(entry.paths[i]), key, report)
        return [r for r in entry.reports if r is not None]

    try:
        exhausted = False
        while True:
            while not exhausted and len(queue) < max_in_flight:
                chunk: List[str] = []
                for p in path_iter:
                    chunk.append(os.fspath(p))
                    if len(chunk) >= chunksize:
                        break
                if not chunk:
                    exhausted = True
                    break
                stats.total += len(chunk)
                queue.append(prepare(chunk))
            if not queue:
                break
            entry = queue.popleft()
            reports = finish(entry)
            if progress is not None:
                progress(len(reports))
            yield from reports
    finally:
        for entry in queue:
            if entry.future is not None:
                entry.future.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if cache is not None:
            cache.close()
        stats.seconds = time.perf_counter() - started
