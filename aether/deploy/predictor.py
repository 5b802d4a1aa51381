"""The inference core shared by the BentoML service, `aether predict`, ONNX export and the
serving benchmark: one model folder in, checked and preprocessed images, top-k out, files in
batches (`in_batches`, which every task's predictor shares).

Images go through the dataset doctor's own check (`aether.doctor.checks.check_file`: empty,
truncated, not an image, decompression bomb refused from the header, ...) and then through
the exact evaluation transform (`aether.data.transforms.eval_transform`) built from the
model's saved `preprocessing.json` - the same code training's test split used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from aether.errors import AetherError

Size = Tuple[int, int]  # an image's original (width, height)


class BadImage(AetherError):
    """An input that cannot be classified; `code` is the doctor's issue code (`truncated`, ...)."""

    def __init__(self, code: str, detail: str, path: str = "") -> None:
        super().__init__(f"{path + ': ' if path else ''}{code}: {detail}")
        self.code = code
        self.detail = detail
        self.path = path


@dataclass
class ImageLimits:
    """The run's data limits (`data.max_image_pixels`, `data.min_image_side`): serving refuses
    what training would have refused."""

    max_pixels: int = 89_478_485
    min_side: int = 8
    max_decoded_pixels: int = 0  # pixels being decoded at once per process (0: max_pixels)

    @classmethod
    def from_run(cls, run_dir: Optional[Path]) -> "ImageLimits":
        if run_dir is None or not (run_dir / "config.yaml").is_file():
            return cls()
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")).get("data") or {}  # type: ignore[union-attr]
        return cls(max_pixels=int(data.get("max_image_pixels", cls.max_pixels)),
                   min_side=int(data.get("min_image_side", cls.min_side)))


class Preprocessor:
    """Check + decode + eval-transform; light (no model), so the HTTP front end can own one."""

    def __init__(self, preprocessing: Dict[str, Any], classes: List[str], limits: ImageLimits) -> None:
        from aether.data.transforms import eval_transform

        self.preprocessing = preprocessing
        self.classes = list(classes)
        self.limits = limits
        self.transform = eval_transform(preprocessing)
        from aether.deploy.decode import PixelBudget

        self.budget = PixelBudget(limits.max_decoded_pixels or limits.max_pixels)
        side = int(preprocessing["input_size"][-1])
        # the short side timm's eval transform resizes to before its centre crop
        self.need = int(side / float(preprocessing.get("crop_pct") or 1.0))

    @classmethod
    def from_model_dir(cls, model_dir: Path, limits: Optional[ImageLimits] = None) -> "Preprocessor":
        pre = json.loads((model_dir / "preprocessing.json").read_text())
        classes = json.loads((model_dir / "labels.json").read_text())
        return cls(pre, classes, limits or ImageLimits())

    def check(self, path: str) -> None:
        """Raise `BadImage` with the doctor's reason when `path` is not a usable image."""
        from aether.doctor.checks import check_file

        report = check_file(path, max_pixels=self.limits.max_pixels, min_side=self.limits.min_side)
        if not report.ok:
            raise BadImage(report.fatal[0] if report.fatal else "corrupt", report.detail, path)

    def load(self, path: str) -> Any:
        """One image as a (3, H, W) float tensor, as evaluation feeds the model (decoded reduced
        to what that needs: aether.deploy.decode)."""
        return self.decode(path, self.need, self.transform)[0]

    def decode(self, path: str, need: int, transform: Any) -> Tuple[Any, Tuple[int, int]]:
        """Check + reduced decode of one file within this process's pixel budget, then
        `transform(RGB PIL image)` -> (its result, the original oriented (width, height))."""
        from aether.deploy.decode import OverBudget, decode_reduced, decoded_pixels

        pixels = decoded_pixels(path, need)
        if pixels > self.limits.max_pixels:
            pixels = 0  # the check refuses it from the header (decompression_bomb), nothing decoded
        try:
            with self.budget.hold(pixels):
                self.check(path)
                try:
                    img, size, _ = decode_reduced(path, need)
                    return transform(img), size
                except Exception as exc:  # the check passed but decoding still failed: still the input's fault
                    raise BadImage("corrupt", f"cannot decode: {type(exc).__name__}: {exc}", path) from None
        except OverBudget as exc:
            raise BadImage("too_large", str(exc), path) from None

    def top_k(self, probs: Any, k: int = 5) -> List[Dict[str, Any]]:
        """Rows of class probabilities -> [{label, score, top_k: [{label, score}, ...]}, ...]."""
        import numpy as np

        probs = np.asarray(probs, dtype=np.float64)
        k = max(1, min(k, probs.shape[1]))
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:k]
            top = [{"label": self.classes[i], "score": round(float(row[i]), 6)} for i in order]
            out.append({"label": top[0]["label"], "score": top[0]["score"], "top_k": top})
        return out


