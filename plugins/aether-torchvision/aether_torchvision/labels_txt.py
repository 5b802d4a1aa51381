"""The `labels_txt` dataset format: a `labels.txt` file with one `path label` line per image
(paths relative to the file's folder; `#` comments and blank lines are ignored; the label is the
last word, so a path may hold spaces). `data=` names the file or the folder holding it.

It shows what a format plugin implements (aether.data.formats.base.Format): `detect()` with
evidence for `aether inspect` and `data.format=auto`, `load()` returning the index the data
layer trains from, and the task it trains. The rows go through Aether's manifest rules
(aether.data.formats.manifest.index_rows): paths outside the folder refused, repeated images
kept once, conflicting labels left out and listed. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aether.data.formats.base import Format, Match
from aether.data.formats.manifest import index_rows
from aether.data.index import DatasetIndex
from aether.errors import AetherError

LIST_NAME = "labels.txt"


def list_file(path: Path) -> Optional[Path]:
    """The labels.txt that `path` names, or holds."""
    if path.is_file():
        return path if path.name == LIST_NAME else None
    candidate = path / LIST_NAME
    return candidate if candidate.is_file() else None


def read_lines(lst: Path) -> Tuple[List[Tuple[int, str, str]], List[Tuple[int, str]]]:
    """((line, path, label) records, (line, text) of lines that are not `path label`)."""
    try:
        text = lst.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AetherError(f"{lst}: cannot read the list ({exc})") from None
    records, malformed = [], []
    for n, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        parts = body.rsplit(None, 1)
        if len(parts) == 2:
            records.append((n, parts[0], parts[1]))
        else:
            malformed.append((n, line.strip()))
    return records, malformed


class LabelsTxt(Format):
    name = "labels_txt"
    task = "classification"
    priority = 45  # before the class-folder fallback: a labels.txt next to image folders is the truth
    looks_like = "labels.txt with 'path label' lines"

    def detect(self, path: Path, task_hint: Optional[str] = None) -> Optional[Match]:
        lst = list_file(path)
        if lst is None:
            return None
        records, malformed = read_lines(lst)
        if not records:
            return None
        counts: Dict[str, int] = {}
        for _, _, label in records:
            counts[label] = counts.get(label, 0) + 1
        evidence = [f"{lst.name} lists {len(records)} 'path label' lines, {len(counts)} labels"]
        if malformed:
            evidence.append(f"{len(malformed)} lines are not 'path label' (first: line {malformed[0][0]})")
        return Match(self.name, self.task, evidence,
                     {"num_rows": len(records), "class_counts": dict(sorted(counts.items())),
                      "malformed_lines": len(malformed)})

    def load(self, path: Path, options: Dict[str, Any]) -> DatasetIndex:
        lst = list_file(path)
        if lst is None:
            raise AetherError(f"data.path={path}: no {LIST_NAME} there (data.format={self.name} reads a "
                              f"{LIST_NAME} of 'path label' lines)")
        records, malformed = read_lines(lst)
        if malformed:
            n, text = malformed[0]
            raise AetherError(f"{lst}:{n}: expected 'path label', got {text!r} "
                              f"({len(malformed)} such line(s)); fix the list")
        rows = [(n, {"path": p, "label": label}) for n, p, label in records]
        return index_rows(lst, self.name, rows, lst.parent, options)
