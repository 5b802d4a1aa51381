"""data.batch_size=auto and optimizer.lr=auto: values found before training.

batch_size=auto: on a CUDA device Lightning's batch-size scaler (binsearch: doubles until memory
runs out, then bisects); on CPU a fixed rule (cpu_batch). lr=auto: Lightning's LR range test
(Tuner.lr_find: the rate grows exponentially over a few steps, the suggestion is the steepest
fall of the loss), the optimizer's default rate when it finds none.

Both run on a throwaway Trainer (one device, no logger, no checkpoints, none of the run's
callbacks), so the run's own history, checkpoints and loggers see only the real training;
Lightning restores the model's weights after each search, and the random-number state is put
back as it was before tuning: the run then trains exactly as one given the found values would
(RUN/config.yaml records them, with the `auto` request in a comment).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, List, Optional

from aether.doctor.recommend import MIN_STEPS_PER_EPOCH, cpu_batch
from aether.errors import AetherError

log = logging.getLogger("aether")

# Lightning's suggestion skips the first 10 and the last point of the curve: it needs more than
# 12 steps; 100 is Lightning's default, fewer on small data (each step is a training batch)
LR_FIND_STEPS = (16, 100)


def batch_is_auto(rc: Any) -> bool:
    return rc.data.batch_size == "auto"


def lr_is_auto(rc: Any) -> bool:
    return getattr(rc.optimizer, "lr", None) == "auto"


def provisional_batch(rc: Any) -> Optional[int]:
    """batch_size=auto before the data and network exist: the default (32) stands in, unset by
    the user, so a task's data-fitted default (detection, segmentation) may still shrink it."""
    if not batch_is_auto(rc):
        return None
    from aether.config.schema import DataCfg

    rc.data.batch_size = int(DataCfg.model_fields["batch_size"].default)
    rc._explicit.discard("data.batch_size")
    return rc.data.batch_size


def _optimizer_default_lr(name: str) -> float:
    from aether import registry

    return float(registry.optimizers.get(name).config.model_fields["lr"].default)


def _tuning_trainer(rc: Any, run_dir: Path) -> Any:
    import lightning as L

    from aether.training.checkpoint_io import DirectCheckpointIO

    t = rc.trainer
    # validation never runs while tuning (every 10^6 epochs); the searches set their own step limits.
    # Each search saves the model and loads it back: through the weights-only loader, like resume=
    return L.Trainer(plugins=[DirectCheckpointIO()], accelerator=t.accelerator, devices=t.devices, precision=t.precision, num_nodes=1,
                     max_epochs=1000, accumulate_grad_batches=t.accumulate_grad_batches,
                     gradient_clip_val=t.gradient_clip_val, deterministic=t.deterministic, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, check_val_every_n_epoch=10**6, default_root_dir=str(run_dir))


