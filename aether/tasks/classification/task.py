"""task=classification: the Task of single-label runs (class folders, path,label manifests, the
embedded digits): cross-entropy, accuracy/F1 on the test split, the confusion matrix."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from aether.config.schema import RunCfg
from aether.errors import AetherError
from aether.tasks.base import Job, Task, build_backbone

log = logging.getLogger("aether")


class Classification(Task):
    name = "classification"
    distills = True
    mixes = True  # one label per image: Mixup / CutMix make soft targets of them
    losses = ("ce", "focal")
    tta = True  # test.tta (aether.tasks.classification.tta)
    calibrates = True  # calibration=temperature (aether.tasks.classification.calibration)

    def build_data(self, rc: RunCfg) -> Any:
        from aether.tasks.classification.data import build_data

        bundle = build_data(rc.data, rc.seed)
        log.info("data: %s (%s) - %d classes, train/val/test %d/%d/%d, %d skipped", bundle.index.source,
                 bundle.index.format, len(bundle.classes), len(bundle.splits["train"]), len(bundle.splits["val"]),
                 len(bundle.splits["test"]), len(bundle.skipped))
        return bundle

    def build_network(self, rc: RunCfg, bundle: Any) -> Tuple[Any, Dict[str, Any]]:
        backbone, self._preprocessing = build_backbone(rc, len(bundle.classes))
        return backbone, self._preprocessing

    def build_module(self, rc: RunCfg, bundle: Any, model: Any, strategy: Any) -> Any:
        from aether.tasks.classification.module import ClassificationModule

        teacher = None
        if rc.distill.teacher:
            from aether.tasks.classification.distill import load_teacher

            teacher = load_teacher(rc.distill.teacher, bundle.classes, self._preprocessing, rc)
            log.info("distill: teacher %s (%s), temperature %g, soft-loss weight %g", rc.distill.teacher,
                     teacher.model.__class__.__name__, rc.distill.temperature, rc.distill.alpha)
        mixing = None
        from aether.tasks.classification.mixing import Mixing, mixes

        if mixes(rc.data.augment):
            a = rc.data.augment
            mixing = Mixing(a, len(bundle.classes), rc.loss.label_smoothing)
            log.info("mixing: mixup %g, cutmix %g (prob %g, switch %g, mode %s)%s", a.mixup, a.cutmix, a.mixup_prob,
                     a.mixup_switch_prob, a.mixup_mode,
                     f", clean images from epoch {a.mixup_off_epoch}" if a.mixup_off_epoch is not None else "")
        if rc.data.sampler == "balanced" and rc.loss.class_weights is not None:
            log.warning("data.sampler=balanced with loss.class_weights=%s: the sampler already shows every class "
                        "equally often, the weights correct the imbalance a second time", rc.loss.class_weights)
        return ClassificationModule(model, bundle.classes, strategy, rc.loss, class_weights(rc, bundle),
                                    rc.optimizer.model_dump(), rc.scheduler.model_dump(),
                                    teacher=teacher, distill=rc.distill, mixing=mixing, tta=rc.test.tta,
                                    calibration=rc.calibration)

    def build_datamodule(self, rc: RunCfg, bundle: Any, preprocessing: Dict[str, Any]) -> Any:
        from aether.data.datamodule import ClassificationData

        return ClassificationData(bundle, preprocessing, rc.data)

    def model_info(self) -> Dict[str, Any]:
        return {}  # model.json without a task is a classifier (the format older runs wrote)

    def write_outputs(self, run_dir: Path, metrics: Dict[str, Any], job: Job, raw: Dict[str, Any]) -> str:
        from aether.models.saved import save_model_dir
        from aether.reporting.plots import confusion_matrix_png, curves_png, reliability_png
        from aether.reporting.report import write_report
        from aether.tasks.classification import calibration

        sections = []
        if job.module.teacher is not None:
            from aether.tasks.classification.distill import report_lines, summary

            d = job.module.distill
            metrics["distill"] = summary(job.module.teacher, job.module.model, job.preprocessing,
                                         metrics["test"]["accuracy"], d.temperature, d.alpha)
            sections = report_lines(metrics["distill"])
        from aether.reporting.analysis import analyse, guarded, options, report_lines as analysis_lines

        analysis = options(raw)
        if analysis.enabled:
            metrics["analysis"] = guarded(analyse, run_dir, job, analysis, int(raw.get("seed", 42)))
            sections = analysis_lines(metrics["analysis"]) + sections
        from aether.reporting.model_card import lineage, write_model_card

        metrics["lineage"] = lineage(metrics, raw)
        mod = job.module
        if mod.tta_results:
            metrics["tta"] = mod.tta_results
        if mod.calibration_results:
            metrics["calibration"] = mod.calibration_results
            rel = mod.calibration_results["reliability"]
            reliability_png(rel["uncalibrated"], rel["calibrated"] if mod.calibrate else None,
                            mod.temperature, run_dir / "reliability.png")
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        confusion_matrix_png(metrics["confusion_matrix"], job.bundle.classes, run_dir / "confusion_matrix.png")
        curves_png(metrics["history"], run_dir / "curves.png")
        (run_dir / "model").mkdir(parents=True, exist_ok=True)
        exported, extra = job.strategy.export(job.module.model, run_dir / "model")
        tta = {"test_tta": mod.tta} if mod.tta != "none" else {}  # aether predict's default views
        save_model_dir(run_dir / "model", exported, {**job.backbone.info, **extra, **tta}, job.bundle.classes,
                       job.preprocessing)
        write_model_card(run_dir / "model", metrics, raw, analysis.intended_use)
        calibration.write(run_dir / "model", "temperature" if mod.calibrate else "none", mod.temperature,
                          mod.reject_below, mod.calibration_fit)
        write_report(run_dir, metrics, raw, sections)
        from aether.reporting.near_duplicates import warning

        leak = warning((metrics.get("analysis") or {}).get("near_duplicates") or {})
        return f"test accuracy {metrics['test']['accuracy']:.4f}, macro F1 {metrics['test']['f1_macro']:.4f}" + \
            (f"\n{leak}" if leak else "")


def class_weights(cfg: RunCfg, bundle: Any) -> Optional[Any]:
    """loss.class_weights: null, "balanced" (inverse frequency in the training split) or one per class."""
    import torch

    cw = cfg.loss.class_weights
    k = len(bundle.classes)
    if cw is None:
        return None
    if cw == "balanced":
        counts = [0] * k
        for s in bundle.splits["train"]:
            counts[s.label] += 1
        n = sum(counts)
        return torch.tensor([n / (k * max(1, c)) for c in counts], dtype=torch.float32)
    if len(cw) != k:
        raise AetherError(f"loss.class_weights has {len(cw)} values; the data has {k} classes ({', '.join(bundle.classes)})")
    return torch.tensor(cw, dtype=torch.float32)
