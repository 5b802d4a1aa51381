"""Multilabel classification: several labels per image, one sigmoid per label (BCE), per-label
decision thresholds tuned on the validation split, mAP and F1 on the test split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch
import torchmetrics as tm
from torch import nn

from aether.config.schema import RunCfg
from aether.tasks.base import Task, build_backbone
from aether.training.module import StrategyModule

log = logging.getLogger("aether")
GRID = torch.linspace(0.05, 0.95, 19)


def tune_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per label, the grid threshold with the best F1 on (probs, targets); 0.5 for a label that
    has no positive example to tune on."""
    pred = probs.unsqueeze(-1) >= GRID  # N x K x G
    t = targets.bool().unsqueeze(-1)
    tp = (pred & t).sum(0).float()
    fp = (pred & ~t).sum(0).float()
    fn = (~pred & t).sum(0).float()
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    best = GRID[f1.argmax(-1)]
    return torch.where(targets.sum(0) > 0, best, torch.full_like(best, 0.5))


class MultilabelModule(StrategyModule):
    def __init__(self, model: nn.Module, classes: List[str], strategy: Any, threshold: Union[str, float],
                 optimizer_cfg: Dict[str, Any], scheduler_cfg: Dict[str, Any]) -> None:
        super().__init__(model, classes, strategy, optimizer_cfg, scheduler_cfg)
        k = len(self.classes)
        self.tune = threshold == "tune"
        # a buffer: saved in checkpoints, so testing the best checkpoint uses that epoch's thresholds
        self.register_buffer("thresholds", torch.full((k,), 0.5 if self.tune else float(threshold)))
        self.criterion = nn.BCEWithLogitsLoss()
        self.val_map = tm.classification.MultilabelAveragePrecision(k, average="macro")
        self._val: List[torch.Tensor] = []
        self._test: List[torch.Tensor] = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_map.update(logits.sigmoid(), y.int())
        self._val.append(torch.cat([logits.sigmoid(), y], 1).detach().cpu())
        self.log("val/loss", self.criterion(logits, y), on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("val/map", self.val_map, on_epoch=True, prog_bar=True, batch_size=len(y))

    def on_validation_epoch_end(self) -> None:
        if self.tune:  # thresholds from the whole validation split: every rank tunes the same ones
            from aether.training.distributed import gather_rows

            k = len(self.classes)
            both = gather_rows(torch.cat(self._val) if self._val else torch.zeros((0, 2 * k)))
            self.thresholds.copy_(tune_thresholds(both[:, :k], both[:, k:]))
        self._val.clear()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self._test.append(torch.cat([self(x).sigmoid(), y], 1).detach().cpu())

    def on_test_epoch_end(self) -> None:
        from aether.training.distributed import gather_rows

        k = len(self.classes)
        both = gather_rows(torch.cat(self._test) if self._test else torch.zeros((0, 2 * k)))  # every rank's images
        self._test.clear()
        self.test_results = multilabel_results(both[:, :k], both[:, k:].int(), self.thresholds.cpu(), self.classes)
        for key in ("map", "f1_macro", "f1_micro"):
            self.log(f"test/{key}", self.test_results[key])


def multilabel_results(probs: torch.Tensor, y: torch.Tensor, thr: torch.Tensor, classes: List[str]) -> Dict[str, Any]:
    k = len(classes)
    pred = (probs >= thr).int()
    ap = tm.functional.classification.multilabel_average_precision(probs, y, k, average=None)
    prec = tm.functional.classification.multilabel_precision(pred, y, k, average=None, zero_division=0)
    rec = tm.functional.classification.multilabel_recall(pred, y, k, average=None, zero_division=0)
    f1 = tm.functional.classification.multilabel_f1_score(pred, y, k, average=None, zero_division=0)
    f1_micro = tm.functional.classification.multilabel_f1_score(pred, y, k, average="micro", zero_division=0)
    # "confusion": row = a true label, column = a predicted label, counted over test images
    confusion = (y.T.float() @ pred.float()).int().tolist()
    per_class = {c: {"ap": float(ap[i]), "precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                     "threshold": round(float(thr[i]), 4), "support": int(y[:, i].sum())} for i, c in enumerate(classes)}
    return {
        "map": float(torch.nan_to_num(ap).mean()),
        "f1_macro": float(f1.mean()),
        "f1_micro": float(f1_micro),
        "exact_match": float((pred == y).all(1).float().mean()),
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


class Multilabel(Task):
    name = "multilabel"
    monitor = ("val/map", "max")

    def build_data(self, rc: RunCfg) -> Any:
        from aether.tasks.common import build_bundle
        from aether.tasks.common import task_format

        fmt, root = task_format(rc, self.name, "a CSV/JSONL manifest with path,labels columns", default="multilabel")
        index = fmt.load(root, rc.data.adapter_options())
        counts = {c: sum(it.target[i] for it in index.items) for i, c in enumerate(index.classes)}
        return build_bundle(self.name, index, rc.data, rc.seed, counts)

    def build_network(self, rc: RunCfg, bundle: Any) -> Tuple[Any, Dict[str, Any]]:
        return build_backbone(rc, len(bundle.classes))  # one logit per label

    def build_module(self, rc: RunCfg, bundle: Any, model: Any, strategy: Any) -> Any:
        return MultilabelModule(model, bundle.classes, strategy, self.options.threshold, rc.optimizer.model_dump(),
                                rc.scheduler.model_dump())

    def build_datamodule(self, rc: RunCfg, bundle: Any, preprocessing: Dict[str, Any]) -> Any:
        from aether.data.cache import resolve_mode
        from aether.data.fastpath import FastPath
        from aether.tasks.multilabel.data import MultilabelDataset
        from aether.data.transforms import eval_transform, train_transform
        from aether.tasks.common import ItemData

        train_tf, eval_tf = train_transform(preprocessing, rc.data.augment), eval_transform(preprocessing)
        # the fast path (data.cache): labels do not move with the pixels, so the classification cache serves as is
        fast = FastPath(preprocessing, rc.data) if resolve_mode(rc.data.cache) != "off" else None
        return ItemData(bundle, rc.data, lambda items, train: MultilabelDataset(items, train_tf if train else eval_tf),
                        fast=fast, fast_target=lambda it: torch.tensor(it.target, dtype=torch.float32))

    def write_outputs(self, run_dir: Path, metrics: Dict[str, Any], job: Any, raw: Dict[str, Any]) -> str:
        import json

        from aether.reporting.plots import confusion_matrix_png
        from aether.tasks.common import per_class_table, save_run

        confusion_matrix_png(metrics["confusion_matrix"], job.bundle.classes, run_dir / "confusion_matrix.png")
        t = metrics["test"]
        lines = ["## Test results (best checkpoint; thresholds tuned on the validation split)" if self.options.threshold == "tune"
                 else f"## Test results (best checkpoint; threshold {self.options.threshold})", "",
                 "| metric | value |", "|---|---|", f"| mAP (macro) | {t['map']:.4f} |", f"| F1 (macro) | {t['f1_macro']:.4f} |",
                 f"| F1 (micro) | {t['f1_micro']:.4f} |", f"| exact match | {t['exact_match']:.4f} |", ""]
        lines += per_class_table(t["per_class"], ["ap", "precision", "recall", "f1", "threshold", "support"])
        lines += ["", "![label confusion](confusion_matrix.png) (row: a true label; column: a predicted label)", ""]
        from aether.reporting.analysis import analyse_multilabel, guarded, options, report_lines

        analysis = options(raw)
        if analysis.enabled:  # errors.csv, the worst errors, PR curves, label_issues.csv
            metrics["analysis"] = guarded(analyse_multilabel, run_dir, job, analysis)
            lines += report_lines(metrics["analysis"])
        save_run(run_dir, metrics, job, raw, self, lines)
        thresholds = {c: r["threshold"] for c, r in t["per_class"].items()}
        (run_dir / "model" / "thresholds.json").write_text(json.dumps(thresholds, indent=2))
        return f"test mAP {t['map']:.4f}, F1 macro {t['f1_macro']:.4f}"
