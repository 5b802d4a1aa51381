"""One run, end to end, the same road for every task: validate -> task = tasks.get(name) ->
task.build_data -> task.build_network (the backbone provider registry) -> strategy ->
task.build_module / build_datamodule -> Trainer -> fit / test -> task.write_outputs.

Every step is a plain call into the module that owns it; nothing here branches on the task
(aether.tasks.base.Task is the interface); this file wires them and writes the run directory
(see README, "The run directory").
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf

from aether import registry
from aether.config.schema import RunCfg
from aether.config.validate import part_options, validate
from aether.errors import AetherError
from aether.ranks import is_secondary_rank
from aether.tasks.base import Job

log = logging.getLogger("aether")

# Lightning hints that do not apply to Aether's own choices (workers sized on purpose, resume
# into an existing folder, small validation sets).
for _pattern in (".*does not have many workers.*", ".*exists and is not empty.*",
                 ".*number of training batches.*smaller than the logging interval.*",
                 ".*that is not a floating point.*", ".*`isinstance\\(treespec, LeafSpec\\)`.*",
                 ".*Grad strides do not match bucket view strides.*"):  # DDP + depthwise convs on CPU
    warnings.filterwarnings("ignore", message=_pattern)


def resume_config(resume: str, task_overrides: List[str]) -> Dict[str, Any]:
    """The config of the run in `resume`, with this command line's value overrides applied."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    folder = Path(resume).expanduser()
    if not (folder / "config.yaml").is_file() or not (folder / "checkpoints" / "last.ckpt").is_file():
        raise AetherError(f"resume={resume}: expected a run folder with config.yaml and checkpoints/last.ckpt")
    from aether.config.trust import check_resumed
    from aether.training.checkpoint_io import check_checkpoint
    from aether.training.resume_check import check_resumable

    check_resumable(folder)  # a damaged last.ckpt stops here, before config.yaml is rewritten
    base = OmegaConf.load(folder / "config.yaml")
    check_resumed(str(folder / "config.yaml"), OmegaConf.to_container(base, resolve=False))
    check_checkpoint(folder / "checkpoints" / "last.ckpt")  # refused here, before any process starts from it
    for o in OverridesParser.create().parse_overrides(task_overrides):
        key = o.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        if "." not in key and key not in ("seed", "recipe", "task"):
            raise AetherError(f"resume: '{o.input_line}' would change the run's {key}; a resumed run takes "
                              "value overrides only (e.g. trainer.max_epochs=20)")
        OmegaConf.update(base, key, o.value(), merge=True)
    out = OmegaConf.to_container(base, resolve=True)
    assert isinstance(out, dict)
    given = {o.key_or_group for o in OverridesParser.create().parse_overrides(task_overrides)}
    if "trainer.max_minutes" not in given and isinstance(out.get("trainer"), dict):
        # a time limit was the first process's (recipe=auto fits its final training to the budget
        # with one): the resumed run trains the epochs it is asked for; Lightning's Timer would
        # restore the spent time and stop it at once. trainer.max_minutes=M limits it again.
        out["trainer"]["max_minutes"] = None
    out["resume"] = str(folder)
    return out


@dataclass
class Monitors:
    throughput: Any
    history: Any
    checkpoint: Any
    params_in_sync: Optional[bool] = None  # several processes: did every rank end with the same weights
    averaging: Any = None  # ema.enabled: the WeightAverage callback (aether.training.averaging)


def prepare(rc: RunCfg) -> Job:
    """The one road for every task: the task's data and network, the strategy applied to the
    network, the task's LightningModule and DataModule (aether.tasks.base.Task)."""
    from aether.strategies.base import count_params
    from aether.tasks.base import resolve_task

    task = resolve_task(rc)
    if rc.distill.teacher and not task.distills:
        raise AetherError(f"distill.teacher: task={task.name} has no knowledge distillation (its outputs are "
                          "not one class distribution per image); unset distill.teacher")
    task.check_augment(rc)
    if rc.loss.name not in task.losses:
        raise AetherError(f"loss.name={rc.loss.name}: task={task.name} trains with its own loss only "
                          f"({', '.join(task.losses)}); loss.name=focal is for classification")
    check_test_options(rc, task)
    bundle = task.build_data(rc)
    backbone, preprocessing = task.build_network(rc, bundle)
    task.check_network(backbone.model, preprocessing, rc)
    strategy = registry.strategies.get(rc.strategy.name).load()(part_options(rc.strategy.model_dump(), registry.strategies))
    model = strategy.apply(backbone)
    params = count_params(model)
    log.info("model: %s, strategy %s - trainable params %s of %s (%.2f%%)", rc.model.name, strategy.describe(),
             f"{params['trainable']:,}", f"{params['total']:,}", 100 * params["trainable"] / max(1, params["total"]))
    module = task.build_module(rc, bundle, model, strategy)
    return Job(bundle, backbone, preprocessing, strategy, params, module,
               task.build_datamodule(rc, bundle, preprocessing), task)


