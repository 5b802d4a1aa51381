"""Multilabel data: the Dataset over the items of a multilabel manifest (aether.data.formats.multilabel:
a path column and a labels column with several labels per image)."""

from __future__ import annotations

import torch

from aether.data.item_dataset import ItemDataset


class MultilabelDataset(ItemDataset):
    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        it = self.items[i]
        return self.transform(self.image(it)), torch.tensor(it.target, dtype=torch.float32)
