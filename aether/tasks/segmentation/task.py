"""Semantic segmentation: the backbone provider's encoder + a decoder (light FPN or smp's),
cross-entropy per pixel, mIoU and Dice per class on the test split, overlays of predictions in
the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torchmetrics as tm
from torch import nn

from aether.config.schema import RunCfg
from aether.tasks.base import Task
from aether.training.module import StrategyModule


def mean_over_present(per_class: torch.Tensor, support: torch.Tensor) -> float:
    """The mean of a per-class score over the classes present in the test masks (`support`: their
    pixels); a class absent from them is not averaged in."""
    present = support > 0
    return float(per_class[present].mean()) if present.any() else 0.0


def pixel_support(y: torch.Tensor, k: int) -> torch.Tensor:
    """Pixels of each of the `k` classes in the masks `y` (ignored values left out)."""
    return torch.bincount(y[(y >= 0) & (y < k)].flatten().cpu(), minlength=k)


class SegmentationModule(StrategyModule):
    def __init__(self, model: nn.Module, classes: List[str], strategy: Any, ignore_index: Optional[int],
                 optimizer_cfg: Dict[str, Any], scheduler_cfg: Dict[str, Any]) -> None:
        super().__init__(model, classes, strategy, optimizer_cfg, scheduler_cfg)
        k = len(self.classes)
        self.criterion = nn.CrossEntropyLoss(ignore_index=-100 if ignore_index is None else ignore_index)
        self.val_iou = tm.classification.MulticlassJaccardIndex(k, average="macro", ignore_index=ignore_index)
        self.test_metrics = tm.MetricCollection({
            "iou": tm.classification.MulticlassJaccardIndex(k, average=None, ignore_index=ignore_index),
            # pixel-level F1 per class, accumulated over the split = the Dice coefficient
            "dice": tm.classification.MulticlassF1Score(k, average=None, ignore_index=ignore_index),
            "pixel_accuracy": tm.classification.MulticlassAccuracy(k, average="micro", ignore_index=ignore_index),
        }, compute_groups=False)
        self.support = torch.zeros(k, dtype=torch.long)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_iou(logits.argmax(1), y)
        self.log("val/loss", self.criterion(logits, y), on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("val/miou", self.val_iou, on_epoch=True, prog_bar=True, batch_size=len(y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.test_metrics.update(self(x).argmax(1), y)
        self.support += pixel_support(y, len(self.classes))

    def on_test_epoch_end(self) -> None:
        r = {k: v.detach().cpu() for k, v in self.test_metrics.compute().items()}
        self.test_metrics.reset()
        per_class = {c: {"iou": float(r["iou"][i]), "dice": float(r["dice"][i]), "pixels": int(self.support[i])}
                     for i, c in enumerate(self.classes)}
        self.test_results = {
            "miou": mean_over_present(r["iou"], self.support),
            "dice": mean_over_present(r["dice"], self.support),
            "pixel_accuracy": float(r["pixel_accuracy"]),
            "per_class": per_class,
        }
        self.support.zero_()
        for key in ("miou", "dice", "pixel_accuracy"):
            self.log(f"test/{key}", self.test_results[key])


class Segmentation(Task):
    name = "segmentation"
    monitor = ("val/miou", "max")

    def build_data(self, rc: RunCfg) -> Any:
        from aether.tasks.common import build_bundle
        from aether.tasks.common import fit_input_and_batch, task_format

        o = self.options
        # a segmentation format's load() takes the mask value to ignore and the class names too
        fmt, root = task_format(rc, self.name, "a folder with images/ and masks/", default="masks")
        index = fmt.load(root, dict(rc.data.options), o.ignore_index, o.classes)
        bundle = build_bundle(self.name, index, rc.data, rc.seed, {})
        # native image side (<= 640) and >= 8 steps an epoch, as for detection; the train
        # transform's random resized crop moves each mask with its image
        self.fitted = fit_input_and_batch(rc, bundle.splits["train"], self.name)
        return bundle

    def build_network(self, rc: RunCfg, bundle: Any) -> Tuple[Any, Dict[str, Any]]:
        from aether.data.transforms import resolve_preprocessing
        from aether.models.encoder_net import build_encoder_net, create_encoder

        encoder = create_encoder(rc.model)  # the provider's multi-scale encoder (model.provider)
        pre = resolve_preprocessing(encoder.data_config, rc.data.image_size, rc.data.crop_pct)
        return build_encoder_net(rc.model, self.name, self.options.model_dump(), len(bundle.classes), pre, encoder), pre

    def build_module(self, rc: RunCfg, bundle: Any, model: Any, strategy: Any) -> Any:
        return SegmentationModule(model, bundle.classes, strategy, self.options.ignore_index, rc.optimizer.model_dump(),
                                  rc.scheduler.model_dump())

    def build_datamodule(self, rc: RunCfg, bundle: Any, preprocessing: Dict[str, Any]) -> Any:
        from aether.tasks.segmentation.data import SegmentationDataset, mask_transforms
        from aether.tasks.common import ItemData

        size, mean, std = preprocessing["input_size"][-1], preprocessing["mean"], preprocessing["std"]
        train_tf = mask_transforms(size, rc.data.augment, mean, std)
        eval_tf = mask_transforms(size, None, mean, std)
        return ItemData(bundle, rc.data, lambda items, train: SegmentationDataset(items, train_tf if train else eval_tf))

    def write_outputs(self, run_dir: Path, metrics: Dict[str, Any], job: Any, raw: Dict[str, Any]) -> str:
        from aether.tasks.common import per_class_table, save_run

        t = metrics["test"]
        metrics["data_fit"] = self.fitted
        self._overlays(job, run_dir / "overlays.png")
        lines = ["## Test results (best checkpoint)", "", "| metric | value |", "|---|---|",
                 f"| mIoU | {t['miou']:.4f} |", f"| Dice (mean) | {t['dice']:.4f} |",
                 f"| pixel accuracy | {t['pixel_accuracy']:.4f} |", ""]
        lines += per_class_table(t["per_class"], ["iou", "dice", "pixels"])
        lines += ["", "Test images: true mask (middle), prediction (right):", "", "![overlays](overlays.png)", ""]
        from aether.reporting.analysis import guarded, options, segmentation_lines

        analysis = options(raw)
        if analysis.enabled:  # errors.csv and the worst images; a failure is logged, not fatal
            metrics["analysis"] = guarded(self._analysis, run_dir, job, analysis.worst_n)
            lines += segmentation_lines(metrics["analysis"])
        save_run(run_dir, metrics, job, raw, self, lines)
        return f"test mIoU {t['miou']:.4f}, Dice {t['dice']:.4f}"

    def _analysis(self, run_dir: Path, job: Any, worst_n: int) -> Dict[str, Any]:
        """errors.csv (every test image's IoU, lowest first) and worst_overlays.png (the lowest `worst_n`)."""
        import time

        from aether.reporting.analysis import ERRORS_CSV, image_ious, write_segmentation_errors

        t0 = time.perf_counter()
        items = job.bundle.splits["test"]
        scores = image_ious(job.module, job.datamodule, len(job.bundle.classes), self.options.ignore_index)
        rows = write_segmentation_errors([it.path for it in items], scores, run_dir / ERRORS_CSV)
        worst = rows[:worst_n]
        if worst:
            by_path = {it.path: it for it in items}
            self._overlays(job, run_dir / "worst_overlays.png", items=[by_path[r["path"]] for r in worst])
        return {"errors_csv": ERRORS_CSV, "num_test": len(rows), "worst": worst,
                "seconds": round(time.perf_counter() - t0, 3)}

    @staticmethod
    def _overlays(job: Any, path: Path, n: int = 6, items: Optional[List[Any]] = None) -> None:
        import numpy as np
        from PIL import Image

        from aether.data.images import load_rgb
        from aether.tasks.segmentation.data import SegmentationDataset, mask_transforms
        from aether.tasks.segmentation.sheets import segmentation_sheet

        pre = job.preprocessing
        size = pre["input_size"][-1]
        items = job.bundle.splits["test"][:n] if items is None else items
        ds = SegmentationDataset(items, mask_transforms(size, None, pre["mean"], pre["std"]))
        model = job.module.model.eval()
        samples = []
        with torch.no_grad():
            for i, it in enumerate(items):
                x, y = ds[i]
                pred = model(x.unsqueeze(0).to(job.module.device)).argmax(1)[0].cpu().numpy()
                img = load_rgb(it.path).resize((size, size), Image.BILINEAR)
                samples.append((img, y.numpy().astype(np.int64), pred))
        segmentation_sheet(samples, path)
