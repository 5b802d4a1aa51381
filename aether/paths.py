"""Where Aether's built-in config and recipes live, and where it caches things.

In a source checkout (editable install) `conf/` and `recipes/` sit at the repository's top
level, next to the `aether/` package; a wheel carries them as `aether/_builtin/...`.
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _builtin(name: str) -> Path:
    for candidate in (_PKG / "_builtin" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"Aether's built-in '{name}/' directory is missing (looked in {_PKG / '_builtin' / name} "
        f"and {_PKG.parent / name}); the installation is incomplete - reinstall aether."
    )


def builtin_conf_dir() -> Path:
    return _builtin("conf")


def builtin_recipes_dir() -> Path:
    return _builtin("recipes")


def cache_dir() -> Path:
    """Aether's cache (embedded datasets, inspection results): $AETHER_CACHE or ~/.cache/aether."""
    root = os.environ.get("AETHER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aether"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
