"""Serving task=classification: the model's evaluation input, class probabilities, top-k answers.

    answer   {"label", "score", "top_k": [{"label", "score"}, ...]}
    CSV      path, label, score, top_k ("a:0.91;b:0.05;..."), error

Probabilities are softmax(logits / T) with the run's temperature (model/calibration.json),
averaged over the test-time augmentation views (`tta`: the run's test.tta, model.json
`test_tta`, unless given); with `reject_below`, an answer whose top probability is below it is
labelled `unknown` (its top_k still lists the classes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from aether.errors import AetherError
from aether.tasks.codec import Agreement, Codec, Size

UNKNOWN = "unknown"  # the label of an answer below reject_below


class ClassificationCodec(Codec):
    task = "classification"
    metrics = ("accuracy", "accuracy_top5", "f1_macro", "f1_micro")
    verb = "classified"
    accepts = ("tta", "reject_below")
    packages = True  # one class score vector per image: top-1 agreement and accuracy on the test split

    @classmethod
    def runner_options(cls, model_dir: Path) -> Dict[str, Any]:
        from aether.tasks.classification.calibration import read
        from aether.tasks.classification.tta import check_mode

        info: Dict[str, Any] = {}
        if (model_dir / "model.json").is_file():
            info = json.loads((model_dir / "model.json").read_text())
        cal = read(model_dir)
        return {"temperature": cal["temperature"], "tta": check_mode(info.get("test_tta", "none"),
                                                                       f"{model_dir}/model.json test_tta"),
                "reject_below": cal["reject_below"]}

    @classmethod
    def serve_options(cls, model_dir: Path, saved: Dict[str, Any], classes: List[str],
                      given: Dict[str, Any]) -> Dict[str, Any]:
        from aether.tasks.classification.calibration import check_reject
        from aether.tasks.classification.tta import check_mode

        own = cls.runner_options(model_dir)
        if "tta" in given:
            own["tta"] = check_mode(given["tta"])
        if "reject_below" in given:
            own["reject_below"] = check_reject(given["reject_below"])
        if own["reject_below"] is not None and UNKNOWN in classes:
            raise AetherError(f"reject_below={own['reject_below']:g}: a class of this model is named "
                              f"{UNKNOWN!r}, so a rejected answer could not be told from it")
        return own

    def load(self, path: str) -> Tuple[Any, Size]:
        return self.pre.load(path), (0, 0)  # top-k answers need no original size

    def forward(self, model: Any, x: Any) -> Any:
        from aether.tasks.classification.tta import probabilities

        o = self.options
        return probabilities(model, x, o.get("tta", "none"), float(o.get("temperature", 1.0))).cpu().numpy()

    @classmethod
    def onnx_outputs(cls, logits: Any, batch: Any, options: Dict[str, Any]) -> Any:
        import numpy as np
        import torch

        from aether.tasks.classification.tta import probabilities

        x = torch.as_tensor(np.asarray(batch, dtype=np.float32))
        return probabilities(lambda v: torch.from_numpy(logits(v.contiguous().numpy())), x,
                             options.get("tta", "none"), float(options.get("temperature", 1.0))).numpy()

    @staticmethod
    def from_logits(logits: Any) -> Any:
        import numpy as np

        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        answers = self.pre.top_k(rows, int(self.options.get("top_k", 5)))
        below = self.options.get("reject_below")
        if below is not None:
            for a in answers:
                if a["score"] < below:
                    a["label"] = UNKNOWN
        return answers

    def csv_columns(self) -> List[str]:
        return ["label", "score", "top_k"]

    def csv_row(self, answer: Dict[str, Any]) -> List[Any]:
        return [answer["label"], f"{answer['score']:.6f}",
                ";".join(f"{t['label']}:{t['score']:.6f}" for t in answer["top_k"])]

    def agreement(self, saved: Dict[str, Any]) -> Agreement:
        return TopOneAgreement()

    def predictions_head(self, run: str, model: Any) -> Dict[str, Any]:
        # classification's predictions.json predates tasks: it names neither task nor options
        return {"run": run, "model": model, "classes": self.classes}


class TopOneAgreement(Agreement):
    """The same top class, and the accuracy of each model (targets: class indices)."""

    def __init__(self) -> None:
        self.n = self.agree = self.right_pt = self.right_ex = 0

    def update(self, ref: Any, got: Any, targets: List[Any]) -> None:
        import numpy as np

        a, b, y = np.asarray(ref).argmax(1), np.asarray(got).argmax(1), np.asarray(targets)
        self.agree += int((a == b).sum())
        self.right_pt += int((a == y).sum())
        self.right_ex += int((b == y).sum())
        self.n += len(y)

    def scores(self) -> Tuple[float, float, float]:
        n = max(1, self.n)
        return self.agree / n, self.right_pt / n, self.right_ex / n


CODEC = ClassificationCodec
