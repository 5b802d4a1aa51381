"""Object detection: the backbone provider's encoder + FPN + torchvision head, trained on COCO,
YOLO or VOC data; mAP@[.5:.95] and mAP@.5 (torchmetrics, pycocotools backend); predictions drawn in the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from aether.config.schema import RunCfg
from aether.tasks.base import Task
from aether.training.module import StrategyModule


def _map_metric(per_class: bool):  # type: ignore[no-untyped-def]
    from torchmetrics.detection import MeanAveragePrecision

    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=per_class, backend="pycocotools")


NMS_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)  # NMS IoU thresholds tried on the validation split
SCORE_GRID = tuple(round(0.05 * k, 2) for k in range(1, 19))  # score thresholds tried: 0.05 ... 0.9
DEFAULT_DRAW_THRESHOLD = 0.3  # served / drawn score threshold when there is nothing to tune it on
CANDIDATES = 10  # x detections_per_image: pre-NMS boxes kept per image while tuning NMS


def _nms(pred: Dict[str, torch.Tensor], iou: float, keep: int) -> Dict[str, torch.Tensor]:
    """What the detector returns with NMS at `iou` (torchvision: batched_nms over every level's
    candidates, then the best `keep`), from its output with no suppression (NMS IoU 1)."""
    from torchvision.ops import batched_nms

    idx = batched_nms(pred["boxes"], pred["scores"], pred["labels"], iou)[:keep]
    return {k: v[idx] for k, v in pred.items()}


def match_boxes(pred: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
                iou: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Greedy matching in falling score order (as COCO's): each prediction takes the unmatched
    true box of its class it overlaps most, a true positive at IoU >= `iou`. Returns (scores,
    true-positive flags, number of true boxes). Lower-scored boxes never change the matches of
    higher ones, so one pass serves every score threshold."""
    from torchvision.ops import box_iou

    order = pred["scores"].argsort(descending=True)
    scores, boxes, labels = pred["scores"][order], pred["boxes"][order], pred["labels"][order]
    tb, tl = target["boxes"].to(boxes), target["labels"].to(labels)
    tp = torch.zeros(len(scores), dtype=torch.bool)
    if len(tb) and len(boxes):
        ious = box_iou(boxes, tb)
        ious[labels[:, None] != tl[None, :]] = -1
        for i in range(len(boxes)):
            j = int(ious[i].argmax())
            if ious[i, j] >= iou:
                tp[i] = True
                ious[:, j] = -1
    return scores.cpu(), tp, len(tb)


def prf_at(scores: torch.Tensor, tp: torch.Tensor, n_true: int, threshold: float) -> Dict[str, float]:
    kept = scores >= threshold
    n, hits = int(kept.sum()), int(tp[kept].sum())
    p = hits / n if n else 0.0
    r = hits / n_true if n_true else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
            "boxes": n}


def map50(preds: List[Dict[str, torch.Tensor]], targets: List[Dict[str, torch.Tensor]]) -> float:
    from torchmetrics.detection import MeanAveragePrecision

    m = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5], backend="pycocotools")
    m.update(preds, targets)
    return max(0.0, float(m.compute()["map"]))


def tune_postprocess(preds: List[Dict[str, torch.Tensor]], targets: List[Dict[str, torch.Tensor]], nms: Any,
                     draw: Any, detections: int, min_score: float) -> Dict[str, Any]:
    """NMS IoU and score threshold chosen on validation predictions made without suppression:
    the NMS IoU of NMS_GRID with the best mAP@.5, then the score threshold of SCORE_GRID with the
    best F1 at IoU 0.5 (ties: the higher threshold). A number given for either is kept as it is."""
    out: Dict[str, Any] = {"split": "val", "images": len(preds), "true_boxes": sum(len(t["boxes"]) for t in targets)}
    grid = [t for t in NMS_GRID] if nms == "tune" else [float(nms)]
    by_nms = {t: map50([_nms(p, t, detections) for p in preds], targets) for t in grid}
    out["nms_threshold"] = max(grid, key=lambda t: (by_nms[t], -abs(t - 0.5)))
    out["nms_grid"] = {str(t): {"map_50": round(v, 4)} for t, v in by_nms.items()}
    kept = [_nms(p, out["nms_threshold"], detections) for p in preds]
    matched = [match_boxes(p, t) for p, t in zip(kept, targets)]
    scores = torch.cat([m[0] for m in matched]) if matched else torch.zeros(0)
    tp = torch.cat([m[1] for m in matched]) if matched else torch.zeros(0, dtype=torch.bool)
    n_true = sum(m[2] for m in matched)
    sgrid = [s for s in SCORE_GRID if s >= min_score] if draw == "tune" else [float(draw)]
    by_score = {s: prf_at(scores, tp, n_true, s) for s in sgrid}
    out["score_threshold"] = max(sgrid, key=lambda s: (by_score[s]["f1"], s))
    out["score_grid"] = {str(s): {**v, "boxes_per_image": round(v["boxes"] / max(1, len(preds)), 2)}
                         for s, v in by_score.items()}
    out["val_map_50"] = round(by_nms[out["nms_threshold"]], 4)
    out["val_f1"] = by_score[out["score_threshold"]]["f1"]
    out["tuned"] = [k for k, v in (("nms_threshold", nms), ("score_threshold", draw)) if v == "tune"]
    return out


