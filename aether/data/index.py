"""What an adapter returns: the samples of a dataset, its classes, and what it left out (and why)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    path: str
    label: int
    split: Optional[str] = None  # set when the dataset comes pre-split


@dataclass
class Skipped:
    path: str
    reason: str

    def as_dict(self) -> Dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class DatasetIndex:
    source: str  # what the user pointed at
    format: str  # the adapter that read it
    classes: List[str]
    samples: List[Sample]
    skipped: List[Skipped] = field(default_factory=list)
    ignored: Dict[str, int] = field(default_factory=dict)  # counted, not images: hidden, non_image
    notes: List[str] = field(default_factory=list)  # things worth telling the user
    warnings: List[str] = field(default_factory=list)  # what the user should fix (duplicate rows, loops ...)

    @property
    def presplit(self) -> bool:
        return any(s.split is not None for s in self.samples)

    def class_counts(self) -> Dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for s in self.samples:
            counts[self.classes[s.label]] += 1
        return counts


class IndexView:
    """What every task's data bundle shows of its index (a DataBundle, a ItemBundle): the class
    names and the files left out with their reasons."""

    index: Any

    @property
    def classes(self) -> List[str]:
        return self.index.classes

    @property
    def skipped(self) -> List[Skipped]:
        return self.index.skipped
