"""How every task's data reaches the model: one loader-settings rule (batch size, workers,
shuffling) and one DataModule base over a bundle's splits, with one distributed test sampler
and the class-balanced training sampler (data.sampler=balanced).

Why one place: classification and the item-based tasks (multilabel, segmentation, detection)
had copies of these settings, and only classification scored each test image exactly once
under several processes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, List, Optional

from aether.config.resources import usable_cpus
from aether.config.schema import DataCfg
from aether.errors import AetherError
from aether.data.fastpath import FastPathDataModule


def auto_workers(n_images: int) -> int:
    """Worker processes for a loader: none for tiny sets (start-up costs more than it saves)."""
    cpus = usable_cpus()
    if n_images < 2000 or cpus < 2:
        return 0
    return min(8, cpus - 1)


def workers_for(cfg: DataCfg, n: int) -> int:
    return auto_workers(n) if cfg.num_workers == "auto" else int(cfg.num_workers)


def eval_batch_size(cfg: DataCfg) -> int:
    return cfg.eval_batch_size or 2 * cfg.batch_size  # no gradients: twice the batch fits


def loader_settings(cfg: DataCfg, n: int, train: bool) -> Dict[str, Any]:
    """DataLoader keywords for a split of `n` items: training shuffles and drops a ragged last
    batch (when there is more than one), evaluation sees every item once."""
    import torch

    workers = workers_for(cfg, n)
    batch = cfg.batch_size if train else eval_batch_size(cfg)
    return dict(batch_size=batch, shuffle=train, drop_last=train and n > batch, num_workers=workers,
                persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def balanced_sampler(labels: List[int], seed: int) -> Any:
    """data.sampler=balanced: len(labels) draws with replacement, each image weighted 1/count of
    its class, so every class is drawn equally often in expectation. Its own generator, seeded
    from the run's seed: every process draws the same sequence (their shards do not overlap) and
    the run repeats."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))


class SplitData(FastPathDataModule):
    """Train/val/test loaders over `bundle.splits` for any task: subclasses give each split's
    Dataset (`dataset(split, train)`); `collate` batches items that do not stack (boxes).
    `class_labels(split)`: one class index per image, for tasks that have one (classification);
    data.sampler=balanced needs it."""

    def __init__(self, bundle: Any, cfg: DataCfg, collate: Optional[Callable] = None) -> None:
        super().__init__()
        self.bundle, self.cfg, self.collate = bundle, cfg, collate
        if cfg.sampler == "balanced" and self.class_labels("train") is None:
            raise AetherError("data.sampler=balanced draws each image by its one class; this task's images "
                              "have no single class (label sets, boxes or masks). Use data.sampler=shuffle")

    def dataset(self, split: str, train: bool) -> Any:
        raise NotImplementedError

    def class_labels(self, split: str) -> Optional[List[int]]:
        return None

    @property
    def batch_size(self) -> Any:
        """data.batch_size, as the attribute Lightning's batch-size scaler reads and sets."""
        return self.cfg.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.cfg.batch_size = int(value)

    def _loader(self, split: str, train: bool) -> Any:
        from torch.utils.data import DataLoader

        n = len(self.bundle.splits[split])
        return DataLoader(self.dataset(split, train), collate_fn=self.collate, **loader_settings(self.cfg, n, train))

    def train_dataloader(self) -> Any:
        if self.cfg.sampler != "balanced":
            return self._loader("train", True)
        import torch
        from torch.utils.data import DataLoader

        labels = self.class_labels("train")
        assert labels is not None  # refused in __init__
        settings = loader_settings(self.cfg, len(labels), True)
        settings.pop("shuffle")  # the sampler decides the order
        sampler = balanced_sampler(labels, torch.initial_seed())  # the seed Lightning's seed_everything set
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1:
            # each process draws a disjoint share of the same weighted sequence (Lightning wraps a
            # custom sampler this way too; done here so the rule does not hang on its default)
            from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

            sampler = DistributedSamplerWrapper(sampler, num_replicas=world, rank=self.trainer.global_rank,
                                                shuffle=False)
        return DataLoader(self.dataset("train", True), sampler=sampler, collate_fn=self.collate, **settings)

    def val_dataloader(self) -> Any:
        return self._loader("val", False)

    def test_dataloader(self) -> Any:
        loader = self._loader("test", False)
        if self.trainer is None or self.trainer.world_size <= 1:
            return loader
        # each test image scored exactly once across ranks: Lightning's default sampler would
        # repeat images to even out the shards (test metrics are synced by torchmetrics)
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
        from torch.utils.data import DataLoader

        sampler = UnrepeatedDistributedSampler(loader.dataset, num_replicas=self.trainer.world_size,
                                               rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=self.collate,
                          num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
                          pin_memory=loader.pin_memory)
