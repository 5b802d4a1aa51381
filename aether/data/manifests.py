"""Manifest files (CSV/TSV with a header row, or JSONL): their rows, checked, and the rows that
name the same image settled without guessing. Shared by the single-label and multilabel manifest
formats (aether.data.formats.manifest, .multilabel).

Rules (every dropped row is listed in `skipped` with its reason and line):

* the same image with the same label (and split) on several rows: the first row is kept, each
  repeat is skipped as `duplicate_row` (10,000 rows of one image train it once, not 10,000 times);
* the same image with different labels: every row of it is skipped as `conflicting_labels`;
  Aether does not pick one (the old behaviour relabelled images without a word);
* the same image and label in different splits: every row is skipped as `conflicting_splits`
  (one image in train and test inflates the test score);
* a path outside the dataset folder (`..`, an absolute path elsewhere, a symlink out) is skipped
  as `outside_root` without being opened (aether.data.roots), unless data.allow_outside_root=true.

A JSONL line that is not an object, a path that is not text, or a label of the wrong type is an
error naming the file and line: a manifest like that is broken, not merely dirty.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from aether.data.index import Skipped
from aether.data.roots import RootGuard
from aether.errors import AetherError

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
EXAMPLES = 3  # paths named in a warning line; report.json lists all of them under 'bad'


@dataclass
class Row:
    line: int
    path: str  # as it will be read: the manifest's root joined with the cell, normalised
    label: Hashable  # a class name, or a sorted tuple of them (multilabel)
    split: Optional[str]


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def read_rows(path: Path) -> List[Tuple[int, Dict[str, Any]]]:
    """(line number, row) pairs; an unreadable or malformed file is an AetherError naming the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AetherError(f"{path}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None
    except OSError as exc:
        raise AetherError(f"{path}: cannot read the manifest ({exc.strerror})") from None
    if path.suffix.lower() == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AetherError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise AetherError(f"{path}:{i}: JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise AetherError(f"{path}:{i}: expected a JSON object per line, like "
                                  f'{{"path": "a.jpg", "label": "cat"}}; got {_type_name(obj)}')
            rows.append((i, obj))
        return rows
    reader = csv.DictReader(text.splitlines(), dialect="excel-tab" if path.suffix.lower() == ".tsv" else "excel")
    try:
        return [(i, row) for i, row in enumerate(reader, 2)]
    except csv.Error as exc:
        raise AetherError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def check_columns(path: Path, rows: List[Tuple[int, Dict[str, Any]]], needed: List[str], hint: str,
                  what: str = "manifest") -> None:
    if rows and any(c not in rows[0][1] for c in needed):
        found = ", ".join(str(c) for c in rows[0][1] if c is not None)
        raise AetherError(f"{path}: {what} needs columns {' and '.join(repr(c) for c in needed)} (found: {found}); "
                          f"{hint}")


def parse_rows(manifest: Path, rows: List[Tuple[int, Dict[str, Any]]], root: Path, path_col: str,
               guard: RootGuard, label_of: Callable[[Dict[str, Any], str], Optional[Hashable]]
               ) -> Tuple[List[Row], List[Skipped]]:
    """Rows with a path, a label and a known split; `label_of(row, where)` returns the label,
    None for "no label" (skipped), or raises AetherError for a cell of the wrong type."""
    out: List[Row] = []
    skipped: List[Skipped] = []
    for line, row in rows:
        where = f"{manifest}:{line}"
        cell = row.get(path_col)
        if isinstance(cell, (list, dict)):
            raise AetherError(f"{where}: '{path_col}' is {_type_name(cell)}; expected one image path (text)")
        rel = str(cell if cell is not None else "").strip()
        if not rel:
            skipped.append(Skipped(where, f"empty '{path_col}'"))
            continue
        full = os.path.normpath(os.path.join(root, rel))  # so `a/./x.png` and `a/x.png` are one image
        value = label_of(row, where)
        if value is None:
            skipped.append(Skipped(full, f"no label ({where})"))
            continue
        split = row.get("split")
        norm = SPLIT_ALIASES.get(str(split).strip().lower()) if split not in (None, "") else None
        if split not in (None, "") and norm is None:
            skipped.append(Skipped(full, f"unknown split '{split}' ({where}); expected train, val or test"))
            continue
        refusal = guard.refusal(full)  # before anything else looks at the file
        if refusal:
            skipped.append(Skipped(full, f"{refusal} ({where})"))
            continue
        out.append(Row(line, full, value, norm))
    return out, skipped


def _label_text(label: Hashable) -> str:
    return ("|".join(label) or "(no label)") if isinstance(label, tuple) else str(label)


def settle(manifest: Path, rows: List[Row]) -> Tuple[List[Row], List[Skipped], List[str]]:
    """One row per image: (kept rows in manifest order, skipped rows, warning lines). Linear in
    the number of rows."""
    groups: Dict[str, List[Row]] = {}
    for r in rows:
        groups.setdefault(r.path, []).append(r)
    kept: List[Row] = []
    skipped: List[Skipped] = []
    dropped = 0
    most: Tuple[int, str] = (0, "")
    conflicts: Dict[str, List[str]] = {"conflicting_labels": [], "conflicting_splits": []}
    for path, group in groups.items():
        if len(group) == 1:
            kept.append(group[0])
            continue
        first: Dict[Hashable, Row] = {}
        counts: Dict[Hashable, int] = {}
        labels = {r.label for r in group}
        key = (lambda r: r.label) if len(labels) > 1 else (lambda r: r.split)
        for r in group:
            first.setdefault(key(r), r)
            counts[key(r)] = counts.get(key(r), 0) + 1
        if len(first) == 1:  # the same row again and again
            kept.append(group[0])
            dropped += len(group) - 1
            most = max(most, (len(group), path))
            skipped += [Skipped(path, f"duplicate_row: repeats {manifest.name}:{group[0].line} (same image, same label); "
                                      f"the image is used once ({manifest}:{r.line})") for r in group[1:]]
            continue
        code = "conflicting_labels" if len(labels) > 1 else "conflicting_splits"
        shown = [f"'{_label_text(v) if code == 'conflicting_labels' else v}' (line {r.line}"
                 + (f", {counts[v]} rows)" if counts[v] > 1 else ")") for v, r in list(first.items())[:5]]
        what = "labels" if code == "conflicting_labels" else "splits"
        listing = f"{len(first)} {what}: {', '.join(shown)}" + (", ..." if len(first) > 5 else "")
        conflicts[code].append(f"{path} ({listing})")
        skipped += [Skipped(path, f"{code}: listed with {listing}; left out, not guessed - give it one "
                                  f"{what[:-1]} ({manifest}:{r.line})") for r in group]
    warnings = []
    if dropped:
        warnings.append(f"{manifest.name}: {dropped} duplicate row(s) dropped (same image, same label; each image is "
                        f"used once); most repeated: {most[1]} ({most[0]} rows)")
    for code, items in conflicts.items():
        if items:
            why = ("with different labels" if code == "conflicting_labels"
                   else "in different splits (it would leak between train and test)")
            warnings.append(f"{manifest.name}: {len(items)} image(s) listed {why} left out ({code}), e.g. "
                            + "; ".join(items[:EXAMPLES]) + " - fix the manifest")
    return kept, skipped, warnings



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
