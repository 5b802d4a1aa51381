"""Serving task=multilabel: sigmoid scores per label, the labels over their thresholds (tuned on
the validation split: model/thresholds.json; else the run's fixed `task_options.threshold`).

    answer   {"labels": [over their thresholds], "scores": {label: p}}
    CSV      path, labels ("a;b"), scores ("a:0.91;b:0.12;..."), error
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from aether.tasks.codec import Codec, Size


class MultilabelCodec(Codec):
    task = "multilabel"
    metrics = ("f1_macro", "f1_micro", "map")

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


CODEC = MultilabelCodec
