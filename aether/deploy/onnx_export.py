"""`aether export run=RUN format=onnx`: RUN/model/model.onnx with a dynamic batch dimension,
checked against PyTorch with onnxruntime before it is kept.

The check runs both on seeded inputs at two batch sizes (1 and 3, which also proves the batch
dimension is dynamic) and fails loudly - AetherError, no model.onnx left behind - when the
largest |logit difference| exceeds `atol` (1e-4). The result is written to onnx.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from aether.errors import AetherError

DEFAULT_ATOL = 1e-4
# The graph is the task codec's `export_module` (aether.tasks.codec.Codec): the network alone (its
# logits), or detection's network up to its fixed-size candidates; the codec turns its output into
# what serving answers from (`onnx_outputs`: softmax, sigmoid, argmax; detection's NMS) and says
# when a task's network cannot be exported (`onnx_refused`).


def onnx_codec(task: str, where: str, context: str = "") -> Any:
    """The codec class of `task`, when its network exports to ONNX; else an AetherError naming
    `where` (the command), the `context` (the run) and the codec's reason."""
    from aether.tasks.codec import codec_class

    codec = codec_class(task)
    if codec.onnx_refused:
        raise AetherError(f"{where}: not available for task={task}{context}: {codec.onnx_refused}")
    return codec


def export_onnx(run: str, atol: float = DEFAULT_ATOL, opset: int = 18) -> Dict[str, Any]:
    import logging
    import warnings

    import torch

    from aether.deploy.model_dir import check_run
    from aether.deploy.predictor import Predictor
    from aether.tasks.codec import model_task

    run_dir = check_run(run)
    out = run_dir / "model" / "model.onnx"
    task = model_task(json.loads((run_dir / "model" / "model.json").read_text()))
    codec = onnx_codec(task, "export format=onnx", f" (run={run})")
    pred = Predictor(run_dir / "model", device="cpu")
    model = pred.model
    if hasattr(model, "merge_and_unload"):  # a LoRA adapter kept separate: export the merged network
        model = model.merge_and_unload()
    model = codec.export_module(model.eval())
    shape = tuple(pred.pre.preprocessing["input_size"])
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    t0 = time.perf_counter()
    tmp = out.with_suffix(".onnx.tmp")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                              opset_version=opset, dynamo=True, external_data=False,
                              dynamic_shapes=({0: batch},), verbose=False)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise AetherError(f"ONNX export of {pred.info.get('name')} failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    export_s = time.perf_counter() - t0
    try:
        worst = parity(model, tmp, shape)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    if not worst["max_abs_diff"] <= atol:
        tmp.unlink(missing_ok=True)
        raise AetherError(f"ONNX parity check failed for {run_dir}: max |logit(onnxruntime) - logit(PyTorch)| = "
                          f"{worst['max_abs_diff']:.3g} > {atol:g} (batch sizes {worst['batch_sizes']}); "
                          "model.onnx was not written")
    tmp.replace(out)
    info = {"path": str(out), "opset": opset, "input": {"name": "images", "shape": ["batch", *shape]},
            "output": {"name": "logits", "shape": codec.onnx_output_shape(len(pred.classes), shape)},
            "task": task,
            "classes": pred.classes, "preprocessing": pred.pre.preprocessing, "atol": atol,
            "export_s": round(export_s, 3), "bytes": out.stat().st_size, **worst,
            "weights_sha256": weights_digest(run_dir / "model"),
            "versions": {"torch": torch.__version__, "onnxruntime": _ort_version()}}
    (run_dir / "model" / "onnx.json").write_text(json.dumps(info, indent=2))
    return info


def weights_digest(model_dir: Path) -> str:
    """sha256 of model.safetensors (and a LoRA adapter kept separate): which weights a model.onnx is of."""
    import hashlib

    digest = hashlib.sha256()
    for path in [model_dir / "model.safetensors", *sorted((model_dir / "adapter").rglob("*"))]:
        if path.is_file():
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def parity(model: Any, onnx_path: Path, shape: tuple, batch_sizes: tuple = (1, 3)) -> Dict[str, Any]:
    """Largest |logit difference| between onnxruntime (CPU) and PyTorch on seeded inputs."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    gen = torch.Generator().manual_seed(1)
    for n in batch_sizes:
        x = torch.randn(n, *shape, generator=gen)
        with torch.inference_mode():
            ref = model(x).float().numpy()
        got = session.run(["logits"], {"images": x.numpy()})[0]
        if got.shape != ref.shape:
            raise AetherError(f"ONNX model returned shape {got.shape} for batch {n}; PyTorch {ref.shape}")
        worst = max(worst, float(np.max(np.abs(got - ref))))
    return {"max_abs_diff": worst, "batch_sizes": list(batch_sizes)}


class OnnxRunner:
    """The serving backend for `aether export backend=onnx`: model.onnx on onnxruntime (CUDA
    when onnxruntime has it, else CPU), same contract as `Predictor.probabilities` (and as
    `TaskPredictor.outputs`: the task's codec turns the logits into what the model worker
    returns: softmax for classification, sigmoid for multilabel, class-id masks for segmentation)."""

    backend = "onnx"

    def __init__(self, path: Path, task: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
                 model_dir: Optional[Path] = None) -> None:
        """`options`: the served task options (a bento's aether_serve.json); by default the model
        folder (`model_dir`, else the folder of `path`) decides (classification: its temperature
        and test-time augmentation)."""
        from aether.tasks.codec import model_task

        self.task = model_task({"task": task})
        self.codec = onnx_codec(self.task, f"{path}: the {self.backend} backend")
        self.options = {**self.codec.runner_options(Path(model_dir or Path(path).parent)), **(options or {})}
        self.open(Path(path))

    def open(self, path: Path) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), providers=providers)

    def logits(self, batch: Any) -> Any:
        import numpy as np

        return self.session.run(["logits"], {"images": np.asarray(batch, dtype=np.float32)})[0]

    def probabilities(self, batch: Any) -> Any:
        """(N, 3, H, W) -> (N, classes) probabilities of a classifier: softmax(logits / T) with the
        model's temperature, averaged over its test-time augmentation views (as Predictor's)."""
        from aether.tasks.codec import DEFAULT_TASK, codec_class

        return codec_class(DEFAULT_TASK).onnx_outputs(self.logits, batch, self.options)

    def outputs(self, batch: Any) -> Any:
        return self.codec.onnx_outputs(self.logits, batch, self.options)
