"""Object detection data: a box-aware Dataset (torchvision v2 transforms move the boxes with
their image) over the items of any detection format.

The formats (aether.data.formats.coco, .yolo, .voc, or a plugin's) all load to the same targets,
`{"boxes": [[x0, y0, x1, y1], ...] in pixels, "labels": [class index, ...]}` per image
(aether.data.formats.boxes).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

import torch

from aether.config.schema import AugmentCfg
from aether.data.items import ItemIndex
from aether.data.item_dataset import ItemDataset

def instance_counts(index: ItemIndex) -> Dict[str, int]:
    c = Counter(lab for it in index.items for lab in it.target["labels"])
    return {name: c.get(i, 0) for i, name in enumerate(index.classes)}


def box_transforms(size: int, aug: Optional[AugmentCfg]) -> Any:
    """Resize to size x size (+ scale-jittered crop, flips, colour jitter when training); boxes follow
    their image.
    Normalisation happens inside the torchvision detector (its `image_mean` / `image_std`)."""
    from torchvision.transforms import v2

    from aether.data.transforms import joint_augment

    # scale jitter that moves the boxes with the crop (flips alone were the only augmentation: a
    # few dozen images are memorised in a few epochs); boxes cut to nothing are dropped below
    steps: List[Any] = [] if aug is None else joint_augment(size, aug, crop=tuple(aug.scale) != (1.0, 1.0))
    steps += [v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return v2.Compose(steps)


class DetectionDataset(ItemDataset):
    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        import numpy as np
        from torchvision import tv_tensors

        it = self.items[i]
        img = self.image(it)
        image = tv_tensors.Image(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1))
        boxes = tv_tensors.BoundingBoxes(torch.tensor(it.target["boxes"], dtype=torch.float32).reshape(-1, 4),
                                         format="XYXY", canvas_size=(img.height, img.width))
        target = {"boxes": boxes, "labels": torch.tensor(it.target["labels"], dtype=torch.int64)}
        x, t = self.transform(image, target)
        return x.as_subclass(torch.Tensor), {"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]}


def collate(batch: List[Any]) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]:
    return [b[0] for b in batch], [b[1] for b in batch]
