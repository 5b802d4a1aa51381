"""What every task's LightningModule shares: the strategy's hooks, the optimizer and the scheduler.

Each task's own module (loss, metrics) lives in its package, aether/tasks/<task>/."""

from __future__ import annotations

from typing import Any, Dict, List

import lightning as L
import torch
from torch import nn

from aether import registry


class StrategyModule(L.LightningModule):
    """What every task's module shares: the strategy's train-mode hook and parameter groups, and
    the optimizer + scheduler built from their registered names. `strategy` is an
    aether.strategies.base.Strategy (typed Any here: training sits below strategies, which use it)."""

    def __init__(self, model: nn.Module, classes: List[str], strategy: Any, optimizer_cfg: Dict[str, Any],
                 scheduler_cfg: Dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.classes = list(classes)
        self.strategy = strategy
        self.optimizer_cfg = optimizer_cfg
        self.scheduler_cfg = scheduler_cfg
        self.test_results: Dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The common case: an (images, targets) batch and the subclass's `criterion`."""
        x, y = batch
        loss = self.criterion(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=True)  # one all-reduce per epoch under DDP; free on one device
        return loss

    def train(self, mode: bool = True) -> "StrategyModule":
        super().train(mode)
        if mode:
            self.strategy.on_train_mode(self.model)
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning leaves module modes as it finds them; set them here so a strategy can keep
        # frozen BatchNorm layers in eval mode (their statistics must not drift).
        self.train()

    def configure_optimizers(self) -> Any:
        opt_entry = registry.optimizers.get(self.optimizer_cfg["name"])
        opt_options = opt_entry.config.model_validate({k: v for k, v in self.optimizer_cfg.items() if k != "name"})
        groups = self.strategy.param_groups(self.model, getattr(opt_options, "weight_decay", 0.0))
        optimizer = opt_entry.load()(groups, opt_options)

        sched_entry = registry.schedulers.get(self.scheduler_cfg["name"])
        sched_options = sched_entry.config.model_validate({k: v for k, v in self.scheduler_cfg.items() if k != "name"})
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // max_epochs)
        self._schedule_args = (sched_entry, sched_options, steps_per_epoch)  # for stretch_schedule
        scheduler = sched_entry.load()(optimizer, sched_options, steps_per_epoch, max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def stretch_schedule(self, max_epochs: int) -> bool:
        """Fit the running LR schedule to a new epoch count, keeping the steps taken: the registered
        builder makes the schedule for `max_epochs` (on a stand-in optimizer, so nothing of the real
        one changes) and its step function replaces the running one. Step-based LambdaLR schedules
        only (every built-in one but step and plateau, whose epoch rules need no total); False when
        the schedule cannot stretch."""
        from torch.optim.lr_scheduler import LambdaLR

        configs = list(getattr(self.trainer, "lr_scheduler_configs", []) or [])
        if not configs or not hasattr(self, "_schedule_args"):
            return not configs  # no schedule: nothing to stretch
        if not all(isinstance(c.scheduler, LambdaLR) and c.interval == "step" for c in configs):
            return False
        entry, options, steps_per_epoch = self._schedule_args
        for c in configs:
            stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
            fresh = entry.load()(stand_in, options, steps_per_epoch, max_epochs)
            if not fresh or not isinstance(fresh.get("scheduler"), LambdaLR):
                return False
            fn = fresh["scheduler"].lr_lambdas[0]
            sched = c.scheduler
            sched.lr_lambdas = [fn] * len(sched.optimizer.param_groups)
            # the next optimizer step already runs at the stretched schedule's rate
            for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
                group["lr"] = base * fn(sched.last_epoch)
            sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
        return True
