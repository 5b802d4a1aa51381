"""Multilabel manifests: a CSV/JSONL file with a path column and a labels column holding several
labels per image (`cat|dog` in a CSV cell, or a JSON list in JSONL); an optional `split` column
is respected. An empty labels cell is a valid image with no label (all negatives). Chosen by
task=multilabel / data.format=multilabel, or by a manifest's labels column (never detected)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

from aether.data.items import ItemIndex, Item
from aether.data.formats.base import Format
from aether.data.formats.manifest import check_split_column, settled_rows
from aether.data.manifests import check_columns, read_rows
from aether.data.roots import outside_warning
from aether.errors import AetherError


class MultilabelManifest(Format):
    name = "multilabel"
    task = "multilabel"
    annotated = True  # boxes, masks or label sets: the doctor examines and counts its annotations

    def counts(self, index: ItemIndex) -> Dict[str, Any]:
        per_class = [sum(it.target[j] for it in index.items) for j in range(len(index.classes))]
        return {"class_counts": dict(zip(index.classes, per_class)), "counts_of": "images",
                "unlabelled": sum(1 for it in index.items if not any(it.target))}

    def load(self, path: Path, options: Dict[str, Any]) -> ItemIndex:
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

        kept, skipped, warnings = settled_rows(path, rows, root, path_col, options, label_of)
        entries = [(r.path, list(r.label), r.split) for r in kept]
        classes = sorted({c for _, labels, _ in entries for c in labels})
        if len(classes) < 2:
            raise AetherError(f"{path}: found {len(classes)} distinct label(s) in '{labels_col}'; multilabel "
                              "classification needs at least 2")
        items = [Item(p, [1 if c in set(labels) else 0 for c in classes], s) for p, labels, s in entries]
        check_split_column(path, [i.split for i in items])
        return ItemIndex(str(path), self.name, classes, items, skipped, warnings=warnings + outside_warning(skipped))
