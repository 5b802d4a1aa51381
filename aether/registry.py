"""One extension mechanism: named parts in small registries, selected by name from YAML.

A part (dataset adapter, backbone provider, fine-tune strategy, optimizer, scheduler,
logger) is registered under a name together with the pydantic model of its options, so the
config validator can check `strategy: {name: lora, r: 8}` before anything heavy is imported.
The implementation is either the object itself or a lazy ``"module:attr"`` string - the
built-ins use strings so that `aether list` and config errors never import torch.

Third-party packages register through the ``aether.plugins`` entry-point group: each entry
point names a module whose import calls ``aether.registry.<kind>.register(...)``. Entry points
are loaded lazily, the first time a registry is listed or asked for a name it lacks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Type

from aether.suggest import did_you_mean

ENTRY_POINT_GROUP = "aether.plugins"


class UnknownPartError(KeyError):
    """A name that no registry entry answers to; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class Entry:
    name: str
    target: Any  # object, or "module:attr" resolved on first use
    config: Optional[Type[Any]] = None  # pydantic model of the part's options (besides `name`)
    help: str = ""
    origin: str = "aether"
    # facts about the part that light code needs without importing it, e.g. a task's
    # {"auto": "classification"}: which of recipe=auto's recommendation paths fits its data
    traits: Dict[str, Any] = field(default_factory=dict)
    _loaded: Any = field(default=None, repr=False)

    def load(self) -> Any:
        if self._loaded is None:
            if isinstance(self.target, str):
                module, _, attr = self.target.partition(":")
                self._loaded = getattr(importlib.import_module(module), attr)
            else:
                self._loaded = self.target
        return self._loaded


class Registry:
    def __init__(self, kind: str, plural: str) -> None:
        self.kind = kind
        self.plural = plural
        self._entries: Dict[str, Entry] = {}

    def register(
        self,
        name: str,
        target: Any = None,
        *,
        config: Optional[Type[Any]] = None,
        help: str = "",
        origin: Optional[str] = None,
        traits: Optional[Dict[str, Any]] = None,
    ) -> Any:
        """Register ``target`` under ``name``; without a target, works as a decorator."""

        load_builtins()  # a plugin registering first must not take a built-in's name unseen

        def _add(obj: Any) -> Any:
            if name in self._entries and self._entries[name].target is not obj:
                raise ValueError(f"{self.kind} '{name}' is already registered by {self._entries[name].origin}")
            self._entries[name] = Entry(name, obj, config, help, origin or _caller_origin(obj), dict(traits or {}))
            return obj

        return _add if target is None else _add(target)

    def get(self, name: str) -> Entry:
        load_builtins()
        if name not in self._entries:
            load_plugins()
        if name not in self._entries:
            raise UnknownPartError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; "
                f"choose one of: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        load_builtins()
        if name not in self._entries:
            load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        load_plugins()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return [e.name for e in self]


def _caller_origin(obj: Any) -> str:
    module = obj if isinstance(obj, str) else getattr(obj, "__module__", "") or ""
    return module.split(".")[0].split(":")[0] or "aether"


adapters = Registry("dataset adapter", "adapters")
backbones = Registry("backbone provider", "backbones")
strategies = Registry("strategy", "strategies")
optimizers = Registry("optimizer", "optimizers")
schedulers = Registry("scheduler", "schedulers")
loggers = Registry("logger", "loggers")
tasks = Registry("task", "tasks")

REGISTRIES = {r.plural: r for r in (adapters, backbones, strategies, optimizers, schedulers, loggers, tasks)}

_plugins_loaded = False
_builtins_loaded = False
plugin_errors: list[str] = []


def load_builtins() -> None:
    """Register the built-in parts (aether.catalog, lazy "module:attr" targets: nothing heavy),
    once, on first use of any registry. Imported here on demand rather than at the bottom of
    this module, so that the catalog (which imports this module) and the registry form no
    import cycle."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module("aether.catalog")


def load_plugins() -> None:
    """Import every module named in the ``aether.plugins`` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    load_builtins()
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()  # an entry point may name a `register()` function instead of a module
        except Exception as exc:  # a broken plugin must not take the CLI down; it is reported
            plugin_errors.append(f"plugin '{ep.name}' ({ep.value}) failed to load: {exc}")

