"""Multilabel manifests: a CSV/JSONL file with a path column and a labels column holding several
labels per image (`cat|dog` in a CSV cell, or a JSON list in JSONL); an optional `split` column
is respected. An empty labels cell is a valid image with no label (all negatives)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, List

import torch

from aether.data.adapters import SPLIT_ALIASES, ManifestAdapter
from aether.data.dense import DenseIndex, Item
from aether.data.item_dataset import ItemDataset
from aether.data.index import Skipped
from aether.errors import AetherError


def manifest_columns(path: Path) -> List[str]:
    """Column names of a CSV/TSV header row or of the first JSONL object."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.suffix.lower() == ".jsonl":
            for line in f:
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        return []
                    return list(obj) if isinstance(obj, dict) else []
            return []
        return next(csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])


class MultilabelManifestAdapter:
    name = "multilabel"

    @staticmethod
    def detect(path: Path) -> bool:
        return False  # chosen by task=multilabel / data.format=multilabel, or by its labels column

    def load(self, path: Path, options: Dict[str, Any]) -> DenseIndex:
        if not path.is_file():
            raise AetherError(f"data.path={path}: task=multilabel expects a CSV/JSONL manifest file")
        path_col, labels_col = options.get("path_column", "path"), options.get("labels_column", "labels")
        sep = options.get("separator", "|")
        root = Path(options.get("root") or path.parent)
        rows = ManifestAdapter._rows(path)
        if rows and (path_col not in rows[0][1] or labels_col not in rows[0][1]):
            raise AetherError(f"{path}: a multilabel manifest needs columns '{path_col}' and '{labels_col}' (found: "
                              f"{', '.join(rows[0][1])}); set data.options.path_column / labels_column to match")
        skipped: List[Skipped] = []
        entries = []
        for line, row in rows:
            rel, value = str(row.get(path_col) or "").strip(), row.get(labels_col)
            if not rel:
                skipped.append(Skipped(f"{path}:{line}", f"empty '{path_col}'"))
                continue
            full = rel if os.path.isabs(rel) else str(root / rel)
            if isinstance(value, list):
                labels = [str(v).strip() for v in value]
            else:
                labels = [v.strip() for v in str(value or "").split(sep)]
            split = row.get("split")
            norm = SPLIT_ALIASES.get(str(split).strip().lower()) if split not in (None, "") else None
            if split not in (None, "") and norm is None:
                skipped.append(Skipped(full, f"unknown split '{split}' ({path}:{line}); expected train, val or test"))
                continue
            entries.append((full, sorted({x for x in labels if x}), norm))
        classes = sorted({c for _, labels, _ in entries for c in labels})
        if len(classes) < 2:
            raise AetherError(f"{path}: found {len(classes)} distinct label(s) in '{labels_col}'; multilabel "
                              "classification needs at least 2")
        items = [Item(p, [1 if c in set(labels) else 0 for c in classes], s) for p, labels, s in entries]
        if items and any(i.split for i in items) and not all(i.split for i in items):
            raise AetherError(f"{path}: the 'split' column is filled for some rows only; fill it for all or none")
        return DenseIndex(str(path), self.name, classes, items, skipped)


class MultilabelDataset(ItemDataset):
    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        it = self.items[i]
        return self.transform(self.image(it)), torch.tensor(it.target, dtype=torch.float32)
