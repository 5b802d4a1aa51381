"""The task interface, and choosing the task of a run (`task=auto` follows the dataset doctor).

A task owns what differs between classification, multilabel, segmentation and detection: how the
data is indexed and batched, the network around the backbone, the LightningModule (loss and
metrics), and the task's own outputs in the run directory (plots, report). Backbones,
strategies, optimizers, schedulers, loggers, checkpoints and `metrics.json`'s common sections are
shared: aether.run is the one road every task takes, calling the methods of `Task` below.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

from aether import registry
from aether.config.schema import RunCfg
from aether.errors import AetherError

log = logging.getLogger("aether")

@dataclass
class Job:
    """Everything one run trains and evaluates, built by aether.run.prepare from a validated config."""

    bundle: Any  # the task's data: splits of items/samples, classes, summary()
    backbone: Any  # aether.models.backbone.Backbone: the whole network, its head, data config, info
    preprocessing: Dict[str, Any]
    strategy: Any  # aether.strategies.base.Strategy
    params: Dict[str, int]
    module: Any  # the task's LightningModule (an aether.training.module.StrategyModule)
    datamodule: Any
    task: Any  # the Task that built it


class Task:
    """A task's part of the road (aether.run): its data, its network around the backbone, its
    LightningModule and DataModule, and its outputs. Subclasses set `name` and the metrics that
    pick the best checkpoint and stop early; the road does everything they share (strategy,
    trainer, checkpoints, test, metrics.json's common sections)."""

    name = "base"
    monitor: Tuple[str, str] = ("val/acc", "max")  # (metric, mode) that picks the best checkpoint
    early_stop: Tuple[str, str] = ("val/loss", "min")
    # the serving codec (aether.tasks.codec.Codec: request -> tensor, output -> answer) that
    # aether.deploy uses for this task's models, as "module:attr" or the class. Unset: CODEC in
    # the `serving` module beside this Task's module (aether/tasks/<task>/serving.py), which the
    # service finds without importing the Task (aether.tasks.codec.codec_class).
    codec: Any = ""
    distills = False  # True: the task's module learns from `distill.teacher` (a run's soft targets)
    mixes = False  # True: the task's module trains on Mixup / CutMix batches (data.augment.mixup, .cutmix)
    losses: Tuple[str, ...] = ("ce",)  # the loss.name values its module implements (ce: the task's own loss)
    tta = False  # True: the task's module scores the test split with `test.tta`'s views
    calibrates = False  # True: the task fits `calibration=temperature` and honours calibration.reject_below

    def __init__(self, options: Any) -> None:
        self.options = options
        self.fitted: Dict[str, Any] = {}  # settings taken from the data: {key: {value, default, why}}
        self.resolved: Dict[Tuple[str, ...], Any] = {}  # config paths preparing resolved, for config.yaml

    def build_data(self, rc: RunCfg) -> Any:
        """The indexed, checked and split data (a bundle with `splits`, `classes`, `summary()`)."""
        raise NotImplementedError

    def build_network(self, rc: RunCfg, bundle: Any) -> Tuple[Any, Dict[str, Any]]:
        """(Backbone, preprocessing): the backbone from the provider registry with this task's head."""
        raise NotImplementedError

    def check_augment(self, rc: RunCfg) -> None:
        """Fail before any data is read when `data.augment` asks for what this task cannot train
        with: Mixup / CutMix need one class per image (their targets are mixed class distributions)."""
        a = rc.data.augment
        asked = [f"data.augment.{k}={getattr(a, k)}" for k in ("mixup", "cutmix") if getattr(a, k) > 0]
        if asked and not self.mixes:
            raise AetherError(f"{' and '.join(asked)}: task={self.name} cannot train on mixed images (Mixup / "
                              "CutMix mix one class label per image, as task=classification has); set "
                              "data.augment.mixup=0 data.augment.cutmix=0")

    def check_network(self, network: Any, preprocessing: Dict[str, Any], rc: RunCfg) -> None:
        """Fail early, with a clear message, when the input size does not fit the network."""
        check_input_size(network, preprocessing, rc.model.name)

    def build_module(self, rc: RunCfg, bundle: Any, model: Any, strategy: Any) -> Any:
        """The LightningModule (loss and metrics) around the strategy-applied `model`."""
        raise NotImplementedError

    def build_datamodule(self, rc: RunCfg, bundle: Any, preprocessing: Dict[str, Any]) -> Any:
        raise NotImplementedError

    def write_outputs(self, run_dir: Path, metrics: Dict[str, Any], job: Job, raw: Dict[str, Any]) -> str:
        """metrics.json, the task's plots, model/ and report.md; return the one-line test summary."""
        raise NotImplementedError

    def model_info(self) -> Dict[str, Any]:
        """What model/model.json records about the task (the predictor and server read it)."""
        return {"task": self.name, "task_options": self.options.model_dump()}

    def adopt_monitors(self, rc: RunCfg) -> None:
        """Classification's default monitors (val/acc, val/loss) become this task's own; a monitor
        the user chose is kept as given."""
        ck, es = rc.trainer.checkpoint, rc.trainer.early_stopping
        if (ck.monitor, ck.mode) == ("val/acc", "max") and self.monitor != ("val/acc", "max"):
            ck.monitor, ck.mode = self.monitor
        if (es.monitor, es.mode) == ("val/loss", "min") and self.early_stop != ("val/loss", "min"):
            es.monitor, es.mode = self.early_stop


def check_input_size(model: Any, preprocessing: Dict[str, Any], name: str) -> None:
    """One dummy forward pass: a too-small (or mis-sized) input fails here with a clear message
    rather than as a shape error deep inside the first training step."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *preprocessing["input_size"]))
    except RuntimeError as exc:
        raise AetherError(f"data.image_size={preprocessing['input_size'][-1]} does not work with model '{name}' "
                          f"({str(exc).splitlines()[0]}); use a larger image size (or the model's default, "
                          "data.image_size=null)") from None
    finally:
        model.train(was_training)


def build_backbone(rc: RunCfg, num_outputs: int) -> Tuple[Any, Dict[str, Any]]:
    """A classifier backbone from the provider registry (`model.provider`) with `num_outputs`
    logits, and its preprocessing: what classification and multilabel networks are."""
    from aether.data.transforms import resolve_preprocessing

    backbone = registry.backbones.get(rc.model.provider).load()().create(rc.model, num_outputs)
    return backbone, resolve_preprocessing(backbone.data_config, rc.data.image_size, rc.data.crop_pct)


def detected_task(rc: RunCfg) -> Tuple[str, str]:
    """(task, why) for `task=auto`: the task that data.format names (aether.data.formats), or the
    one the detected format's data trains (a manifest with a `labels` column, and no `label`,
    trains multilabel)."""
    from aether.data import formats

    fmt = rc.data.format
    if fmt != "auto" and not formats.detects_when_named(fmt):
        return formats.task_of(fmt), f"data.format={fmt}"
    if rc.data.path is None:
        return formats.task_of("digits"), "embedded sample"
    from aether.doctor.inspect import detect_structure, resolve_source

    root = resolve_source(rc.data)[0]
    try:
        det = detect_structure(root, fmt)  # data.format=coco|voc|yolo|masks: read as that, or say why not
    except AetherError:
        if fmt != "auto":
            raise
        return formats.task_of("folder"), "no structured format found"  # the folder format explains what is wrong
    return formats.trained_task(det.format, root, rc.data.options, det)


def resolve_task(rc: RunCfg) -> Task:
    """The run's task object; `task=auto` is replaced in `rc` by the detected task."""
    from aether.config.validate import ConfigError, _check_part

    name = rc.task
    if name == "auto":
        name, why = detected_task(rc)
        log.info("task: %s (detected: %s)", name, why)
        problems = _check_part("task", {"name": name, **rc.task_options}, registry.tasks,
                               name_key="", options_key="task_options")
        if problems:
            raise ConfigError(problems)
        rc.task = name
    else:
        _check_format_trains(rc.data.format, name)
    entry = registry.tasks.get(name)
    options = entry.config.model_validate(rc.task_options) if entry.config else rc.task_options
    task = entry.load()(options)
    task.adopt_monitors(rc)
    return task


def _check_format_trains(fmt: str, task: str) -> None:
    """A strict format (coco, voc, yolo, masks, multilabel, ...) only trains its own task."""
    from aether.data import formats

    if fmt != "auto" and formats.is_strict(fmt) and formats.task_of(fmt) != task:
        trains = formats.task_of(fmt)
        raise AetherError(f"data.format={fmt} holds {trains} annotations but task={task}; "
                          f"set task={trains} (or task=auto)")
