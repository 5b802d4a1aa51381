"""Pieces every non-classification task uses: a DataModule over items, and the run outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from torch.utils.data import Dataset

from aether.config.schema import DataCfg
from aether.data.dense import DenseBundle, Item
from aether.data.loaders import SplitData


class ItemData(SplitData):
    """Loaders over a DenseBundle; `make_dataset(items, train)` builds each split's Dataset.

    `fast` (a FastPath, for tasks whose target does not move with the image, i.e. multilabel):
    the splits read the decoded-image cache instead, yielding `fast_target(item)` with each
    uint8 image, normalised after the transfer as in classification (aether.data.fastpath)."""

    def __init__(self, bundle: DenseBundle, cfg: DataCfg, make_dataset: Callable[[List[Item], bool], Dataset],
                 collate: Optional[Callable] = None, fast: Any = None,
                 fast_target: Optional[Callable[[Item], Any]] = None) -> None:
        super().__init__(bundle, cfg, collate)
        self.make_dataset, self.fast, self.fast_target = make_dataset, fast, fast_target

    def dataset(self, split: str, train: bool) -> Any:
        items = self.bundle.splits[split]
        if self.fast is not None and self.fast_target is not None:
            from aether.data.cache import resolve_mode

            return self.fast.dataset(items, split, train, resolve_mode(self.cfg.cache), target=self.fast_target)
        return self.make_dataset(items, train)


MAX_NATIVE_SIZE = 640  # larger images are trained at this side (objects shrink, with a line saying so)
MIN_STEPS_PER_EPOCH = 8  # fewer optimiser steps than this per epoch starve a small dense-task set


def fit_input_and_batch(rc: Any, train: List[Item], task: str) -> Dict[str, Any]:
    """Detection and segmentation defaults taken from the data rather than from an ImageNet
    classifier: an image side left at `null` becomes the images' own (median, a multiple of 32,
    at most 640: resizing 400 px aerial tiles to 224 shrank 37 px tree crowns to 21 px), and the
    default batch size shrinks until an epoch makes at least 8 optimiser steps (batch 32 on 38
    training images made one step an epoch and never used 6 of them). Each change is logged and
    returned ({setting: {value, default, why}}); a value named on the command line, or other
    than the default, is kept."""
    import logging
    import math
    import statistics

    from PIL import Image

    log = logging.getLogger("aether")
    fitted: Dict[str, Any] = {}
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
            why = (f"the training images' median side is {median:g} px"
                   + (f", capped at {MAX_NATIVE_SIZE}" if median > MAX_NATIVE_SIZE else ""))
            fitted["image_size"] = {"value": size, "default": None, "why": why}
            log.info("%s: data.image_size=%d (%s; set data.image_size to change it)", task, size, why)
    default_batch = DataCfg.model_fields["batch_size"].default
    n = len(train)
    if not rc.set_by_user("data.batch_size", default_batch) and n < MIN_STEPS_PER_EPOCH * default_batch:
        batch = max(2, n // MIN_STEPS_PER_EPOCH)
        if batch < default_batch:
            why = (f"{n} training images: {n // batch} optimiser steps per epoch instead of "
                   f"{max(1, n // default_batch)}")
            fitted["batch_size"] = {"value": batch, "default": default_batch, "why": why}
            log.info("%s: data.batch_size=%d (%s; set data.batch_size to change it)", task, batch, why)
            rc.data.batch_size = batch
    return fitted


def save_run(run_dir: Path, metrics: Dict[str, Any], job: Any, raw: Dict[str, Any], task: Any,
             test_lines: List[str]) -> Path:
    """metrics.json, curves.png, model/ (the strategy's export: LoRA merged) and report.md."""
    from aether.models.saved import save_model_dir
    from aether.reporting.plots import curves_png
    from aether.reporting.report import header_lines, training_lines

    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    curves_png(metrics["history"], run_dir / "curves.png")
    (run_dir / "model").mkdir(parents=True, exist_ok=True)
    exported, extra = job.strategy.export(job.module.model, run_dir / "model")
    info = {**job.backbone.info, **extra, **task.model_info()}
    save_model_dir(run_dir / "model", exported, info, job.bundle.classes, job.preprocessing)
    lines = header_lines(metrics, raw) + [f"- task: **{task.name}**", ""] + test_lines + [""] + training_lines(metrics)
    lines += ["", "Files: `config.yaml` (resolved config), `metrics.json`, `checkpoints/` (best, last), "
              f"`model/` (safetensors weights, labels, preprocessing; model.json names the task `{task.name}`).", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def per_class_table(per_class: Dict[str, Dict[str, Any]], columns: List[str]) -> List[str]:
    lines = ["| class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for c, r in per_class.items():
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in columns]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines
