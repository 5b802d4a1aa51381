"""The one train/val/test split of every task: splits the dataset gives are kept, the rest is a
deterministic, seeded split by `data.val_fraction` / `data.test_fraction`.

Classification stratifies by class (each class split on its own, so a rare class is in every
split it can be); the item-based tasks (multilabel, segmentation, detection) have no single
label to stratify by and split their items as one group. Items need `.path` and `.split`
(the split the dataset named, or None).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from aether.data.index import SPLITS
from aether.errors import AetherError


def fraction_split(items: Sequence[Any], val_fraction: float, test_fraction: float, seed: int,
                   stratum: Optional[Callable[[Any], Any]] = None) -> Dict[str, List[Any]]:
    """Split each stratum by the fractions (seeded, independent of file-system order).

    Stratified (classification): every class keeps at least one training image; a class too
    small to give val/test an image gives them none (the caller reports such classes).
    One group (stratum=None): val gets at least one item, training at least one more.
    """
    groups: Dict[Any, List[Any]] = {}
    for it in sorted(items, key=lambda i: i.path):
        groups.setdefault(stratum(it) if stratum else "split", []).append(it)
    min_val = 0 if stratum else 1
    out: Dict[str, List[Any]] = {"train": [], "val": [], "test": []}
    for key in sorted(groups):
        group = groups[key][:]
        random.Random(f"{seed}-{key}").shuffle(group)
        n = len(group)
        n_test = min(round(n * test_fraction), max(n - 1 - min_val, 0))
        n_val = min(max(min_val, round(n * val_fraction)), max(n - 1 - n_test, 0))
        out["test"] += group[:n_test]
        out["val"] += group[n_test:n_test + n_val]
        out["train"] += group[n_test + n_val:]
    return out


def split(items: Sequence[Any], val_fraction: float, test_fraction: float, seed: int,
          stratum: Optional[Callable[[Any], Any]] = None) -> Tuple[Dict[str, List[Any]], List[str]]:
    """(splits, notes). Given train and val splits are used as they are; a missing val (and
    test) is carved from the given train split, or from the items without a split; a missing
    test reuses val, with a note. An empty split after that is an error naming the setting."""
    notes: List[str] = []
    given = {s: [i for i in items if i.split == s] for s in SPLITS}
    if given["train"] and given["val"]:
        splits = given
    else:
        pool = given["train"] or [i for i in items if i.split is None]
        splits = fraction_split(pool, val_fraction, 0.0 if given["test"] else test_fraction, seed, stratum)
        if given["test"]:
            splits["test"] = given["test"]
        if given["train"]:
            notes.append(f"no val split given: {len(splits['val'])} images carved from train")
    if not splits["test"] and splits["val"]:
        splits["test"] = list(splits["val"])
        notes.append("no test split given: test metrics are computed on the val split")
    for name in ("val", "test", "train"):
        if not splits[name]:
            raise AetherError(f"the {name} split is empty ({len(items)} usable images); add images or raise "
                              f"data.{name}_fraction" if name != "train" else
                              f"the train split is empty ({len(items)} usable images); add images or lower "
                              "data.val_fraction and data.test_fraction")
    return splits, notes
