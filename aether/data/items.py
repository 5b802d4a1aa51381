"""What the item-based tasks' data is (multilabel, segmentation, detection, plugins): items with a
task target, their index and bundle, and the `data` section of metrics.json. Building it (the
doctor's check of every image, the split) is aether.tasks.common.build_bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from aether.data.index import IndexView, Skipped



@dataclass
class Item:
    path: str  # the image
    target: Any  # multi-hot list, mask path, or {"boxes": [[x0, y0, x1, y1], ...], "labels": [...]}
    split: Optional[str] = None  # given by the dataset (folder or file name, split column)


@dataclass
class ItemIndex:
    source: str
    format: str
    classes: List[str]
    items: List[Item]
    skipped: List[Skipped] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # what the user should fix (duplicate rows ...)


@dataclass
class ItemBundle(IndexView):
    task: str
    index: ItemIndex
    splits: Dict[str, List[Item]]
    notes: List[str] = field(default_factory=list)
    class_counts: Dict[str, int] = field(default_factory=dict)
    counts_of: str = "images"  # what class_counts count: images (multilabel) or instances (detection)

    def summary(self) -> Dict[str, object]:
        return {
            "task": self.task,
            "source": self.index.source,
            "format": self.index.format,
            "classes": list(self.classes),
            "class_counts": dict(self.class_counts),
            "counts_of": self.counts_of,
            "num_train": len(self.splits["train"]),
            "num_val": len(self.splits["val"]),
            "num_test": len(self.splits["test"]),
            "presplit": any(i.split for i in self.index.items),
            "skipped": [s.as_dict() for s in self.skipped],
            "ignored": {},
            "notes": list(self.notes),
            "warnings": list(self.index.warnings),
        }
