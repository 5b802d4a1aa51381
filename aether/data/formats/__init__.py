"""Dataset formats: one module per format, each owning its detection (with evidence), its
loading and its annotation checks, and naming the task it trains (aether.data.formats.base).

Every format is an entry of `aether.registry.adapters` (`data.format=NAME`); the built-ins are
registered in aether.catalog, a plugin registers its own from its `aether.plugins` entry point:

    from aether import registry
    registry.adapters.register("labels_txt", "my_plugin.labels:LabelsTxt", config=NoOptions, help="...")

`aether.data.formats.auto.detect(path)` tries every registered format in priority order
(`data.format=auto`); the dataset doctor (aether.doctor) calls it, never the reverse.

An adapter registered before formats had these attributes (a class with `detect(path) -> bool`
and `load(path, options)`) still works: it trains classification, is tried after the built-ins,
and `data.format=NAME` reads the data with it unchecked, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from aether.data.formats.base import Format, Match

# what an adapter without the Format attributes is taken to declare (see the module docstring)
PLUGIN_PRIORITY = 100  # after the built-ins, so a broad detect() cannot take over their datasets
_UNDECLARED: Dict[str, Any] = {"task": "classification", "strict": False, "fallback": False, "looks_like": "",
                               "checks": (), "annotated": False}


def get(name: str) -> Any:
    """The format registered as `name` (an instance); UnknownPartError lists the known names."""
    from aether import registry

    return registry.adapters.get(name).load()()


def declared(fmt: Any, key: str) -> Any:
    """A format's class attribute `key` (task, strict, fallback, looks_like, checks), with the
    defaults of an adapter that does not declare it."""
    return getattr(fmt, key, _UNDECLARED[key])


def priority(fmt: Any) -> Optional[int]:
    if hasattr(fmt, "priority"):
        return fmt.priority
    return PLUGIN_PRIORITY if callable(getattr(fmt, "detect", None)) else None


def task_of(name: str) -> str:
    """The task that `data.format=NAME` trains."""
    return declared(get(name), "task")


def is_annotated(name: str) -> bool:
    """Whether NAME's data is more than one label per image (boxes, masks, label sets)."""
    return bool(declared(get(name), "annotated"))


def is_strict(name: str) -> bool:
    """Whether `data.format=NAME` refuses a run of another task (its annotations cannot train it)."""
    return bool(declared(get(name), "strict"))


def detects_when_named(name: str) -> bool:
    """Whether `data.format=NAME` is read through the format's detect() first (the dataset
    doctor's check: an error says why the data is not NAME and what it looks like instead)."""
    fmt = get(name)
    return bool(declared(fmt, "strict")) and priority(fmt) is not None


def trained_task(name: str, path: Path, options: Dict[str, Any], found: Any) -> Tuple[str, str]:
    """(task, why) for `task=auto` once detection `found` the data to be `name`."""
    fmt = get(name)
    if isinstance(fmt, Format):
        return fmt.trained_task(path, options, found)
    return Format.trained_task(fmt, path, options, found)


def annotation_warnings(name: str, summary: Dict[str, Any]) -> List[str]:
    """The warning lines of a detected dataset's annotation checks (`aether inspect`)."""
    fmt = get(name)
    if isinstance(fmt, Format):
        return fmt.annotation_warnings(summary)
    return Format.annotation_warnings(fmt, summary) if hasattr(fmt, "checks") else []


class FormatsOf(Mapping):
    """name -> format class of every registered format whose annotations train `task` (a
    plugin's too), looked up at each use: what the tasks' data code selects a loader from."""

    def __init__(self, task: str) -> None:
        self.task = task

    def _formats(self) -> Dict[str, Any]:
        from aether import registry

        return {e.name: e.load() for e in registry.adapters if declared(e.load(), "task") == self.task}

    def __getitem__(self, name: str) -> Any:
        return self._formats()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._formats())

    def __len__(self) -> int:
        return len(self._formats())


__all__ = ["Format", "Match", "get", "declared", "priority", "task_of", "is_strict", "detects_when_named",
           "trained_task", "annotation_warnings", "FormatsOf"]
