"""Safe extraction of untrusted dataset archives (ZIP, tar, .tar.gz/.tgz/.tar.bz2/.tar.xz).

An archive is extracted once into ``<cache_root>/archives/<first 16 hex of its sha256>/`` and
reused afterwards. The extraction is written to a temporary sibling directory and renamed into
place only when complete, so an interrupted or refused extraction never leaves a half-filled
cache entry behind. Layout of a cache entry::

    <key>/tree/...       the extracted files (the dataset root is ``tree`` or its single folder)
    <key>/meta.json      what was refused / ignored and where the dataset root is
    <key>/.complete      marker written last, before the atomic rename

Every member is validated by hand before anything is written: absolute paths, drive letters,
``..`` components, paths resolving outside the target, links (symbolic and hard), device files,
FIFOs and encrypted ZIP members are refused (and reported), never extracted. Tar members are
additionally passed through ``tarfile.data_filter`` (Python >= 3.11.4). Sizes are limited twice:
the declared uncompressed total is checked before extracting, and the bytes actually written
are counted while streaming, so a member that lies about its size cannot fill the disk. The total
is the smaller of ``data.max_archive_bytes`` and half the free space under the cache; and an
archive that expands more than ``data.max_archive_ratio`` times its own size (once past 64 MiB)
is refused as a decompression bomb, from its headers and again while streaming.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, List, Optional, Tuple, Union

from aether.errors import AetherError

CHUNK = 1 << 20
KEY_LEN = 16
BYTES_KEY = "data.max_archive_bytes"
MEMBERS_KEY = "data.max_archive_members"
RATIO_KEY = "data.max_archive_ratio"
# The ratio limit applies once an archive expands past this: small archives of flat test images
# (a solid-colour BMP compresses 100x and more) are harmless, while a bomb must be large to hurt.
RATIO_FLOOR_BYTES = 64 * 2**20
FREE_DISK_SHARE = 0.5  # an archive may fill at most this share of the free space under the cache

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = ZIP_SUFFIXES + TAR_SUFFIXES
_EXPECTED = "a ZIP archive (.zip) or a tar archive (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz)"

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_DRIVE = re.compile(r"^[A-Za-z]:")

# Errors the stdlib readers raise on damaged or unsupported input.
_READ_ERRORS: Tuple[type, ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    EOFError,
    NotImplementedError,  # unsupported ZIP compression method (deflate64, ...)
    RuntimeError,  # encrypted ZIP member without a password
    ValueError,
    gzip.BadGzipFile,  # an OSError subclass, so it must be caught before OSError
)
try:  # pragma: no cover - the modules are optional in minimal Python builds
    import zlib

    _READ_ERRORS += (zlib.error,)
except ImportError:  # pragma: no cover
    pass
try:  # pragma: no cover
    import lzma

    _READ_ERRORS += (lzma.LZMAError,)
except ImportError:  # pragma: no cover
    pass

# Write failures caused by the member itself (name clashes, over-long names): refuse the member.
_MEMBER_ERRNOS = {errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EILSEQ}


@dataclass
class ExtractResult:
    """Where an extracted archive's dataset lives, and what extraction left out."""

    root: Path
    refused: List[Dict[str, str]] = field(default_factory=list)
    ignored: Dict[str, int] = field(default_factory=dict)
    cached: bool = False


class _TooLarge(Exception):
    """Raised inside the streaming copy; turned into an AetherError after cleanup."""


