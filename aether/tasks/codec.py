"""The serving codec interface: what a task's model takes from a request and what its answer is.

aether.deploy (the BentoML service, `aether predict`, ONNX export) knows no task: it reads the
task a model folder was trained for from model/model.json, asks `codec_class(task)` for that
task's codec and calls the methods below. Each task implements them in its own package
(aether/tasks/<task>/serving.py), so a served answer, an `aether predict` row and an in-process
`TaskPredictor` answer are computed by the same code.

A codec is light: numpy, Pillow and torchvision transforms, no Lightning. The BentoML front end
builds one per process and a served Bento has no use for the training stack; for the same reason
`codec_class` finds a task's codec without importing its Task (whose module imports Lightning).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Type

from aether import registry
from aether.errors import AetherError

Size = Tuple[int, int]  # an input's original (width, height): answers come back in its pixels
# the task of a model folder whose model.json has no "task": runs from before tasks existed
DEFAULT_TASK = "classification"


class Codec:
    """One task's serving steps. `pre` is the model's aether.deploy.predictor.Preprocessor (the
    doctor's file check, reduced decoding, the evaluation transform); `options` are the task's
    serve options (`serve_options` below, plus "task" and "top_k")."""

    task = DEFAULT_TASK
    # test metrics (metrics.json "test") quoted in the BentoML store, the bento's labels and /metadata
    metrics: Tuple[str, ...] = ()
    # why `aether export format=onnx` cannot make a parity-checked graph of this task's network
    # (the exported graph is the network alone: its logits); "" when it can
    onnx_refused = ""
    # True: `aether export format=...` (torchscript, openvino, tensorrt, quantize=) and `aether
    # benchmark` take this task's network, checked on the run's test split by the codec's
    # `agreement` (aether.deploy.export_formats); False: format=onnx alone, checked on random inputs
    packages = False
    # `quantize=int8` (onnxruntime): the node kinds quantized; () every kind onnxruntime quantizes
    int8_op_types: Tuple[str, ...] = ()
    verb = "predicted"  # `aether predict`: "N of M files <verb>"
    # the serve options beyond score_threshold this task takes from `aether predict` / `export`
    # (classification: tta, reject_below); any other named for this task is refused
    accepts: Tuple[str, ...] = ()

    def __init__(self, pre: Any, options: Dict[str, Any]) -> None:
        self.pre = pre
        self.classes: List[str] = list(pre.classes)
        self.options = options

    @classmethod
    def serve_options(cls, model_dir: Path, saved: Dict[str, Any], classes: List[str],
                      given: Dict[str, Any]) -> Dict[str, Any]:
        """What decoding needs besides the classes, from the run (`saved`: model.json's
        task_options; files in `model_dir`) and what the user `given` on the command line
        (`score_threshold`); a bad value is an AetherError before any work is done."""
        return {}

    # --- request -> tensor -> raw output (the front end loads, the model worker forwards) ----

    def load(self, path: str) -> Tuple[Any, Size]:
        """One file -> (the (3, H, W) tensor the model takes, original size); raises
        aether.deploy.predictor.BadImage with the doctor's reason for an unusable file."""
        raise NotImplementedError

    def forward(self, model: Any, x: Any) -> Any:
        """(N, 3, H, W) tensor -> one numpy array for the batch (BentoML's adaptive batching
        passes arrays between the front end and the model worker)."""
        raise NotImplementedError

    @staticmethod
    def from_logits(logits: Any) -> Any:
        """The exported ONNX graph's logits (numpy) -> what `forward` returns (the onnx backend)."""
        raise NotImplementedError

    @classmethod
    def runner_options(cls, model_dir: Path) -> Dict[str, Any]:
        """What the ONNX runner needs besides the graph, from the model folder beside it
        (classification: the temperature and the views); given options override these."""
        return {}

    @classmethod
    def onnx_outputs(cls, logits: Any, batch: Any, options: Dict[str, Any]) -> Any:
        """The onnx backend's `forward`: `logits(batch)` (numpy in, numpy out) -> what `forward`
        returns; by default `from_logits` of one pass."""
        return cls.from_logits(logits(batch))

    @classmethod
    def onnx_output_shape(cls, num_classes: int, input_shape: Sequence[int]) -> List[Any]:
        """The logits' shape as onnx.json records it (input_shape: (3, H, W))."""
        return ["batch", num_classes]

    @classmethod
    def export_module(cls, model: Any) -> Any:
        """The network as every exported format holds it: (N, 3, H, W) -> one tensor of a fixed
        shape per image (the graph's "logits"), which `onnx_outputs` turns into `forward`'s
        output; by default the network itself. An AetherError when this model cannot be exported."""
        return model

    # --- `aether export format=...`: the agreement check on the run's test split -----------------

    def example(self, path: str, target: Any) -> Tuple[Any, Any]:
        """One test item (its image file and its target as the run's data index holds it) -> (the
        (3, H, W) tensor the model takes, the target as `agreement` compares it), as the run's
        test split was evaluated; raises BadImage (or the task's Dataset's RuntimeError) for an
        unusable file. By default the served input (`load`) and the target as it is."""
        return self.load(path)[0], target

    def agreement(self, saved: Dict[str, Any]) -> "Agreement":
        """A fresh accumulator of how an exported model's outputs agree with PyTorch's (`saved`:
        model.json's task_options)."""
        raise NotImplementedError

    # --- raw output -> answers -----------------------------------------------------------------

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        """`forward`'s array and each input's original size -> one JSON answer per image."""
        raise NotImplementedError

    # --- `aether predict`'s files ----------------------------------------------------------------

    def csv_columns(self) -> List[str]:
        """predictions.csv's columns between `path` and `error`."""
        raise NotImplementedError

    def csv_row(self, answer: Dict[str, Any]) -> List[Any]:
        """One answer as the values of `csv_columns`."""
        raise NotImplementedError

    def write_files(self, out_dir: Path, answers: List[Dict[str, Any]], names: List[str]) -> None:
        """Files written beside predictions.csv and .json (segmentation: masks/), at most one per
        answer, named from `names` (one per answer: unique, valid UTF-8); an answer then names
        its file instead of holding its bytes. Nothing by default."""

    def predictions_head(self, run: str, model: Any) -> Dict[str, Any]:
        """predictions.json's opening fields, before the counts and the records: the run, the
        task, the model's name, the classes and the serve options."""
        return {"run": run, "task": self.task, "model": model, "classes": self.classes, "options": self.options}

    # --- helpers for codecs ----------------------------------------------------------------------

    def decoded(self, path: str, transform: Any) -> Tuple[Any, Size]:
        """Check + (reduced) decode of a file, then a torchvision v2 `transform` on it as the
        task's Dataset does (PIL -> uint8 tv_tensors.Image); the transform squashes to its
        input size, so each side needs that much."""
        import numpy as np
        import torch
        from torchvision import tv_tensors

        def to_tensor(img: Any) -> Any:
            return transform(tv_tensors.Image(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)))

        return self.pre.decode(path, int(self.pre.preprocessing["input_size"][-1]), to_tensor)


