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
                 mixing: Any = None, tta: str = "none", calibration: Any = None) -> None:
        super().__init__(model, classes, strategy, optimizer_cfg, scheduler_cfg)
        # test.tta and calibration (aether.tasks.classification.tta, .calibration): the test split
        # is scored as the exported model answers: softmax(logits / T) averaged over the views
        self.tta = tta
        self.calibrate = calibration is not None and calibration.method == "temperature"
        self.reject_below = calibration.reject_below if calibration is not None else None
        self.temperature = 1.0
        self.calibration_fit: Dict[str, Any] = {}
        self.tta_results: Dict[str, Any] = {}
        self.calibration_results: Dict[str, Any] = {}
        self._test_rows: List[torch.Tensor] = []
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

    def on_test_start(self) -> None:
        """The best checkpoint is loaded: fit the temperature on the validation split's logits
        (every rank fits on the whole split; rank 0's value is used by all)."""
        self.temperature, self.calibration_fit = 1.0, {}
        self._test_rows = []
        if not self.calibrate:
            return
        from aether.tasks.classification.calibration import fit_temperature

        logits, labels = self._val_logits()
        t, self.calibration_fit = fit_temperature(logits, labels)
        self.temperature = float(self.trainer.strategy.broadcast(t, 0))

    def _val_logits(self) -> Any:
        """(logits, labels) of the whole validation split, fed to the model as the test step is."""
        import contextlib

        dm = getattr(self.trainer, "datamodule", None)
        k = len(self.classes)
        if dm is None or not len(dm.bundle.splits.get("val", [])):
            return torch.zeros((0, k)), torch.zeros((0,), dtype=torch.long)
        loader = dm.val_dataloader()
        plugin = getattr(self.trainer, "precision_plugin", None)  # as the test loop: input dtype, autocast
        context = plugin.test_step_context() if plugin is not None else contextlib.nullcontext()
        # FSDP gathers its sharded parameters only inside its root wrapper's forward (which the
        # test loop's steps run in): call through it. Every rank reads the whole split, so the
        # ranks make the same calls.
        from torch.distributed.fsdp import FullyShardedDataParallel

        root = getattr(self.trainer.strategy, "model", None)
        forward = root if isinstance(root, FullyShardedDataParallel) else self
        logits, labels = [], []
        with torch.no_grad(), context:
            for batch in loader:
                x, y = plugin.convert_input(batch) if plugin is not None else batch
                x, y = dm.on_after_batch_transfer((x.to(self.device), y.to(self.device)), 0)
                logits.append(forward(x).float().cpu())
                labels.append(y.cpu())
        return torch.cat(logits), torch.cat(labels)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        from aether.tasks.classification import tta

        x, y = batch
        view_logits = [self(v).float() for v in tta.views(x, self.tta)]
        probs = tta.average(view_logits, self.temperature)  # what the exported model answers
        self.test_metrics.update(probs, y)
        plain = torch.softmax(view_logits[0] / self.temperature, dim=1)
        uncalibrated = tta.average(view_logits, 1.0)
        self._test_rows.append(torch.cat([plain, uncalibrated, probs, y.unsqueeze(1).float()], 1).detach().cpu())

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
        self._calibration_and_tta()

    def _calibration_and_tta(self) -> None:
        """test.ece (and ece_uncalibrated), the `calibration` and `tta` sections of metrics.json."""
        from aether.tasks.classification import calibration as cal
        from aether.training.distributed import gather_rows

        k = len(self.classes)
        rows = gather_rows(torch.cat(self._test_rows) if self._test_rows else torch.zeros((0, 3 * k + 1)))
        self._test_rows = []
        plain, uncalibrated, probs, y = rows[:, :k], rows[:, k:2 * k], rows[:, 2 * k:3 * k], rows[:, 3 * k].long()
        self.test_results["ece"] = cal.ece(probs, y)
        if self.calibrate:
            self.test_results["ece_uncalibrated"] = cal.ece(uncalibrated, y)
        self.calibration_results = {
            "method": "temperature" if self.calibrate else "none", "temperature": self.temperature,
            "fit": self.calibration_fit, "reject_below": self.reject_below, "n_bins": cal.N_BINS,
            "ece": self.test_results["ece"], "ece_uncalibrated": self.test_results.get("ece_uncalibrated"),
            "reliability": {"calibrated": cal.reliability(probs, y), "uncalibrated": cal.reliability(uncalibrated, y)},
        }
        if self.tta != "none":
            from aether.tasks.classification.tta import num_views

            self.tta_results = {"mode": self.tta, "views": num_views(self.tta), "plain": scores(plain, y, k),
                                "tta": scores(probs, y, k),
                                "changed_predictions": int((plain.argmax(1) != probs.argmax(1)).sum())}


def scores(probs: torch.Tensor, y: torch.Tensor, k: int) -> Dict[str, Any]:
    """Top-1/top-5 accuracy, macro F1 and ECE of one way of scoring the test split."""
    from aether.tasks.classification.calibration import ece

    if probs.shape[0] == 0:
        return {"accuracy": None, "accuracy_top5": None, "f1_macro": None, "ece": None}
    f = tm.functional.classification
    return {"accuracy": float(f.multiclass_accuracy(probs, y, k, average="micro")),
            "accuracy_top5": float(f.multiclass_accuracy(probs, y, k, top_k=min(5, k), average="micro")),
            "f1_macro": float(f.multiclass_f1_score(probs, y, k, average="macro")),
            "ece": ece(probs, y)}
