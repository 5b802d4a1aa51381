"""Built-in dataset adapters. Each answers `detect(path)` and `load(path, options) -> DatasetIndex`.

Adapters only index files and labels; decoding checks, splitting and loading are shared
(aether.data.images, aether.data.split, aether.data.datamodule).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from aether.data.index import SPLITS, DatasetIndex, Sample, Skipped
from aether.data.manifests import SPLIT_ALIASES, check_columns, parse_rows, read_rows, settle
from aether.data.roots import RootGuard, outside_warning
from aether.data.walk import walk_images
from aether.errors import AetherError

__all__ = ["SPLIT_ALIASES", "walk_images", "FolderAdapter", "ManifestAdapter", "DigitsAdapter"]

def guard_for(root: Path, options: Dict) -> RootGuard:
    """`options["allow_outside_root"]` is data.allow_outside_root, handed over by the caller."""
    return RootGuard(str(root), bool(options.get("allow_outside_root", False)))


class FolderAdapter:
    """Class sub-folders: `root/<class>/img.jpg`; nested trees give labels like `animals/cat`;
    `root/train|val|test/<class>/...` is respected as a pre-made split. Each folder is read once
    and symlinks out of `root` are refused (aether.data.walk)."""

    name = "folder"

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_dir()

    def load(self, path: Path, options: Dict) -> DatasetIndex:
        try:
            split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in sorted(path.iterdir())
                          if d.is_dir() and d.name.lower() in SPLIT_ALIASES}
        except OSError as exc:
            raise AetherError(f"data.path={path}: cannot list the folder ({exc.strerror})") from None
        presplit = "train" in split_dirs
        roots = [(split_dirs[s], s) for s in SPLITS if s in split_dirs] if presplit else [(path, None)]
        guard = guard_for(path, options)
        entries: List[Tuple[Path, str, Optional[str]]] = []
        skipped: List[Skipped] = []
        warnings: List[str] = []
        ignored: Dict[str, int] = {"hidden": 0, "non_image": 0}
        for root, split in roots:
            walk = walk_images(root, guard)
            for k, v in walk.ignored.items():
                ignored[k] += v
            skipped += walk.skipped
            warnings += walk.warnings
            for img in walk.images:
                rel_dir = img.parent.relative_to(root)
                if str(rel_dir) == ".":
                    skipped.append(Skipped(str(img), "not inside a class folder (cannot tell its label)"))
                    continue
                entries.append((img, rel_dir.as_posix(), split))
        classes = sorted({label for _, label, _ in entries})
        lookup = {c: i for i, c in enumerate(classes)}
        samples = [Sample(str(p), lookup[label], split) for p, label, split in entries]
        notes = []
        if presplit:
            notes.append(f"pre-split folders found ({', '.join(s for s in SPLITS if s in split_dirs)}): used as given")
        return DatasetIndex(str(path), self.name, classes, samples, skipped, ignored, notes,
                            warnings + outside_warning(skipped))


def single_label(label_col: str) -> Callable[[Dict[str, Any], str], Optional[str]]:
    def label_of(row: Dict[str, Any], where: str) -> Optional[str]:
        value = row.get(label_col)
        if isinstance(value, (list, dict)):
            raise AetherError(f"{where}: '{label_col}' is {'a list' if isinstance(value, list) else 'an object'}; "
                              "a single-label manifest needs one label per row (several labels per image train "
                              "with task=multilabel)")
        return str(value if value is not None else "").strip() or None
    return label_of


class ManifestAdapter:
    """A CSV (header row) or JSONL file with a path column and a label column; an optional
    `split` column (train/val/test) is respected. Paths are relative to the manifest's folder
    (or data.options.root) and must stay inside it; repeated rows are settled by
    aether.data.manifests (duplicates kept once, conflicting labels left out, never guessed)."""

    name = "manifest"

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".tsv")

    def load(self, path: Path, options: Dict) -> DatasetIndex:
        path_col = options.get("path_column", "path")
        label_col = options.get("label_column", "label")
        root = Path(options.get("root") or path.parent)
        rows = read_rows(path)
        hint = "set data.options.path_column / label_column to match"
        if rows and "labels" in rows[0][1]:
            hint += "; a 'labels' column with several labels per image trains with task=multilabel"
        check_columns(path, rows, [path_col, label_col], hint)
        parsed, skipped = parse_rows(path, rows, root, path_col, guard_for(root, options), single_label(label_col))
        kept, repeats, warnings = settle(path, parsed)
        skipped += repeats
        classes = sorted({str(r.label) for r in kept})
        lookup = {c: i for i, c in enumerate(classes)}
        samples = [Sample(r.path, lookup[str(r.label)], r.split) for r in kept]
        if samples and any(s.split for s in samples) and not all(s.split for s in samples):
            raise AetherError(f"{path}: the 'split' column is filled for some rows only; fill it for all or none")
        return DatasetIndex(str(path), self.name, classes, samples, skipped, {}, [],
                            warnings + outside_warning(skipped))


class DigitsAdapter:
    """The embedded default: scikit-learn's 1,797 real 8x8 handwritten digits, written once as
    PNG files into Aether's cache and then read as a class-folder dataset."""

    name = "digits"
    VERSION = "v1"

    @staticmethod
    def detect(path: Path) -> bool:
        return False  # chosen when data.path is empty, or by data.format=digits

    def load(self, path: Optional[Path], options: Dict) -> DatasetIndex:
        folder = materialize_digits()
        index = FolderAdapter().load(folder, {})
        index.format = self.name
        index.notes.append(f"embedded sample: scikit-learn digits, materialised in {folder}")
        return index


def materialize_digits() -> Path:
    from aether.paths import cache_dir

    target = cache_dir() / "datasets" / f"digits-{DigitsAdapter.VERSION}"
    if (target / ".complete").exists():
        return target
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if target.exists():  # left half-written by an interrupted run
        import shutil

        shutil.rmtree(target, ignore_errors=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    bunch = load_digits()
    for i, (img, label) in enumerate(zip(bunch.images, bunch.target)):
        d = tmp / str(int(label))
        d.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(img * (255.0 / 16.0), 0, 255).astype("uint8")  # 0..16 grey levels
        Image.fromarray(pixels, mode="L").save(d / f"{i:04d}.png")
    (tmp / ".complete").write_text("ok\n")
    try:
        os.replace(tmp, target)  # atomic: a concurrent run sees all of it or none
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return target
