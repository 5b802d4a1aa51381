"""Serving every task: what a model's raw output is, and how it becomes a JSON answer.

A `Codec` owns one task's three steps, shared by the BentoML service (front: `load` + `decode`;
model worker: `forward`), `aether predict` and the in-process `TaskPredictor`, so a served answer
and an in-process one are computed by the same code:

- `load(path)`: the doctor's file check, then the task's EVALUATION transform (the one its test
  split used: `eval_transform` for (multilabel) classification, `mask_transforms(size, None, ...)`
  for segmentation, `box_transforms(size, None)` for detection) -> (tensor, original (w, h)).
- `forward(model, x)`: (N, 3, H, W) -> one numpy array per batch (BentoML's adaptive batching
  needs arrays): class probabilities, sigmoid scores, class-id masks, or detections padded to a
  fixed (N, D, 6) of [x0, y0, x1, y1, score, label] with score -1 for padding.
- `decode(rows, sizes)`: the task's answer per image:
    classification  {"label", "score", "top_k": [...]}                       (unchanged)
    multilabel      {"labels": [over their tuned thresholds], "scores": {label: p}}
    detection       {"boxes": [[x0, y0, x1, y1] in original pixels], "labels": [...], "scores": [...]}
    segmentation    {"width", "height", "areas": {class: {"pixels", "fraction"}},
                     "mask_png": base64 PNG, original size, pixel value = class index}
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aether.deploy.predictor import BadImage, ImageLimits, Predictor, Preprocessor
from aether.errors import AetherError

TASKS = ("classification", "multilabel", "detection", "segmentation")
DEFAULT_SCORE_THRESHOLD = 0.3
Size = Tuple[int, int]


def task_of(info: Dict[str, Any]) -> str:
    """The task a `model/model.json` records (classification runs predate the field)."""
    return str(info.get("task") or "classification")


def serve_options(model_dir: Path, score_threshold: Optional[float] = None, top_k: int = 5) -> Dict[str, Any]:
    """What decoding needs besides the classes: multilabel thresholds (model/thresholds.json,
    else the run's fixed `task_options.threshold`), the detection score threshold (default: the
    run's `task_options.draw_threshold`, tuned on its validation split), top-k for classification."""
    info = json.loads((model_dir / "model.json").read_text())
    classes = json.loads((model_dir / "labels.json").read_text())
    opts = info.get("task_options") or {}
    out: Dict[str, Any] = {"task": task_of(info), "top_k": min(top_k, len(classes))}
    if out["task"] == "multilabel":
        path = model_dir / "thresholds.json"
        fixed = opts.get("threshold")
        default = float(fixed) if isinstance(fixed, (int, float)) else 0.5
        saved = json.loads(path.read_text()) if path.is_file() else {}
        out["thresholds"] = {c: float(saved.get(c, default)) for c in classes}
    if out["task"] == "detection":
        # the run's draw_threshold: the score threshold chosen on its validation split (best F1),
        # or the number it was given; "tune" was never tuned (a model rebuilt from a checkpoint)
        saved = opts.get("draw_threshold")
        thr = score_threshold if score_threshold is not None else (
            saved if isinstance(saved, (int, float)) else DEFAULT_SCORE_THRESHOLD)
        if not 0 <= float(thr) < 1:
            raise AetherError(f"score_threshold={thr}: expected a probability in [0, 1)")
        out["score_threshold"] = float(thr)
        out["detections"] = int(opts.get("detections_per_image", 100))
        if isinstance(opts.get("nms_threshold"), (int, float)):
            out["nms_threshold"] = float(opts["nms_threshold"])  # applied inside the model; shown in /metadata
    return out


class Codec:
    """Classification (and the base of the others): the existing Preprocessor and top-k."""

    task = "classification"

    def __init__(self, pre: Preprocessor, options: Dict[str, Any]) -> None:
        self.pre = pre
        self.classes = pre.classes
        self.options = options

    def load(self, path: str) -> Tuple[Any, Size]:
        x = self.pre.load(path)
        return x, (0, 0)

    def forward(self, model: Any, x: Any) -> Any:
        import torch

        return torch.softmax(model(x).float(), dim=1).cpu().numpy()

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        return self.pre.top_k(rows, int(self.options.get("top_k", 5)))

    def _decoded(self, path: str, transform: Any) -> Tuple[Any, Size]:
        """Check + (reduced) decode of a file, then a torchvision v2 `transform` on it as the
        task's Dataset does (PIL -> uint8 tv_tensors.Image); the transform squashes to its
        input size, so each side needs that much."""
        import numpy as np
        import torch
        from torchvision import tv_tensors

        def to_tensor(img: Any) -> Any:
            return transform(tv_tensors.Image(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)))

        return self.pre.decode(path, int(self.pre.preprocessing["input_size"][-1]), to_tensor)