def check_test_options(rc: RunCfg, task: Any) -> None:
    """test.tta and calibration are the classification task's (its outputs are one class
    distribution per image); another task refuses them when asked for. calibration=temperature
    is the default: a task without it simply does not calibrate unless the run names it."""
    if rc.test.tta != "none" and not task.tta:
        raise AetherError(f"test.tta={rc.test.tta}: task={task.name} has no test-time augmentation (it is "
                          "classification's: one class distribution per image); set test.tta=none")
    named = any(k.split(".")[0] == "calibration" for k in rc._explicit)
    cal = rc.calibration
    if not task.calibrates and (cal.reject_below is not None or (named and cal.method != "none")):
        key = "calibration.reject_below" if cal.reject_below is not None else f"calibration={cal.method}"
        raise AetherError(f"{key}: task={task.name} has no confidence calibration (it is classification's: "
                          "one class distribution per image); set calibration=none")


def build_trainer(rc: RunCfg, run_dir: Path, job: Job, run_name: str) -> Tuple[Any, Monitors]:
    """The Lightning Trainer with Aether's callbacks (checkpoints, history, throughput, progress)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from aether.data.fastpath import CacheFinisher
    from aether.training.checkpoint_io import DirectCheckpointIO
    from aether.training.callbacks import BestCheckpoint, History, Throughput, progress_callbacks
    from aether.training.distributed import lightning_strategy

    throughput = Throughput()
    history = History(throughput)
    # Two checkpoints with two jobs: `best.ckpt` holds the best weights (for testing and export,
    # weights only, so half the size); `last.ckpt` holds the full state after every epoch, for
    # resume=. (ModelCheckpoint's own save_last rewrites `last` only when the monitored metric
    # improves, so a resume could restart from an older epoch.)
    checkpoint = BestCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=rc.trainer.checkpoint.monitor,
                                 mode=rc.trainer.checkpoint.mode, save_top_k=1, save_weights_only=True,
                                 auto_insert_metric_name=False, enable_version_counter=False)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    from aether.training.guards import FiniteGuard

    lr = rc.optimizer.model_dump().get("lr")
    # a NaN loss or weight stops the run before anything is tested or exported
    callbacks: List[Any] = [throughput, history, checkpoint, last, FiniteGuard(f"optimizer.lr={lr}" if lr else "")]
    callbacks += progress_callbacks(rc.trainer.progress, throughput, history)
    callbacks += job.strategy.callbacks()
    averaging = None
    if rc.ema.enabled:  # after the strategy's callbacks: it sees what gradual_unfreeze unfroze this epoch
        from aether.training.averaging import WeightAverage

        averaging = WeightAverage(rc.ema.mode, rc.ema.decay, rc.ema.warmup, rc.ema.start_epoch)
        callbacks.append(averaging)
    callbacks.append(CacheFinisher())  # seals each split's decoded-image cache after its first epoch
    from aether.sweeps.trial import sweep_callbacks

    callbacks += sweep_callbacks(rc)  # an Optuna trial reports val metrics and may be pruned
    if rc.trainer.max_minutes:  # checked at epoch ends: a run stops between epochs, with whole checkpoints
        from datetime import timedelta

        from lightning.pytorch.callbacks import Timer

        callbacks.append(Timer(duration=timedelta(minutes=rc.trainer.max_minutes), interval="epoch", verbose=False))
        if rc.trainer.fit_epochs_to_time:  # max_epochs follows the time left (recipe=auto's final training)
            from aether.training.time_fit import EpochsFitToTime

            callbacks.append(EpochsFitToTime(rc.trainer.fit_epochs_to_time))
    es = rc.trainer.early_stopping
    if es.enabled:
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta))
    logger = registry.loggers.get(rc.logger.name).load()(run_dir, part_options(rc.logger.model_dump(), registry.loggers),
                                                         run_name)
    t = rc.trainer
    batches = max(1, len(job.bundle.splits["train"]) // rc.data.batch_size)
    trainer = L.Trainer(
        max_epochs=t.max_epochs, precision=t.precision, accelerator=t.accelerator, devices=t.devices,
        strategy=lightning_strategy(t.strategy, job.module.model, t.accelerator), num_nodes=t.num_nodes, gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches, limit_test_batches=t.limit_test_batches,
        log_every_n_steps=min(t.log_every_n_steps, batches), deterministic=t.deterministic, callbacks=callbacks, logger=logger,
        default_root_dir=str(run_dir), enable_model_summary=False, num_sanity_val_steps=1,
        enable_progress_bar=any(type(c).__name__ == "AetherProgressBar" for c in callbacks),
        plugins=[DirectCheckpointIO()],  # checkpoints go straight to their file, not through a RAM copy
    )
    return trainer, Monitors(throughput, history, checkpoint, averaging=averaging)


def fit_and_report(rc: RunCfg, raw: Dict[str, Any], run_dir: Path, run_name: str,
                   notes: Sequence[str] = ()) -> float:
    from aether.training.run_lock import claim

    with claim(run_dir, rc.resume):  # rank 0 owns the folder for the whole run: one run per folder
        return _fit_and_report(rc, raw, run_dir, run_name, notes)


def _fit_and_report(rc: RunCfg, raw: Dict[str, Any], run_dir: Path, run_name: str, notes: Sequence[str],
                    search: Optional[Dict[str, Any]] = None) -> float:
    """`search`: a candidate of recipe=auto - fit and validate only, its result put into this dict."""
    import lightning as L

    from aether.training import distributed, speed
    from aether.training.console import tame_lightning_logging
    from aether.training.guards import check_devices
    from aether.training.loggers import close_loggers

    tame_lightning_logging()
    check_devices(rc.trainer)  # the GPU count, before any data is read (the validator counted CPUs)
    if rc.offline:  # a recipe's `offline: true`, as HF_HUB_OFFLINE=1 (aether.models.weights)
        os.environ["HF_HUB_OFFLINE"] = "1"
    if not is_secondary_rank():  # ranks > 0 write nothing (aether.training.distributed)
        run_dir.mkdir(parents=True, exist_ok=True)
        header = "".join(f"# NOTE: {n}\n" for n in notes)  # comments: config.yaml stays loadable for resume=
        _write_config(run_dir, header, raw)
    distributed.begin_run(run_dir)
    L.seed_everything(rc.seed, workers=True, verbose=False)
    from aether.training import tuning

    batch_auto, lr_auto = tuning.batch_is_auto(rc), tuning.lr_is_auto(rc)
    tuning.provisional_batch(rc)  # a number until the search below
    job = prepare(rc)
    if not is_secondary_rank() and _record_resolved(raw, rc, job.task.resolved) and not (batch_auto or lr_auto):
        _write_config(run_dir, header, raw)
    speed.apply_speedups(rc, job)
    trainer, mon = build_trainer(rc, run_dir, job, run_name)
    for cb in trainer.callbacks:
        if type(cb).__name__ == "EpochsFitToTime":  # a re-fitted epoch count is what a resume trains
            cb.on_change = lambda epochs: _write_config(run_dir, header, _with_epochs(raw, epochs))
    from aether.reporting.dashboards import log_config

    log_config(trainer.loggers, raw)  # W&B / TensorBoard can filter and compare runs on it
    distributed.log_world(trainer)
    tuned = tuning.tune(rc, job, trainer, run_dir, batch_auto, lr_auto)  # data.batch_size / optimizer.lr = auto
    if tuned and not is_secondary_rank():
        # config.yaml holds the values found (a resume or a rerun uses them); the request stays as comments
        _record_resolved(raw, rc, job.task.resolved)
        if lr_auto:
            raw.setdefault("optimizer", {})["lr"] = rc.optimizer.lr
        header += "".join(f"# TUNED: {line}\n" for line in tuned)
        _write_config(run_dir, header, raw)
    try:
        return _fit_test_write(rc, raw, run_dir, job, trainer, mon, search)
    finally:
        close_loggers(trainer)  # a later run in this process (a sweep trial) must start its own W&B run


def _write_config(run_dir: Path, header: str, raw: Dict[str, Any]) -> None:
    (run_dir / "config.yaml").write_text(header + OmegaConf.to_yaml(OmegaConf.create(raw)), encoding="utf-8")


def _with_epochs(raw: Dict[str, Any], epochs: int) -> Dict[str, Any]:
    raw.setdefault("trainer", {})["max_epochs"] = epochs
    return raw


def _record_resolved(raw: Dict[str, Any], rc: RunCfg, task_resolved: Optional[Dict[Tuple[str, ...], Any]] = None
                     ) -> bool:
    """Write what preparing the run resolved back into its config (`task: auto` -> the detected
    task; a detection run's checkpoint monitor val/acc -> val/map, its image and batch size taken
    from the data, and what the task fitted: `task_resolved`, {key path: value}), so config.yaml
    names what the run really used. True when something changed."""
    resolved = {("task",): rc.task,
                ("trainer", "checkpoint", "monitor"): rc.trainer.checkpoint.monitor,
                ("trainer", "checkpoint", "mode"): rc.trainer.checkpoint.mode,
                ("trainer", "early_stopping", "monitor"): rc.trainer.early_stopping.monitor,
                ("trainer", "early_stopping", "mode"): rc.trainer.early_stopping.mode,
                ("data", "image_size"): rc.data.image_size,  # detection takes these from the data
                ("data", "batch_size"): rc.data.batch_size,
                **(task_resolved or {})}
    changed = False
    for path, value in resolved.items():
        node = raw
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if node.get(path[-1]) != value:
            node[path[-1]] = value
            changed = True
    return changed


def _fit_test_write(rc: RunCfg, raw: Dict[str, Any], run_dir: Path, job: Job, trainer: Any, mon: Monitors,
                    search: Optional[Dict[str, Any]] = None) -> float:
    from aether.reporting.metrics import build_metrics
    from aether.training import distributed, speed

    ckpt_path = None
    if rc.resume:
        ckpt_path = str(Path(rc.resume).expanduser() / "checkpoints" / "last.ckpt")
        log.info("resuming from %s", ckpt_path)
    t0 = time.perf_counter()
    trainer.fit(job.module, datamodule=job.datamodule, ckpt_path=ckpt_path)
    train_s = time.perf_counter() - t0
    from aether.training.callbacks import early_stop_note

    note = early_stop_note(trainer)
    if note:
        log.info(note)
    if search is not None:  # a candidate of recipe=auto: scored on validation; the test split stays unseen
        from aether.training.outcome import candidate_result

        search.update(candidate_result(trainer, mon.checkpoint, train_s, mon.history.rows))
        search["strategy"] = {"name": job.strategy.name, **job.strategy.report()}  # e.g. the probe's solved head
        return float(search["score"] or 0.0)
    mon.params_in_sync = distributed.params_in_sync(trainer, job.module)  # a collective: every rank calls it
    history = list(mon.history.rows)  # testing the best checkpoint restores callback states from it

    best = mon.checkpoint.best_model_path or None
    weights = best or str(Path(mon.checkpoint.dirpath) / "last.ckpt")
    distributed.unshard(trainer, job.module, weights)  # FSDP: full weights, unwrapped, before re-wrapping for test
    trainer.test(job.module, datamodule=job.datamodule, ckpt_path=best, verbose=False)
    score = float(mon.checkpoint.best_model_score or 0.0)
    speed.restore(job.module.model)  # trainer.compile: export the plain module
    if not trainer.is_global_zero:
        return score  # rank 0 alone writes the run directory
    distributed.unshard(trainer, job.module, weights)  # FSDP: export the full weights, not rank 0's shard

    metrics = build_metrics(rc, job, trainer, mon, train_s, history)
    if mon.averaging is not None:  # what was validated, tested and exported is this average
        metrics["ema"] = mon.averaging.report()
    from aether.sweeps.trial import trial_section

    metrics.update(trial_section(trainer))  # a sweep trial: its number and state (complete/pruned)
    from aether.reporting.metrics import auto_section

    metrics.update(auto_section(run_dir, trainer.max_epochs))  # recipe=auto: its leaderboard and winner
    summary = job.task.write_outputs(run_dir, metrics, job, raw)  # metrics.json, plots, model/, report.md
    from aether.sweeps.trial import note_in_report

    note_in_report(run_dir / "report.md", metrics)  # a sweep trial says which one it was, and whether it was pruned
    from aether.reporting.html import write_html

    write_html(run_dir)  # report.md as one self-contained page (images inline)
    from aether.reporting.dashboards import publish

    publish(trainer.loggers, run_dir, raw, metrics, list(getattr(job.bundle, "classes", []) or []))
    log.info("%s - report: %s", summary, run_dir / "report.md")
    return score
