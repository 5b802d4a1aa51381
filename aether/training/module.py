"""The classification LightningModule: loss, torchmetrics, optimizer and scheduler wiring."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import lightning as L
import torch
import torchmetrics as tm
from torch import nn

from aether import registry
from aether.config.schema import LossCfg
from aether.strategies.base import Strategy


class StrategyModule(L.LightningModule):
    """What every task's module shares: the strategy's train-mode hook and parameter groups, and
    the optimizer + scheduler built from their registered names."""

    def __init__(self, model: nn.Module, classes: List[str], strategy: Strategy, optimizer_cfg: Dict[str, Any],
                 scheduler_cfg: Dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.classes = list(classes)
        self.strategy = strategy
        self.optimizer_cfg = optimizer_cfg
        self.scheduler_cfg = scheduler_cfg
        self.test_results: Dict[str, Any] = {}

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


class ClassificationModule(StrategyModule):
    def __init__(self, model: nn.Module, classes: List[str], strategy: Strategy, loss: LossCfg,
                 class_weights: Optional[torch.Tensor], optimizer_cfg: Dict[str, Any],
                 scheduler_cfg: Dict[str, Any]) -> None:
        super().__init__(model, classes, strategy, optimizer_cfg, scheduler_cfg)
        self.criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=loss.label_smoothing)
        k = len(self.classes)
        self.train_acc = tm.classification.MulticlassAccuracy(k, average="micro")
        self.val_acc = tm.classification.MulticlassAccuracy(k, average="micro")
        self.test_metrics = tm.MetricCollection({
            "accuracy": tm.classification.MulticlassAccuracy(k, average="micro"),
            "accuracy_top5": tm.classification.MulticlassAccuracy(k, top_k=min(5, k), average="micro"),
            "f1_macro": tm.classification.MulticlassF1Score(k, average="macro"),
            "precision": tm.classification.MulticlassPrecision(k, average=None),
            "recall": tm.classification.MulticlassRecall(k, average=None),
            "f1": tm.classification.MulticlassF1Score(k, average=None),
            "confusion": tm.classification.MulticlassConfusionMatrix(k),
        }, compute_groups=False)  # shared-state groups mixed macro and per-class F1 here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=True)  # one all-reduce per epoch under DDP; free on one device
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", self.criterion(logits, y), on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True, batch_size=len(y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.test_metrics.update(self(x), y)

    def on_test_epoch_end(self) -> None:
        r = {k: v.detach().cpu() for k, v in self.test_metrics.compute().items()}
        self.test_metrics.reset()
        per_class = {
            c: {"precision": float(r["precision"][i]), "recall": float(r["recall"][i]), "f1": float(r["f1"][i]),
                "support": int(r["confusion"][i].sum())}
            for i, c in enumerate(self.classes)
        }
        self.test_results = {
            "accuracy": float(r["accuracy"]),
            "accuracy_top5": float(r["accuracy_top5"]),
            "f1_macro": float(r["f1_macro"]),
            "per_class": per_class,
            "confusion_matrix": r["confusion"].int().tolist(),
        }
        for key in ("accuracy", "accuracy_top5", "f1_macro"):
            self.log(f"test/{key}", self.test_results[key], sync_dist=True)  # already global: no-op mean
