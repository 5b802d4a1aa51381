"""Object detection: timm encoder + FPN + torchvision head, trained on COCO, YOLO or VOC data;
mAP@[.5:.95] and mAP@.5 (torchmetrics, pycocotools backend); predictions drawn in the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import torch
from torch import nn

from aether import registry
from aether.config.schema import RunCfg
from aether.config.validate import part_options
from aether.tasks.base import Task
from aether.training.module import StrategyModule


def _map_metric(per_class: bool):  # type: ignore[no-untyped-def]
    from torchmetrics.detection import MeanAveragePrecision

    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=per_class, backend="pycocotools")


class DetectionModule(StrategyModule):
    def __init__(self, model: nn.Module, classes: List[str], strategy: Any, optimizer_cfg: Dict[str, Any],
                 scheduler_cfg: Dict[str, Any]) -> None:
        super().__init__(model, classes, strategy, optimizer_cfg, scheduler_cfg)
        self.val_map = _map_metric(False)
        self.test_map = _map_metric(True)

    def forward(self, images: List[torch.Tensor], targets: Any = None) -> Any:
        return self.model(images, targets) if targets is not None else self.model(images)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self(images, targets)
        loss = sum(losses.values())
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(images), sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        self.val_map.update(self(images), targets)

    def on_validation_epoch_end(self) -> None:
        r = self.val_map.compute()
        self.val_map.reset()
        self.log("val/map", float(r["map"]), prog_bar=True)
        self.log("val/map_50", float(r["map_50"]), prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        self.test_map.update(self(images), targets)

    def on_test_epoch_end(self) -> None:
        r = self.test_map.compute()
        self.test_map.reset()
        ids = [int(c) for c in r["classes"].flatten().tolist()]
        per = r["map_per_class"].flatten().tolist()
        per_class = {c: {"ap": None, "instances": 0} for c in self.classes}
        for j, cid in enumerate(ids):
            if 0 <= cid < len(self.classes):
                per_class[self.classes[cid]]["ap"] = None if per[j] < 0 else float(per[j])
        clean = lambda v: max(0.0, float(v))  # noqa: E731  (pycocotools says -1 for "nothing to score")
        self.test_results = {"map": clean(r["map"]), "map_50": clean(r["map_50"]), "map_75": clean(r["map_75"]),
                             "mar_100": clean(r["mar_100"]), "per_class": per_class}
        for key in ("map", "map_50"):
            self.log(f"test/{key}", self.test_results[key])


MAX_NATIVE_SIZE = 640  # larger images are trained at this side (objects shrink, with a line saying so)
MIN_STEPS_PER_EPOCH = 8  # fewer optimiser steps than this per epoch starve a small detection set


def fit_to_data(rc: RunCfg, train: List[Any]) -> None:
    """Detection defaults taken from the data rather than from an ImageNet classifier: an image
    side left at `null` becomes the images' own (median, a multiple of 32, at most 640: resizing
    400 px aerial tiles to 224 shrank 37 px tree crowns to 21 px), and the default batch size
    shrinks until an epoch makes at least 8 optimiser steps (batch 32 on 38 training images made
    one step an epoch and never used 6 of them). Each change is logged; a value the user set
    other than the default is kept."""
    import logging
    import math
    import statistics

    from PIL import Image

    from aether.config.schema import DataCfg

    log = logging.getLogger("aether")
    if rc.data.image_size is None and train:
        sides = []
        for it in train[:200]:  # headers only
            try:
                with Image.open(it.path) as im:
                    sides.append(max(im.size))
            except OSError:
                continue
        if sides:
            median = statistics.median(sides)
            size = int(min(MAX_NATIVE_SIZE, max(64, math.ceil(median / 32) * 32)))
            rc.data.image_size = size
            log.info("detection: data.image_size=%d (the training images' median side is %d px%s; "
                     "set data.image_size to change it)", size, median,
                     f", capped at {MAX_NATIVE_SIZE}" if median > MAX_NATIVE_SIZE else "")
    default_batch = DataCfg.model_fields["batch_size"].default
    n = len(train)
    if rc.data.batch_size == default_batch and n < MIN_STEPS_PER_EPOCH * default_batch:
        batch = max(2, n // MIN_STEPS_PER_EPOCH)
        if batch < default_batch:
            log.info("detection: data.batch_size=%d (%d training images: %d optimiser steps per epoch instead of %d; "
                     "set data.batch_size to change it)", batch, n, n // batch, max(1, n // default_batch))
            rc.data.batch_size = batch


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


class Detection(Task):
    name = "detection"
    monitor = ("val/map", "max")
    early_stop = ("val/map", "max")  # torchvision detectors return losses only in training mode

    def prepare(self, rc: RunCfg) -> Any:
        from aether.data.dense import build_bundle
        from aether.data.detection import ADAPTERS, DetectionDataset, box_transforms, collate, instance_counts
        from aether.data.transforms import resolve_preprocessing
        from aether.doctor.inspect import detect_structure, resolve_source
        from aether.errors import AetherError
        from aether.models.backbone import Backbone
        from aether.models.dense import DenseNet, create_encoder, make_head
        from aether.run import Job
        from aether.strategies.base import count_params
        from aether.tasks.common import ItemData

        o = self.options
        root = resolve_source(rc.data)[0]
        if root is None:
            raise AetherError("task=detection needs data=PATH to a COCO, YOLO or VOC dataset")
        fmt = detect_structure(root, rc.data.format).format
        if fmt not in ADAPTERS:
            raise AetherError(f"data.path={rc.data.path}: looks like {fmt}, not a detection dataset; expected COCO, "
                              "YOLO or VOC (data.format=coco|yolo|voc)")
        index = ADAPTERS[fmt]().load(root, dict(rc.data.options))
        bundle = build_bundle(self.name, index, rc.data, rc.seed, instance_counts(index))
        fit_to_data(rc, bundle.splits["train"])
        encoder, data_config, info = create_encoder(rc.model)
        pre = resolve_preprocessing(data_config, rc.data.image_size, rc.data.crop_pct)
        size = pre["input_size"][-1]
        head = make_head(self.name, o.model_dump(), encoder, len(bundle.classes), pre)
        net = DenseNet(encoder, head, rc.model.name)
        strategy = registry.strategies.get(rc.strategy.name).load()(part_options(rc.strategy.model_dump(), registry.strategies))
        model = strategy.apply(Backbone(net, head, data_config, info))
        module = DetectionModule(model, bundle.classes, strategy, rc.optimizer.model_dump(), rc.scheduler.model_dump())
        train_tf, eval_tf = box_transforms(size, rc.data.augment), box_transforms(size, None)
        data = ItemData(bundle, rc.data, lambda items, train: DetectionDataset(items, train_tf if train else eval_tf),
                        collate)
        return Job(bundle, Backbone(net, head, data_config, info), pre, strategy, count_params(model), module, data,
                   task=self)

    def finish(self, run_dir: Path, metrics: Dict[str, Any], job: Any, raw: Dict[str, Any]) -> str:
        from aether.tasks.common import save_run

        t = metrics["test"]
        for c, n in job.bundle.class_counts.items():
            t["per_class"][c]["instances"] = n
        self._draw(job, run_dir / "predictions.png")
        lines = ["## Test results (best checkpoint)", "", "| metric | value |", "|---|---|",
                 f"| mAP@[.5:.95] | {t['map']:.4f} |", f"| mAP@.5 | {t['map_50']:.4f} |",
                 f"| mAP@.75 | {t['map_75']:.4f} |", f"| mAR@100 | {t['mar_100']:.4f} |", "",
                 "| class | AP@[.5:.95] | instances (all splits) |", "|---|---|---|"]
        lines += [f"| {c} | {_fmt(r['ap'])} | {r['instances']} |" for c, r in t["per_class"].items()]
        lines += ["", f"Test images: true boxes in white, predictions with score >= {self.options.draw_threshold}:", "",
                  "![predictions](predictions.png)"]
        save_run(run_dir, metrics, job, raw, self, lines)
        return f"test mAP {t['map']:.4f}, mAP@.5 {t['map_50']:.4f}"

    def _draw(self, job: Any, path: Path, n: int = 8) -> None:
        from torchvision.transforms.functional import to_pil_image

        from aether.data.detection import DetectionDataset, box_transforms
        from aether.reporting.dense import detection_sheet

        items = job.bundle.splits["test"][:n]
        ds = DetectionDataset(items, box_transforms(job.preprocessing["input_size"][-1], None))
        model = job.module.model.eval()
        samples = []
        with torch.no_grad():
            for i in range(len(items)):
                x, target = ds[i]
                pred = model([x.to(job.module.device)])[0]
                samples.append((to_pil_image(x), {k: v.tolist() for k, v in target.items()},
                                {k: v.cpu().tolist() for k, v in pred.items()}))
        detection_sheet(samples, job.bundle.classes, self.options.draw_threshold, path)
