"""Which task builds which head: task name -> lazy "module:attr" of its head builder.

A task's package registers its builder here when imported (as it registers the task), so
rebuilding a saved `model/` folder (aether.models.encoder_net.rebuild_encoder_net) finds the head of the task
that model.json names without knowing any task, and without importing torch until it builds one.
A builder is called as `build(options, encoder, num_classes, preprocessing) -> nn.Module`, where
`options` is the task's `task_options` (a dict, as model.json holds it) and `encoder` the
aether.models.backbone.Encoder the head reads.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict

from aether.errors import AetherError

_BUILDERS: Dict[str, str] = {}


def register_head(task: str, target: str) -> None:
    _BUILDERS[task] = target


def head_builder(task: str) -> Callable[..., Any]:
    if task not in _BUILDERS:
        from aether import registry

        registry.load_plugins()  # a plugin's task registers its head when imported
    if task not in _BUILDERS:
        raise AetherError(f"task '{task}' has no head over an encoder (tasks with one: {', '.join(sorted(_BUILDERS)) or 'none'})")
    module, _, attr = _BUILDERS[task].partition(":")
    return getattr(importlib.import_module(module), attr)
