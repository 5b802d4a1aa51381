"""The decoded-image cache behind `data.cache`: decode and resize each image ONCE into uint8.

Why: a fine-tuning epoch on a small model is mostly JPEG decoding. The cache keeps the
deterministic part of the pipeline (decode, EXIF rotation, resize, and for evaluation the
centre crop) as uint8 pixels; everything random (crops, flips, colour jitter) still runs on
every access, after the cache. Normalisation happens on the device (aether.data.prefetch).

Two kinds of entry, one per split:
  eval   the exact PIL steps of the eval transform (resize + centre crop) -> identical tensors
         to the uncached path once normalised the same way (tested).
  train  the image with its shorter side reduced to about the crop size (never enlarged), so
         RandomResizedCrop still sees the whole picture; JPEGs are decoded at reduced scale
         (libjpeg's DCT scaling through PIL's draft mode; pillow-simd, a drop-in PIL, is used
         when installed) because the crop discards that detail anyway.

Write-through, so the first epoch costs no more than plain loading: every entry's shape is
known from the file headers alone (the draft scale, the EXIF rotation and the resize are
decided before any pixel is decoded), so the cache is laid out before training starts and
each loader worker decodes an image the first time the sampler asks for it, writes it into
its slot and marks it filled. Nothing decodes an image twice and nothing is copied between
processes. At the end of the split's first epoch (aether.data.fastpath.CacheFinisher) the few
entries the epoch skipped (drop_last, limit_*_batches) are filled and the cache is sealed.

Storage: one flat uint8 buffer plus an (N, 3) index of [offset, height, width]; images may
differ in shape. `disk` writes it under $AETHER_CACHE/images/<key>/ and memory-maps it, so a
second run (and every DDP rank, and every loader worker) reads the same pages without
decoding; while it is being filled it lives in `<key>.partial-<run>`, shared by the ranks of
that run, and appears under its final name only once complete (atomic rename). `memory` keeps
it in shared anonymous memory for one run. The key hashes the cache format, the kind, the
resize steps and every sample's (path, size, mtime): change a file or the image size and a new
cache is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

from aether.data.images import HIGH_DEPTH_MODES, _to_8bit, load_rgb
from aether.data.index import Sample

log = logging.getLogger("aether")

FORMAT_VERSION = 2
# Steps of a timm/torchvision transform that turn a PIL image into a float tensor: everything
# before them is deterministic PIL work the cache can hold (for the eval transform).
_TENSOR_STEPS = ("ToTensor", "MaybeToTensor", "Normalize", "ToNumpy", "MaybeToNumpy")
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees (exif_transpose swaps w, h)
STALE_S = 24 * 3600  # unfinished caches of crashed runs older than this are removed


def pil_steps(transform: Any) -> List[Callable]:
    """The PIL-to-PIL steps of a Compose, i.e. without ToTensor / Normalize."""
    steps = list(getattr(transform, "transforms", [transform]))
    return [t for t in steps if type(t).__name__ not in _TENSOR_STEPS]


def train_side(pre: Dict[str, Any]) -> int:
    """The training crop's side: cached training images keep at least this many pixels on
    their shorter side (and at most KEEP times as many)."""
    return int(max(pre["input_size"][1:]))


KEEP = 1.15  # ~ the eval resize margin (224 -> 256): RandomResizedCrop at scale 1 loses nothing


# ------------------------------------------------------------------ one entry: plan and decode


def _open_reduced(path: str, side: int) -> Image.Image:
    """The file opened (header only) with JPEG draft mode set: the size it reports is the size
    `load()` will decode at - 1/2, 1/4 or 1/8 scale where that still leaves `side` pixels."""
    im = Image.open(path)
    if im.format == "JPEG" and min(im.size) > side:
        scale = min(im.size) / side
        im.draft("RGB", (int(im.size[0] / scale), int(im.size[1] / scale)))
    return im


def _shrunk(size: Tuple[int, int], side: int) -> Tuple[int, int]:
    w, h = size
    if min(w, h) <= side:
        return w, h
    if w <= h:
        return side, max(1, round(h * side / w))
    return max(1, round(w * side / h)), side


def decode_reduced(path: str, side: int) -> Image.Image:
    """Decode with the shorter side reduced towards `side` (never enlarged), then resized to at
    most KEEP x `side`."""
    with _open_reduced(path, side) as im:
        im.load()
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation (exif_transpose would copy every image)
            im = ImageOps.exif_transpose(im)
        if im.mode in HIGH_DEPTH_MODES:
            im = _to_8bit(im)
        img = im if im.mode == "RGB" else im.convert("RGB")
        size = _shrunk(img.size, int(side * KEEP))
        # BOX (area averaging) is a proper anti-aliased downscale at half bilinear's cost; training
        # crops are resampled again by RandomResizedCrop anyway
        return img if size == img.size else img.resize(size, Image.BOX)


def planned_shape(path: str, kind: str, steps: List[Callable], side: int) -> Tuple[int, int]:
    """(height, width) of the entry for `path`, from its header alone."""
    fixed = _fixed_output(steps) if kind == "eval" else None
    if fixed is not None:
        return fixed
    with (_open_reduced(path, side) if kind == "train" else Image.open(path)) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in _SWAPS_SIDES:
            w, h = h, w
    if kind == "train":
        w, h = _shrunk((w, h), int(side * KEEP))
        return h, w
    out = Image.new("RGB", (w, h))  # an eval transform of unknown geometry: its output size for this input
    for step in steps:
        out = step(out)
    return out.size[1], out.size[0]


def _fixed_output(steps: List[Callable]) -> Optional[Tuple[int, int]]:
    """(h, w) when the last step always produces one size (timm's eval transforms end with a
    centre crop, which pads smaller images)."""
    if not steps:
        return None
    last = steps[-1]
    size = getattr(last, "size", None)
    if type(last).__name__ in ("CenterCrop", "CenterCropOrPad") and size is not None:
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return (int(size[0]), int(size[-1]))
    return None


def decode_entry(path: str, kind: str, steps: List[Callable], side: int) -> Image.Image:
    try:
        if kind == "train":
            return decode_reduced(path, side)
        img = load_rgb(path)
        for step in steps:
            img = step(img)
        return img
    except Exception as exc:  # the file changed after the up-front check: say which one
        raise RuntimeError(f"cannot read {path}: {exc}") from exc


# ------------------------------------------------------------------ the cache


class ImageCache:
    """Entries by sample index; `get` decodes and stores an entry on first access."""

    def __init__(self, index: np.ndarray, where: str, source: Optional[Dict[str, Any]] = None,
                 buffers: Optional[Tuple[Any, Any]] = None) -> None:
        self.index = index  # (N, 3) int64: offset, height, width
        self.where = where  # the cache folder, or "memory"
        # how to make a missing entry (paths, kind, steps, side); None once the cache is complete
        self.source = source
        self._buffers = buffers  # memory caches: (pixels, filled) anonymous shared mmaps
        self._open()

    @property
    def complete(self) -> bool:
        return self.source is None

    def _open(self) -> None:
        total = max(1, int(self.index[-1, 0] + self.index[-1, 1] * self.index[-1, 2] * 3)) if len(self.index) else 1
        if self._buffers is not None:
            self.pixels = np.frombuffer(self._buffers[0], dtype=np.uint8)
            self.filled = np.frombuffer(self._buffers[1], dtype=np.uint8)
            return
        folder = Path(self.where)
        if not folder.is_dir() and ".partial-" in folder.name:
            # sealed (renamed to its final name) by another process of this run since this object
            # was made: a loader worker started later opens the finished cache
            sealed = folder.parent / folder.name.split(".partial-")[0]
            if (sealed / "meta.json").is_file():
                folder, self.where, self.source = sealed, str(sealed), None
        mode = "r" if self.complete else "r+"
        self.pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode=mode, shape=(total,))
        self.filled = None if self.complete else np.memmap(folder / "filled.u8", dtype=np.uint8, mode="r+",
                                                           shape=(max(1, len(self.index)),))

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> Dict[str, Any]:
        # a disk cache travels to spawned loader workers as its folder name, never as pixels
        state = dict(self.__dict__)
        state["pixels"] = state["filled"] = None
        if self._buffers is not None:  # memory, spawned workers (fork shares the mapping itself)
            state["_buffers"] = (bytes(self._buffers[0]), bytes(self._buffers[1]))
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._buffers is not None:
            self._buffers = tuple(_shared(len(b), b) for b in self._buffers)  # type: ignore[assignment]
        self._open()

    def _view(self, i: int) -> np.ndarray:
        off, h, w = (int(v) for v in self.index[i])
        return self.pixels[off:off + h * w * 3].reshape(h, w, 3)

    def get(self, i: int) -> np.ndarray:
        """The entry's uint8 HWC pixels (a view of the cache)."""
        if self.filled is None or self.filled[i]:
            return self._view(i)
        return np.asarray(self.fill(i))

    def fill(self, i: int) -> Image.Image:
        """Decode entry i, store it, mark it filled; returns the decoded image (so the first
        epoch augments what it just decoded instead of reading it back)."""
        assert self.source is not None and self.filled is not None
        src = self.source
        img = decode_entry(src["paths"][i], src["kind"], src["steps"], src["side"])
        slot = self._view(i)
        if (img.size[1], img.size[0]) != slot.shape[:2]:
            # the header announced another size than the pixels have (a malformed file): keep
            # the layout and resize to what was announced
            img = img.resize((slot.shape[1], slot.shape[0]), Image.BOX)
        slot[...] = np.asarray(img, dtype=np.uint8).reshape(slot.shape)
        self.filled[i] = 1  # after the pixels: a reader that sees the flag sees the pixels (x86 store order)
        return img

    def missing(self) -> List[int]:
        return [] if self.filled is None else np.flatnonzero(self.filled[:len(self.index)] == 0).tolist()


