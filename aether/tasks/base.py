"""The task interface, and choosing the task of a run (`task=auto` follows the dataset doctor).

A task owns what differs between classification, multilabel, segmentation and detection: how the
data is indexed and batched, the network around the backbone, the LightningModule (loss and
metrics), and the task's own outputs in the run directory (plots, report). Backbones,
strategies, optimizers, schedulers, loggers, checkpoints and `metrics.json`'s common sections are
shared (aether.run).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Tuple

from aether import registry
from aether.config.schema import RunCfg
from aether.errors import AetherError

log = logging.getLogger("aether")

class Task:
    """Subclasses set `name` and the default checkpoint metric, and implement `prepare`/`finish`."""

    name = "base"
    monitor: Tuple[str, str] = ("val/acc", "max")  # (metric, mode) that picks the best checkpoint
    early_stop: Tuple[str, str] = ("val/loss", "min")

    def __init__(self, options: Any) -> None:
        self.options = options

    def prepare(self, rc: RunCfg) -> Any:
        """Data, network, strategy, LightningModule and DataModule: an aether.run.Job."""
        raise NotImplementedError

    def finish(self, run_dir: Path, metrics: Dict[str, Any], job: Any, raw: Dict[str, Any]) -> str:
        """Write the task's plots, model folder and report.md; return a one-line summary."""
        raise NotImplementedError

    def adopt_monitors(self, rc: RunCfg) -> None:
        """Classification's default monitors (val/acc, val/loss) become this task's own; a monitor
        the user chose is kept as given."""
        ck, es = rc.trainer.checkpoint, rc.trainer.early_stopping
        if (ck.monitor, ck.mode) == ("val/acc", "max") and self.monitor != ("val/acc", "max"):
            ck.monitor, ck.mode = self.monitor
        if (es.monitor, es.mode) == ("val/loss", "min") and self.early_stop != ("val/loss", "min"):
            es.monitor, es.mode = self.early_stop


class Classification(Task):
    """Single-label classification: the original path of aether.run (kept as it was)."""

    name = "classification"


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
