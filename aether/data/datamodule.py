"""Classification's torch Dataset and its DataModule over a DataBundle (loaders: aether.data.loaders)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from torch.utils.data import Dataset

from aether.config.schema import DataCfg
from aether.data.cache import resolve_mode
from aether.data.dataset import DataBundle
from aether.data.fastpath import FastPath
from aether.data.images import load_rgb
from aether.data.index import Sample
from aether.data.loaders import SplitData
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


class ClassificationData(SplitData):
    """Classification's splits: (image, class index) pairs, from the decoded-image cache when on."""

    def __init__(self, bundle: DataBundle, preprocessing: Dict[str, Any], cfg: DataCfg) -> None:
        super().__init__(bundle, cfg)
        self.preprocessing = preprocessing
        self.train_tf = train_transform(preprocessing, cfg.augment)
        self.eval_tf = eval_transform(preprocessing)
        self.cache_mode = resolve_mode(cfg.cache)
        # the fast path: uint8 from a decoded-image cache, normalised on the device
        self.fast = FastPath(preprocessing, cfg) if self.cache_mode != "off" else None

    def class_labels(self, split: str) -> List[int]:
        return [s.label for s in self.bundle.splits[split]]

    def dataset(self, split: str, train: bool) -> Any:
        samples = self.bundle.splits[split]
        if self.fast is not None:
            return self.fast.dataset(samples, split, train, self.cache_mode)  # filled as it is read
        return ImageDataset(samples, self.train_tf if train else self.eval_tf)
