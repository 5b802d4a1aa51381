"""`aether predict run=RUN images=PATH`: predict a folder (or files, or a list file) in batches.

Writes `predictions.csv` (one row per input file, in input order: path, the task's columns,
error) and `predictions.json` (the same answers plus the model and every failed file with its
reason); the columns, the answers and any other files (segmentation's masks/) are the task's
codec's (aether/tasks/<task>/serving.py). A file that cannot be predicted never aborts the batch:
it is listed with the dataset doctor's reason (`truncated`, `not_an_image`, `decompression_bomb`,
...), in the CSV with empty columns and the reason under `error`, and in the JSON under `failed`.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from aether.errors import AetherError


def shown(path: str) -> str:
    """A path as valid UTF-8 text: bytes that are not UTF-8 (os.fsdecode keeps them as lone
    surrogates, which no UTF-8 writer accepts) appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def raw_name(path: str) -> Dict[str, str]:
    """{"path_bytes_b64": ...} for a path that is not valid UTF-8 (so the JSON still names the
    file exactly), else nothing."""
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
        return {}
    except UnicodeDecodeError:
        return {"path_bytes_b64": base64.b64encode(raw).decode("ascii")}


def _walk(folder: str, out: List[str]) -> None:
    """Every entry of `folder` that is not a folder, recursively, sorted, hidden ones skipped.
    Broken symlinks, FIFOs, sockets and symlinks to folders are listed too (the check then says
    why each cannot be classified): nothing named vanishes from the results."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        raise AetherError(f"images={shown(folder)}: cannot list the folder: {exc.strerror or exc}") from None
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=False):
            _walk(e.path, out)
        else:
            out.append(e.path)


def _list_file(p: Path) -> List[str]:
    """One path per line, relative to the list file; lines are file names, read as bytes (a name
    that is not valid UTF-8 stays that name)."""
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AetherError(f"images={shown(str(p))}: cannot read the list file: {exc.strerror or exc}") from None
    out = []
    for raw in data.splitlines():
        line = os.fsdecode(raw.strip())
        if line and not line.startswith("#"):
            out.append(line if os.path.isabs(line) else str(p.parent / line))
    return out


def collect(images: List[str]) -> List[str]:
    """Every file named: folders are walked (hidden files and folders skipped, sorted), a .txt
    file holds one path per line (relative to the list file), anything else is one image."""
    out: List[str] = []
    for item in images:
        p = Path(item).expanduser()
        if p.is_dir():
            _walk(str(p), out)
        elif p.suffix.lower() == ".txt" and p.is_file():
            out.extend(_list_file(p))
        elif p.exists() or p.is_symlink():
            out.append(str(p))
        else:
            raise AetherError(f"images={shown(item)}: no such file or folder")
    if not out:
        raise AetherError(f"images={shown(','.join(images))}: no files found")
    return out


def output_folder(out: Optional[str], run_dir: Path) -> Path:
    """The output folder, created and proven writable before any work is done."""
    out_dir = Path(out).expanduser() if out else run_dir / "predictions" / time.strftime("%Y-%m-%d_%H-%M-%S")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise AetherError(f"out={shown(str(out_dir))}: cannot write predictions there "
                          f"({exc.strerror or type(exc).__name__}); expected a writable folder") from None
    return out_dir


def write_outputs(out_dir: Path, header: List[str], rows: List[List[Any]], summary: Dict[str, Any]) -> None:
    """predictions.csv (paths shown as UTF-8) and predictions.json; a failure to write (disk
    full, folder removed meanwhile) is one error line naming the file."""
    for r in [*summary["predictions"], *summary["failed"]]:
        r.update(raw_name(r["path"]))
        r["path"] = shown(r["path"])
    target = out_dir / "predictions.csv"
    try:
        with open(target, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows([shown(row[0]), *row[1:]] for row in rows)
        target = out_dir / "predictions.json"
        target.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    except OSError as exc:
        raise AetherError(f"{shown(str(target))}: cannot write: {exc.strerror or exc}") from None


def csv_rows(order: List[str], results: List[Dict[str, Any]], failed: List[Dict[str, str]], width: int,
             row: Callable[[Dict[str, Any]], List[Any]]) -> List[List[Any]]:
    """One row per input file in input order: `[path, *row(result), ""]`, or for a failure
    `[path, "" x width, "reason: detail"]`."""
    done = {r["path"]: r for r in results}
    bad = {f["path"]: f for f in failed}
    return [[p, *row(done[p]), ""] if p in done else [p, *([""] * width), f"{bad[p]['reason']}: {bad[p]['detail']}"]
            for p in order]


def predict_images(run: str, images: List[str], out: Optional[str] = None, batch_size: int = 32, top_k: int = 5,
                   device: Optional[str] = None, progress: bool = True,
                   score_threshold: Optional[float] = None, tta: Optional[str] = None,
                   reject_below: Optional[float] = None) -> Dict[str, Any]:
    """Predict every file named and write predictions.csv/.json (and the task's own files) to
    `out`; return predictions.json's content with `out_dir` and the summary line's `verb`."""
    from aether.deploy.model_dir import check_run
    from aether.deploy.predictor import ImageLimits
    from aether.deploy.tasks import TaskPredictor

    run_dir = check_run(run)
    out_dir = output_folder(out, run_dir)  # before listing or loading anything
    paths = collect(images)
    predictor = TaskPredictor(run_dir / "model", device=device, limits=ImageLimits.from_run(run_dir),
                              score_threshold=score_threshold, top_k=top_k, tta=tta, reject_below=reject_below)
    codec = predictor.codec
    t0 = time.perf_counter()
    with _progress(len(paths), progress) as advance:
        results, failed = predictor.predict_task_paths(paths, batch_size=batch_size, progress=advance)
    seconds = time.perf_counter() - t0
    position = {p: i for i, p in enumerate(paths)}  # numbered by input position: two inputs may share a name
    codec.write_files(out_dir, results, [f"{position[r['path']]:05d}_{shown(Path(r['path']).stem)}" for r in results])
    summary = {**codec.predictions_head(shown(str(run_dir)), predictor.info.get("name")), "num_files": len(paths),
               "num_predicted": len(results), "num_failed": len(failed), "seconds": round(seconds, 3),
               "predictions": results, "failed": failed}
    columns = codec.csv_columns()
    rows = csv_rows(paths, results, failed, len(columns), codec.csv_row)
    write_outputs(out_dir, ["path", *columns, "error"], rows, summary)
    return {**summary, "out_dir": shown(str(out_dir)), "verb": codec.verb}


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
