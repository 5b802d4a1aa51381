"""`aether explain run=RUN images=DIR`: a class-activation heatmap per image, through the same
checks and eval transform as prediction (aether.deploy.predictor); the heatmaps themselves are
aether.reporting.heatmaps'."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Optional

from aether.errors import AetherError


def explain_images(run: str, images: List[str], out: Optional[str] = None, method: str = "gradcam",
                   device: Optional[str] = None, batch_size: int = 16) -> Dict[str, Any]:
    """`aether explain`: a heatmap PNG per image (predicted class, score in explanations.csv)
    under `out` (default RUN/explain/). Unusable files are listed with the reason, never raised."""
    from PIL import Image

    from aether.deploy.model_dir import check_run
    from aether.deploy.predict import collect, output_folder, shown
    from aether.deploy.predictor import ImageLimits, Predictor

    run_dir = check_run(run)
    model_dir = run_dir / "model"
    info = _model_info(model_dir)
    if info.get("features_only"):
        raise AetherError(f"explain: {shown(str(run_dir))} is a {info.get('task', 'dense')} run; heatmaps explain "
                          "image classifiers (classification, multilabel)")
    out_dir = output_folder(out, run_dir) if out else run_dir / "explain"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = collect(images)
    predictor = Predictor(model_dir, device=device, limits=ImageLimits.from_run(run_dir))
    from aether.reporting.heatmaps import Heatmapper

    explainer = Heatmapper(predictor.model, predictor.pre.preprocessing, method)
    rows: List[List[Any]] = []
    failed: List[Dict[str, str]] = []
    from aether.deploy.predictor import BadImage

    for start in range(0, len(paths), batch_size):
        chunk, tensors = [], []
        for p in paths[start:start + batch_size]:
            try:
                tensors.append(predictor.pre.load(p))
                chunk.append(p)
            except BadImage as bad:
                failed.append({"path": p, "reason": bad.code, "detail": bad.detail})
        if not tensors:
            continue
        import torch

        batch = torch.stack(tensors)
        cams, probs = explainer.heatmaps(batch)
        for n, (p, cam, row) in enumerate(zip(chunk, cams, probs)):
            index = start + n
            name = f"{index:05d}_{shown(Path(p).stem)}.png"
            Image.fromarray(explainer.overlay(batch[n], cam)).save(out_dir / name)
            label = int(row.argmax())
            rows.append([p, predictor.classes[label], round(float(row[label]), 6), name])
    with (out_dir / "explanations.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "predicted", "score", "heatmap"])
        w.writerows(rows)
        w.writerows([[x["path"], "", "", f"error: {x['reason']}: {x['detail']}"] for x in failed])
    return {"out_dir": shown(str(out_dir)), "method": method, "num_files": len(paths), "num_explained": len(rows),
            "failed": failed}


def _model_info(model_dir: Path) -> Dict[str, Any]:
    import json

    try:
        return json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AetherError(f"{model_dir}/model.json: cannot read it ({e}); expected a finished run's model/") from None
