"""A finished run's `model/` folder, as every deploy command finds it: `check_run` proves it is
there (rebuilding it from checkpoints/best.ckpt for a run that was interrupted before writing it).
The exporters and `aether predict` depend on this module, not on each other."""

from __future__ import annotations

from pathlib import Path

from aether.errors import AetherError

MODEL_FILES = ("model.safetensors", "model.json", "labels.json", "preprocessing.json")
# What `aether export format=...` derives from the weights and writes beside them (files, or a
# folder for OpenVINO's model.xml + model.bin): never part of the model's identity (bento.py's
# version hash) nor copied into the BentoML store unless it is what serves (model.onnx).
EXPORTED = ("model.onnx", "onnx.json", "model-int8.onnx", "onnx-int8.json", "model-fp16.onnx", "onnx-fp16.json",
            "model.torchscript.pt", "model.pt2", "torchscript.json", "openvino", "openvino.json",
            "openvino-int8", "openvino-int8.json", "model.engine", "model-fp16.engine", "tensorrt.json",
            "tensorrt-fp16.json")


def is_exported(rel: str) -> bool:
    """True for a path (relative to model/, POSIX) that an export wrote, not the training run."""
    return rel.split("/", 1)[0] in EXPORTED or rel.endswith(".tmp")


def check_run(run: str) -> Path:
    run_dir = Path(run).expanduser()
    missing = [f for f in MODEL_FILES if not (run_dir / "model" / f).is_file()]
    if missing and not (run_dir / "model").exists() and (run_dir / "checkpoints" / "best.ckpt").is_file() \
            and (run_dir / "config.yaml").is_file():
        from aether.deploy.from_checkpoint import model_dir_from_best

        model_dir_from_best(run_dir)  # an interrupted run: its best checkpoint becomes model/
        missing = [f for f in MODEL_FILES if not (run_dir / "model" / f).is_file()]
    if missing:
        raise AetherError(f"run={run}: expected a finished run folder with model/ "
                          f"({', '.join(MODEL_FILES)}); missing: {', '.join(missing)}")
    return run_dir
