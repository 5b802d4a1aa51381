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
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # a read-only place: each writer (check cache, image cache, archives) says what it cannot do
    return path


def unwritable_reason(path: Path) -> str | None:
    """Why nothing can be created at `path` (a folder that may not exist yet), or None: the first
    existing ancestor must be a writable folder. os.access answers for root too on a read-only
    file system (EROFS), where chmod-style checks say nothing."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists():
        if probe == probe.parent:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        import errno

        try:  # tell a read-only file system from a permission problem
            st = os.statvfs(probe)
            if st.f_flag & os.ST_RDONLY:
                return f"{probe} is on a read-only file system"
        except OSError:
            pass
        return f"{probe} is not writable ({os.strerror(errno.EACCES)})"
    return None


def require_writable(path: Path, what: str, fix: str) -> None:
    """Fail at once, in one line, when `path` cannot be written - before any data is read."""
    reason = unwritable_reason(path)
    if reason:
        from aether.errors import AetherError

        raise AetherError(f"{what} {path} cannot be created: {reason}; {fix}")


def check_output_dir(args: list) -> None:
    """The run (or sweep) folder a training command will write, checked before Hydra creates it
    and before any data is read: `hydra.run.dir=` / `hydra.sweep.dir=` when given, else the
    default `outputs/` (`multirun/` with -m) under the current folder."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.split("=", 1)[1].strip("\"'") for a in args if a.startswith(key + "=")]  # 'a b/run': Hydra unquotes
    folder = Path(given[-1]) if given else Path("multirun" if multirun else "outputs")
    require_writable(folder, "the output folder", f"choose a writable one with {key}=DIR")
