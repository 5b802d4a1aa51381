"""Semantic segmentation data: `images/` + `masks/` folders (also `labels/` or `annotations/`,
and one split level down: `train/images` + `train/masks`), paired by file stem. A mask is a
single-channel image whose pixel values are class ids (0 = the first class, usually background);
`task_options.ignore_index` (255) marks pixels that are neither trained nor scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from aether.config.schema import AugmentCfg
from aether.data.adapters import SPLIT_ALIASES
from aether.data.dense import DenseIndex, Item
from aether.data.item_dataset import ItemDataset
from aether.data.index import Skipped
from aether.errors import AetherError

SINGLE_CHANNEL = ("1", "L", "P", "I", "I;16")


class MaskFolderAdapter:
    name = "masks"

    @staticmethod
    def detect(path: Path) -> bool:
        return False  # the dataset doctor detects it (aether.doctor.detect); task=auto follows

    def load(self, path: Path, options: Dict[str, Any], ignore_index: Optional[int] = 255,
             class_names: Optional[List[str]] = None) -> DenseIndex:
        from PIL import Image

        from aether.doctor.detect import _images_under, _mask_roots

        roots = _mask_roots(path) if path.is_dir() else []
        if not roots:
            raise AetherError(f"data.path={path}: expected images/ and masks/ (or labels/, annotations/) folders, "
                              "also one split level down (train/images + train/masks)")
        items: List[Item] = []
        skipped: List[Skipped] = []
        values: set = set()
        any_ignored = False
        for img_dir, mask_dir in roots:
            split = SPLIT_ALIASES.get(img_dir.parent.name.lower()) if img_dir.parent != path else None
            imgs = {p.stem: p for p in _images_under(img_dir)}
            masks = {p.stem: p for p in _images_under(mask_dir)}
            skipped += [Skipped(str(imgs[s]), f"no mask with the same name in {mask_dir}") for s in sorted(imgs.keys() - masks.keys())]
            for stem in sorted(imgs.keys() & masks.keys()):
                try:
                    with Image.open(masks[stem]) as m:
                        if m.mode not in SINGLE_CHANNEL:
                            skipped.append(Skipped(str(imgs[stem]), f"its mask {masks[stem]} is {m.mode}; expected a "
                                                   "single-channel image of class ids"))
                            continue
                        with Image.open(imgs[stem]) as im:
                            if im.size != m.size:
                                skipped.append(Skipped(str(imgs[stem]), f"its mask {masks[stem]} is {m.size[0]}x{m.size[1]}, "
                                                       f"the image {im.size[0]}x{im.size[1]}"))
                                continue
                        found = {int(v) for _, v in (m.getcolors(maxcolors=1 << 16) or [])}
                except OSError as exc:
                    skipped.append(Skipped(str(imgs[stem]), f"its mask {masks[stem]} cannot be read ({exc})"))
                    continue
                values |= found - {ignore_index}
                any_ignored = any_ignored or ignore_index in found
                items.append(Item(str(imgs[stem]), str(masks[stem]), split))
        if ignore_index == 255 and items and values <= {0} and any_ignored:
            raise AetherError(f"data.path={path}: the masks hold only the values 0 and 255, and 255 is "
                              "task_options.ignore_index, so no pixel would train as foreground (black/white masks?); "
                              "save the masks with class ids (0 = background, 1, 2, ...) or set task_options.ignore_index "
                              "to a value the masks do not use")
        k = max(values, default=0) + 1
        if class_names is not None:
            if len(class_names) < k:
                raise AetherError(f"task_options.classes names {len(class_names)} classes but the masks hold the value "
                                  f"{k - 1}; expected values 0..{len(class_names) - 1} (or {ignore_index} = ignore)")
            classes = list(class_names)
        else:
            classes = [f"class_{i}" for i in range(max(k, 2))]
        notes = [f"mask values found: {sorted(values)} -> {len(classes)} classes"
                 + (f"; {ignore_index} = ignored" if ignore_index is not None else "")]
        return DenseIndex(str(path), self.name, classes, items, skipped, notes)


def mask_transforms(size: int, aug: Optional[AugmentCfg], mean: List[float], std: List[float]) -> Any:
    """Joint image+mask transforms (torchvision v2: the mask is resized with nearest neighbours and
    flipped/cropped with its image)."""
    from torchvision.transforms import v2

    steps: List[Any] = []
    if aug is None:
        steps.append(v2.Resize((size, size), antialias=True))
    else:
        steps.append(v2.RandomResizedCrop((size, size), scale=tuple(aug.scale), ratio=tuple(aug.ratio), antialias=True))
        if aug.hflip:
            steps.append(v2.RandomHorizontalFlip(aug.hflip))
        if aug.vflip:
            steps.append(v2.RandomVerticalFlip(aug.vflip))
        if aug.color_jitter:
            steps.append(v2.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter))
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
