"""Listing the images of a folder tree: each folder once, symlinks followed only where safe.

`os.walk(followlinks=True)` follows `cat/again -> .` forever (two such loops multiply the paths
exponentially: `inspect` hung, memory growing) and silently ignores folders it cannot read. Here:

* every folder is identified by (st_dev, st_ino) and entered once; a symlink to a folder the walk
  has entered or will enter is not followed and is named in a warning: `symlink_loop` when it
  points at its own folder or a parent, `duplicate_folder` otherwise (its images are counted once,
  under their real folder);
* a symlinked folder inside the dataset is never followed (the walk reaches its target through
  the real folders anyway); one leading outside the dataset folder is refused (`outside_root`,
  listed in `skipped`) unless `data.allow_outside_root=true`, and then followed, still once;
* a symlinked image leading outside the dataset folder is refused the same way;
* a folder that cannot be listed is listed in `skipped` (`unreadable_folder`), not dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from aether.data.images import is_image_name
from aether.data.index import Skipped
from aether.data.roots import RootGuard, inside, outside_reason


@dataclass
class Walk:
    images: List[Path] = field(default_factory=list)
    ignored: Dict[str, int] = field(default_factory=lambda: {"hidden": 0, "non_image": 0})
    skipped: List[Skipped] = field(default_factory=list)  # what was refused or unreadable
    warnings: List[str] = field(default_factory=list)  # loops and aliases: nothing lost, worth saying


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def walk_images(root: Path, guard: Optional[RootGuard] = None) -> Walk:
    """Every image file below `root` in a stable order (a folder's files, then its sub-folders,
    both sorted by name). `guard` is the dataset's root (default: `root` itself)."""
    guard = guard or RootGuard(str(root))
    out = Walk()
    seen: Set[Tuple[int, int]] = set()
    real = os.path.realpath(root)
    if guard.resolves_outside(real):  # e.g. a pre-split `train` folder that is a symlink out of the dataset
        out.skipped.append(Skipped(str(root), outside_reason(str(root), real, guard.real_root)))
        return out
    try:
        st = os.stat(root)
    except OSError as exc:
        out.skipped.append(Skipped(str(root), f"unreadable_folder: {exc.strerror}"))
        return out
    seen.add((st.st_dev, st.st_ino))
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            out.skipped.append(Skipped(folder, f"unreadable_folder: {exc.strerror}"))
            continue
        subdirs = []
        for e in entries:
            if _hidden(e.name):
                out.ignored["hidden"] += 1
            elif _is_dir(e):
                if _enter(e, guard, seen, out):
                    subdirs.append(e.path)
            elif not is_image_name(e.name):
                out.ignored["non_image"] += 1
            elif e.is_symlink() and guard.resolves_outside(os.path.realpath(e.path)):
                out.skipped.append(Skipped(e.path, outside_reason(e.path, os.path.realpath(e.path), guard.real_root)))
            else:
                out.images.append(Path(e.path))
        stack.extend(reversed(subdirs))
    return out


def _is_dir(e: os.DirEntry) -> bool:  # type: ignore[type-arg]
    try:
        return e.is_dir()  # follows a symlink; a loop of links ("a -> b -> a") is not a folder
    except OSError:
        return False


def _enter(e: os.DirEntry, guard: RootGuard, seen: Set[Tuple[int, int]], out: Walk) -> bool:  # type: ignore[type-arg]
    """Whether the walk goes into folder `e`; says why when it does not."""
    link = e.is_symlink()
    if link:
        real = os.path.realpath(e.path)
        if inside(real, guard.real_root) or _ancestor(real, e.path):
            kind = "symlink_loop" if _ancestor(real, e.path) else "duplicate_folder"
            what = "its own folder or a parent" if kind == "symlink_loop" else "a folder already in the dataset"
            out.warnings.append(f"{kind}: {e.path} -> {os.readlink(e.path)} links to {what}; not followed "
                                "(its images are counted once)")
            return False
        if guard.resolves_outside(real):
            out.skipped.append(Skipped(e.path, outside_reason(e.path, real, guard.real_root, "not followed")))
            return False
    try:
        st = e.stat()
    except OSError as exc:
        out.skipped.append(Skipped(e.path, f"unreadable_folder: {exc.strerror}"))
        return False
    key = (st.st_dev, st.st_ino)
    if key in seen:  # a bind mount, or a second link to a folder outside the root already walked
        kind = "symlink_loop" if link and _ancestor(os.path.realpath(e.path), e.path) else "duplicate_folder"
        out.warnings.append(f"{kind}: {e.path} is a folder already walked; not entered again")
        return False
    seen.add(key)
    return True


def _ancestor(real: str, link_path: str) -> bool:
    """Whether the resolved target `real` is the link's own folder or one of its parents."""
    return inside(os.path.realpath(os.path.dirname(link_path)), real)
