#!/usr/bin/env python
"""Test-split boxes per image of a finished detection run's `model/`, at the score threshold it
serves with (model.json's `draw_threshold`: 0.3 for runs from before thresholds were tuned), with
precision / recall / F1 at IoU 0.5 and mAP@.5 - the same numbers for runs of any Aether version
(runs that tune their thresholds also write them to metrics.json `test.at_score_threshold`).

    python benchmarks/det_boxes.py RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(run: Path) -> dict:
    import torch
    from omegaconf import OmegaConf

    from aether.config.validate import validate
    from aether.tasks.common import build_bundle
    from aether.data.formats import FormatsOf
    from aether.tasks.detection.data import DetectionDataset, box_transforms, instance_counts
    from aether.deploy.tasks import serve_options
    from aether.doctor.inspect import detect_structure
    from aether.models.saved import load_model_dir
    from aether.tasks.detection.task import _map50, match_boxes, prf_at

    rc = validate(OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True))
    root = Path(rc.data.path)
    index = FormatsOf("detection")[detect_structure(root, rc.data.format).format]().load(root, dict(rc.data.options))
    bundle = build_bundle("detection", index, rc.data, rc.seed, instance_counts(index))  # the run's own split
    model, _, pre = load_model_dir(run / "model")
    model.eval()
    thr = serve_options(run / "model")["score_threshold"]
    ds = DetectionDataset(bundle.splits["test"], box_transforms(pre["input_size"][-1], None))
    preds, targets = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            x, t = ds[i]
            preds.append(model([x])[0])
            targets.append(t)
    m = [match_boxes(p, t) for p, t in zip(preds, targets)]
    at = prf_at(torch.cat([a[0] for a in m]), torch.cat([a[1] for a in m]), sum(a[2] for a in m), thr)
    return {"run": str(run), "test_images": len(ds), "score_threshold": thr, "map_50": round(_map50(preds, targets), 4),
            "boxes_per_image": round(at["boxes"] / len(ds), 1),
            "true_boxes_per_image": round(sum(a[2] for a in m) / len(ds), 1),
            "precision": at["precision"], "recall": at["recall"], "f1": at["f1"]}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
