"""Serving a model folder of any task: its serve options, its codec, and `TaskPredictor`.

The task is the one model/model.json records; everything that differs between tasks (what the
model takes, what its raw output is, the answer, the predictions files, the ONNX outputs) is that
task's codec (aether.tasks.codec.Codec, in aether/tasks/<task>/serving.py). The BentoML service
(front end: `load` + `decode`; model worker: `forward`), `aether predict` and `TaskPredictor` all
go through it, so a served answer and an in-process one are computed by the same code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aether.deploy.predictor import ImageLimits, Predictor, Preprocessor, in_batches
from aether.tasks.codec import Codec, codec_class, model_task


def serve_options(model_dir: Path, score_threshold: Optional[float] = None, top_k: int = 5,
                  tta: Optional[str] = None, reject_below: Optional[float] = None) -> Dict[str, Any]:
    """{"task", "top_k", and what the task's codec needs to decode} for a model folder, from its
    model.json `task_options` and files; `score_threshold` overrides a detection run's own,
    `tta` and `reject_below` a classification run's (test.tta, calibration.reject_below)."""
    from aether.errors import AetherError

    info = json.loads((model_dir / "model.json").read_text())
    classes = json.loads((model_dir / "labels.json").read_text())
    task = model_task(info)
    codec = codec_class(task)
    given: Dict[str, Any] = {k: v for k, v in (("score_threshold", score_threshold), ("tta", tta),
                                               ("reject_below", reject_below)) if v is not None}
    for key in ("tta", "reject_below"):
        if key in given and key not in codec.accepts:
            raise AetherError(f"{key}={given[key]}: not available for task={task} (classification's: one class "
                              "distribution per image)")
    own = codec.serve_options(model_dir, info.get("task_options") or {}, classes, given)
    return {"task": task, "top_k": min(top_k, len(classes)), **own}


def make_codec(pre: Preprocessor, options: Dict[str, Any]) -> Codec:
    """The codec of the task `options` (serve_options' result) names, over `pre`."""
    return codec_class(model_task(options))(pre, options)


class TaskPredictor(Predictor):
    """A `model/` folder of any task, in process: the same codec as the service."""

    def __init__(self, model_dir: Path, device: Optional[str] = None, limits: Optional[ImageLimits] = None,
                 score_threshold: Optional[float] = None, top_k: int = 5, tta: Optional[str] = None,
                 reject_below: Optional[float] = None) -> None:
        super().__init__(model_dir, device=device, limits=limits)
        self.options = serve_options(self.model_dir, score_threshold, top_k, tta=tta, reject_below=reject_below)
        self.runner_options = {**self.runner_options, **{k: v for k, v in self.options.items()
                                                         if k in self.runner_options}}
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
        return in_batches(paths, batch_size, self.codec.load,
                          lambda x, sizes: self.codec.decode(self.outputs(x), sizes), progress)
