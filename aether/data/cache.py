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

Storage: one flat uint8 buffer plus an (N, 3) index of [offset, height, width]; images may
differ in shape. `disk` writes it under $AETHER_CACHE/images/<key>/ and memory-maps it, so a
second run (and every DDP rank, and every loader worker) reads the same pages without
decoding; `memory` keeps it in RAM for one run. The key hashes the cache format, the kind, the
resize steps and every sample's (path, size, mtime): change a file or the image size and a new
cache is built. A directory appears under its final name only once complete (atomic rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps

from aether.data.images import HIGH_DEPTH_MODES, _to_8bit, load_rgb
from aether.data.index import Sample

log = logging.getLogger("aether")

FORMAT_VERSION = 1
# Steps of a timm/torchvision transform that turn a PIL image into a float tensor: everything
# before them is deterministic PIL work the cache can hold (for the eval transform).
_TENSOR_STEPS = ("ToTensor", "MaybeToTensor", "Normalize", "ToNumpy", "MaybeToNumpy")


def pil_steps(transform: Any) -> List[Callable]:
    """The PIL-to-PIL steps of a Compose, i.e. without ToTensor / Normalize."""
    steps = list(getattr(transform, "transforms", [transform]))
    return [t for t in steps if type(t).__name__ not in _TENSOR_STEPS]


def train_side(pre: Dict[str, Any]) -> int:
    """The training crop's side: cached training images keep at least this many pixels on
    their shorter side (and at most KEEP times as many)."""
    return int(max(pre["input_size"][1:]))


KEEP = 1.15  # ~ the eval resize margin (224 -> 256): RandomResizedCrop at scale 1 loses nothing


def decode_reduced(path: str, side: int) -> Image.Image:
    """Decode with the shorter side reduced towards `side` (never enlarged): JPEGs are decoded
    directly at 1/2, 1/4 or 1/8 scale where that still leaves at least `side` pixels (libjpeg
    skips most of the work), then resized to at most KEEP x `side`."""
    with Image.open(path) as im:
        if im.format == "JPEG" and min(im.size) > side:
            scale = min(im.size) / side
            im.draft("RGB", (int(im.size[0] / scale), int(im.size[1] / scale)))
        im.load()
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation (exif_transpose would copy every image)
            im = ImageOps.exif_transpose(im)
        if im.mode in HIGH_DEPTH_MODES:
            im = _to_8bit(im)
        return _shrink(im if im.mode == "RGB" else im.convert("RGB"), int(side * KEEP))


def _shrink(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    if min(w, h) <= side:
        return img
    if w <= h:
        size = (side, max(1, round(h * side / w)))
    else:
        size = (max(1, round(w * side / h)), side)
    # BOX (area averaging) is a proper anti-aliased downscale at half bilinear's cost; training
    # crops are resampled again by RandomResizedCrop anyway
    return img.resize(size, Image.BOX)


class _Decode:
    """A Dataset (for a DataLoader's worker processes) that yields one cached entry per sample."""

    def __init__(self, paths: Sequence[str], kind: str, steps: List[Callable], side: int) -> None:
        self.paths, self.kind, self.steps, self.side = list(paths), kind, steps, side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        path = self.paths[i]
        try:
            if self.kind == "eval":
                img = load_rgb(path)
                for step in self.steps:
                    img = step(img)
            else:
                img = decode_reduced(path, self.side)
        except Exception as exc:
            raise RuntimeError(f"cannot read {path}: {exc}") from exc
        import torch

        # a tensor, not an array: a DataLoader hands tensors from its workers over in shared
        # memory, where an array would be pickled through a pipe and unpickled by the one main
        # process that also writes the cache
        return torch.from_numpy(np.array(img, dtype=np.uint8))


# ------------------------------------------------------------------ the cache


@dataclass
class ImageCache:
    pixels: np.ndarray  # flat uint8 (np.memmap for disk caches)
    index: np.ndarray  # (N, 3) int64: offset, height, width
    where: str  # the cache folder, or "memory"

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> Dict[str, Any]:
        # a disk cache travels to spawned loader workers as its folder name, never as pixels
        state = dict(self.__dict__)
        if self.where != "memory":
            state["pixels"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.pixels is None:
            self.pixels = _open(Path(self.where)).pixels

    def get(self, i: int) -> np.ndarray:
        off, h, w = (int(v) for v in self.index[i])
        return self.pixels[off:off + h * w * 3].reshape(h, w, 3)


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


def _open(folder: Path) -> ImageCache:
    index = np.load(folder / "index.npy")
    total = int(json.loads((folder / "meta.json").read_text())["bytes"])
    pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="r", shape=(max(1, total),))
    return ImageCache(pixels, index, str(folder))


def _decode_all(samples: Sequence[Sample], kind: str, steps: List[Callable], side: int, workers: int,
                sink: Callable[[np.ndarray], None]) -> None:
    import torch
    from torch.utils.data import DataLoader

    ds = _Decode([s.path for s in samples], kind, steps, side)
    # its own generator: building a cache must not draw from the global RNG, or a run that
    # builds the cache and one that reuses it would train differently with the same seed
    loader = DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda a: a,
                        prefetch_factor=8 if workers else None, generator=torch.Generator())
    for arr in loader:
        sink(arr.numpy())


def build(samples: Sequence[Sample], kind: str, steps: List[Callable], side: int, mode: str,
          workers: int) -> ImageCache:
    """Open the cache for these samples, building it first if needed (`mode`: disk | memory)."""
    t0 = time.perf_counter()
    index = np.zeros((len(samples), 3), dtype=np.int64)
    offset = [0]
    pos = [0]

    def record(arr: np.ndarray) -> None:
        index[pos[0]] = (offset[0], arr.shape[0], arr.shape[1])
        offset[0] += arr.size
        pos[0] += 1

    if mode == "memory":
        chunks: List[np.ndarray] = []
        _decode_all(samples, kind, steps, side, workers, lambda a: (record(a), chunks.append(a.reshape(-1))))
        pixels = np.concatenate(chunks) if chunks else np.zeros(1, np.uint8)
        log.info("data cache: decoded %d images into memory (%.0f MB) in %.1fs", len(samples),
                 pixels.nbytes / 2**20, time.perf_counter() - t0)
        return ImageCache(pixels, index, "memory")

    key = cache_key(samples, kind, steps, side)
    final = cache_root() / key
    if (final / "meta.json").is_file():
        return _open(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with open(tmp / "pixels.u8", "wb") as f:
            _decode_all(samples, kind, steps, side, workers, lambda a: (record(a), f.write(a.tobytes())))
        np.save(tmp / "index.npy", index)
        (tmp / "meta.json").write_text(json.dumps({"version": FORMAT_VERSION, "kind": kind, "images": len(samples),
                                                   "bytes": offset[0], "created": time.time()}))
        try:
            os.rename(tmp, final)
        except OSError:  # another process (a DDP rank, a parallel run) finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("data cache: decoded %d %s images into %s (%.0f MB) in %.1fs", len(samples), kind, final,
             offset[0] / 2**20, time.perf_counter() - t0)
    return _open(final)


def resolve_mode(mode: str) -> str:
    """`auto` -> disk: memory-mapped pages are served from RAM by the OS when they fit, and a
    second run reuses them; `memory` is for read-only or slow cache folders."""
    return "disk" if mode == "auto" else mode


# ------------------------------------------------------------------ datasets over the cache


class CachedDataset:
    """(uint8 HWC tensor, target) per sample, read from an ImageCache; `transform` (PIL to PIL,
    random augmentation) runs after the cache, on every access. Targets come from the samples,
    so the cache itself only ever holds images. HWC keeps collation a contiguous copy; the
    channel move happens in the one float conversion on the device (aether.data.prefetch)."""

    def __init__(self, cache: ImageCache, targets: Sequence[Any], transform: Optional[Callable] = None) -> None:
        self.cache, self.targets, self.transform = cache, list(targets), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        import torch

        arr = self.cache.get(i)
        if self.transform is not None:
            arr = self.transform(Image.fromarray(arr))
        arr = np.array(arr, dtype=np.uint8)  # a private, writable copy (never memory-mapped pages)
        return torch.from_numpy(arr), self.targets[i]
