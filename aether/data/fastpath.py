"""The fast data path as one object the DataModule holds: which cache each split reads, the
random augmentation that runs after it, and the device-side normalisation (data.cache != off)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

from aether.config.schema import DataCfg
from aether.data import cache as cache_mod
from aether.data.index import Sample
from aether.data.prefetch import DeviceNormalize
from aether.data.transforms import eval_transform, train_transform


def build_workers(n_images: int, num_workers: Union[int, str]) -> int:
    """Decoding processes for building a cache: the loader's setting when given, else the
    machine's cores once there is enough work to pay for starting them."""
    if num_workers != "auto":
        return int(num_workers)
    from aether.data.datamodule import usable_cpus

    return usable_cpus() if n_images >= 500 else 0


class FastPath:
    def __init__(self, pre: Dict[str, Any], cfg: DataCfg) -> None:
        from torchvision.transforms import Compose

        self.eval_steps: List[Callable] = cache_mod.pil_steps(eval_transform(pre))
        geometry, colour, final = train_transform(pre, cfg.augment, separate=True)
        self.train_pil: Callable = Compose([*geometry.transforms, *colour.transforms])
        erasing = [t for t in final.transforms if type(t).__name__ == "RandomErasing"]
        self.side = cache_mod.train_side(pre)
        self.device = DeviceNormalize(pre["mean"], pre["std"], erasing[0] if erasing else None)
        self._caches: Dict[Tuple[str, bool], cache_mod.ImageCache] = {}

    def cache(self, samples: Sequence[Sample], train: bool, mode: str,
              num_workers: Union[int, str]) -> cache_mod.ImageCache:
        """The cache for these samples: built at most once per process (and once per machine on disk)."""
        kind = "train" if train else "eval"
        memo = (cache_mod.cache_key(samples, kind, self.eval_steps, self.side), train)
        if memo not in self._caches:
            self._caches[memo] = cache_mod.build(samples, kind, self.eval_steps, self.side, mode,
                                                 build_workers(len(samples), num_workers))
        return self._caches[memo]

    def dataset(self, samples: Sequence[Sample], train: bool, mode: str, num_workers: Union[int, str]) -> Any:
        c = self.cache(samples, train, mode, num_workers)
        return cache_mod.CachedDataset(c, [s.label for s in samples], self.train_pil if train else None)