class MultilabelCodec(Codec):
    task = "multilabel"

    def forward(self, model: Any, x: Any) -> Any:
        return model(x).float().sigmoid().cpu().numpy()

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        thr = self.options["thresholds"]
        out = []
        for row in rows:
            scores = {c: round(float(p), 6) for c, p in zip(self.classes, row)}
            out.append({"labels": [c for c in self.classes if scores[c] >= thr[c]], "scores": scores})
        return out


class SegmentationCodec(Codec):
    task = "segmentation"

    def __init__(self, pre: Preprocessor, options: Dict[str, Any]) -> None:
        super().__init__(pre, options)
        from aether.data.segmentation import mask_transforms

        p = pre.preprocessing
        self.transform = mask_transforms(p["input_size"][-1], None, p["mean"], p["std"])

    def load(self, path: str) -> Tuple[Any, Size]:
        import torch

        x, size = self._decoded(path, self.transform)
        return x.as_subclass(torch.Tensor), size

    def forward(self, model: Any, x: Any) -> Any:
        import torch

        return model(x).argmax(1).to(dtype=torch.uint8).cpu().numpy()

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        import numpy as np
        from PIL import Image

        out = []
        for mask, (w, h) in zip(rows, sizes):
            # class ids: nearest neighbour back to the original size (the eval transform squashed it)
            full = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").resize((w, h), Image.NEAREST)
            counts = np.bincount(np.asarray(full).ravel(), minlength=len(self.classes))
            buf = io.BytesIO()
            full.save(buf, format="PNG")
            out.append({"width": w, "height": h,
                        "areas": {c: {"pixels": int(counts[i]), "fraction": round(float(counts[i]) / (w * h), 6)}
                                  for i, c in enumerate(self.classes)},
                        "mask_png": base64.b64encode(buf.getvalue()).decode("ascii")})
        return out


class DetectionCodec(Codec):
    task = "detection"

    def __init__(self, pre: Preprocessor, options: Dict[str, Any]) -> None:
        super().__init__(pre, options)
        from aether.data.detection import box_transforms

        self.size = int(pre.preprocessing["input_size"][-1])
        self.transform = box_transforms(self.size, None)

    def load(self, path: str) -> Tuple[Any, Size]:
        import torch
        from torchvision import tv_tensors

        def with_no_boxes(image: Any) -> Any:  # box_transforms sanitises boxes: give it an empty set
            empty = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=tuple(image.shape[-2:]))
            return self.transform(image, {"boxes": empty, "labels": torch.zeros(0, dtype=torch.int64)})[0]

        x, size = self._decoded(path, with_no_boxes)
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


CODECS = {c.task: c for c in (Codec, MultilabelCodec, SegmentationCodec, DetectionCodec)}


def make_codec(pre: Preprocessor, options: Dict[str, Any]) -> Codec:
    task = options.get("task", "classification")
    if task not in CODECS:
        raise AetherError(f"model task {task!r}: cannot serve it; expected one of {', '.join(TASKS)}")
    return CODECS[task](pre, options)


class TaskPredictor(Predictor):
    """A `model/` folder of any task, in process: the same codec as the service."""

    def __init__(self, model_dir: Path, device: Optional[str] = None, limits: Optional[ImageLimits] = None,
                 score_threshold: Optional[float] = None, top_k: int = 5) -> None:
        super().__init__(model_dir, device=device, limits=limits)
        self.options = serve_options(self.model_dir, score_threshold, top_k)
        self.codec = make_codec(self.pre, self.options)

    @property
    def task(self) -> str:
        return self.codec.task

    def outputs(self, batch: Any) -> Any:
        """(N, 3, H, W) -> the task's raw numpy output (what the model worker returns)."""
        import torch

        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device, non_blocking=True)
        with torch.inference_mode():
            return self.codec.forward(self.model, x)

    def predict_task_paths(self, paths: Sequence[str], batch_size: int = 32, progress: Any = None
                           ) -> Tuple[List[Dict[str, Any]], List[Dict[str, str]]]:
        """Like `predict_paths`, for every task; unusable files are returned as failures."""
        import torch

        results: List[Dict[str, Any]] = []
        failures: List[Dict[str, str]] = []
        for start in range(0, len(paths), batch_size):
            chunk, tensors, sizes = [], [], []
            for p in paths[start:start + batch_size]:
                try:
                    x, size = self.codec.load(str(p))
                except BadImage as bad:
                    failures.append({"path": str(p), "reason": bad.code, "detail": bad.detail})
                    continue
                tensors.append(x)
                sizes.append(size)
                chunk.append(str(p))
            if tensors:
                rows = self.codec.decode(self.outputs(torch.stack(tensors)), sizes)
                results.extend({"path": p, **row} for p, row in zip(chunk, rows))
            if progress is not None:
                progress(min(start + batch_size, len(paths)))
        return results, failures