def tune(rc: Any, job: Any, trainer: Any, run_dir: Path, batch_auto: bool, lr_auto: bool) -> List[str]:
    """Find the `auto` values (batch size first: the learning rate depends on it), set them in
    `rc`, the DataModule and the LightningModule, and return one line per value found."""
    if not (batch_auto or lr_auto):
        return []
    asked = " and ".join(k for k, on in (("data.batch_size=auto", batch_auto), ("optimizer.lr=auto", lr_auto)) if on)
    if trainer.world_size > 1:
        raise AetherError(f"{asked}: the search runs on one device; run it once with trainer.devices=1 (its "
                          f"config.yaml records the values found), then set them for the {trainer.world_size}-"
                          "process run")
    from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

    states = _collect_rng_states(include_cuda=True)
    module, dm = job.module, job.datamodule
    n_train = len(job.bundle.splits["train"])
    default_lr = _optimizer_default_lr(rc.optimizer.name)
    if lr_auto:
        module.optimizer_cfg["lr"] = default_lr  # a number for configure_optimizers while searching
    lines: List[str] = []
    try:
        if batch_auto:
            lines.append(_tune_batch(rc, job, trainer, run_dir, n_train))
        if lr_auto:
            lines.append(_tune_lr(rc, job, run_dir, n_train, default_lr))
    finally:
        _set_rng_states(states)  # the run trains as one given these values would
    if batch_auto:
        trainer.log_every_n_steps = min(rc.trainer.log_every_n_steps, max(1, n_train // rc.data.batch_size))
    for c in trainer.callbacks:
        if type(c).__name__ == "FiniteGuard" and lr_auto:
            c.hint = f"optimizer.lr={rc.optimizer.lr:.3g}"
    dm.batch_size = rc.data.batch_size
    for line in lines:
        log.info("tuned: %s", line)
    return lines


def _tune_batch(rc: Any, job: Any, trainer: Any, run_dir: Path, n_train: int) -> str:
    start = int(rc.data.batch_size)
    if trainer.strategy.root_device.type != "cuda":
        side = int(job.preprocessing["input_size"][-1])
        batch = cpu_batch(side, n_train)
        if start < int(type(rc.data).model_fields["batch_size"].default):  # the task fitted a smaller one
            batch = min(batch, start)
        rc.data.batch_size = batch
        return (f"data.batch_size=auto -> {batch} (CPU, {side} px inputs, {n_train} training images: larger "
                "batches do not run faster on CPU)")
    found = scaled_batch(rc, job, run_dir, start)
    cap = max(2, n_train // MIN_STEPS_PER_EPOCH)
    batch = min(found, cap)
    rc.data.batch_size = batch
    why = (f"capped so an epoch makes at least {MIN_STEPS_PER_EPOCH} optimiser steps; the largest that fits "
           f"is {found}" if batch < found else "the largest that fits")
    return f"data.batch_size=auto -> {batch} (Lightning's batch-size scaler, binsearch from {start}: {why})"


def scaled_batch(rc: Any, job: Any, run_dir: Path, start: int) -> int:
    """Lightning's batch-size scaler (binsearch from `start`): the largest batch whose training
    steps fit in the device's memory, at most the training split's size."""
    from lightning.pytorch.tuner import Tuner

    found = Tuner(_tuning_trainer(rc, run_dir)).scale_batch_size(job.module, datamodule=job.datamodule,
                                                                 mode="binsearch", init_val=start)
    return int(found or start)


def _tune_lr(rc: Any, job: Any, run_dir: Path, n_train: int, default_lr: float) -> str:
    import functools
    import sys

    from lightning.pytorch.tuner import Tuner, lr_finder

    steps = int(min(LR_FIND_STEPS[1], max(LR_FIND_STEPS[0], n_train // max(1, int(rc.data.batch_size)))))

    # Lightning's range test always draws a tqdm bar (its callback is built inside lr_find); on a
    # log, or with trainer.progress=plain|none, the bar is switched off for the search
    bar = getattr(lr_finder, "tqdm", None)
    quiet = bar is not None and (rc.trainer.progress in ("plain", "none") or not sys.stderr.isatty())
    if quiet:
        lr_finder.tqdm = functools.partial(bar, disable=True)
    try:
        finder = Tuner(_tuning_trainer(rc, run_dir)).lr_find(job.module, datamodule=job.datamodule,
                                                            num_training=steps, update_attr=False)
    finally:
        if quiet:
            lr_finder.tqdm = bar
    lr = finder.suggestion() if finder is not None else None
    if lr is None or not math.isfinite(lr) or lr <= 0:
        lr, how = default_lr, (f"the LR range test ({steps} steps) gave no suggestion: {rc.optimizer.name}'s "
                               f"default {default_lr:g}")
    else:
        lr = float(f"{lr:.3g}")
        how = f"Lightning's LR range test over {steps} steps, steepest fall of the loss"
    job.module.optimizer_cfg["lr"] = lr
    setattr(rc.optimizer, "lr", lr)
    return f"optimizer.lr=auto -> {lr:g} ({how})"
