"""The training side of a sweep trial.

The sweeper hands each trial its number, study and storage as `sweep.trial/study/storage`;
the trial reopens its study from that storage (SQLite in the sweep folder, or sweep.storage's
PostgreSQL server, the password from PGPASSWORD), so reporting and
pruning work the same whether the trial runs in the sweeper's process (basic launcher) or in a
worker (joblib, SLURM). A pruned trial stops training early but still finishes as a normal
run: test, report and model are written, and `metrics.json` says `sweep.state: pruned`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning as L

log = logging.getLogger("aether.sweep")


class TrialReporter(L.Callback):
    """Reports the sweep metric after every validation epoch; stops training when Optuna prunes."""

    def __init__(self, spec: Any, max_epochs: int) -> None:
        self.spec = spec
        self.max_epochs = max_epochs
        self.reported: Dict[int, float] = {}
        self.pruned_at: Optional[int] = None
        self._trial: Any = None

    def trial(self) -> Any:
        if self._trial is None:
            import optuna

            from aether.sweeps.study import make_pruner, rdb_storage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = rdb_storage(self.spec.storage)
            study_id = storage.get_study_id_from_name(self.spec.study)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.spec.trial)
            study = optuna.load_study(study_name=self.spec.study, storage=storage,
                                      pruner=make_pruner(self.spec, self.max_epochs))
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.spec.metric)
        if value is None:
            return
        epoch = trainer.current_epoch
        self.reported[epoch] = float(value)
        trial = self.trial()
        trial.report(float(value), epoch)
        if trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True  # finish this epoch, then test and report as usual
            log.info("sweep: trial %d pruned after epoch %d (%s = %.4f)", self.spec.trial, epoch + 1,
                     self.spec.metric, float(value))

    def section(self) -> Dict[str, Any]:
        return {"trial": self.spec.trial, "study": self.spec.study, "metric": self.spec.metric,
                "state": "pruned" if self.pruned_at is not None else "complete",
                "pruned_at_epoch": self.pruned_at, "reported": {str(k): v for k, v in sorted(self.reported.items())}}


def sweep_callbacks(rc: Any) -> List[L.Callback]:
    """The Lightning callbacks a sweep trial needs (none outside an Optuna sweep)."""
    spec = getattr(rc, "sweep", None)
    if spec is None or spec.trial is None or not spec.storage:
        return []
    return [TrialReporter(spec, rc.trainer.max_epochs)]


def trial_section(trainer: Any) -> Dict[str, Any]:
    """`{"sweep": {...}}` for metrics.json when this run was an Optuna trial, else {}."""
    for cb in trainer.callbacks:
        if isinstance(cb, TrialReporter):
            return {"sweep": cb.section()}
    return {}


def note_in_report(report: Path, metrics: Dict[str, Any]) -> None:
    """One line under the report's title for a sweep trial (pruned ones say when and why)."""
    sw = metrics.get("sweep")
    if not sw:
        return
    if sw["state"] == "pruned":
        last = sw["reported"].get(str(sw["pruned_at_epoch"]))
        line = (f"> Sweep `{sw['study']}`, trial {sw['trial']}: **pruned** after epoch {sw['pruned_at_epoch'] + 1} "
                f"({sw['metric']} = {last:.4f} was below the pruner's bar for that epoch); the run was still tested.")
    else:
        line = f"> Sweep `{sw['study']}`, trial {sw['trial']}: completed."
    lines = report.read_text(encoding="utf-8").splitlines()
    lines[1:1] = ["", line]
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")


def multirun_context(raw: Dict[str, Any], hydra_cfg: Any, run_dir: Path) -> str:
    """In a multirun, group W&B runs by sweep and name each run after its trial; returns the run name."""
    from hydra.types import RunMode

    name = f"{raw.get('recipe', 'run')}-{run_dir.name}"
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return name
    sweep_dir = Path(str(hydra_cfg.sweep.dir))
    study = (raw.get("sweep") or {}).get("name")
    if study:  # an Optuna sweep: its folder is usually named after it already
        group = sweep_dir.name if sweep_dir.name.startswith(study) else f"{study}-{sweep_dir.name}"
    else:  # a grid: multirun/<date>/<time>
        group = f"{sweep_dir.parent.name}_{sweep_dir.name}"
    logger = raw.get("logger") or {}
    if logger.get("name") == "wandb" and not logger.get("group"):
        logger["group"] = group
    return f"{group}-trial{run_dir.name}"
