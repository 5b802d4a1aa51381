"""`aether predict run=RUN images=PATH`: classify a folder (or files, or a list file) in batches.

Writes `predictions.csv` (path, label, score, top_k, error) and `predictions.json` (the same
plus the model and every failed file with its reason). A file that cannot be classified never
aborts the batch: it is listed with the dataset doctor's reason (`truncated`, `not_an_image`,
`decompression_bomb`, ...), in the CSV with an empty label, and in the JSON under `failed`.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from aether.errors import AetherError


def collect(images: List[str]) -> List[str]:
    """Every file named: folders are walked (hidden files and folders skipped, sorted), a .txt
    file holds one path per line (relative to the list file), anything else is one image."""
    out: List[str] = []
    for item in images:
        p = Path(item).expanduser()
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if f.is_file() and not any(part.startswith(".") for part in rel):
                    out.append(str(f))
        elif p.suffix.lower() == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(str((p.parent / line) if not Path(line).is_absolute() else Path(line)))
        elif p.exists() or p.is_symlink():
            out.append(str(p))
        else:
            raise AetherError(f"images={item}: no such file or folder")
    if not out:
        raise AetherError(f"images={','.join(images)}: no files found")
    return out


def predict_images(run: str, images: List[str], out: Optional[str] = None, batch_size: int = 32, top_k: int = 5,
                   device: Optional[str] = None, progress: bool = True,
                   score_threshold: Optional[float] = None) -> Dict[str, Any]:
    from aether.deploy.bento import check_run
    from aether.deploy.predictor import ImageLimits, Predictor
    from aether.deploy.tasks import task_of

    run_dir = check_run(run)
    paths = collect(images)
    out_dir = Path(out).expanduser() if out else run_dir / "predictions" / time.strftime("%Y-%m-%d_%H-%M-%S")
    if task_of(json.loads((run_dir / "model" / "model.json").read_text())) != "classification":
        from aether.deploy.task_outputs import predict_task_images

        return predict_task_images(run_dir, paths, out_dir, batch_size, device, score_threshold,
                                   lambda n: _progress(n, progress))
    predictor = Predictor(run_dir / "model", device=device, limits=ImageLimits.from_run(run_dir))
    t0 = time.perf_counter()
    with _progress(len(paths), progress) as advance:
        results, failed = predictor.predict_paths(paths, batch_size=batch_size, k=top_k, progress=advance)
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "predictions.csv", paths, results, failed)
    summary = {"run": str(run_dir), "model": predictor.info.get("name"), "classes": predictor.classes,
               "num_files": len(paths), "num_predicted": len(results), "num_failed": len(failed),
               "seconds": round(seconds, 3), "predictions": results, "failed": failed}
    (out_dir / "predictions.json").write_text(json.dumps(summary, indent=2))
    summary["out_dir"] = str(out_dir)
    return summary


def _write_csv(path: Path, order: List[str], results: List[Dict[str, Any]], failed: List[Dict[str, str]]) -> None:
    rows = {r["path"]: r for r in results}
    bad = {f["path"]: f for f in failed}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "score", "top_k", "error"])
        for p in order:  # input order, failures in place
            if p in rows:
                r = rows[p]
                w.writerow([p, r["label"], f"{r['score']:.6f}",
                            ";".join(f"{t['label']}:{t['score']:.6f}" for t in r["top_k"]), ""])
            else:
                f = bad[p]
                w.writerow([p, "", "", "", f"{f['reason']}: {f['detail']}"])


class _progress:
    """A rich progress bar on a terminal, nothing otherwise; yields `advance(done)`."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)

    def __enter__(self):  # type: ignore[no-untyped-def]
        if self.bar is None:
            return lambda done: None
        self.bar.start()
        task = self.bar.add_task("predicting", total=self.total)
        return lambda done: self.bar.update(task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
