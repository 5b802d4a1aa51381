"""Deterministic, stratified train/val/test split."""

from __future__ import annotations

import random
from typing import Dict, List

from aether.data.index import Sample


def stratified_split(samples: List[Sample], val_fraction: float, test_fraction: float,
                     seed: int) -> Dict[str, List[Sample]]:
    """Split each class by the fractions (seeded, independent of file-system order).

    Every class keeps at least one training image; a class too small to give val/test an
    image gives them none (the caller reports such classes).
    """
    by_class: Dict[int, List[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.path):
        by_class.setdefault(s.label, []).append(s)
    out: Dict[str, List[Sample]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_class):
        items = by_class[label][:]
        random.Random(f"{seed}-{label}").shuffle(items)
        n = len(items)
        n_test = min(round(n * test_fraction), max(n - 1, 0))
        n_val = min(round(n * val_fraction), max(n - 1 - n_test, 0))
        out["test"] += items[:n_test]
        out["val"] += items[n_test:n_test + n_val]
        out["train"] += items[n_test + n_val:]
    return out
