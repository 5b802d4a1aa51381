"""What the multilabel, segmentation and detection data layers share: items with a task target,
the doctor's check of every image, the split, and the `data` section of metrics.json."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from aether.config.schema import DataCfg
from aether.data.index import Skipped
from aether.data.split import split
from aether.errors import AetherError

log = logging.getLogger("aether")


@dataclass
class Item:
    path: str  # the image
    target: Any  # multi-hot list, mask path, or {"boxes": [[x0, y0, x1, y1], ...], "labels": [...]}
    split: Optional[str] = None  # given by the dataset (folder or file name, split column)


@dataclass
class DenseIndex:
    source: str
    format: str
    classes: List[str]
    items: List[Item]
    skipped: List[Skipped] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # what the user should fix (duplicate rows ...)


@dataclass
class DenseBundle:
    task: str
    index: DenseIndex
    splits: Dict[str, List[Item]]
    notes: List[str] = field(default_factory=list)
    class_counts: Dict[str, int] = field(default_factory=dict)
    counts_of: str = "images"  # what class_counts count: images (multilabel) or instances (detection)

    @property
    def classes(self) -> List[str]:
        return self.index.classes

    @property
    def skipped(self) -> List[Skipped]:
        return self.index.skipped

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


def check_images(index: DenseIndex, cfg: DataCfg) -> None:
    """The dataset doctor's check of every image (and mask): a file that cannot be used is moved
    to `index.skipped` with its reason, never silently dropped."""
    from aether.doctor.checks import check_files
    from aether.paths import cache_dir

    paths = sorted({i.path for i in index.items} | {i.target for i in index.items if isinstance(i.target, str)})
    bad: Dict[str, str] = {}
    for rep in check_files(paths, workers=1 if len(paths) < 2000 else None, cache_path=cache_dir() / "doctor.sqlite",
                           max_pixels=cfg.max_image_pixels, min_side=cfg.min_image_side):
        if not rep.ok:
            bad[rep.path] = f"{rep.issues[0] if rep.issues else 'unusable'}: {rep.detail}"
    keep = []
    for it in index.items:
        reason = bad.get(it.path) or (bad.get(it.target) if isinstance(it.target, str) else None)
        if reason:
            index.skipped.append(Skipped(it.path, reason if it.path in bad else f"its mask {it.target}: {reason}"))
        else:
            keep.append(it)
    index.items = keep
    for w in index.warnings:
        log.warning("data: %s", w)
    for s in index.skipped[:10]:
        log.warning("skipping %s: %s", s.path, s.reason)


def build_bundle(task: str, index: DenseIndex, cfg: DataCfg, seed: int, class_counts: Dict[str, int],
                 counts_of: str = "images") -> DenseBundle:
    check_images(index, cfg)
    if not index.items:
        raise AetherError(f"data.path={cfg.path}: no usable {task} samples ({len(index.skipped)} skipped)")
    splits, notes = split(index.items, cfg.val_fraction, cfg.test_fraction, seed)  # one group, no strata
    notes = index.notes + notes
    for n in notes:
        log.info("data: %s", n)
    log.info("data: %s (%s, %s) - %d classes, train/val/test %d/%d/%d, %d skipped", index.source, index.format, task,
             len(index.classes), len(splits["train"]), len(splits["val"]), len(splits["test"]), len(index.skipped))
    return DenseBundle(task, index, splits, notes, class_counts, counts_of)
