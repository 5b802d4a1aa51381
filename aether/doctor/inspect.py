"""`aether inspect data=PATH`: detect, check every image, describe, recommend - and report.

The same pass gates every training run (aether.tasks.classification.data uses `examine`): a file the doctor
rejects is skipped and listed with its reason, never silently dropped.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from aether.config.schema import DataCfg
from aether.data.index import DatasetIndex, Skipped
from aether.doctor.stats import Record, describe_group, exact_duplicates, imbalance_ratio, near_duplicates, size_stats
from aether.errors import AetherError

log = logging.getLogger("aether")

# Non-fatal findings worth a warning line, with what Aether does about them.
NOTES = {
    "mode_cmyk": "CMYK images (converted to RGB when loading)",
    "mode_16bit": "16-bit or float images (scaled to 8-bit RGB when loading)",
    "mode_palette_alpha": "palette images with transparency (alpha dropped when loading)",
    "mode_la": "grey+alpha images (alpha dropped when loading)",
    "exif_rotated": "images with an EXIF rotation (applied when loading)",
    "animated": "animated images (the first frame is used)",
    "extension_mismatch": "files whose extension does not match their format",
    "too_large": "very large images (slow to decode; consider resizing the dataset once)",
}


@dataclass
class Examination:
    """What the doctor found: the index with bad files moved to `skipped`, plus the report."""

    index: DatasetIndex
    records: List[Record] = field(default_factory=list)
    issue_counts: Dict[str, int] = field(default_factory=dict)


def resolve_source(cfg: DataCfg) -> tuple[Optional[Path], List[Skipped], Dict[str, int], List[str]]:
    """The folder or file to read; archives are extracted (safely, cached) first."""
    if cfg.path is None:
        return None, [], {}, []
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise AetherError(f"data.path={cfg.path}: no such file or folder")
    from aether.doctor.archives import extract_archive, is_archive

    if path.is_file() and is_archive(path):
        from aether.paths import cache_dir

        res = extract_archive(path, cache_dir(), max_total_bytes=cfg.max_archive_bytes,
                              max_members=cfg.max_archive_members, max_ratio=cfg.max_archive_ratio)
        refused = [Skipped(f"{path}!{r['path']}", f"refused archive member: {r['reason']}") for r in res.refused]
        notes = [f"archive {path.name} extracted to {res.root}" + (" (cached)" if res.cached else "")]
        return res.root, refused, dict(res.ignored), notes
    return path, [], {}, []


def detect_structure(root: Path, fmt: str = "auto"):  # type: ignore[no-untyped-def]
    from aether.data.formats.auto import detect

    return detect(root, fmt=None if fmt == "auto" else fmt)


def _goes_through_detection(cfg: DataCfg) -> bool:
    """Whether the data goes through format detection: data.format=auto, or a format that is
    read as itself only after its detect() agrees (coco, voc, yolo, masks, ...)."""
    from aether.data import formats

    return cfg.format == "auto" or formats.detects_when_named(cfg.format)


def inspect_structured(cfg: DataCfg, out_dir: Path) -> Optional[Dict[str, Any]]:
    """Detection / segmentation datasets: format evidence, annotation checks and a check of every
    image; None when the data is a classification dataset (handled by `examine`)."""
    from aether.data import formats
    from aether.data.roots import RootGuard
    from aether.data.walk import Walk, walk_images
    from aether.doctor.checks import check_files
    from aether.paths import cache_dir

    root, refused, ignored, notes = resolve_source(cfg)
    # a named annotated format (data.format=multilabel) is read as itself: examined here too
    if root is None or not (_goes_through_detection(cfg) or formats.is_annotated(cfg.format)):
        return None
    index = None
    if _goes_through_detection(cfg):
        det = detect_structure(root, cfg.format)
    else:  # named and never detected: read as itself
        fmt = formats.get(cfg.format)
        index = fmt.load(root, cfg.adapter_options())
        m = fmt.describe(index)
        from aether.data.formats.auto import Detection

        det = Detection(format=m.format, task=m.task, evidence=m.evidence, candidates=[(m.format, m.task)],
                        summary=m.summary)
    if not formats.is_annotated(det.format):  # one label per image: examined image by image
        return None
    if index is not None:  # the files its manifest names, and what it left out
        walk = Walk(images=[Path(it.path) for it in index.items], ignored={})
        refused = refused + list(index.skipped)
    else:
        walk = walk_images(root, RootGuard(str(root), cfg.allow_outside_root)) if root.is_dir() else Walk(ignored={})
    images, ign = walk.images, walk.ignored
    bad = [s.as_dict() for s in refused + walk.skipped]
    issues: Counter = Counter()
    usable = 0
    for rep in check_files([str(p) for p in images], workers=1 if len(images) < 2000 else None,
                           cache_path=cache_dir() / "doctor.sqlite", max_pixels=cfg.max_image_pixels,
                           min_side=cfg.min_image_side):
        issues.update(rep.issues)
        usable += rep.ok
        if not rep.ok:
            bad.append({"path": rep.path, "reason": f"{rep.issues[0] if rep.issues else 'unusable'}: {rep.detail}"})
    summary = det.summary
    warnings = formats.annotation_warnings(det.format, summary)
    warnings += [e for e in det.evidence if e.startswith("ambiguous")] + walk.warnings
    warnings += [f"{issues[code]} {text}" for code, text in NOTES.items() if issues.get(code)]
    report = {"format": det.format, "task": det.task, "annotated": True, "source": str(cfg.path), "evidence": det.evidence,
              "summary": summary, "classes": dict(summary.get("class_counts") or {}), "num_images": usable,
              "bad": bad, "issues": dict(issues), "ignored": {**ign, **ignored}, "duplicates": [],
              "warnings": warnings, "errors": [f"{len(bad)} file(s) cannot be used"] if bad else [],
              "notes": notes, "recommendations": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def examine(cfg: DataCfg, progress: bool = False) -> Examination:
    """Index the dataset with its format and check every image (parallel, cached)."""
    from aether.data import formats
    from aether.doctor.checks import check_files
    from aether.paths import cache_dir

    root, refused, ignored, notes = resolve_source(cfg)
    fmt = cfg.format
    if root is None:
        if fmt == "auto":
            fmt = "digits"  # no data.path: the embedded sample
        elif formats.detects_when_named(fmt):
            raise AetherError(f"data.format={fmt}: no data.path given; set data=PATH to the {fmt} dataset")
    elif _goes_through_detection(cfg):
        det = detect_structure(root, cfg.format)
        if formats.is_annotated(det.format):
            raise AetherError(
                f"data.path={cfg.path} looks like a {det.format} {det.task} dataset ({det.evidence[0]}). "
                f"task=classification expects class folders or a CSV/JSONL manifest; train it with "
                f"task={det.task} (or task=auto); `aether inspect data={cfg.path}` checks it"
            )
        fmt = det.format
    index: DatasetIndex = formats.get(fmt).load(root, cfg.adapter_options())
    index.skipped = refused + index.skipped
    for k, v in ignored.items():
        index.ignored[k] = index.ignored.get(k, 0) + v
    index.notes = notes + index.notes

    by_path = {s.path: s for s in index.samples}
    good, records, issues = [], [], Counter()
    bad: Dict[str, str] = {}
    limits = dict(max_pixels=cfg.max_image_pixels, min_side=cfg.min_image_side)
    paths = list(by_path)
    # process pool start-up (~0.3 s) only pays off on larger folders
    workers = 1 if len(paths) < 2000 else None
    for rep in check_files(paths, workers=workers, cache_path=cache_dir() / "doctor.sqlite", **limits):
        for code in rep.issues:
            issues[code] += 1
        if not rep.ok:
            bad[rep.path] = f"{rep.issues[0] if rep.issues else 'unusable'}: {rep.detail}"
            continue
        s = by_path[rep.path]
        good.append(s)
        records.append(Record(rep.path, index.classes[s.label], s.split, rep.width, rep.height, rep.format,
                              rep.mode, rep.sha256, rep.dhash))
    index.skipped += [Skipped(p, r) for p, r in bad.items()]
    index.samples = good
    return Examination(index, records, dict(issues))


def build_report(ex: Examination, out_dir: Path) -> Dict[str, Any]:
    from aether.doctor.recommend import IMBALANCE_SEVERE, IMBALANCE_WARN, hardware, recommend

    index = ex.index
    counts = index.class_counts()
    warnings: List[str] = []
    errors: List[str] = []
    usable = {c: n for c, n in counts.items() if n > 0}
    if len(usable) < 2:
        errors.append(f"{len(usable)} usable class(es): classification needs at least 2 class folders with images")
    for c, n in counts.items():
        if n == 0:
            warnings.append(f"class '{c}' has no usable image")
        elif n < 3:
            warnings.append(f"class '{c}' has {n} image(s): too few to appear in train, val and test")
    ratio = imbalance_ratio(counts)
    if ratio > IMBALANCE_WARN:
        fix = ("data.sampler=balanced or loss.name=focal" if ratio >= IMBALANCE_SEVERE
               else "loss.class_weights=balanced")
        warnings.append(f"class imbalance: the largest class has {ratio:g}x the images of the smallest "
                        f"(threshold {IMBALANCE_WARN:g}); consider {fix}")
    for code, text in NOTES.items():
        if ex.issue_counts.get(code):
            warnings.append(f"{ex.issue_counts[code]} {text}")
    duplicates = [describe_group("exact", g) for g in exact_duplicates(ex.records)]
    duplicates += [describe_group("near", g) for g in near_duplicates(ex.records)]
    conflicts = sum("conflicting_labels" in d["flags"] for d in duplicates)
    leaks = sum("cross_split_leakage" in d["flags"] for d in duplicates)
    n_exact = sum(len(d["paths"]) - 1 for d in duplicates if d["kind"] == "exact")
    if n_exact:
        warnings.append(f"{n_exact} exact duplicate file(s)")
    if conflicts:
        warnings.append(f"{conflicts} duplicate group(s) carry different labels (label conflicts)")
    if leaks:
        warnings.append(f"{leaks} duplicate group(s) span train/val/test (leakage inflates test scores)")
    warnings += index.warnings
    unusable = [s for s in index.skipped if not s.reason.startswith("duplicate_row")]  # the image itself is used
    if unusable:
        errors.append(f"{len(unusable)} file(s) cannot be used (listed under 'bad'; training skips them)")
    sizes = size_stats(ex.records)
    num = len(index.samples)
    report = {
        "format": index.format,
        "task": "classification",
        "source": index.source,
        "presplit": index.presplit,
        "classes": counts,
        "num_images": num,
        "bad": [s.as_dict() for s in index.skipped],
        "issues": ex.issue_counts,
        "ignored": index.ignored,
        "sizes": sizes,
        "imbalance_ratio": ratio,
        "duplicates": duplicates,
        "warnings": warnings,
        "errors": errors,
        "notes": index.notes,
        "recommendations": recommend(num, usable, sizes, hardware()) if num else {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    if ex.records:
        from aether.doctor.plots import class_histogram, sample_grids, size_scatter

        class_histogram(counts, out_dir / "class_histogram.png")
        size_scatter(ex.records, out_dir / "image_sizes.png")
        by_class: Dict[str, List[Record]] = defaultdict(list)
        for r in ex.records:
            by_class[r.label].append(r)
        sample_grids(by_class, out_dir / "samples")
    return report


def print_summary(report: Dict[str, Any], out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(soft_wrap=True)  # paths stay on one line (greppable logs)
    con.print(f"[bold]{report['source']}[/]: {report['format']} ({report['task']}), "
              f"{report['num_images']} usable images, {len(report['classes'])} classes, {len(report['bad'])} bad")
    for e in report.get("evidence", []):
        con.print(f"[cyan]evidence[/] {e}")
    t = Table(title="classes", title_justify="left")
    t.add_column("class")
    # classification counts images per class; detection and segmentation formats count annotations
    t.add_column("annotations" if report.get("annotated") else "images", justify="right")
    for c, n in report["classes"].items():
        t.add_row(c, str(n))
    if report["classes"]:
        con.print(t)
    summary = report.get("summary") or {}
    sizes = summary.get("box_sizes")
    if sizes:
        per = summary.get("boxes_per_image", {})
        area = sizes["relative_area"]
        line = (f"{summary.get('num_boxes', 0)} boxes, {per.get('median', 0):g} per image (max {per.get('max', 0):g}); "
                f"box area / image area min {area['min']:.3g}, median {area['median']:.3g}, max {area['max']:.3g}")
        if "coco_area_buckets" in sizes:
            line += "; " + ", ".join(f"{k} {v}" for k, v in sizes["coco_area_buckets"].items()) + " (COCO pixel-area sizes)"
        con.print(f"[cyan]boxes[/] {line}")
    # files that cannot be used first; a manifest's repeated rows (the image is used once) last
    for b in sorted(report["bad"], key=lambda b: b["reason"].startswith("duplicate_row"))[:20]:
        con.print(f"[red]bad[/] {b['path']}: {b['reason']}")
    if len(report["bad"]) > 20:
        con.print(f"[red]... {len(report['bad']) - 20} more bad files in report.json[/]")
    for w in report["warnings"]:
        con.print(f"[yellow]warning[/] {w}")
    for e in report["errors"]:
        con.print(f"[red]error[/] {e}")
    for key, r in report["recommendations"].items():
        con.print(f"[green]recommend[/] {key} = {r['value']}: {r['reason']}")
    if report.get("label_issues"):
        from aether.doctor.label_issues import print_label_issues

        print_label_issues(con, report["label_issues"])
    con.print(f"report: {out_dir / 'report.json'}")

