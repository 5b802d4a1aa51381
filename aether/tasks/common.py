"""Pieces the item-based tasks (multilabel, segmentation, detection, plugins) share: their data
built and checked (build_bundle), the format that reads it, a DataModule over items, the outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch.utils.data import Dataset

from aether.config.schema import DataCfg
from aether.data.items import ItemBundle, ItemIndex, Item
from aether.data.index import Skipped
from aether.data.loaders import SplitData
from aether.data.split import split
from aether.errors import AetherError

log = logging.getLogger("aether")


class ItemData(SplitData):
    """Loaders over a ItemBundle; `make_dataset(items, train)` builds each split's Dataset.

    `fast` (a FastPath, for tasks whose target does not move with the image, i.e. multilabel):
    the splits read the decoded-image cache instead, yielding `fast_target(item)` with each
    uint8 image, normalised after the transfer as in classification (aether.data.fastpath)."""

    def __init__(self, bundle: ItemBundle, cfg: DataCfg, make_dataset: Callable[[List[Item], bool], Dataset],
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
MIN_STEPS_PER_EPOCH = 8  # fewer optimiser steps than this per epoch starve a small detection or segmentation set


def fit_input_and_batch(rc: Any, train: List[Item], task: str) -> Dict[str, Any]:
    """Detection and segmentation defaults taken from the data rather than from an ImageNet
    classifier: an image side left at `null` becomes the images' own (median, a multiple of 32,
    at most 640: resizing 400 px aerial tiles to 224 shrank 37 px tree crowns to 21 px), and the
    default batch size shrinks until an epoch makes at least 8 optimiser steps (batch 32 on 38
    training images made one step an epoch and never used 6 of them). Each change is logged and
    returned ({setting: {value, default, why}}); a value named on the command line, or other
    than the default, is kept."""
    import math
    import statistics

    from PIL import Image

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
    """metrics.json, curves.png, model/ (the strategy's export: LoRA merged, and its model card)
    and report.md."""
    from aether.models.saved import save_model_dir
    from aether.reporting.model_card import lineage, write_model_card
    from aether.reporting.plots import curves_png
    from aether.reporting.report import header_lines, training_lines

    metrics["lineage"] = lineage(metrics, raw)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    curves_png(metrics["history"], run_dir / "curves.png")
    (run_dir / "model").mkdir(parents=True, exist_ok=True)
    exported, extra = job.strategy.export(job.module.model, run_dir / "model")
    info = {**job.backbone.info, **extra, **task.model_info()}
    save_model_dir(run_dir / "model", exported, info, job.bundle.classes, job.preprocessing)
    write_model_card(run_dir / "model", metrics, raw, (raw.get("analysis") or {}).get("intended_use"))
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


def task_format(rc: Any, task: str, needs: str, default: Optional[str] = None) -> Tuple[Any, Path]:
    """(format, root) that read this task's data: the format `data.format` names, else the one
    the doctor detects when it trains `task`, else the task's own `default` format (whose loader
    then says what is missing). Any registered format that declares `task` serves, a plugin's
    too (aether.data.formats). `needs`: what the task needs, for the error without data.path."""
    from aether.data import formats
    from aether.doctor.inspect import detect_structure, resolve_source
    from aether.errors import AetherError

    root = resolve_source(rc.data)[0]
    if root is None:
        raise AetherError(f"task={task} needs data=PATH to {needs}")
    name = rc.data.format
    if name != "auto" and formats.detects_when_named(name):
        detect_structure(root, name)  # data.format=coco|voc|yolo|masks: read as that, or say why not
    if name == "auto":
        try:
            found: Optional[str] = detect_structure(root, "auto").format
        except AetherError:
            if default is None:
                raise
            found = None
        name = found if found is not None and formats.task_of(found) == task else default
        if name is None:
            raise AetherError(f"data.path={rc.data.path}: looks like {found}, not a {task} dataset; expected {needs}")
    return formats.get(name), root


def check_images(index: ItemIndex, cfg: DataCfg) -> None:
    """The dataset doctor's check of every image (and mask): a file that cannot be used is moved
    to `index.skipped` with its reason, never silently dropped."""
    from aether.doctor.checks import check_files
    from aether.paths import cache_dir

    paths = sorted({i.path for i in index.items} | {i.target for i in index.items if isinstance(i.target, str)})
    bad: Dict[str, str] = {}
    for rep in check_files(paths, workers=1 if len(paths) < 2000 else None, cache_path=cache_dir() / "doctor.sqlite",
                           max_pixels=cfg.max_image_pixels, min_side=cfg.min_image_side):
        if not rep.ok:
            bad[rep.path] = f"{rep.issues[0] if rep.issues else 'unusable'}: {rep.detail}"
    keep = []
    for it in index.items:
        reason = bad.get(it.path) or (bad.get(it.target) if isinstance(it.target, str) else None)
        if reason:
            index.skipped.append(Skipped(it.path, reason if it.path in bad else f"its mask {it.target}: {reason}"))
        else:
            keep.append(it)
    index.items = keep
    for w in index.warnings:
        log.warning("data: %s", w)
    for s in index.skipped[:10]:
        log.warning("skipping %s: %s", s.path, s.reason)


def build_bundle(task: str, index: ItemIndex, cfg: DataCfg, seed: int, class_counts: Dict[str, int],
                 counts_of: str = "images") -> ItemBundle:
    check_images(index, cfg)
    if not index.items:
        raise AetherError(f"data.path={cfg.path}: no usable {task} samples ({len(index.skipped)} skipped)")
    splits, notes = split(index.items, cfg.val_fraction, cfg.test_fraction, seed)  # one group, no strata
    notes = index.notes + notes
    for n in notes:
        log.info("data: %s", n)
    log.info("data: %s (%s, %s) - %d classes, train/val/test %d/%d/%d, %d skipped", index.source, index.format, task,
             len(index.classes), len(splits["train"]), len(splits["val"]), len(splits["test"]), len(index.skipped))
    return ItemBundle(task, index, splits, notes, class_counts, counts_of)
