"""The fast data path as one object the DataModule holds: which cache each split reads, the
random augmentation that runs after it, and the device-side normalisation (data.cache != off)."""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import lightning as L
import numpy as np
from PIL import Image

from aether.config.schema import DataCfg
from aether.data import cache as cache_mod
from aether.data.prefetch import DeviceNormalize
from aether.data.transforms import eval_transform, train_transform


def build_workers(n_images: int, num_workers: Union[int, str]) -> int:
    """Decoding processes for sealing a cache: the loader's setting when given, else the
    machine's cores once there is enough work to pay for starting them."""
    if num_workers != "auto":
        return int(num_workers)
    from aether.config.resources import usable_cpus

    return usable_cpus() if n_images >= 500 else 0


class FastPath:
    def __init__(self, pre: Dict[str, Any], cfg: DataCfg) -> None:
        from torchvision.transforms import Compose

        self.eval_steps: List[Callable] = cache_mod.pil_steps(eval_transform(pre))
        geometry, colour, final = train_transform(pre, cfg.augment, separate=True)
        steps = [*geometry.transforms, *colour.transforms]
        self.train_pil: Callable = fast_augment(steps) or Compose(steps)
        erasing = [t for t in final.transforms if type(t).__name__ == "RandomErasing"]
        self.side = cache_mod.train_side(pre)
        self.device = DeviceNormalize(pre["mean"], pre["std"], erasing[0] if erasing else None)
        self._datasets: Dict[str, CachedDataset] = {}

    def dataset(self, samples: Sequence[Any], split: str, train: bool, mode: str,
                target: Callable[[Any], Any] = lambda s: s.label) -> "CachedDataset":
        """The split's dataset over its cache: opened at most once per process (and built once
        per machine on disk). `samples` have a `.path`; `target(sample)` is what each yields
        with its image (the class index; a multi-hot tensor for multilabel)."""
        kind = "train" if train else "eval"
        # the training split read the evaluation way (the run's analysis embeds it after training)
        # is another dataset: the training one would hand out augmented, train-sized images
        key = split if train == (split == "train") else f"{split}:{kind}"
        ds = self._datasets.get(key)
        if ds is None or ds.samples is not samples:
            c = cache_mod.open_cache(samples, kind, self.eval_steps, self.side, mode)
            ds = CachedDataset(c, samples, self.train_pil if train else None, [target(s) for s in samples])
            self._datasets[key] = ds
        return ds

    def complete(self, split: str, num_workers: Union[int, str]) -> None:
        """Seal the split's cache after its first full pass (the entries it skipped are decoded)."""
        ds = self._datasets.get(split)
        if ds is not None and not ds.cache.complete:
            ds.cache = cache_mod.complete(ds.cache, build_workers(len(ds.cache.missing()), num_workers))


class FastPathDataModule(L.LightningDataModule):
    """A DataModule whose loaders may read the cache (`self.fast`, None for data.cache=off):
    their uint8 batches become normalised model inputs right after the transfer to the device."""

    fast: Optional[FastPath] = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.fast is None:
            return batch
        x, y = batch
        return self.fast.device(x, train=self.trainer is not None and self.trainer.training), y


class CachedDataset:
    """(uint8 HWC tensor, target) per sample, read from an ImageCache; `transform` (PIL to PIL,
    random augmentation) runs after the cache, on every access. Targets come from the samples,
    so the cache itself only ever holds images. HWC keeps collation a contiguous copy; the
    channel move happens in the one float conversion on the device (aether.data.prefetch)."""

    def __init__(self, cache: cache_mod.ImageCache, samples: Sequence[Any], transform: Optional[Callable],
                 targets: List[Any]) -> None:
        self.cache, self.samples, self.transform, self.targets = cache, samples, transform, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        import torch

        c = self.cache
        first = c.filled is not None and not c.filled[i]
        if self.transform is None:
            arr = np.array(c.fill(i) if first else c.get(i), dtype=np.uint8)  # a private copy, never cache pages
        else:
            img = c.fill(i) if first else Image.fromarray(c.get(i))  # the first epoch augments what it decoded
            arr = np.array(self.transform(img), dtype=np.uint8)
        return torch.from_numpy(arr), self.targets[i]


class CacheFinisher(L.Callback):
    """Seals each split's cache at the end of its first epoch (after every rank has read its
    shard, so only the entries no rank read are decoded here)."""

    def __init__(self) -> None:
        # decided here, identically on every rank: a rank's own view of its cache (sealed by
        # local rank 0, not by itself) must not decide whether it joins a barrier, or the ranks
        # would wait at different barriers
        self._sealed: set = set()

    def _complete(self, trainer: Any, split: str) -> None:
        dm = trainer.datamodule
        fast = getattr(dm, "fast", None)
        if fast is None or split not in fast._datasets or split in self._sealed:
            return
        self._sealed.add(split)
        trainer.strategy.barrier("aether-cache")  # every rank's workers have written their entries
        if trainer.local_rank == 0:
            fast.complete(split, dm.cfg.num_workers)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._complete(trainer, "train")

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._complete(trainer, "val")

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._complete(trainer, "test")


# ------------------------------------------------------------------ augmentation after the cache


class _CropFlip:
    """timm's RandomResizedCrop + flips in two PIL calls: the crop and the resize as ONE
    `resize(box=...)` (no intermediate crop image), flips as transposes. Same parameters and the
    same random draws as the transforms it replaces (their own get_params, random / torch.rand
    exactly as they call them); it only avoids their copies, which are most of an epoch's work
    once decoding is cached. The resampling filter may read up to a pixel beyond the crop box
    where the crop-then-resize reads none: a difference below the augmentation's own noise."""

    def __init__(self, crop: Any, flips: List[Any]) -> None:
        self.crop, self.flips = crop, flips

    def __call__(self, img: Image.Image) -> Image.Image:
        import torch

        c = self.crop
        i, j, h, w = c.get_params(img, c.scale, c.ratio)
        interp = random.choice(c.interpolation) if isinstance(c.interpolation, (tuple, list)) else c.interpolation
        out = img.resize((c.size[1], c.size[0]), _PIL_FILTERS[str(interp).split(".")[-1].lower()],
                         box=(j, i, j + w, i + h))
        for flip in self.flips:
            if torch.rand(1) < flip.p:
                out = out.transpose(Image.FLIP_LEFT_RIGHT if type(flip).__name__ == "RandomHorizontalFlip"
                                    else Image.FLIP_TOP_BOTTOM)
        return out

    def __repr__(self) -> str:
        return f"CropFlip({self.crop!r}, {self.flips!r})"


_PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


def fast_augment(steps: List[Any]) -> Optional[Callable]:
    """The fused crop-and-flip for the usual training geometry (timm's RandomResizedCrop then
    flips, no colour steps); None for anything else, which runs as the plain Compose."""
    if not steps or type(steps[0]).__name__ != "RandomResizedCropAndInterpolation":
        return None
    flips = steps[1:]
    if any(type(f).__name__ not in ("RandomHorizontalFlip", "RandomVerticalFlip") for f in flips):
        return None
    interps = steps[0].interpolation if isinstance(steps[0].interpolation, (tuple, list)) else [steps[0].interpolation]
    if any(str(m).split(".")[-1].lower() not in _PIL_FILTERS for m in interps):
        return None
    return _CropFlip(steps[0], flips)
