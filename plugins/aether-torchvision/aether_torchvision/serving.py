"""Serving the plugin's task=regression: the network's one output in the data's units (the
training split's mean and spread, recorded in model/model.json, undo the standardisation).

    answer   {"value": 0.42}
    CSV      path, value, error
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from aether.tasks.codec import Codec, Size


class RegressionCodec(Codec):
    task = "regression"
    metrics = ("mae", "rmse", "r2")
    verb = "predicted"

    @classmethod
    def serve_options(cls, model_dir: Path, saved: Dict[str, Any], classes: List[str],
                      given: Dict[str, Any]) -> Dict[str, Any]:
        info = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        return {"target_mean": float(info.get("target_mean", 0.0)), "target_std": float(info.get("target_std", 1.0))}

    def load(self, path: str) -> Tuple[Any, Size]:
        return self.pre.load(path), (0, 0)  # the classifier's own evaluation transform

    def forward(self, model: Any, x: Any) -> Any:
        return model(x).float().reshape(len(x), -1)[:, 0].cpu().numpy()

    @staticmethod
    def from_logits(logits: Any) -> Any:
        return logits.reshape(len(logits), -1)[:, 0]

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        mean, std = self.options["target_mean"], self.options["target_std"]
        return [{"value": round(float(z) * std + mean, 6)} for z in rows]

    def csv_columns(self) -> List[str]:
        return ["value"]

    def csv_row(self, answer: Dict[str, Any]) -> List[Any]:
        return [f"{answer['value']:.6f}"]


CODEC = RegressionCodec
