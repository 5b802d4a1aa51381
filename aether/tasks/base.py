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

# dataset doctor format -> the task it trains (data.format=NAME names one of these directly)
FORMAT_TASKS = {"coco": "detection", "voc": "detection", "yolo": "detection", "masks": "segmentation",
                "multilabel": "multilabel"}


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
    """(task, why) for `task=auto`: from data.format when it names a structured format, else from
    the dataset doctor's detection; a manifest with a `labels` column (and no `label`) is multilabel."""
    fmt = rc.data.format
    if fmt == "multilabel":
        return "multilabel", "data.format=multilabel"
    if (fmt != "auto" and fmt not in FORMAT_TASKS) or rc.data.path is None:
        return "classification", "classification dataset"
    from aether.doctor.inspect import detect_structure, resolve_source

    root = resolve_source(rc.data)[0]
    if root is None:
        return "classification", "embedded sample"
    try:
        det = detect_structure(root, fmt)  # data.format=coco|voc|yolo|masks: read as that, or say why not
    except AetherError:
        if fmt != "auto":
            raise
        return "classification", "no structured format found"  # the folder adapter explains what is wrong
    if det.format == "manifest" and _manifest_has_labels_column(root, rc.data.options):
        return "multilabel", f"{root.name} has a '{_labels_column(rc.data.options)}' column"
    return det.task, f"{det.format}: {det.evidence[0]}"


def _labels_column(options: Dict[str, Any]) -> str:
    return str(options.get("labels_column", "labels"))


def _manifest_has_labels_column(path: Path, options: Dict[str, Any]) -> bool:
    from aether.data.multilabel import manifest_columns

    cols = manifest_columns(path)
    return _labels_column(options) in cols and str(options.get("label_column", "label")) not in cols


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
    elif rc.data.format in FORMAT_TASKS and FORMAT_TASKS[rc.data.format] != name:
        raise AetherError(f"data.format={rc.data.format} holds {FORMAT_TASKS[rc.data.format]} annotations but "
                          f"task={name}; set task={FORMAT_TASKS[rc.data.format]} (or task=auto)")
    entry = registry.tasks.get(name)
    options = entry.config.model_validate(rc.task_options) if entry.config else rc.task_options
    task = entry.load()(options)
    task.adopt_monitors(rc)
    return task
