"""Torch datasets and the LightningDataModule over a DataBundle."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List

import torch
from torch.utils.data import DataLoader, Dataset

from aether.config.schema import DataCfg
from aether.data.cache import resolve_mode
from aether.data.dataset import DataBundle
from aether.data.fastpath import FastPath, FastPathDataModule
from aether.data.images import load_rgb
from aether.data.index import Sample
from aether.data.transforms import eval_transform, train_transform


class ImageDataset(Dataset):
    def __init__(self, samples: List[Sample], transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        s = self.samples[i]
        try:
            img = load_rgb(s.path)
        except Exception as exc:  # the file changed after the up-front check: say which one
            raise RuntimeError(f"cannot read {s.path}: {exc}") from exc
        return self.transform(img), s.label


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_workers(n_images: int) -> int:
    """Worker processes for a loader: none for tiny sets (start-up costs more than it saves)."""
    cpus = usable_cpus()
    if n_images < 2000 or cpus < 2:
        return 0
    return min(8, cpus - 1)


class ClassificationData(FastPathDataModule):
    def __init__(self, bundle: DataBundle, preprocessing: Dict[str, Any], cfg: DataCfg) -> None:
        super().__init__()
        self.bundle = bundle
        self.cfg = cfg
        self.preprocessing = preprocessing
        self.train_tf = train_transform(preprocessing, cfg.augment)
        self.eval_tf = eval_transform(preprocessing)
        self.cache_mode = resolve_mode(cfg.cache)
        # the fast path: uint8 from a decoded-image cache, normalised on the device
        self.fast = FastPath(preprocessing, cfg) if self.cache_mode != "off" else None

    def _loader(self, split: str, train: bool) -> DataLoader:
        samples = self.bundle.splits[split]
        workers = auto_workers(len(samples)) if self.cfg.num_workers == "auto" else int(self.cfg.num_workers)
        batch = self.cfg.batch_size if train else (self.cfg.eval_batch_size or 2 * self.cfg.batch_size)
        if self.fast is not None:
            dataset = self.fast.dataset(samples, split, train, self.cache_mode)  # filled as it is read
        else:
            dataset = ImageDataset(samples, self.train_tf if train else self.eval_tf)
        return DataLoader(
            dataset,
            batch_size=batch, shuffle=train, drop_last=train and len(samples) > batch,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        loader = self._loader("test", False)
        if self.trainer is not None and self.trainer.world_size > 1:
            # each test image scored exactly once across ranks: Lightning's default sampler
            # would repeat images to even out the shards (test metrics are synced by torchmetrics)
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(loader.dataset, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
            loader = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                                num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
                                pin_memory=loader.pin_memory)
        return loader
