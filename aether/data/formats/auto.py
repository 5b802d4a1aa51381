"""`data.format=auto`: which registered format a path holds, with evidence (`aether inspect`
prints it, `task=auto` follows it).

`detect(path)` asks every detectable format (a `priority` that is not None) in priority order
and returns a `Detection`: the chosen format and task, human-readable evidence lines, every
(format, task) pair that matched (`candidates`; more than one means the dataset is ambiguous)
and a `summary` of format-specific counts. Built-in order: coco > voc > yolo > masks > folder >
manifest; `fallback` formats (class folders) are only asked when no other format matched.
Anything else raises AetherError naming the path and the formats looked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aether.data.formats import declared, priority
from aether.data.formats.base import Format, Match
from aether.errors import AetherError


@dataclass
class Detection:
    """What `detect` found: the chosen format/task, why, and what else matched."""

    format: str
    task: str  # the task the annotations describe, e.g. "classification", "detection", "segmentation"
    evidence: List[str] = field(default_factory=list)
    candidates: List[Tuple[str, str]] = field(default_factory=list)
    summary: Dict[str, Any] = field(default_factory=dict)

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


@dataclass
class _Candidate:
    name: str  # the registered name (data.format=NAME)
    fmt: Any
    priority: int

    def match(self, path: Path, task_hint: Optional[str]) -> Optional[Match]:
        if isinstance(self.fmt, Format):
            return self.fmt.detect(path, task_hint)
        found = self.fmt.detect(path)  # an adapter from before formats had evidence: detect(path) -> bool
        if isinstance(found, Match):
            return found
        return Match(self.name, declared(self.fmt, "task"), [f"{self.name}: its detect() accepts {path.name}"]) if found else None


def detectable() -> List[_Candidate]:
    """The registered formats that detection asks, in priority order (then by name)."""
    from aether import registry

    found = []
    for entry in registry.adapters:
        try:
            fmt = entry.load()()
        except Exception as exc:  # a broken plugin's format must not stop detecting the others
            if entry.origin == "aether":
                raise
            error = f"dataset format '{entry.name}' ({entry.origin}) failed to load: {exc}"
            if error not in registry.plugin_errors:  # reported once by `aether list`
                registry.plugin_errors.append(error)
            continue
        p = priority(fmt)
        if p is not None:
            found.append(_Candidate(entry.name, fmt, p))
    return sorted(found, key=lambda c: (c.priority, c.name))


def looked_for(candidates: List[_Candidate]) -> str:
    return ", ".join(f"{c.name} ({declared(c.fmt, 'looks_like')})" if declared(c.fmt, "looks_like") else c.name
                     for c in candidates)


def detect(path: Path, *, task_hint: Optional[str] = None, fmt: Optional[str] = None) -> Detection:
    """Detect the dataset format and task at `path` (a folder, or a COCO/manifest file).

    `task_hint="segmentation"` lets a COCO file whose annotations all carry segmentations be
    reported as segmentation. `fmt` (`data.format`) reads the data as that format only: no
    guessing, no ambiguity; an error says why it does not fit and what the data looks like
    instead. Raises `AetherError` when nothing matches."""
    path = Path(path)
    if not path.exists():
        raise AetherError(f"{path}: no such file or folder")
    candidates = detectable()
    if fmt is not None:
        return _detect_as(path, fmt, candidates, task_hint)
    for fallback in (False, True):  # fallback formats (class folders) only when no other format matched
        asked = [c for c in candidates if bool(declared(c.fmt, "fallback")) == fallback]
        matches = [m for c in asked for m in [c.match(path, task_hint)] if m is not None]
        if matches:
            break
    if not matches:
        raise AetherError(f"{path}: not a dataset format Aether recognises; looked for {looked_for(candidates)}")
    best = matches[0]
    order = " > ".join(c.name for c in candidates)
    evidence = list(best.evidence)
    for other in matches[1:]:
        evidence.append(
            f"ambiguous: also looks like {other.format} ({other.task}): {other.evidence[0]}; "
            f"picked {best.format} by priority {order}; "
            f"set data.format={other.format} to choose it (or data.format={best.format} to silence this)"
        )
    return Detection(format=best.format, task=best.task, evidence=evidence,
                     candidates=[(m.format, m.task) for m in matches], summary=best.summary)


def _detect_as(path: Path, fmt: str, candidates: List[_Candidate], task_hint: Optional[str]) -> Detection:
    chosen = next((c for c in candidates if c.name == fmt), None)
    if chosen is None:
        raise AetherError(f"data.format={fmt}: the dataset doctor knows {', '.join(c.name for c in candidates)}")
    m = chosen.match(path, task_hint)
    if m is None:
        try:
            auto = detect(path, task_hint=task_hint)
            instead = f"it looks like {auto.format} ({auto.task}): {auto.evidence[0]}"
        except AetherError:
            instead = "no known format matches it"
        raise AetherError(f"data.format={fmt}: {path} is not a {fmt} dataset; {instead}. "
                          f"Formats: {looked_for(candidates)}")
    return Detection(format=m.format, task=m.task, evidence=[f"data.format={fmt} (set, not detected)", *m.evidence],
                     candidates=[(m.format, m.task)], summary=m.summary)
