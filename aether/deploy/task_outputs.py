"""`aether predict` for multilabel, detection and segmentation runs: the service's answers
(aether.deploy.tasks) written as files. One CSV row per input file, in input order, failures in
place with the dataset doctor's reason (as for classification):

    multilabel    path, labels ("a;b"), scores ("a:0.91;b:0.12;..."), error
    detection     path, num_boxes, boxes (JSON: [{"box": [x0, y0, x1, y1], "label", "score"}, ...]), error
    segmentation  path, mask (masks/<n>_<stem>.png: original size, pixel value = class index),
                  width, height, one `pixels:<class>` column per class, error

`predictions.json` holds the same answers (segmentation: the mask's file instead of its base64).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from aether.deploy.predict import csv_rows, shown, write_outputs


def predict_task_images(run_dir: Path, paths: List[str], out_dir: Path, batch_size: int, device: Optional[str],
                        score_threshold: Optional[float], progress: Callable[[int], Any]) -> Dict[str, Any]:
    from aether.deploy.predictor import ImageLimits
    from aether.deploy.tasks import TaskPredictor

    predictor = TaskPredictor(run_dir / "model", device=device, limits=ImageLimits.from_run(run_dir),
                              score_threshold=score_threshold)
    t0 = time.perf_counter()
    with progress(len(paths)) as advance:
        results, failed = predictor.predict_task_paths(paths, batch_size=batch_size, progress=advance)
    seconds = time.perf_counter() - t0
    task = predictor.task
    if task == "segmentation":
        _write_masks(out_dir, paths, results)
    summary = {"run": shown(str(run_dir)), "task": task, "model": predictor.info.get("name"), "classes": predictor.classes,
               "options": predictor.options, "num_files": len(paths), "num_predicted": len(results),
               "num_failed": len(failed), "seconds": round(seconds, 3), "predictions": results, "failed": failed}
    head = _header(task, predictor.classes)
    rows = csv_rows(paths, results, failed, len(head), lambda r: _row(task, predictor.classes, r))
    write_outputs(out_dir, ["path", *head, "error"], rows, summary)
    return {**summary, "out_dir": shown(str(out_dir)), "verb": "predicted"}


def _write_masks(out_dir: Path, order: List[str], results: List[Dict[str, Any]]) -> None:
    """Each mask PNG to masks/ (numbered by input position: two inputs may share a file name)."""
    (out_dir / "masks").mkdir(exist_ok=True)
    position = {p: i for i, p in enumerate(order)}
    for r in results:
        # the stem as UTF-8 text: the mask's name goes into the CSV and JSON
        name = f"masks/{position[r['path']]:05d}_{shown(Path(r['path']).stem)}.png"
        (out_dir / name).write_bytes(base64.b64decode(r.pop("mask_png")))
        r["mask"] = name


def _row(task: str, classes: List[str], r: Dict[str, Any]) -> List[Any]:
    if task == "multilabel":
        return [";".join(r["labels"]), ";".join(f"{c}:{p:.6f}" for c, p in r["scores"].items())]
    if task == "detection":
        boxes = [{"box": b, "label": lab, "score": s} for b, lab, s in zip(r["boxes"], r["labels"], r["scores"])]
        return [len(boxes), json.dumps(boxes)]
    return [r["mask"], r["width"], r["height"], *(r["areas"][c]["pixels"] for c in classes)]


def _header(task: str, classes: List[str]) -> List[str]:
    if task == "multilabel":
        return ["labels", "scores"]
    if task == "detection":
        return ["num_boxes", "boxes"]
    return ["mask", "width", "height", *(f"pixels:{c}" for c in classes)]


