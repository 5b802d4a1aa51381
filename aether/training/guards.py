"""Stops for runs that cannot succeed: more devices than the machine has, and training that diverged.

A diverged run (a loss or a weight that is inf or NaN) used to train on and export NaN weights
as if they were a model. `FiniteGuard` stops it with one AetherError instead: the exception
leaves `trainer.fit`, so nothing after it runs - no test, no metrics.json, no model/ folder, no
export. The run folder keeps only the checkpoints of epochs whose weights were still finite.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch

from aether.config.resources import devices_count_problem
from aether.config.validate import ConfigError, Problem
from aether.errors import AetherError


def check_devices(trainer_cfg: Any) -> None:
    """`trainer.devices` against the visible GPUs (the validator could only count CPUs without
    torch). Called before any data is read; device_count() asks NVML and does not initialise CUDA,
    so DDP can still fork afterwards."""
    gpus = torch.cuda.device_count()
    problem = devices_count_problem(trainer_cfg.accelerator, trainer_cfg.devices, gpus=gpus)
    if problem:
        raise ConfigError([Problem("trainer.devices", trainer_cfg.devices, problem)])


class TrainingDiverged(AetherError):
    """The loss or the weights became inf/NaN; the run stopped before writing results."""


class FiniteGuard(L.Callback):
    """Watches the loss of every step and the weights before any checkpoint can be written
    (validation start and train epoch end: Lightning runs ModelCheckpoint after the other
    callbacks), and stops the run on the first inf or NaN.

    The loss flags are and-ed on the device and read every `every` steps, not each step: reading
    a GPU value waits for the GPU, which would stall the step queue. On one CPU process reading is
    free, so the loss is checked before each backward pass (a NaN loss then never reaches the
    weights). Under DDP every rank takes the same decision (one all-reduce of the flag), at the
    same step, so no rank waits in a collective for one that stopped."""

    def __init__(self, hint: str = "", every: int = 25) -> None:
        self.hint = hint  # the settings that usually cause divergence, e.g. "optimizer.lr=0.1"
        self.every = every
        self._loss_ok: Optional[torch.Tensor] = None
        self._steps = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cpu" and trainer.world_size == 1:
            self.every = 1

    def _stop_unless(self, trainer: L.Trainer, finite: bool, what: str) -> None:
        if bool(trainer.strategy.reduce_boolean_decision(finite, all=True)):
            return
        low_precision = not str(trainer.precision).startswith(("32", "64"))
        raise TrainingDiverged(
            f"training diverged: {what} (epoch {trainer.current_epoch + 1}, step {trainer.global_step}); "
            "the run stopped and exported nothing (no metrics.json, no model/). "
            f"Lower the learning rate{f' ({self.hint})' if self.hint else ''}"
            f"{', use trainer.precision=32' if low_precision else ''} or set trainer.gradient_clip_val=1.0")

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        ok = torch.isfinite(loss.detach()).all()
        self._loss_ok = ok if self._loss_ok is None else self._loss_ok & ok
        self._steps += 1  # micro-batches, counted alike on every rank (global_step waits for accumulation)
        if self._steps % self.every == 0:
            self._check_loss(trainer)

    def _check_loss(self, trainer: L.Trainer) -> None:
        if self._loss_ok is not None:
            self._stop_unless(trainer, bool(self._loss_ok), "the training loss became inf or NaN")

    def _check_all(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_loss(trainer)
        bad = _first_non_finite(pl_module)
        self._stop_unless(trainer, bad is None, f"the weights of {bad or 'a shard on another rank'} are not finite")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check_all(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_all(trainer, pl_module)


def _first_non_finite(module: torch.nn.Module) -> Optional[str]:
    """The name of the first parameter holding an inf or NaN, or None (one device sync in all)."""
    params = [(n, p) for n, p in module.named_parameters() if p.numel() and p.is_floating_point()]
    if not params:
        return None
    with torch.no_grad():
        flags = torch.stack([torch.isfinite(p).all() for _, p in params])
    if bool(flags.all()):
        return None
    return params[int((~flags).nonzero()[0])][0]
