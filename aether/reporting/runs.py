"""`aether runs`: the runs under a folder as one table, and `aether runs compare` side by side.

A run is a folder holding `metrics.json` and `config.yaml` (what every finished run writes).
Both files are read as data (JSON, YAML's safe loader), size-capped: a folder of runs from
someone else is untrusted input and is never executed or changed. A folder whose files cannot
be read is listed with the reason instead of being skipped silently.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from aether.errors import AetherError

MAX_FILE_BYTES = 64 * 1024 * 1024  # a metrics.json or config.yaml larger than this is not read
MAX_DEPTH = 8  # run folders are found this many levels below the folder given, at most
SKIP = {"checkpoints", "model", "wandb", "lightning_logs", ".hydra", "__pycache__", ".git"}


def find_runs(root: Path) -> List[Path]:
    """Run folders under `root` (itself included), sorted by path; links are not followed."""
    if not root.is_dir():
        raise AetherError(f"aether runs: {root} is not a folder (expected a folder of runs, e.g. outputs/)")
    found = []
    base = len(root.parts)
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        if "metrics.json" in files and "config.yaml" in files:
            found.append(here)
        dirs[:] = sorted(d for d in dirs if d not in SKIP and len(here.parts) - base < MAX_DEPTH)
    return sorted(found)


def _read(path: Path) -> Any:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path.name} is larger than {MAX_FILE_BYTES // 2**20} MB")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def main_metric(test: Dict[str, Any]) -> Tuple[Optional[str], Optional[float]]:
    """The task's headline test metric: the first number of its `test` section (accuracy, map,
    miou, ... as each task writes it first)."""
    for key, value in (test or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return key, float(value)
    return None, None


def summary(run: Path) -> Dict[str, Any]:
    """One row of `aether runs`: what the run was and what it reached."""
    row: Dict[str, Any] = {"run": str(run)}
    try:
        metrics, config = _read(run / "metrics.json"), _read(run / "config.yaml")
        if not isinstance(metrics, dict) or not isinstance(config, dict):
            raise ValueError("metrics.json or config.yaml is not a mapping")
    except Exception as exc:  # noqa: BLE001 - unreadable or malformed (YAML errors too): listed, not fatal
        return {**row, "error": f"unreadable: {exc}"}
    name, value = main_metric(metrics.get("test") or {})
    t = metrics.get("time") or {}
    row.update({
        "recipe": config.get("recipe"), "task": (metrics.get("data") or {}).get("task") or config.get("task"),
        "model": (config.get("model") or {}).get("name"),
        "strategy": (config.get("strategy") or {}).get("name"),
        "metric": name, "value": value,
        "train_minutes": round(float(t["train_s"]) / 60, 2) if isinstance(t.get("train_s"), (int, float)) else None,
        "cost": t.get("est_cost"), "currency": t.get("currency"),
        "finished": _dt.datetime.fromtimestamp((run / "metrics.json").stat().st_mtime).isoformat(timespec="seconds"),
    })
    return row


def _flat(d: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def compare(runs: Sequence[Path]) -> Dict[str, Any]:
    """Config keys whose values differ between `runs`, their test metrics side by side, and their
    per-epoch histories (for the overlaid curves)."""
    if len(runs) < 2:
        raise AetherError("aether runs compare: give two or more run folders (RUN RUN ...)")
    configs, metrics = [], []
    for run in runs:
        if not ((run / "metrics.json").is_file() and (run / "config.yaml").is_file()):
            raise AetherError(f"aether runs compare: {run} is not a finished run (no metrics.json and config.yaml)")
        try:
            configs.append(dict(_flat(_read(run / "config.yaml") or {})))
            metrics.append(_read(run / "metrics.json"))
        except (OSError, ValueError) as exc:
            raise AetherError(f"aether runs compare: cannot read {run}: {exc}") from exc
    keys = sorted(set().union(*configs))
    differ = {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1}
    test_keys: List[str] = []
    for m in metrics:
        test_keys += [k for k, v in (m.get("test") or {}).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in test_keys]
    return {"runs": [str(r) for r in runs], "config_differences": differ,
            "test": {k: [(m.get("test") or {}).get(k) for m in metrics] for k in test_keys},
            "history": [m.get("history") or [] for m in metrics]}


def curves_png(cmp: Dict[str, Any], path: Path) -> Path:
    """Each run's validation curves (every `val/*` series of its history) overlaid, one panel per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sorted({k for h in cmp["history"] for row in h for k in row if k.startswith("val/")})
    if not series:
        raise AetherError("aether runs compare: the runs have no per-epoch validation history to draw")
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.4), squeeze=False)
    names = short_names(cmp["runs"])
    for ax, key in zip(axes[0], series):
        for name, hist in zip(names, cmp["history"]):
            pts = [(row["epoch"], row[key]) for row in hist if isinstance(row.get(key), (int, float))]
            if pts:
                ax.plot([p[0] + 1 for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def short_names(runs: Sequence[str]) -> List[str]:
    """The shortest path tails that tell the runs apart (outputs/2026-12-02/10-00-00 -> 10-00-00)."""
    parts = [Path(r).parts for r in runs]
    for n in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return list(runs)