def _shared(size: int, data: Optional[bytes] = None) -> mmap.mmap:
    """Anonymous shared memory: forked loader workers write into the same pages."""
    buf = mmap.mmap(-1, max(1, size), flags=mmap.MAP_SHARED)
    if data:
        buf[:len(data)] = data
    return buf


def cache_key(samples: Sequence[Sample], kind: str, steps: List[Callable], side: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": FORMAT_VERSION, "kind": kind, "side": side if kind == "train" else None,
                         "steps": [repr(s) for s in steps] if kind == "eval" else None}).encode())
    for s in samples:
        try:
            st = os.stat(s.path)
            h.update(f"{s.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{s.path}\0missing\n".encode())
    return h.hexdigest()[:24]


def cache_root() -> Path:
    from aether.paths import cache_dir

    return cache_dir() / "images"


def _layout(paths: Sequence[str], kind: str, steps: List[Callable], side: int) -> np.ndarray:
    index = np.zeros((len(paths), 3), dtype=np.int64)
    offset = 0
    for i, path in enumerate(paths):
        try:
            h, w = planned_shape(path, kind, steps, side)
        except Exception as exc:
            raise RuntimeError(f"cannot read {path}: {exc}") from exc
        index[i] = (offset, h, w)
        offset += h * w * 3
    return index