class Predictor:
    """The model of a `model/` folder (safetensors + JSON, no pickle) with its preprocessing."""

    def __init__(self, model_dir: Path, device: Optional[str] = None, limits: Optional[ImageLimits] = None) -> None:
        import torch

        from aether.models.saved import load_model_dir

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.safetensors").is_file():
            raise AetherError(f"{self.model_dir}: expected a model folder with model.safetensors, model.json, "
                              "labels.json and preprocessing.json (a finished run's model/)")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, classes, pre = load_model_dir(self.model_dir)
        self.model = model.to(self.device).eval()
        self.pre = Preprocessor(pre, classes, limits or ImageLimits())
        self.info = json.loads((self.model_dir / "model.json").read_text())
        from aether.tasks.codec import codec_class, model_task

        # what the task's codec reads beside the weights: a classifier's temperature
        # (model/calibration.json) and its run's test-time augmentation (model.json test_tta)
        self.runner_options = codec_class(model_task(self.info)).runner_options(self.model_dir)

    @property
    def classes(self) -> List[str]:
        return self.pre.classes

    def probabilities(self, batch: Any) -> Any:
        """(N, 3, H, W) array or tensor -> (N, classes) numpy probabilities: softmax(logits / T)
        with the model's temperature, averaged over its test-time augmentation views."""
        import torch

        from aether.tasks.codec import DEFAULT_TASK, codec_class

        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device, non_blocking=True)
        with torch.inference_mode():  # the classifier's codec: softmax(logits / T) over the views
            return codec_class(DEFAULT_TASK)(self.pre, self.runner_options).forward(self.model, x)

    def predict_paths(self, paths: Sequence[str], batch_size: int = 32, k: int = 5,
                      progress: Any = None) -> Tuple[List[Dict[str, Any]], List[Dict[str, str]]]:
        """Classify files in batches; unusable ones are returned as failures, never raised."""
        return in_batches(paths, batch_size, lambda p: (self.pre.load(p), (0, 0)),
                          lambda x, sizes: self.pre.top_k(self.probabilities(x), k), progress)


def in_batches(paths: Sequence[str], batch_size: int, load: Callable[[str], Tuple[Any, Size]],
               answer: Callable[[Any, List[Size]], List[Dict[str, Any]]], progress: Any = None
               ) -> Tuple[List[Dict[str, Any]], List[Dict[str, str]]]:
    """Files -> ({"path", **answer} per usable file, {"path", "reason", "detail"} per unusable one),
    `batch_size` at a time: `load(path)` -> (tensor, original size) raises BadImage for a file
    that cannot be used (it never aborts the batch); `answer(stacked tensors, sizes)` -> answers.
    `progress(done)` after each batch."""
    import torch

    results: List[Dict[str, Any]] = []
    failures: List[Dict[str, str]] = []
    for start in range(0, len(paths), batch_size):
        chunk, tensors, sizes = [], [], []
        for p in paths[start:start + batch_size]:
            try:
                x, size = load(str(p))
            except BadImage as bad:
                failures.append({"path": str(p), "reason": bad.code, "detail": bad.detail})
                continue
            tensors.append(x)
            sizes.append(size)
            chunk.append(str(p))
        if tensors:
            rows = answer(torch.stack(tensors), sizes)
            results.extend({"path": p, **row} for p, row in zip(chunk, rows))
        if progress is not None:
            progress(min(start + batch_size, len(paths)))
    return results, failures
