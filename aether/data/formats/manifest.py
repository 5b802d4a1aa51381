"""Manifests: a CSV/TSV (header row) or JSONL file with a path column and a label column; an
optional `split` column (train/val/test) is respected. Paths are relative to the manifest's
folder (or data.options.root) and must stay inside it; repeated rows are settled by
aether.data.manifests (duplicates kept once, conflicting labels left out, never guessed).

A manifest with a `labels` column (and no `label` column) trains with task=multilabel
(aether.data.formats.multilabel reads it)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from aether.data.formats.base import Format, Match, root_guard
from aether.data.index import DatasetIndex, Sample, Skipped
from aether.data.manifests import Row, check_columns, manifest_columns, parse_rows, read_rows, settle
from aether.data.roots import outside_warning
from aether.errors import AetherError

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")
LabelOf = Callable[[Dict[str, Any], str], Optional[Hashable]]


def settled_rows(path: Path, rows: List[Tuple[int, Dict[str, Any]]], root: Path, path_col: str,
                 options: Dict[str, Any], label_of: LabelOf) -> Tuple[List[Row], List[Skipped], List[str]]:
    """(kept rows, skipped, warnings): the manifest rules (root guard, duplicates, conflicts)
    applied to (line number, row) pairs, however the file was parsed."""
    parsed, skipped = parse_rows(path, rows, root, path_col, root_guard(root, options), label_of)
    kept, repeats, warnings = settle(path, parsed)
    return kept, skipped + repeats, warnings


def check_split_column(path: Path, splits: List[Optional[str]]) -> None:
    if splits and any(splits) and not all(splits):
        raise AetherError(f"{path}: the 'split' column is filled for some rows only; fill it for all or none")


def index_rows(path: Path, fmt: str, rows: List[Tuple[int, Dict[str, Any]]], root: Path, options: Dict[str, Any],
               path_col: str = "path", label_col: str = "label") -> DatasetIndex:
    """A single-label DatasetIndex from (line number, row) pairs: what the manifest format does
    after reading its file, for any format that lists `path label` records (a plugin's too)."""
    kept, skipped, warnings = settled_rows(path, rows, root, path_col, options, single_label(label_col))
    classes = sorted({str(r.label) for r in kept})
    lookup = {c: i for i, c in enumerate(classes)}
    samples = [Sample(r.path, lookup[str(r.label)], r.split) for r in kept]
    check_split_column(path, [s.split for s in samples])
    return DatasetIndex(str(path), fmt, classes, samples, skipped, {}, [], warnings + outside_warning(skipped))


def single_label(label_col: str) -> LabelOf:
    def label_of(row: Dict[str, Any], where: str) -> Optional[str]:
        value = row.get(label_col)
        if isinstance(value, (list, dict)):
            raise AetherError(f"{where}: '{label_col}' is {'a list' if isinstance(value, list) else 'an object'}; "
                              "a single-label manifest needs one label per row (several labels per image train "
                              "with task=multilabel)")
        return str(value if value is not None else "").strip() or None
    return label_of


class Manifest(Format):
    name = "manifest"
    priority = 60
    strict = False  # task=multilabel reads a manifest's labels column with its own reader
    looks_like = ".csv/.tsv/.jsonl file"

    def detect(self, path: Path, task_hint: Optional[str] = None) -> Optional[Match]:
        if not (path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES):
            return None
        columns: List[str] = []
        rows = 0
        try:
            with open(path, encoding="utf-8", newline="") as f:
                if path.suffix.lower() == ".jsonl":
                    for line in f:
                        if line.strip():
                            if not columns:
                                obj = json.loads(line)
                                columns = list(obj) if isinstance(obj, dict) else []
                            rows += 1
                else:
                    reader = csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
                    columns = next(reader, [])
                    rows = sum(1 for r in reader if r)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
            raise AetherError(f"{path}: could not read manifest: {e}") from e
        evidence = [f"{path.name} is a {path.suffix.lower()[1:]} manifest with {rows} rows, columns: {columns}"]
        return Match(self.name, self.task, evidence, {"num_rows": rows, "columns": columns})

    def trained_task(self, path: Path, options: Dict[str, Any], found: Any) -> Tuple[str, str]:
        labels_col = str(options.get("labels_column", "labels"))
        cols = manifest_columns(path)
        if labels_col in cols and str(options.get("label_column", "label")) not in cols:
            from aether.data import formats

            return formats.task_of("multilabel"), f"{path.name} has a '{labels_col}' column"
        return super().trained_task(path, options, found)

    def load(self, path: Path, options: Dict[str, Any]) -> DatasetIndex:
        path_col = options.get("path_column", "path")
        label_col = options.get("label_column", "label")
        root = Path(options.get("root") or path.parent)
        rows = read_rows(path)
        hint = "set data.options.path_column / label_column to match"
        if rows and "labels" in rows[0][1]:
            hint += "; a 'labels' column with several labels per image trains with task=multilabel"
        check_columns(path, rows, [path_col, label_col], hint)
        return index_rows(path, self.name, rows, root, options, path_col, label_col)
