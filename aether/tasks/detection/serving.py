"""Serving task=detection: boxes over the run's score threshold, in each input's own pixels.

The detector's raw output is padded to a fixed (N, D, 6) array of [x0, y0, x1, y1, score, label]
(score -1 for padding) so that batches pass between BentoML's front end and model worker as one
array. The score threshold is the run's `draw_threshold` (chosen on its validation split, best
F1) unless `score_threshold=` is given.

An FCOS or RetinaNet network, exported (ONNX, TorchScript, OpenVINO, TensorRT) or served in
PyTorch, stops before its data-dependent steps (aether.tasks.detection.detector.Candidates: every
anchor's decoded box and class scores); `finish_candidates` does the rest as torchvision does
(score filter, per-level top-k, NMS, the best D) after either, so the exported and the PyTorch
model are finished by the same code. A Faster R-CNN (not exportable) is finished inside the
torchvision model.

    answer   {"boxes": [[x0, y0, x1, y1] in original pixels], "labels": [...], "scores": [...]}
    CSV      path, num_boxes, boxes (JSON: [{"box": [x0, y0, x1, y1], "label", "score"}, ...]), error
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from aether.errors import AetherError
from aether.tasks.codec import Agreement, Codec, Size

# runs from before thresholds were tuned, and a model rebuilt from a checkpoint ("tune" unresolved)
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_MIN_SCORE = 0.05  # task_options.score_threshold's default: the candidates' score filter
NMS_DEFAULT = {"fcos": 0.6, "retinanet": 0.5}  # torchvision's, for a model whose NMS was never tuned
MATCH_IOU = 0.9  # an exported box agrees with a PyTorch box of the same class it overlaps this much


class DetectionCodec(Codec):
    task = "detection"
    metrics = ("map", "map_50")
    # FCOS and RetinaNet: exported up to their candidates (fixed shapes), finished by `onnx_outputs`;
    # agreement = boxes matched at IoU 0.9 and the same class, metric mAP@.5 (BoxAgreement)
    packages = True
    # INT8 for the network's convolutions only: its output concatenates box corners in pixels with
    # class probabilities, and one quantisation scale over both (a quantized Concat and decoding
    # arithmetic) rounds every score to a step of about size/255 (measured: 0 of 50 boxes agreed)
    int8_op_types = ("Conv", "MatMul", "Gemm")

    def __init__(self, pre: Any, options: Dict[str, Any]) -> None:
        super().__init__(pre, options)
        from aether.tasks.detection.data import box_transforms

        self.size = int(pre.preprocessing["input_size"][-1])
        self.transform = box_transforms(self.size, None)  # the test split's
        self._built: Any = None  # (model, its Candidates or None): `_candidates`

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
        # applied by `finish_candidates` (fcos, retinanet; shown in /metadata), inside a Faster R-CNN
        nms = saved.get("nms_threshold")
        out["nms_threshold"] = float(nms) if isinstance(nms, (int, float)) else NMS_DEFAULT.get(saved.get("head"), 0.5)
        low = saved.get("score_threshold")
        out["min_score"] = float(low) if isinstance(low, (int, float)) else DEFAULT_MIN_SCORE
        return out

    @classmethod
    def export_module(cls, model: Any) -> Any:
        from aether.tasks.detection.detector import Candidates

        return Candidates(model).eval()

    @classmethod
    def onnx_output_shape(cls, num_classes: int, input_shape: Sequence[int]) -> List[Any]:
        from aether.tasks.detection.detector import CANDIDATE_COLUMNS

        return ["batch", "anchors", CANDIDATE_COLUMNS + num_classes]

    @classmethod
    def onnx_outputs(cls, logits: Any, batch: Any, options: Dict[str, Any]) -> Any:
        return finish_candidates(logits(batch), float(options.get("min_score", DEFAULT_MIN_SCORE)),
                                 float(options.get("nms_threshold", 0.5)), int(options.get("detections", 100)))

    def example(self, path: str, target: Any) -> Tuple[Any, Any]:
        """The image and its boxes through the test split's transform (the task's Dataset): boxes
        in the model's input pixels, as the run's test mAP was computed."""
        from aether.data.items import Item
        from aether.tasks.detection.data import DetectionDataset

        return DetectionDataset([Item(path, target)], self.transform)[0]

    def agreement(self, saved: Dict[str, Any]) -> Agreement:
        return BoxAgreement()

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

        net = self._candidates(model)
        if net is not None:  # the exported graph's computation, then the very code after an exported one
            with torch.inference_mode():
                rows = net(x).float().cpu().numpy()
            return self.onnx_outputs(lambda _: rows, x, self.options)
        return padded(model(list(x)), int(self.options.get("detections", 100)))

    def _candidates(self, model: Any) -> Any:
        """`model` up to its candidates (built once per model: its anchors are computed on a
        blank image), or None for a detector that has none (Faster R-CNN)."""
        cached = self._built
        if cached is None or cached[0] is not model:
            try:
                net = self.export_module(model)
            except AetherError:
                net = None
            self._built = cached = (model, net)
        return cached[1]

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


def padded(detections: List[Dict[str, Any]], d: int) -> Any:
    """A torchvision detector's answers (one {"boxes", "scores", "labels"} per image, best first)
    -> `forward`'s (N, d, 6) array, -1 past each image's last box."""
    import torch

    out = torch.full((len(detections), d, 6), -1.0)
    for i, det in enumerate(detections):
        n = min(d, len(det["scores"]))
        out[i, :n, :4] = det["boxes"][:n].float().cpu()
        out[i, :n, 4] = det["scores"][:n].float().cpu()
        out[i, :n, 5] = det["labels"][:n].float().cpu()
    return out.numpy()


def finish_candidates(rows: Any, min_score: float, nms: float, detections: int) -> Any:
    """An exported detector's (N, A, 5 + classes) candidates (aether.tasks.detection.detector.
    Candidates) -> `forward`'s (N, D, 6) array, as torchvision's FCOS / RetinaNet
    postprocess_detections finishes them: per level, the scores over `min_score`, the best
    TOPK_CANDIDATES of them; then class-wise NMS at IoU `nms` and the best `detections`."""
    import numpy as np
    import torch
    from torchvision.ops import batched_nms

    from aether.tasks.detection.detector import CANDIDATE_COLUMNS, TOPK_CANDIDATES

    rows = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    out = torch.full((rows.shape[0], detections, 6), -1.0)
    if rows.shape[0] == 0:
        return out.numpy()
    sizes = torch.unique_consecutive(rows[0, :, 4], return_counts=True)[1].tolist()  # anchors per level
    classes = rows.shape[-1] - CANDIDATE_COLUMNS
    for i, image in enumerate(rows):
        boxes, scores, labels = [], [], []
        for level in image.split(sizes):
            flat = level[:, CANDIDATE_COLUMNS:].flatten()
            idx = torch.where(flat > min_score)[0]
            top, pick = flat[idx].topk(min(TOPK_CANDIDATES, len(idx)))
            idx = idx[pick]
            boxes.append(level[torch.div(idx, classes, rounding_mode="floor"), :4])
            scores.append(top)
            labels.append(idx % classes)
        b, s, lab = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        keep = batched_nms(b, s, lab, nms)[:detections]
        out[i, :len(keep), :4], out[i, :len(keep), 4], out[i, :len(keep), 5] = b[keep], s[keep], lab[keep].float()
    return out.numpy()


def _detections(rows: Any) -> Dict[str, Any]:
    """One image's (D, 6) padded rows -> torchmetrics' {"boxes", "scores", "labels"} tensors."""
    import numpy as np
    import torch

    r = torch.from_numpy(np.asarray(rows, dtype=np.float32))
    r = r[r[:, 4] >= 0]
    return {"boxes": r[:, :4], "scores": r[:, 4], "labels": r[:, 5].long()}


class BoxAgreement(Agreement):
    """Each box PyTorch answers matched by an exported one of the same class at IoU >= MATCH_IOU
    (greedy, in falling score order: aether.tasks.detection.task.match_boxes), over the larger of
    the two boxes counts per image (an exported model that adds boxes disagrees too); and the test
    mAP@.5 of each model as the run computed it (torchmetrics, pycocotools). Targets: the test
    transform's {"boxes", "labels"} in input pixels."""

    measures = "boxes"
    metric = "map_50"

    def __init__(self) -> None:
        self.matched = self.boxes = 0
        self.ref: List[Dict[str, Any]] = []
        self.got: List[Dict[str, Any]] = []
        self.targets: List[Dict[str, Any]] = []

    def update(self, ref: Any, got: Any, targets: List[Any]) -> None:
        from aether.tasks.detection.task import match_boxes

        for r, g, t in zip(ref, got, targets):
            pr, pg = _detections(r), _detections(g)
            _, tp, _ = match_boxes(pg, pr, MATCH_IOU)
            self.matched += int(tp.sum())
            self.boxes += max(len(pr["boxes"]), len(pg["boxes"]))
            self.ref.append(pr)
            self.got.append(pg)
            self.targets.append({"boxes": t["boxes"].float(), "labels": t["labels"].long()})

    def result(self) -> Dict[str, Any]:
        return {**super().result(), "boxes_pytorch": sum(len(p["boxes"]) for p in self.ref),
                "boxes_exported": sum(len(p["boxes"]) for p in self.got), "match_iou": MATCH_IOU}

    def scores(self) -> Tuple[float, float, float]:
        from aether.tasks.detection.task import map50

        agree = self.matched / self.boxes if self.boxes else 1.0
        return agree, map50(self.ref, self.targets), map50(self.got, self.targets)


CODEC = DetectionCodec
