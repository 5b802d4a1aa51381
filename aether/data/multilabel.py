"""Multilabel manifests: a CSV/JSONL file with a path column and a labels column holding several
labels per image (`cat|dog` in a CSV cell, or a JSON list in JSONL); an optional `split` column
is respected. An empty labels cell is a valid image with no label (all negatives)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from aether.data.adapters import guard_for
from aether.data.dense import DenseIndex, Item
from aether.data.item_dataset import ItemDataset
from aether.data.manifests import check_columns, parse_rows, read_rows, settle
from aether.data.roots import outside_warning
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
        rows = read_rows(path)
        check_columns(path, rows, [path_col, labels_col], "set data.options.path_column / labels_column to match",
                      what="a multilabel manifest")

        def label_of(row: Dict[str, Any], where: str) -> Tuple[str, ...]:
            value = row.get(labels_col)
            if isinstance(value, dict):
                raise AetherError(f"{where}: '{labels_col}' is an object; expected a list of labels or "
                                  f"labels separated by '{sep}'")
            labels = [str(v).strip() for v in value] if isinstance(value, list) else str(value or "").split(sep)
            return tuple(sorted({x.strip() for x in labels if x.strip()}))  # empty: a valid image, all negatives

        parsed, skipped = parse_rows(path, rows, root, path_col, guard_for(root, options), label_of)
        kept, repeats, warnings = settle(path, parsed)
        skipped += repeats
        entries = [(r.path, list(r.label), r.split) for r in kept]
        classes = sorted({c for _, labels, _ in entries for c in labels})
        if len(classes) < 2:
            raise AetherError(f"{path}: found {len(classes)} distinct label(s) in '{labels_col}'; multilabel "
                              "classification needs at least 2")
        items = [Item(p, [1 if c in set(labels) else 0 for c in classes], s) for p, labels, s in entries]
        if items and any(i.split for i in items) and not all(i.split for i in items):
            raise AetherError(f"{path}: the 'split' column is filled for some rows only; fill it for all or none")
        return DenseIndex(str(path), self.name, classes, items, skipped, warnings=warnings + outside_warning(skipped))


class MultilabelDataset(ItemDataset):
    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        it = self.items[i]
        return self.transform(self.image(it)), torch.tensor(it.target, dtype=torch.float32)
