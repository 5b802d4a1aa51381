"""A run's suspected label errors (RUN/label_issues.csv, written by aether.reporting.analysis),
as `aether inspect data=DIR run=RUN` shows them beside the dataset doctor's own findings.

The file comes from a run folder, which may be someone else's: it is read as data (the csv
module, size-capped, its columns and numbers checked), never executed.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from aether.errors import AetherError

LABEL_ISSUES_CSV = "label_issues.csv"
LABEL_ISSUE_COLUMNS = ("rank", "path", "split", "given_label", "suggested_label", "score")
MAX_BYTES = 64 * 1024 * 1024
SHOWN = 20  # rows printed by `aether inspect`; report.json holds them all


def read_label_issues(path: Path, max_bytes: int = MAX_BYTES) -> List[Dict[str, Any]]:
    if not path.is_file():
        raise AetherError(f"run=: {path} does not exist (a classification run with "
                          "analysis.label_issues=holdout or kfold "
                          "writes it after testing)")
    if path.stat().st_size > max_bytes:
        raise AetherError(f"run=: {path} is larger than {max_bytes // 2**20} MB; not read")
    out = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LABEL_ISSUE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AetherError(f"run=: {path} is not a label_issues.csv (missing columns: {', '.join(missing)})")
        for n, row in enumerate(reader, 2):
            try:
                score = float(row["score"])
                if not math.isfinite(score):
                    raise ValueError(f"score {row['score']}")
                out.append({**{c: row[c] for c in LABEL_ISSUE_COLUMNS}, "rank": int(row["rank"]), "score": score})
            except (TypeError, ValueError) as exc:
                raise AetherError(f"run=: {path}, line {n}: bad rank or score ({exc})") from None
    return out


def _inside(path: str, root: Path) -> bool:
    try:
        return Path(os.path.abspath(path)).is_relative_to(root)
    except (OSError, ValueError):
        return False


def run_label_issues(run: str, data_path: Optional[str]) -> Dict[str, Any]:
    """RUN's suspected label errors that lie in the dataset at `data_path` (all of them for the
    embedded sample), with how many of the run's rows are elsewhere."""
    folder = Path(run).expanduser()
    if not folder.is_dir():
        raise AetherError(f"run={run}: not a folder (expected a finished classification run)")
    rows = read_label_issues(folder / LABEL_ISSUES_CSV)
    source = None
    try:
        source = (json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("data") or {}).get("source")
    except (OSError, ValueError, AttributeError):
        pass
    if data_path:
        root = Path(os.path.abspath(Path(data_path).expanduser()))
        here = [r for r in rows if _inside(r["path"], root)]
    else:
        here = rows
    return {"run": str(folder), "source": source, "count": len(here), "outside": len(rows) - len(here), "rows": here}


def add_label_issues(report: Dict[str, Any], issues: Dict[str, Any], out_dir: Path) -> None:
    """Into the doctor's report (and its report.json)."""
    report["label_issues"] = issues
    if issues["count"] == 0 and issues["outside"]:
        report.setdefault("warnings", []).append(
            f"run={issues['run']}: none of its {issues['outside']} suspected label errors is in this dataset "
            f"(the run trained on {issues['source']})")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


def print_label_issues(con: Any, issues: Dict[str, Any]) -> None:
    from rich.table import Table

    con.print(f"[bold]suspected label errors[/] from {issues['run']}: {issues['count']} in this dataset"
              + (f" ({issues['outside']} more elsewhere)" if issues["outside"] else ""))
    if not issues["rows"]:
        return
    t = Table(title_justify="left")
    for col in ("#", "image", "split", "given", "suggested", "score"):
        t.add_column(col, justify="right" if col in ("#", "score") else "left")
    for r in issues["rows"][:SHOWN]:
        t.add_row(str(r["rank"]), r["path"], r["split"], r["given_label"], r["suggested_label"], f"{r['score']:.3f}")
    con.print(t)
    if issues["count"] > SHOWN:
        con.print(f"... {issues['count'] - SHOWN} more in report.json")
