"""Serving task=classification: the model's evaluation input, class probabilities, top-k answers.

    answer   {"label", "score", "top_k": [{"label", "score"}, ...]}
    CSV      path, label, score, top_k ("a:0.91;b:0.05;..."), error
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from aether.tasks.codec import Codec, Size


class ClassificationCodec(Codec):
    task = "classification"
    metrics = ("accuracy", "accuracy_top5", "f1_macro", "f1_micro")
    verb = "classified"

    def load(self, path: str) -> Tuple[Any, Size]:
        return self.pre.load(path), (0, 0)  # top-k answers need no original size

    def forward(self, model: Any, x: Any) -> Any:
        import torch

        return torch.softmax(model(x).float(), dim=1).cpu().numpy()

    @staticmethod
    def from_logits(logits: Any) -> Any:
        import numpy as np

        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        return self.pre.top_k(rows, int(self.options.get("top_k", 5)))

    def csv_columns(self) -> List[str]:
        return ["label", "score", "top_k"]

    def csv_row(self, answer: Dict[str, Any]) -> List[Any]:
        return [answer["label"], f"{answer['score']:.6f}",
                ";".join(f"{t['label']}:{t['score']:.6f}" for t in answer["top_k"])]

    def predictions_head(self, run: str, model: Any) -> Dict[str, Any]:
        # classification's predictions.json predates tasks: it names neither task nor options
        return {"run": run, "model": model, "classes": self.classes}


CODEC = ClassificationCodec
