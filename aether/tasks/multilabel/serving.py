"""Serving task=multilabel: sigmoid scores per label, the labels over their thresholds (tuned on
the validation split: model/thresholds.json; else the run's fixed `task_options.threshold`).

    answer   {"labels": [over their thresholds], "scores": {label: p}}
    CSV      path, labels ("a;b"), scores ("a:0.91;b:0.12;..."), error
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from aether.tasks.codec import Agreement, Codec, Size


class MultilabelCodec(Codec):
    task = "multilabel"
    metrics = ("f1_macro", "f1_micro", "map")
    packages = True  # one sigmoid score per label: agreement of the decisions at the served thresholds, mAP

    @classmethod
    def serve_options(cls, model_dir: Path, saved: Dict[str, Any], classes: List[str],
                      given: Dict[str, Any]) -> Dict[str, Any]:
        path = model_dir / "thresholds.json"
        fixed = saved.get("threshold")
        default = float(fixed) if isinstance(fixed, (int, float)) else 0.5
        tuned = json.loads(path.read_text()) if path.is_file() else {}
        return {"thresholds": {c: float(tuned.get(c, default)) for c in classes}}

    def load(self, path: str) -> Tuple[Any, Size]:
        return self.pre.load(path), (0, 0)  # the classifier's own evaluation transform

    def forward(self, model: Any, x: Any) -> Any:
        return model(x).float().sigmoid().cpu().numpy()

    @staticmethod
    def from_logits(logits: Any) -> Any:
        import numpy as np

        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def agreement(self, saved: Dict[str, Any]) -> Agreement:
        return DecisionAgreement(self.classes, [self.options["thresholds"][c] for c in self.classes])

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        thr = self.options["thresholds"]
        out = []
        for row in rows:
            scores = {c: round(float(p), 6) for c, p in zip(self.classes, row)}
            out.append({"labels": [c for c in self.classes if scores[c] >= thr[c]], "scores": scores})
        return out

    def csv_columns(self) -> List[str]:
        return ["labels", "scores"]

    def csv_row(self, answer: Dict[str, Any]) -> List[Any]:
        return [";".join(answer["labels"]), ";".join(f"{c}:{p:.6f}" for c, p in answer["scores"].items())]


class DecisionAgreement(Agreement):
    """The same decision (score over its label's served threshold or not) for each (image, label),
    and the test mAP of each model (the run's own: aether.tasks.multilabel.task.multilabel_results);
    targets: multi-hot lists."""

    measures = "label decisions"
    metric = "map"

    def __init__(self, classes: List[str], thresholds: List[float]) -> None:
        self.classes, self.thresholds = classes, thresholds
        self.ref: List[Any] = []
        self.got: List[Any] = []
        self.y: List[Any] = []

    def update(self, ref: Any, got: Any, targets: List[Any]) -> None:
        import numpy as np

        self.ref.append(np.asarray(ref, dtype=np.float32))
        self.got.append(np.asarray(got, dtype=np.float32))
        self.y.append(np.asarray(targets, dtype=np.int64).reshape(len(targets), -1))

    def scores(self) -> Tuple[float, float, float]:
        import numpy as np
        import torch

        from aether.tasks.multilabel.task import multilabel_results

        ref, got, y = (torch.from_numpy(np.concatenate(v)) for v in (self.ref, self.got, self.y))
        thr = torch.tensor(self.thresholds, dtype=torch.float32)
        agree = float(((ref >= thr) == (got >= thr)).float().mean())
        return agree, *(multilabel_results(p, y, thr, self.classes)["map"] for p in (ref, got))


CODEC = MultilabelCodec
