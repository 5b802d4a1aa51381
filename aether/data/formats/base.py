"""The format interface, and the small helpers every format's `detect()` and `load()` share.

A format is a class registered in `aether.registry.adapters` (so a plugin adds one with
`registry.adapters.register(NAME, "module:Class")`). It declares:

* `task`: what its annotations train (`task=auto` follows it; with `strict`, another task is refused);
* `priority`: its place in detection (lower first); None: never detected, only chosen by
  `data.format=NAME` (the embedded digits, the multilabel manifest);
* `fallback`: only considered when no other format matched (class folders: every structured
  dataset also has folders of images);
* `strict`: `data.format=NAME` reads the data as NAME through `detect()` first (an error says what
  the data looks like instead), and a run with another task is refused;
* `annotated`: its data is more than one label per image (boxes, masks, label sets): the doctor
  examines its annotations and counts them, rather than images per class;
* `looks_like`: what `detect()` looks for, for the "looked for ..." line of an unknown dataset;
* `checks`: (summary key, text) pairs: the annotation problems `aether inspect` warns about.

and implements `detect(path, task_hint) -> Match | None` (the evidence the doctor prints) and
`load(path, options) -> index` (a DatasetIndex of samples, or a ItemIndex of items with targets);
`trained_task()` may refine the task from the data (a manifest with a `labels` column trains
multilabel).

Only stdlib and Pillow here (and the formats' modules): registering or detecting a format never
imports torch.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

from aether.data.roots import RootGuard


@dataclass
class Match:
    """What a format's `detect()` found: the task its annotations describe, why (one line each),
    and format-specific counts (the doctor's report `summary`)."""

    format: str
    task: str
    evidence: List[str]
    summary: Dict[str, Any] = field(default_factory=dict)


class Format:
    """Base class of the built-in formats (a plugin may subclass it, or duck-type it)."""

    name: ClassVar[str] = ""
    task: ClassVar[str] = "classification"
    priority: ClassVar[Optional[int]] = None
    fallback: ClassVar[bool] = False
    strict: ClassVar[bool] = True
    annotated: ClassVar[bool] = False
    looks_like: ClassVar[str] = ""
    checks: ClassVar[Tuple[Tuple[str, str], ...]] = ()

    def detect(self, path: Path, task_hint: Optional[str] = None) -> Optional[Match]:
        return None

    def load(self, path: Path, options: Dict[str, Any]) -> Any:
        raise NotImplementedError

    def describe(self, index: Any) -> Match:
        """What `aether inspect data.format=NAME` reports of a format that is never detected (it is
        only read when named): the index it loaded, its images and classes."""
        items = getattr(index, "items", None) or getattr(index, "samples", [])
        return Match(self.name, self.task, [f"data.format={self.name} (set, not detected): {len(items)} images, "
                                            f"{len(index.classes)} classes"],
                     summary={"images": len(items), "classes": list(index.classes), **self.counts(index)})

    def counts(self, index: Any) -> Dict[str, Any]:
        """Per-class counts of a loaded index for the doctor's report (`class_counts`); none by default."""
        return {}

    def trained_task(self, path: Path, options: Dict[str, Any], found: Any) -> Tuple[str, str]:
        """(task, why) for `task=auto`, given what detection `found` (a Match or Detection)."""
        return found.task, f"{found.format}: {found.evidence[0]}"

    def annotation_warnings(self, summary: Dict[str, Any]) -> List[str]:
        return [f"{summary[key]} {text}" for key, text in self.checks
                if isinstance(summary.get(key), (int, float)) and summary.get(key)]


# ----------------------------------------------------------------------------------- helpers


def is_image(p: Path) -> bool:
    from aether.data.images import IMAGE_EXTENSIONS  # imports Pillow: only once a format looks at files

    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def images_under(d: Path) -> List[Path]:
    return sorted(p for p in d.rglob("*") if is_image(p) and not p.name.startswith("."))


def spread(values: Sequence[float]) -> Dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def load_json(p: Path) -> Optional[Any]:
    """The parsed file, or None when it is unreadable or not JSON (detection then looks elsewhere)."""
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def root_guard(root: Path, options: Dict[str, Any]) -> RootGuard:
    """`options["allow_outside_root"]` is data.allow_outside_root, handed over by the caller."""
    return RootGuard(str(root), bool(options.get("allow_outside_root", False)))
