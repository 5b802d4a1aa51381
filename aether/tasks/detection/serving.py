"""Serving task=detection: boxes over the run's score threshold, in each input's own pixels.

The detector's raw output is padded to a fixed (N, D, 6) array of [x0, y0, x1, y1, score, label]
(score -1 for padding) so that batches pass between BentoML's front end and model worker as one
array. The score threshold is the run's `draw_threshold` (chosen on its validation split, best
F1) unless `score_threshold=` is given; NMS is applied inside the model.

    answer   {"boxes": [[x0, y0, x1, y1] in original pixels], "labels": [...], "scores": [...]}
    CSV      path, num_boxes, boxes (JSON: [{"box": [x0, y0, x1, y1], "label", "score"}, ...]), error
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from aether.errors import AetherError
from aether.tasks.codec import Codec, Size

# runs from before thresholds were tuned, and a model rebuilt from a checkpoint ("tune" unresolved)
DEFAULT_SCORE_THRESHOLD = 0.3


class DetectionCodec(Codec):
    task = "detection"
    metrics = ("map", "map_50")
    # measured with torch 2.x dynamo export: TorchExportError
    onnx_refused = ("the torchvision detector's post-processing (score filter, NMS) has data-dependent output "
                    "sizes that torch.export cannot trace, so no parity-checked model.onnx can be made; serve it "
                    "with `aether export run=RUN` (PyTorch backend) instead")

    def __init__(self, pre: Any, options: Dict[str, Any]) -> None:
        super().__init__(pre, options)
        from aether.tasks.detection.data import box_transforms

        self.size = int(pre.preprocessing["input_size"][-1])
        self.transform = box_transforms(self.size, None)  # the test split's

    @classmethod
    def serve_options(cls, model_dir: Path, saved: Dict[str, Any], classes: List[str],
                      given: Dict[str, Any]) -> Dict[str, Any]:
        thr = given.get("score_threshold")
        if thr is None:
            thr = saved.get("draw_threshold")
            thr = thr if isinstance(thr, (int, float)) else DEFAULT_SCORE_THRESHOLD
        if not 0 <= float(thr) < 1:
            raise AetherError(f"score_threshold={thr}: expected a probability in [0, 1)")
        out = {"score_threshold": float(thr), "detections": int(saved.get("detections_per_image", 100))}
        if isinstance(saved.get("nms_threshold"), (int, float)):
            out["nms_threshold"] = float(saved["nms_threshold"])  # applied inside the model; shown in /metadata
        return out

    def load(self, path: str) -> Tuple[Any, Size]:
        import torch
        from torchvision import tv_tensors

        def with_no_boxes(image: Any) -> Any:  # box_transforms sanitises boxes: give it an empty set
            empty = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=tuple(image.shape[-2:]))
            return self.transform(image, {"boxes": empty, "labels": torch.zeros(0, dtype=torch.int64)})[0]

        x, size = self.decoded(path, with_no_boxes)
        return x.as_subclass(torch.Tensor), size

    def forward(self, model: Any, x: Any) -> Any:
        import torch

        d = int(self.options.get("detections", 100))
        out = torch.full((len(x), d, 6), -1.0)
        for i, det in enumerate(model(list(x))):
            n = min(d, len(det["scores"]))
            out[i, :n, :4] = det["boxes"][:n].float().cpu()
            out[i, :n, 4] = det["scores"][:n].float().cpu()
            out[i, :n, 5] = det["labels"][:n].float().cpu()
        return out.numpy()

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        thr = float(self.options["score_threshold"])
        out = []
        for dets, (w, h) in zip(rows, sizes):
            sx, sy = w / self.size, h / self.size  # the eval transform resized to size x size
            keep = [d for d in dets if d[4] >= 0 and d[4] >= thr]
            out.append({
                "boxes": [[round(float(d[0]) * sx, 2), round(float(d[1]) * sy, 2), round(float(d[2]) * sx, 2),
                           round(float(d[3]) * sy, 2)] for d in keep],
                "labels": [self.classes[int(d[5])] for d in keep],
                "scores": [round(float(d[4]), 6) for d in keep],
            })
        return out

    def csv_columns(self) -> List[str]:
        return ["num_boxes", "boxes"]

    def csv_row(self, answer: Dict[str, Any]) -> List[Any]:
        boxes = [{"box": b, "label": lab, "score": s}
                 for b, lab, s in zip(answer["boxes"], answer["labels"], answer["scores"])]
        return [len(boxes), json.dumps(boxes)]


CODEC = DetectionCodec
