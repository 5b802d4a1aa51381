"""Aether: declarative fine-tuning of computer-vision models.

This module stays import-light on purpose: the CLI answers `--help`, `list` and config
errors without importing torch, Lightning or timm, and `import aether` in a notebook is as
fast. The Python API (aether.api) is reached through the names below, loaded on first use:

    run = aether.train(recipe="quickstart", data="./imgs", overrides=["trainer.max_epochs=5"])
    aether.load(run.dir).predict(["new.png"])
"""

from aether.about import __version__
from aether.errors import AetherError  # stdlib only: catching it imports nothing heavy

# the Python API: train(...) -> Run, load(RUN) -> Model; imported when first used
_API = ("train", "load", "Run", "Model")

__all__ = ["AetherError", "__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        from aether import api

        return getattr(api, name)
    if name == "command_started":  # kept readable here; aether.about holds it (see there why)
        from aether import about

        return about.command_started
    raise AttributeError(f"module 'aether' has no attribute {name!r}")


def __dir__() -> "list[str]":
    return sorted({*globals(), *_API, "command_started"})
