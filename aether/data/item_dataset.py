"""The torch Dataset the multilabel, segmentation and detection data layers share: a list of
`Item`s and a transform; each task's subclass turns one item into (input, target)."""

from __future__ import annotations

from typing import Any, List

from PIL import Image
from torch.utils.data import Dataset

from aether.data.items import Item
from aether.data.images import load_rgb


class ItemDataset(Dataset):
    def __init__(self, items: List[Item], transform: Any) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def image(item: Item) -> Image.Image:
        """The item's image as RGB (EXIF rotation applied); a failure names the file."""
        try:
            return load_rgb(item.path)
        except Exception as exc:
            raise RuntimeError(f"cannot read {item.path}: {exc}") from exc