def _run_token() -> str:
    """Names the unfinished cache of THIS run: the ranks of one distributed run share it, a
    different run never picks it up. The launcher's job id comes first: ranks started by
    torchrun or srun do not know rank 0's run folder (only Lightning's own launcher passes it)."""
    from aether.ranks import RUN_DIR_ENV

    for var in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", RUN_DIR_ENV):
        if os.environ.get(var):
            return hashlib.sha256(f"{var}={os.environ[var]}".encode()).hexdigest()[:12]
    return f"pid{os.getpid()}"


def open_cache(samples: Sequence[Sample], kind: str, steps: List[Callable], side: int, mode: str) -> ImageCache:
    """The cache for these samples (`mode`: disk | memory): the finished one when it exists,
    else a new one laid out from the file headers, filled as the loaders read it."""
    paths = [s.path for s in samples]
    source = {"paths": paths, "kind": kind, "steps": steps, "side": side}
    if mode == "memory":
        index = _layout(paths, kind, steps, side)
        total = int(index[-1, 0] + index[-1, 1] * index[-1, 2] * 3) if len(index) else 0
        return ImageCache(index, "memory", source, (_shared(total), _shared(len(paths))))

    key = cache_key(samples, kind, steps, side)
    root = cache_root()
    from aether.paths import require_writable

    require_writable(root, "the decoded-image cache", "set AETHER_CACHE to a writable folder, or data.cache=off "
                     "(or data.cache=memory) to train without it")
    final = root / key
    if (final / "meta.json").is_file():
        return ImageCache(np.load(final / "index.npy"), str(final))
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    partial = root / f"{key}.partial-{_run_token()}"
    if not (partial / "index.npy").is_file():
        tmp = root / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        index = _layout(paths, kind, steps, side)
        total = int(index[-1, 0] + index[-1, 1] * index[-1, 2] * 3) if len(index) else 0
        with open(tmp / "pixels.u8", "wb") as f:
            f.truncate(max(1, total))  # sparse: pages are allocated as entries are written
        with open(tmp / "filled.u8", "wb") as f:
            f.truncate(max(1, len(paths)))
        np.save(tmp / "index.npy", index)
        try:
            os.rename(tmp, partial)
        except OSError:  # another rank of this run laid it out first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return ImageCache(np.load(partial / "index.npy"), str(partial), source)


