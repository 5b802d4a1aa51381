"""Semantic segmentation data: joint image+mask transforms and the Dataset over the items of the
masks format (aether.data.formats.masks: `images/` + `masks/` folders paired by file stem, masks
of class ids)."""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
import torch

from aether.config.schema import AugmentCfg
from aether.data.item_dataset import ItemDataset


def mask_transforms(size: int, aug: Optional[AugmentCfg], mean: List[float], std: List[float]) -> Any:
    """Joint image+mask transforms (torchvision v2: the mask is resized with nearest neighbours and
    flipped/cropped with its image)."""
    from torchvision.transforms import v2

    from aether.data.transforms import joint_augment

    steps: List[Any] = [v2.Resize((size, size), antialias=True)] if aug is None else joint_augment(size, aug)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


class SegmentationDataset(ItemDataset):
    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        from PIL import Image
        from torchvision import tv_tensors

        it = self.items[i]
        img = self.image(it)
        try:
            with Image.open(it.target) as m:
                mask = np.array(m, dtype=np.int64)
        except Exception as exc:
            raise RuntimeError(f"cannot read the mask {it.target} of {it.path}: {exc}") from exc
        image = tv_tensors.Image(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1))
        x, y = self.transform(image, tv_tensors.Mask(torch.from_numpy(mask)))
        return x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor).long()
