"""task=classification's LightningModule: cross-entropy or focal loss (losses.py), accuracy, and the test metrics of metrics.json."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torchmetrics as tm
from torch import nn

from aether.config.schema import LossCfg
from aether.strategies.base import Strategy
from aether.training.module import StrategyModule


class ClassificationModule(StrategyModule):
    def __init__(self, model: nn.Module, classes: List[str], strategy: Strategy, loss: LossCfg,
                 class_weights: Optional[torch.Tensor], optimizer_cfg: Dict[str, Any],
                 scheduler_cfg: Dict[str, Any], teacher: Any = None, distill: Any = None,
                 mixing: Any = None) -> None:
        super().__init__(model, classes, strategy, optimizer_cfg, scheduler_cfg)
        # a plain attribute (aether.tasks.classification.distill.Teacher, not an nn.Module): the
        # teacher is not part of this module's state, so it is never trained, saved or exported
        self.teacher, self.distill = teacher, distill
        from aether.tasks.classification.losses import criterion

        self.criterion = criterion(loss.name, loss.focal_gamma, class_weights, loss.label_smoothing)
        # Mixup / CutMix (aether.tasks.classification.mixing.Mixing, or None): training batches get
        # soft targets, which carry the label smoothing; validation keeps `criterion` on clean images
        self.mixing = mixing
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

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        target = y
        if self.mixing is not None:
            x, target = self.mixing(x, y, self.current_epoch)
        logits = self(x)
        if target is y:
            loss = self.criterion(logits, y)
        else:
            from aether.tasks.classification.mixing import soft_cross_entropy

            loss = soft_cross_entropy(logits, target, self.criterion.weight)
        if self.teacher is not None:
            from aether.tasks.classification.distill import kd_loss

            soft = kd_loss(logits, self.teacher.logits(x), self.distill.temperature)
            loss = (1 - self.distill.alpha) * loss + self.distill.alpha * soft
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y),
                 sync_dist=True)  # one all-reduce per epoch under DDP; free on one device
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

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