def complete(cache: ImageCache, workers: int = 0) -> ImageCache:
    """Fill what is still missing and seal the cache; returns the finished cache (for disk: its
    final folder, which the next run finds)."""
    if cache.complete:
        return cache
    t0 = time.perf_counter()
    todo = cache.missing()
    if todo:
        _fill_all(cache, todo, workers)
    if cache.where == "memory":
        cache.source, cache.filled = None, None
        return cache
    assert cache.source is not None
    src = cache.source
    partial = Path(cache.where)
    final = partial.parent / partial.name.split(".partial-")[0]
    total = int(cache.pixels.shape[0])
    # no msync: the kernel writes the pages back on its own; forcing it here would stall the run
    # for the whole cache's disk write (an OS crash right after sealing can leave a damaged
    # cache - delete its folder - exactly as with any file written without fsync)
    meta = {"version": FORMAT_VERSION, "kind": src["kind"], "images": len(cache), "bytes": total,
            "created": time.time()}
    try:
        (partial / "meta.json").write_text(json.dumps(meta))
        (partial / "filled.u8").unlink(missing_ok=True)
        os.rename(partial, final)
    except OSError:  # sealed first by a parallel run, or by another node's ranks on a shared folder
        if not (final / "meta.json").is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)
    log.info("data cache: %d %s images in %s (%.0f MB)%s", len(cache), src["kind"], final, total / 2**20,
             f", {len(todo)} decoded at sealing in {time.perf_counter() - t0:.1f}s" if todo else "")
    return ImageCache(cache.index, str(final))


class _Fill:
    """A Dataset over the missing entries: each item decodes one into the cache."""

    def __init__(self, cache: ImageCache, todo: List[int]) -> None:
        self.cache, self.todo = cache, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int) -> int:
        self.cache.fill(self.todo[k])
        return 0


def _fill_all(cache: ImageCache, todo: List[int], workers: int) -> None:
    import torch
    from torch.utils.data import DataLoader

    workers = workers if len(todo) >= 64 else 0
    # its own generator: filling a cache must not draw from the global RNG, or a run that builds
    # the cache and one that reuses it would train differently with the same seed
    for _ in DataLoader(_Fill(cache, todo), batch_size=16, num_workers=workers, generator=torch.Generator()):
        pass


def _remove_stale(root: Path) -> None:
    """Unfinished caches of runs that crashed long ago (a running run touches its own)."""
    now = time.time()
    for p in root.iterdir():
        if ".partial-" not in p.name and ".tmp-" not in p.name:
            continue
        try:
            age = now - p.stat().st_mtime
        except OSError:  # renamed or removed meanwhile by another rank or run: not stale
            continue
        if age > STALE_S:
            shutil.rmtree(p, ignore_errors=True)


def resolve_mode(mode: str) -> str:
    """`auto` -> disk: memory-mapped pages are served from RAM by the OS when they fit, and a
    second run reuses them; `memory` is for read-only or slow cache folders."""
    return "disk" if mode == "auto" else mode