class DetectionModule(StrategyModule):
    def __init__(self, model: nn.Module, classes: List[str], strategy: Any, optimizer_cfg: Dict[str, Any],
                 scheduler_cfg: Dict[str, Any], options: Any = None) -> None:
        super().__init__(model, classes, strategy, optimizer_cfg, scheduler_cfg)
        from aether.tasks.detection.options import DetectionTaskCfg

        self.options = options or DetectionTaskCfg()
        self.val_map = _map_metric(False)
        self.test_map = _map_metric(True)
        self.postprocess: Dict[str, Any] = {}
        self._test_matches: List[Tuple[torch.Tensor, torch.Tensor, int]] = []

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

    def heads(self) -> List[nn.Module]:
        from aether.tasks.detection.detector import DetectorHead

        return [m for m in self.model.modules() if isinstance(m, DetectorHead)]  # (LoRA: the copy too)

    def on_test_start(self) -> None:
        """The best checkpoint is loaded: choose NMS and the score threshold on the validation
        split (the test split then scores what will be served)."""
        o = self.options
        heads = self.heads()
        default_nms = heads[0].postprocess()[0] if heads else None
        dm = getattr(self.trainer, "datamodule", None)
        loader = dm.val_dataloader() if dm is not None and len(dm.bundle.splits.get("val", [])) else None
        if loader is None or not heads:
            self.postprocess = {"split": None, "tuned": [], "why": "no validation images: defaults kept",
                                "nms_threshold": default_nms if o.nms_threshold == "tune" else float(o.nms_threshold),
                                "score_threshold": DEFAULT_DRAW_THRESHOLD if o.draw_threshold == "tune"
                                else float(o.draw_threshold)}
        else:
            before = [h.postprocess(1.0, CANDIDATES * o.detections_per_image) for h in heads]
            preds, targets = [], []
            self.model.eval()
            with torch.no_grad():
                for images, tgts in loader:
                    out = self([x.to(self.device) for x in images])
                    preds += [{k: v.detach().cpu() for k, v in p.items()} for p in out]
                    targets += [{k: v.cpu() for k, v in t.items()} for t in tgts]
            for h, b in zip(heads, before):
                h.postprocess(*b)
            self.postprocess = tune_postprocess(preds, targets, o.nms_threshold, o.draw_threshold,
                                                o.detections_per_image, o.score_threshold)
            self.postprocess["default_nms_threshold"] = default_nms
        for h in heads:
            h.postprocess(self.postprocess["nms_threshold"])
        self._test_matches = []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        preds = self(images)
        self.test_map.update(preds, targets)
        self._test_matches += [match_boxes({k: v.detach().cpu() for k, v in p.items()},
                                           {k: v.cpu() for k, v in t.items()}) for p, t in zip(preds, targets)]

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
        m = self._test_matches
        if m:  # what is served: boxes over the chosen score threshold, matched at IoU 0.5 (this process's share)
            thr = float(self.postprocess.get("score_threshold", DEFAULT_DRAW_THRESHOLD))
            at = prf_at(torch.cat([x[0] for x in m]), torch.cat([x[1] for x in m]), sum(x[2] for x in m), thr)
            self.test_results["at_score_threshold"] = {
                "score_threshold": thr, "nms_threshold": self.postprocess.get("nms_threshold"),
                "precision": at["precision"], "recall": at["recall"], "f1": at["f1"],
                "boxes_per_image": round(at["boxes"] / len(m), 2),
                "true_boxes_per_image": round(sum(x[2] for x in m) / len(m), 2)}
        self._test_matches = []
        for key in ("map", "map_50"):
            self.log(f"test/{key}", self.test_results[key])


MIN_STEPS = 300  # optimiser steps a default run makes at least (small data: more epochs) ...
MAX_FIT_EPOCHS = 30  # ... within this many epochs (~50 images at 400 px: a few minutes on 2 CPU cores)
WARMUP_SHARE = 0.1  # linear warm-up over at least this share of the run's steps
DEFAULT_STRIDES = [8, 16, 32, 64, 128]  # torchvision's FCOS / RetinaNet levels (P3-P7)


