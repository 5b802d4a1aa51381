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
        scheduler = sched_entry.load()(optimizer, sched_options, steps_per_epoch, max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