class Agreement:
    """An exported model against PyTorch on the run's test split, accumulated batch by batch:
    `update(ref, got, targets)` takes both models' outputs of one batch in `forward`'s form
    (PyTorch: `forward`; the exported file: `onnx_outputs`) and the batch's targets (`example`'s);
    `result()` is {"top1_agreement": the fraction of `measures` on which they agree, "metric":
    the task's test metric, "metric_pytorch", "metric_exported", "agreement_of": `measures`}."""

    measures = "top-1"  # what the agreement counts, as the export's JSON and report name it
    metric = "accuracy"

    def update(self, ref: Any, got: Any, targets: List[Any]) -> None:
        raise NotImplementedError

    def scores(self) -> Tuple[float, float, float]:
        """(agreement, metric of PyTorch, metric of the exported model) over what was seen."""
        raise NotImplementedError

    def result(self) -> Dict[str, Any]:
        agree, pt, ex = self.scores()
        return {"metric": self.metric, "top1_agreement": agree, "metric_pytorch": pt, "metric_exported": ex,
                "agreement_of": self.measures}


def model_task(info: Dict[str, Any]) -> str:
    """The task a model/model.json (or a bento's aether_serve.json) records."""
    return str(info.get("task") or DEFAULT_TASK)


def codec_class(task: str) -> Type[Codec]:
    """The serving codec of `task`: CODEC in the `serving` module beside the module of its
    registered Task (aether/tasks/<task>/serving.py for the built-ins), found from the registry
    entry without importing the Task; a Task kept elsewhere names its codec in `Task.codec`."""
    try:
        entry = registry.tasks.get(task)
    except registry.UnknownPartError:
        raise AetherError(f"model task {task!r}: cannot serve it; expected one of "
                          f"{', '.join(registry.tasks.names())}") from None
    target = entry.target
    module = target.partition(":")[0] if isinstance(target, str) else getattr(target, "__module__", "")
    package = module.rpartition(".")[0]
    if package:  # a Task module alone at the top level has no package to look beside
        beside = f"{package}.serving"
        try:
            return getattr(importlib.import_module(beside), "CODEC")  # type: ignore[no-any-return]
        except ModuleNotFoundError as exc:
            if exc.name != beside:  # the serving module exists but fails to import: say so
                raise
    declared = getattr(entry.load(), "codec", "")
    if not declared:
        raise AetherError(f"task {task!r} ({entry.origin}) has no serving codec: expected CODEC in a serving "
                          "module beside its Task, or `codec = \"module:attr\"` on its Task class")
    if not isinstance(declared, str):
        return declared  # type: ignore[no-any-return]
    mod, _, attr = declared.partition(":")
    return getattr(importlib.import_module(mod), attr)  # type: ignore[no-any-return]