def fit_to_data(rc: RunCfg, train: List[Any]) -> Dict[str, Any]:
    """Detection defaults taken from the data rather than from an ImageNet classifier: the image
    side and batch size of `fit_input_and_batch` (native side <= 640; >= 8 steps an epoch), then
    the schedule: left at the default 10 epochs, a small set trains for enough epochs to make
    MIN_STEPS optimiser steps (at most MAX_FIT_EPOCHS: 30 images at batch 3 made 100 steps in 10
    epochs, far from converged from scratch), its cosine warm-up covers 10% of the steps and early
    stopping waits a third of the epochs (the noisy mAP of a few validation images otherwise stops
    the run before the schedule's low-LR end). Each change is logged and returned (metrics.json
    `data_fit`); a value named on the command line, or
    other than the default, is kept."""
    import logging
    import math

    from aether.config.schema import EarlyStoppingCfg, TrainerCfg
    from aether.tasks.common import fit_input_and_batch

    log = logging.getLogger("aether")
    fitted = fit_input_and_batch(rc, train, "detection")
    t = rc.trainer
    default_epochs = TrainerCfg.model_fields["max_epochs"].default
    if rc.resume or rc.set_by_user("trainer.max_epochs", default_epochs) or not train:
        return fitted  # a resumed run's config.yaml already holds what was fitted
    batch = rc.data.batch_size
    steps = max(1, (len(train) // batch if len(train) > batch else 1) // max(1, t.accumulate_grad_batches))
    epochs = int(min(MAX_FIT_EPOCHS, max(default_epochs, math.ceil(MIN_STEPS / steps))))
    if epochs == default_epochs:
        return fitted
    t.max_epochs = epochs
    fitted["max_epochs"] = {"value": epochs, "default": default_epochs,
                            "why": f"{steps} optimiser steps per epoch: {epochs * steps} steps in all "
                                   f"(at least {MIN_STEPS}, at most {MAX_FIT_EPOCHS} epochs)"}
    log.info("detection: trainer.max_epochs=%d (%s; set trainer.max_epochs to change it)", epochs,
             fitted["max_epochs"]["why"])
    es, default_patience = t.early_stopping, EarlyStoppingCfg.model_fields["patience"].default
    if es.enabled and not rc.set_by_user("trainer.early_stopping.patience", default_patience):
        es.patience = max(default_patience, epochs // 3)
        fitted["early_stopping_patience"] = {"value": es.patience, "default": default_patience,
                                             "why": "a third of the fitted epochs"}
    warm = getattr(rc.scheduler, "warmup_epochs", None)
    if (rc.scheduler.name == "cosine" and warm is not None and "scheduler.warmup_epochs" not in rc._explicit
            and warm < math.ceil(WARMUP_SHARE * epochs)):
        value = math.ceil(WARMUP_SHARE * epochs)
        setattr(rc.scheduler, "warmup_epochs", value)
        fitted["warmup_epochs"] = {"value": value, "default": warm,
                                   "why": f"linear warm-up over {value * steps} of {epochs * steps} steps "
                                          f"({WARMUP_SHARE:.0%})"}
        log.info("detection: scheduler.warmup_epochs=%d (%s)", value, fitted["warmup_epochs"]["why"])
    return fitted


def box_sides(train: List[Any], size: int, limit: int = 1000) -> Tuple[List[float], List[float]]:
    """Short and long sides of the training boxes at the network's input size (the eval transform
    resizes every image to size x size); image headers of up to `limit` items are read."""
    from PIL import Image

    short, long = [], []
    step = max(1, len(train) // limit)
    for it in train[::step]:
        if not it.target["boxes"]:
            continue
        try:
            with Image.open(it.path) as im:
                w, h = im.size
        except OSError:
            continue
        for x0, y0, x1, y1 in it.target["boxes"]:
            bw, bh = (x1 - x0) * size / w, (y1 - y0) * size / h
            short.append(min(bw, bh))
            long.append(max(bw, bh))
    return short, long


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


class Detection(Task):
    name = "detection"
    monitor = ("val/map", "max")
    early_stop = ("val/map", "max")  # torchvision detectors return losses only in training mode

    def build_data(self, rc: RunCfg) -> Any:
        from aether.tasks.common import build_bundle
        from aether.tasks.detection.data import instance_counts
        from aether.tasks.common import task_format

        fmt, root = task_format(rc, self.name, "a COCO, YOLO or VOC dataset (data.format=coco|yolo|voc)")
        index = fmt.load(root, dict(rc.data.options))
        bundle = build_bundle(self.name, index, rc.data, rc.seed, instance_counts(index), counts_of="instances")
        self.fitted = fit_to_data(rc, bundle.splits["train"])
        return bundle

    def build_network(self, rc: RunCfg, bundle: Any) -> Tuple[Any, Dict[str, Any]]:
        from aether.data.transforms import resolve_preprocessing
        from aether.models.encoder_net import build_encoder_net, create_encoder

        o = self.options
        encoder = create_encoder(rc.model)  # the provider's multi-scale encoder (model.provider)
        pre = resolve_preprocessing(encoder.data_config, rc.data.image_size, rc.data.crop_pct)
        if o.strides == "auto":
            self._fit_strides(bundle.splits["train"], pre["input_size"][-1], encoder.reductions)
        # what preparing resolved, written back into config.yaml (aether.run._record_resolved)
        self.resolved = {("trainer", "max_epochs"): rc.trainer.max_epochs,
                         ("trainer", "early_stopping", "patience"): rc.trainer.early_stopping.patience,
                         ("task_options", "strides"): o.strides}
        if "warmup_epochs" in self.fitted:
            self.resolved[("scheduler", "warmup_epochs")] = self.fitted["warmup_epochs"]["value"]
        return build_encoder_net(rc.model, self.name, o.model_dump(), len(bundle.classes), pre, encoder), pre

    def check_network(self, network: Any, preprocessing: Dict[str, Any], rc: RunCfg) -> None:
        pass  # torchvision's detectors take a list of images of any size: nothing to check by shape

    def build_module(self, rc: RunCfg, bundle: Any, model: Any, strategy: Any) -> Any:
        return DetectionModule(model, bundle.classes, strategy, rc.optimizer.model_dump(), rc.scheduler.model_dump(),
                               options=self.options)

    def build_datamodule(self, rc: RunCfg, bundle: Any, preprocessing: Dict[str, Any]) -> Any:
        from aether.tasks.detection.data import DetectionDataset, box_transforms, collate
        from aether.tasks.common import ItemData

        size = preprocessing["input_size"][-1]
        train_tf, eval_tf = box_transforms(size, rc.data.augment), box_transforms(size, None)
        return ItemData(bundle, rc.data, lambda items, train: DetectionDataset(items, train_tf if train else eval_tf),
                        collate)

    def _fit_strides(self, train: List[Any], size: int, reductions: List[int]) -> None:
        """task_options.strides=auto: the FPN levels that cover the training boxes at this input
        size (aether.tasks.detection.detector.choose_strides), logged and kept in metrics.json."""
        import logging

        from aether.tasks.detection.detector import choose_strides

        short, long = box_sides(train, size)
        strides, why = choose_strides(short, long, reductions, self.options.head)
        self.options.strides = strides
        dropped = [s for s in DEFAULT_STRIDES if s not in strides]
        added = [s for s in strides if s not in DEFAULT_STRIDES]
        change = "; ".join(x for x in (f"drops {dropped} (no training box is that large)" if dropped else "",
                                       f"adds {added} (small objects)" if added else "") if x)
        self.fitted["strides"] = {"value": strides, "default": DEFAULT_STRIDES, "why": why + (f"; {change}" if change else "")}
        logging.getLogger("aether").info("detection: task_options.strides=%s (%s; set task_options.strides to change "
                                         "it)", strides, self.fitted["strides"]["why"])

    def write_outputs(self, run_dir: Path, metrics: Dict[str, Any], job: Any, raw: Dict[str, Any]) -> str:
        from aether.tasks.common import save_run

        t = metrics["test"]
        for c, n in job.bundle.class_counts.items():
            t["per_class"][c]["instances"] = n
        pp = dict(job.module.postprocess)
        if pp:  # the chosen values go into model/model.json: predict, export and serving use them
            self.options.nms_threshold = float(pp["nms_threshold"])
            self.options.draw_threshold = float(pp["score_threshold"])
            metrics["postprocess"] = pp
        metrics["data_fit"] = getattr(self, "fitted", {})
        self._draw(job, run_dir / "predictions.png")
        lines = ["## Test results (best checkpoint)", "", "| metric | value |", "|---|---|",
                 f"| mAP@[.5:.95] | {t['map']:.4f} |", f"| mAP@.5 | {t['map_50']:.4f} |",
                 f"| mAP@.75 | {t['map_75']:.4f} |", f"| mAR@100 | {t['mar_100']:.4f} |", "",
                 "| class | AP@[.5:.95] | instances (all splits) |", "|---|---|---|"]
        lines += [f"| {c} | {_fmt(r['ap'])} | {r['instances']} |" for c, r in t["per_class"].items()]
        at = t.get("at_score_threshold")
        if pp.get("split") and at:
            lines += ["", f"Post-processing chosen on the validation split ({pp['images']} images): NMS IoU "
                      f"{pp['nms_threshold']} (best val mAP@.5 {pp['val_map_50']:.3f}), score threshold "
                      f"{pp['score_threshold']} (best val F1 at IoU 0.5 {pp['val_f1']:.3f}); predict, export and "
                      "serving use them (`score_threshold=` overrides the score).", "",
                      "| test, boxes over the score threshold | precision | recall | F1 | boxes / image | "
                      "true boxes / image |", "|---|---|---|---|---|---|",
                      f"| IoU 0.5 | {at['precision']:.3f} | {at['recall']:.3f} | {at['f1']:.3f} | "
                      f"{at['boxes_per_image']} | {at['true_boxes_per_image']} |"]
        lines += ["", f"Test images: true boxes in white, predictions with score >= {self.options.draw_threshold}:", "",
                  "![predictions](predictions.png)", ""]
        from aether.reporting.analysis import detection_lines, guarded, options

        analysis = options(raw)
        if analysis.enabled:  # errors.csv and the worst images; a failure is logged, not fatal
            metrics["analysis"] = guarded(self._analysis, run_dir, job, analysis.worst_n)
            lines += detection_lines(metrics["analysis"], float(self.options.draw_threshold))
        save_run(run_dir, metrics, job, raw, self, lines)
        return f"test mAP {t['map']:.4f}, mAP@.5 {t['map_50']:.4f}"

    def _analysis(self, run_dir: Path, job: Any, worst_n: int) -> Dict[str, Any]:
        """errors.csv (every test image's AP@.5, lowest first) and worst_detections.png (the lowest `worst_n`)."""
        import time

        import numpy as np
        from torch.utils.data import DataLoader

        from aether.data.loaders import loader_settings
        from aether.reporting.analysis import ERRORS_CSV, image_ap, write_detection_errors

        t0 = time.perf_counter()
        dm, module = job.datamodule, job.module
        items = job.bundle.splits["test"]
        settings = {**loader_settings(dm.cfg, len(items), train=False), "shuffle": False, "drop_last": False}
        loader = DataLoader(dm.dataset("test", False), collate_fn=dm.collate, **settings)
        thr = float(self.options.draw_threshold)
        rows: List[Dict[str, Any]] = []
        preds: List[Dict[str, Any]] = []  # boxes only (small): the worst images are drawn from them, not re-run
        module.model.eval()
        with torch.no_grad():
            for images, targets in loader:
                for p, t in zip(module([x.to(module.device) for x in images]), targets):
                    p = {k: v.detach().cpu() for k, v in p.items()}
                    scores, tp, n_true = match_boxes(p, {k: v.cpu() for k, v in t.items()})
                    kept = scores >= thr
                    rows.append({"path": items[len(rows)].path, "index": len(rows),
                                 "ap50": image_ap(scores.numpy(), tp.numpy(), n_true), "true_boxes": n_true,
                                 "predicted_boxes": int(kept.sum()), "matched_boxes": int(tp[kept].sum())})
                    preds.append(p)
        rows = write_detection_errors(rows, run_dir / ERRORS_CSV)
        worst = rows[:worst_n]
        if worst:
            from torchvision.transforms.functional import to_pil_image

            from aether.tasks.detection.data import DetectionDataset, box_transforms
            from aether.tasks.detection.sheets import detection_sheet

            ds = DetectionDataset(items, box_transforms(job.preprocessing["input_size"][-1], None))
            samples = []
            for r in worst:
                x, target = ds[r["index"]]
                samples.append((to_pil_image(x), {k: v.tolist() for k, v in target.items()},
                                {k: v.tolist() for k, v in preds[r["index"]].items()}))
            detection_sheet(samples, job.bundle.classes, thr, run_dir / "worst_detections.png")
        for r in rows:
            r.pop("index")
        return {"errors_csv": ERRORS_CSV, "num_test": len(rows), "worst": worst,
                "mean_image_ap50": float(np.mean([r["ap50"] for r in rows])) if rows else None,
                "seconds": round(time.perf_counter() - t0, 3)}

    def _draw(self, job: Any, path: Path, n: int = 8) -> None:
        from torchvision.transforms.functional import to_pil_image

        from aether.tasks.detection.data import DetectionDataset, box_transforms
        from aether.tasks.detection.sheets import detection_sheet

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
