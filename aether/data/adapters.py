"""Built-in dataset adapters. Each answers `detect(path)` and `load(path, options) -> DatasetIndex`.

Adapters only index files and labels; decoding checks, splitting and loading are shared
(aether.data.images, aether.data.split, aether.data.datamodule).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from aether.data.images import is_image_name
from aether.data.index import SPLITS, DatasetIndex, Sample, Skipped
from aether.errors import AetherError

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}


def walk_images(root: Path) -> Tuple[List[Path], Dict[str, int]]:
    """Every image file below root (sorted), with counts of what was ignored."""
    images: List[Path] = []
    ignored = {"hidden": 0, "non_image": 0}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        hidden_dirs = [d for d in dirnames if d.startswith(".") or d == "__MACOSX"]
        ignored["hidden"] += len(hidden_dirs)
        dirnames[:] = sorted(d for d in dirnames if d not in hidden_dirs)
        for name in sorted(filenames):
            if name.startswith("."):
                ignored["hidden"] += 1
            elif is_image_name(name):
                images.append(Path(dirpath) / name)
            else:
                ignored["non_image"] += 1
    return images, ignored


class FolderAdapter:
    """Class sub-folders: `root/<class>/img.jpg`; nested trees give labels like `animals/cat`;
    `root/train|val|test/<class>/...` is respected as a pre-made split."""

    name = "folder"

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_dir()

    def load(self, path: Path, options: Dict) -> DatasetIndex:
        split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in sorted(path.iterdir())
                      if d.is_dir() and d.name.lower() in SPLIT_ALIASES}
        presplit = "train" in split_dirs
        roots = [(split_dirs[s], s) for s in SPLITS if s in split_dirs] if presplit else [(path, None)]
        entries: List[Tuple[Path, str, Optional[str]]] = []
        skipped: List[Skipped] = []
        ignored: Dict[str, int] = {"hidden": 0, "non_image": 0}
        for root, split in roots:
            images, ign = walk_images(root)
            for k, v in ign.items():
                ignored[k] += v
            for img in images:
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
        return DatasetIndex(str(path), self.name, classes, samples, skipped, ignored, notes)


class ManifestAdapter:
    """A CSV (header row) or JSONL file with a path column and a label column; an optional
    `split` column (train/val/test) is respected. Paths are relative to the manifest's folder."""

    name = "manifest"

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".tsv")

    def load(self, path: Path, options: Dict) -> DatasetIndex:
        path_col = options.get("path_column", "path")
        label_col = options.get("label_column", "label")
        root = Path(options.get("root") or path.parent)
        rows = self._rows(path)
        if rows and (path_col not in rows[0][1] or label_col not in rows[0][1]):
            raise AetherError(
                f"{path}: manifest needs columns '{path_col}' and '{label_col}' (found: "
                f"{', '.join(rows[0][1])}); set data.options.path_column / label_column to match"
                + ("; a 'labels' column with several labels per image trains with task=multilabel"
                   if "labels" in rows[0][1] else "")
            )
        skipped: List[Skipped] = []
        entries: List[Tuple[str, str, Optional[str]]] = []
        for line, row in rows:
            rel, label = str(row.get(path_col) or "").strip(), str(row.get(label_col) or "").strip()
            where = f"{path}:{line}"
            if not rel:
                skipped.append(Skipped(where, f"empty '{path_col}'"))
                continue
            full = str(root / rel) if not os.path.isabs(rel) else rel
            if not label:
                skipped.append(Skipped(full, f"no label ({where})"))
                continue
            split = row.get("split")
            split = SPLIT_ALIASES.get(str(split).strip().lower()) if split not in (None, "") else None
            if row.get("split") not in (None, "") and split is None:
                skipped.append(Skipped(full, f"unknown split '{row.get('split')}' ({where}); expected train, val or test"))
                continue
            entries.append((full, label, split))
        classes = sorted({label for _, label, _ in entries})
        lookup = {c: i for i, c in enumerate(classes)}
        samples = [Sample(p, lookup[label], split) for p, label, split in entries]
        if samples and any(s.split for s in samples) and not all(s.split for s in samples):
            raise AetherError(f"{path}: the 'split' column is filled for some rows only; fill it for all or none")
        return DatasetIndex(str(path), self.name, classes, samples, skipped, {})

    @staticmethod
    def _rows(path: Path) -> List[Tuple[int, Dict[str, str]]]:
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".jsonl":
            rows = []
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append((i, json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise AetherError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
            return rows
        dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
        reader = csv.DictReader(text.splitlines(), dialect=dialect)
        return [(i, row) for i, row in enumerate(reader, 2)]


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