def _fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _has_suffix(path: Path, suffixes: Tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def _magic(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(4)
    except OSError:
        return b""


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, *_READ_ERRORS):
        return False


def is_archive(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a file that is (or claims by its suffix to be) a ZIP or tar archive.

    A known suffix is enough, so a damaged ``data.zip`` still counts and ``extract_archive``
    then explains what is wrong with it; without one the magic bytes decide.
    """
    path = Path(path)
    if not path.is_file():
        return False
    if _has_suffix(path, ARCHIVE_SUFFIXES):
        return True
    return _magic(path) in _ZIP_MAGIC or _is_tar(path)


def archive_key(path: Path) -> str:
    """The cache key of an archive: the first 16 hex digits of the sha256 of its bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()[:KEY_LEN]


# ---------------------------------------------------------------------------------------------
# Member validation
# ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    name: str  # the member's name as stored in the archive
    kind: str  # "file" | "dir" | "skip" (an entry naming the root itself, e.g. "./")
    parts: Tuple[str, ...] = ()
    size: int = 0
    member: object = None


def _check_name(name: str) -> Tuple[Optional[str], Tuple[str, ...]]:
    """(reason to refuse or None, normalised path components) for a member name."""
    if not name:
        return "empty member name", ()
    if "\x00" in name:
        return "member name contains a NUL byte", ()
    unified = name.replace("\\", "/")
    if unified.startswith("/"):
        return "absolute path", ()
    if _DRIVE.match(unified):
        return "absolute path with a drive letter", ()
    raw_parts = unified.split("/")
    if ".." in raw_parts:
        return "path contains a '..' (parent directory) component", ()
    return None, tuple(p for p in raw_parts if p not in ("", "."))


def _ignore_key(parts: Tuple[str, ...]) -> Optional[str]:
    if "__MACOSX" in parts:
        return "macosx"
    if parts and parts[-1] == ".DS_Store":
        return "ds_store"
    if parts and parts[-1].startswith("._"):
        return "appledouble"  # macOS resource forks stored next to files by tar on a Mac
    return None


def _inside(tree: Path, parts: Tuple[str, ...]) -> bool:
    target = tree.joinpath(*parts).resolve()
    return target == tree or target.is_relative_to(tree)


def _zip_kind(info: zipfile.ZipInfo) -> Tuple[Optional[str], str]:
    """(reason to refuse or None, 'file' | 'dir') for a ZIP entry."""
    mode = (info.external_attr >> 16) & 0xFFFF
    fmt = stat.S_IFMT(mode)
    if fmt == stat.S_IFLNK:
        return "symbolic link", ""
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        return "device file", ""
    if fmt == stat.S_IFIFO:
        return "FIFO (named pipe)", ""
    if fmt == stat.S_IFSOCK:
        return "socket", ""
    if info.flag_bits & 0x1:
        return "encrypted (password-protected) member", ""
    return None, ("dir" if info.is_dir() or fmt == stat.S_IFDIR else "file")


def _tar_kind(member: tarfile.TarInfo) -> Tuple[Optional[str], str]:
    if member.issym():
        return f"symbolic link (to {member.linkname!r})", ""
    if member.islnk():
        return f"hard link (to {member.linkname!r})", ""
    if member.ischr() or member.isblk():
        return "device file", ""
    if member.isfifo():
        return "FIFO (named pipe)", ""
    if member.isdir():
        return None, "dir"
    if member.isreg():
        return None, "file"
    return f"unsupported tar member type {member.type!r}", ""


def _plan_members(
    entries: Iterator[Tuple[str, object, Optional[str], str, int]],
    tree: Path,
    refused: List[Dict[str, str]],
    ignored: Dict[str, int],
    extra_check: Optional[Callable[[object], Optional[str]]] = None,
) -> List[_Plan]:
    plans: List[_Plan] = []
    for name, member, type_reason, kind, size in entries:
        reason, parts = _check_name(name)
        if reason is None and parts and not _inside(tree, parts):
            reason = "path resolves outside the extraction directory"
        if reason is None:
            reason = type_reason
        if reason is None and extra_check is not None:
            reason = extra_check(member)
        if reason is not None:
            refused.append({"path": name, "reason": reason})
            continue
        key = _ignore_key(parts)
        if key is not None:
            if kind == "file":
                ignored[key] = ignored.get(key, 0) + 1
            continue
        if not parts:
            plans.append(_Plan(name, "skip"))
            continue
        plans.append(_Plan(name, kind, parts, size if kind == "file" else 0, member))
    return plans


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def _limit_members(archive: Path, count: int, max_members: int) -> None:
    if count > max_members:
        raise AetherError(
            f"Archive {archive} has more than {max_members:,} members (the limit "
            f"max_members={max_members}); refusing to extract it. If the archive is trusted, "
            f"raise {MEMBERS_KEY}."
        )


def _declared_size(plan: _Plan) -> int:
    return plan.size


@dataclass
class Limits:
    """What one extraction may write: bytes in all (`why` says which limit set it), and bytes per
    byte of archive once past `ratio_floor`."""

    max_bytes: int
    why: str
    archive_bytes: int
    max_ratio: float
    ratio_floor: int = RATIO_FLOOR_BYTES

    def ratio_exceeded(self, expanded: int) -> bool:
        return expanded > self.ratio_floor and expanded > self.max_ratio * max(1, self.archive_bytes)

    def bomb_error(self, archive: Path, expanded: int, member: str, when: str) -> AetherError:
        return AetherError(
            f"Archive {archive} ({_fmt_bytes(self.archive_bytes)}) {when} {_fmt_bytes(expanded)} "
            f"(member {member!r}), {expanded / max(1, self.archive_bytes):.0f} times its size - more than "
            f"{RATIO_KEY}={self.max_ratio:g}: refused as a decompression bomb, nothing extracted. If the "
            f"archive is trusted, raise {RATIO_KEY}."
        )


def archive_limits(archive: Path, cache_root: Path, max_total_bytes: int, max_ratio: float) -> Limits:
    """The configured total, lowered to half the free disk space under the cache (an archive never
    fills the disk), and the ratio limit."""
    limit, why = max_total_bytes, f"{BYTES_KEY}={max_total_bytes}"
    probe = Path(cache_root)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    if free is not None and int(free * FREE_DISK_SHARE) < limit:
        limit = int(free * FREE_DISK_SHARE)
        why = (f"half the {_fmt_bytes(free)} free under {probe}; {BYTES_KEY}={max_total_bytes} is larger "
               "- free disk space first")
    return Limits(limit, why, archive.stat().st_size, max_ratio)


def _limit_declared(archive: Path, plans: List[_Plan], limits: Limits) -> None:
    files = [p for p in plans if p.kind == "file"]
    total = sum(_declared_size(p) for p in files)
    if limits.ratio_exceeded(total):
        biggest = max(files, key=_declared_size)
        raise limits.bomb_error(archive, total, biggest.name, "declares")
    if total > limits.max_bytes:
        raise AetherError(
            f"Archive {archive} declares {_fmt_bytes(total)} of uncompressed data, more than the "
            f"limit of {_fmt_bytes(limits.max_bytes)} ({limits.why}); "
            f"refusing to extract it. If the archive is trusted, raise {BYTES_KEY}."
        )


class _Writer:
    """Streams members into the tree, counting every byte written against the limit."""

    def __init__(self, archive: Path, tree: Path, limits: Limits, refused: List[Dict[str, str]]):
        self.archive = archive
        self.tree = tree
        self.limits = limits
        self.limit = limits.max_bytes
        self.written = 0
        self.refused = refused

    def directory(self, plan: _Plan) -> None:
        try:
            self.tree.joinpath(*plan.parts).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._member_error(plan, exc)

    def file(self, plan: _Plan, open_src: Callable[[], IO[bytes]]) -> None:
        target = self.tree.joinpath(*plan.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():  # never created by us; refuse to follow one regardless
                raise FileExistsError(errno.EEXIST, "a link is in the way", str(target))
            with open_src() as src, open(target, "wb") as dst:
                while True:
                    chunk = src.read(min(CHUNK, self.limit - self.written + 1))
                    if not chunk:
                        break
                    self.written += len(chunk)
                    if self.limits.ratio_exceeded(self.written):  # headers that understate the sizes
                        raise self.limits.bomb_error(self.archive, self.written, plan.name,
                                                     "expands (while extracting, beyond what it declares) to")
                    if self.written > self.limit:
                        raise _TooLarge()
                    dst.write(chunk)
        except OSError as exc:
            self._member_error(plan, exc)

    def _member_error(self, plan: _Plan, exc: OSError) -> None:
        if exc.errno not in _MEMBER_ERRNOS:
            raise exc
        self.refused.append(
            {"path": plan.name, "reason": f"could not be written ({exc.strerror or exc})"}
        )


def _extract_zip(
    archive: Path, tree: Path, limits: Limits, max_members: int,
    refused: List[Dict[str, str]], ignored: Dict[str, int],
) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _limit_members(archive, len(infos), max_members)

        def entries() -> Iterator[Tuple[str, object, Optional[str], str, int]]:
            for info in infos:
                reason, kind = _zip_kind(info)
                yield info.filename, info, reason, kind, info.file_size

        _write_members(archive, tree, limits, refused, ignored, entries(), zf.open)  # type: ignore[arg-type]


def _write_members(
    archive: Path, tree: Path, limits: Limits, refused: List[Dict[str, str]], ignored: Dict[str, int],
    entries: Iterator[Tuple[str, object, Optional[str], str, int]], open_member: Callable[[object], IO[bytes]],
    check: Optional[Callable[[object], Optional[str]]] = None,
) -> None:
    """Plan every member (refusals recorded), check the declared sizes against the limits, then
    write the directories and files through one _Writer (zip and tar differ only in how a
    member is opened)."""
    plans = _plan_members(entries, tree, refused, ignored, check)
    _limit_declared(archive, plans, limits)
    writer = _Writer(archive, tree, limits, refused)
    for plan in plans:
        if plan.kind == "dir":
            writer.directory(plan)
        elif plan.kind == "file":
            writer.file(plan, lambda member=plan.member: open_member(member))  # type: ignore[misc]


def _tar_data_filter(tree: Path) -> Optional[Callable[[object], Optional[str]]]:
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:  # pragma: no cover - Python < 3.11.4
        return None

    def check(member: object) -> Optional[str]:
        try:
            data_filter(member, str(tree))
        except tarfile.FilterError as exc:  # type: ignore[attr-defined]
            return f"rejected by tarfile's data filter: {exc}"
        return None

    return check


def _extract_tar(
    archive: Path, tree: Path, limits: Limits, max_members: int,
    refused: List[Dict[str, str]], ignored: Dict[str, int],
) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members: List[tarfile.TarInfo] = []
        while True:  # count while reading, so a million-member tar stops early
            member = tf.next()
            if member is None:
                break
            members.append(member)
            _limit_members(archive, len(members), max_members)

        def entries() -> Iterator[Tuple[str, object, Optional[str], str, int]]:
            for m in members:
                reason, kind = _tar_kind(m)
                yield m.name, m, reason, kind, m.size

        def open_member(m: tarfile.TarInfo) -> IO[bytes]:
            src = tf.extractfile(m)
            if src is None:  # pragma: no cover - only for non-regular members
                raise tarfile.TarError(f"cannot read member {m.name!r}")
            return src

        _write_members(archive, tree, limits, refused, ignored, entries(), open_member,  # type: ignore[arg-type]
                       _tar_data_filter(tree))


def _archive_format(path: Path) -> str:
    if _magic(path) in _ZIP_MAGIC:
        return "zip"
    if _is_tar(path):
        return "tar"
    try:
        if zipfile.is_zipfile(path):  # e.g. a self-extracting archive with a stub in front
            return "zip"
    except OSError:
        pass
    if _has_suffix(path, ZIP_SUFFIXES):
        raise AetherError(
            f"{path} is not a valid ZIP archive (it may be truncated or corrupt); expected "
            f"{_EXPECTED}."
        )
    if _has_suffix(path, TAR_SUFFIXES):
        raise AetherError(
            f"{path} is not a valid tar archive (it may be truncated or corrupt); expected "
            f"{_EXPECTED}."
        )
    raise AetherError(f"{path} is not a supported archive; expected {_EXPECTED}.")


def _dataset_root(tree: Path) -> Path:
    entries = list(tree.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return tree


def _load_cached(entry: Path) -> Optional[ExtractResult]:
    if not (entry / ".complete").is_file():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        root = entry / "tree" / meta["root"] if meta["root"] else entry / "tree"
        if not root.is_dir():
            return None
        return ExtractResult(
            root=root,
            refused=[dict(r) for r in meta["refused"]],
            ignored={str(k): int(v) for k, v in meta["ignored"].items()},
            cached=True,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def extract_archive(
    path: Path,
    cache_root: Path,
    *,
    max_total_bytes: int = 20 * 2**30,
    max_members: int = 1_000_000,
    max_ratio: float = 100.0,
    ratio_floor: int = RATIO_FLOOR_BYTES,
) -> ExtractResult:
    """Extract the archive at ``path`` safely into the content-keyed cache under ``cache_root``.

    Returns the dataset root (the single wrapping folder when the archive has exactly one
    top-level directory), the refused members with reasons, counts of skipped macOS clutter
    (``macosx``, ``ds_store``, ``appledouble``; only non-zero counts appear) and whether a
    previous complete extraction was reused. Raises ``AetherError`` for a missing, corrupt or
    unsupported archive and when ``max_total_bytes`` / ``max_members`` are exceeded; nothing is
    left behind in the cache then.
    """
    path = Path(path)
    if not path.is_file():
        raise AetherError(f"Archive {path} does not exist or is not a file; expected {_EXPECTED}.")
    fmt = _archive_format(path)
    key = archive_key(path)
    archives = Path(cache_root) / "archives"
    entry = archives / key

    cached = _load_cached(entry)
    if cached is not None:
        return cached

    limits = archive_limits(path, cache_root, max_total_bytes, max_ratio)
    limits.ratio_floor = ratio_floor
    archives.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=archives))
    try:
        tree = (tmp / "tree").resolve()
        tree.mkdir()
        refused: List[Dict[str, str]] = []
        ignored: Dict[str, int] = {}
        extract = _extract_zip if fmt == "zip" else _extract_tar
        try:
            extract(path, tree, limits, max_members, refused, ignored)
        except _TooLarge:
            raise AetherError(
                f"Archive {path} expands to more than the limit of {_fmt_bytes(limits.max_bytes)} "
                f"({limits.why}) while extracting, although it declares "
                f"less - its size headers are wrong, the archive may be malicious. Extraction "
                f"aborted. If the archive is trusted, raise {BYTES_KEY}."
            ) from None
        except _READ_ERRORS as exc:
            kind = "ZIP" if fmt == "zip" else "tar"
            raise AetherError(
                f"Archive {path} could not be read as a {kind} archive ({type(exc).__name__}: "
                f"{exc}); it may be truncated, corrupt or use an unsupported feature. Expected "
                f"{_EXPECTED}."
            ) from exc
        except OSError as exc:
            raise AetherError(f"Extracting archive {path} into {archives} failed: {exc}") from exc

        root = _dataset_root(tree)
        meta = {
            "archive": str(path),
            "format": fmt,
            "root": root.relative_to(tree).as_posix() if root != tree else "",
            "refused": refused,
            "ignored": ignored,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (tmp / ".complete").write_text("", encoding="utf-8")
        _commit(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    result = _load_cached(entry)
    if result is None:  # pragma: no cover - someone removed it between rename and read
        raise AetherError(f"The extraction of {path} vanished from the cache at {entry}.")
    result.cached = False
    return result


def _commit(tmp: Path, entry: Path) -> None:
    """Atomically move the finished extraction into place (tolerating a concurrent winner)."""
    if entry.exists() and _load_cached(entry) is None:
        shutil.rmtree(entry, ignore_errors=True)  # an incomplete leftover, not ours to keep
    try:
        os.rename(tmp, entry)
    except OSError:
        if _load_cached(entry) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same archive
