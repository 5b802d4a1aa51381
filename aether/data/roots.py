"""Keeping a dataset inside its root: paths from a manifest or symlinks in a folder that lead out
of the dataset's folder are refused (reason `outside_root`) unless `data.allow_outside_root=true`.

Why: a dataset, manifest or archive from someone else must not make Aether read other files of
this machine (`/etc/shadow`, `~/.ssh/...`, `../../other_project`) into a report, a sample grid or
a trained model. The lexical check runs first and touches nothing; only a path that is inside the
root on paper is then resolved, to catch a symlink inside the root that points out of it. A
refused path is never stat'ed nor opened.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from aether.data.index import Skipped

OUTSIDE_ROOT = "outside_root"
OPT_IN = "set data.allow_outside_root=true to read files outside the dataset folder"


def outside_reason(path: str, real: str, root: str, action: str = "not read") -> str:
    """The `skipped` reason of a refused path (`real`: where it leads)."""
    via = " is" if real == path else f" leads to {real},"
    return f"{OUTSIDE_ROOT}: {path}{via} outside the dataset folder {root}; {action} ({OPT_IN})"


def outside_warning(skipped: List[Skipped]) -> List[str]:
    """One warning line for the paths refused as outside the dataset folder, if any."""
    refused = [s.path for s in skipped if s.reason.startswith(OUTSIDE_ROOT)]
    if not refused:
        return []
    return [f"{len(refused)} path(s) outside the dataset folder refused, never read ({OUTSIDE_ROOT}): "
            + ", ".join(refused[:3]) + (" ..." if len(refused) > 3 else "") + f"; {OPT_IN}"]


def inside(path: str, root: str) -> bool:
    """Whether `path` is `root` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class RootGuard:
    """Answers, for a path, why it may not be read (None: it may)."""

    def __init__(self, root: str, allow_outside: bool = False) -> None:
        self.allow_outside = allow_outside
        self.root = os.path.normpath(os.path.abspath(root))  # lexical: no file-system access
        self.real_root = os.path.realpath(self.root)
        self._real_dirs: Dict[str, str] = {}  # a folder's resolved path, once per folder
        self._answers: Dict[str, Optional[str]] = {}  # a path repeated on 10,000 rows is looked at once

    def refusal(self, path: str) -> Optional[str]:
        """`path` is absolute or relative to the current folder, as the adapter will read it."""
        if self.allow_outside:
            return None
        if path not in self._answers:
            self._answers[path] = self._refusal(path)
        return self._answers[path]

    def _refusal(self, path: str) -> Optional[str]:
        full = os.path.normpath(os.path.abspath(path))
        if not inside(full, self.root):
            return outside_reason(path, path, self.root)
        parent = os.path.dirname(full)
        real_parent = self._real_dirs.get(parent)
        if real_parent is None:
            real_parent = self._real_dirs[parent] = os.path.realpath(parent)
        if inside(real_parent, self.real_root):
            if not os.path.islink(full):  # lstat of a file inside the root: the only look at it
                return None
            real = os.path.realpath(full)
            if inside(real, self.real_root):
                return None
        else:
            real = os.path.join(real_parent, os.path.basename(full))
        return outside_reason(path, real, self.real_root)

    def resolves_outside(self, real: str) -> bool:
        """For a symlink already resolved to `real`: does it leave the root (and is that refused)?"""
        return not self.allow_outside and not inside(real, self.real_root)
