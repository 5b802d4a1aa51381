"""RUN/model/MODEL_CARD.md (issue 17 part 6): what the model is, where it came from (lineage:
the dataset fingerprint, the config, the software and its versions, the git commit), how well
it did on the test split (with bootstrap confidence intervals when the analysis ran), its worst
classes, and what it is meant for. It sits in model/, so `aether export` carries it into the
BentoML store entry and RUN/bento/.

Nothing in it depends on the time of writing: the same run writes the same card.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

CARD = "MODEL_CARD.md"
LIBRARIES = ("torch", "torchvision", "timm", "lightning", "peft", "torchmetrics", "scikit-learn", "cleanlab",
             "bentoml")


def versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from aether.about import __version__

    out = {"aether": __version__, "python": platform.python_version()}
    for pkg in LIBRARIES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def git_commit(folder: Path) -> Optional[Dict[str, Any]]:
    """The commit of the git checkout holding `folder` (and whether it has uncommitted changes);
    None outside a checkout or without git."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def lineage(metrics: Dict[str, Any], raw: Dict[str, Any]) -> Dict[str, Any]:
    """metrics.json's `lineage` section: the data's fingerprint, the config's hash, versions, and
    the commit of the checkout Aether runs from (None when installed from a package)."""
    data = metrics.get("data") or {}
    fp = data.get("fingerprint")
    if not fp:  # a task whose data has no content hash: its summary (source, classes, counts) hashed
        keys = ("source", "format", "classes", "class_counts", "num_train", "num_val", "num_test")
        blob = json.dumps({k: data.get(k) for k in keys}, sort_keys=True, default=str)
        fp = {"files": None, "sha256": hashlib.sha256(blob.encode()).hexdigest(), "of": "data summary"}
    config_text = json.dumps(raw, sort_keys=True, default=str)
    return {"dataset": {"source": data.get("source"), "format": data.get("format"), **fp},
            "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
            "versions": versions(),
            "git": git_commit(Path(__file__).resolve().parents[1])}


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def worst_class_lines(per_class: Dict[str, Any], worst_k: int) -> List[str]:
    """The `worst_k` classes by the task's per-class score (F1; IoU for segmentation; AP for
    detection), with every per-class number the task recorded."""
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    rows = {c: r for c, r in per_class.items() if isinstance(r, dict)}
    key = next((k for k in ("f1", "iou", "ap") if any(num(r.get(k)) for r in rows.values())), None)
    if key is None:
        return []
    cols: List[str] = []
    for r in rows.values():
        cols += [k for k, v in r.items() if num(v) and k not in cols]
    scored = [(c, r) for c, r in rows.items() if num(r.get(key))]  # a class without test instances has none
    worst = sorted(scored, key=lambda cr: (cr[1][key], cr[0]))[:worst_k]
    lines = [f"## Worst classes (lowest test {'F1' if key == 'f1' else key.upper()})", "",
             "| class | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for c, r in worst:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in cols]
        lines.append(f"| {_cell(c)} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_model_card(model_dir: Path, metrics: Dict[str, Any], raw: Dict[str, Any],
                     intended_use: Optional[str] = None, worst_k: int = 5) -> Path:
    """model/MODEL_CARD.md from metrics.json's sections (test, data, lineage, analysis) and the config."""
    import yaml

    data, test = metrics.get("data") or {}, metrics.get("test") or {}
    lin = metrics.get("lineage") or lineage(metrics, raw)
    task = data.get("task") or raw.get("task") or "classification"
    model = raw.get("model") or {}
    classes = list(data.get("classes") or [])
    name = f"{raw.get('recipe', 'run')}-{model.get('name', 'model')}"
    lines: List[str] = [f"# Model card: {name}", "",
                        "Written by Aether after testing; every number below is from this run's `metrics.json`.", "",
                        "## Model", "",
                        f"- task: {task}, {len(classes)} classes",
                        f"- backbone: `{model.get('name')}` ({model.get('provider')}, pretrained={model.get('pretrained')})",
                        f"- fine-tune strategy: `{(raw.get('strategy') or {}).get('name')}`, optimizer "
                        f"`{(raw.get('optimizer') or {}).get('name')}` lr={(raw.get('optimizer') or {}).get('lr')}, "
                        f"{len(metrics.get('history') or [])} epochs, seed {raw.get('seed')}",
                        f"- files: `model.safetensors` (weights), `model.json`, `labels.json`, `preprocessing.json`",
                        "", "## Intended use", ""]
    shown = ", ".join(classes[:30]) + (f", ... ({len(classes)} in all)" if len(classes) > 30 else "")
    lines += [intended_use or (
        f"{task.capitalize()} of images into: {shown}. It was trained and tested on images from "
        f"`{data.get('source')}` only; expect its test numbers on images like those (same kind of camera, "
        "framing and classes), not elsewhere. Anything outside these classes is still given one of them. "
        "Check it on your own data before relying on it, and keep a person in the loop for decisions "
        "that matter."), ""]

    ds = lin["dataset"]
    v = lin["versions"]
    git = lin.get("git")
    lines += ["## Lineage", "",
              f"- dataset: `{ds.get('source')}` ({ds.get('format')}); "
              + (f"{ds['files']} files, content hash (SHA-256 of the sorted relative path, class, split and file "
                 f"SHA-256 of every used image) `{ds['sha256']}`" if ds.get("files") is not None else
                 f"fingerprint of its summary `{ds['sha256']}`"),
              f"- splits: train/val/test = {data.get('num_train')}/{data.get('num_val')}/{data.get('num_test')}"
              f"{' (pre-split folders)' if data.get('presplit') else ' (seeded split of the data)'}",
              f"- config: SHA-256 `{lin['config_sha256']}` (the resolved config is below and in the run's config.yaml)",
              "- software: " + ", ".join(f"{k} {val}" for k, val in v.items()),
              "- code: " + (f"Aether git commit `{git['commit']}`" + (" (with uncommitted changes)" if git.get("dirty")
                                                                     else "") if git else
                            "Aether installed from a package (no git checkout)"),
              ""]

    an = metrics.get("analysis") or {}
    boot = an.get("bootstrap") or {}
    lines += ["## Test metrics", ""]
    numeric = [(k, val) for k, val in test.items() if isinstance(val, (int, float)) and not isinstance(val, bool)]
    if "low" in (boot.get("accuracy") or {}):
        pct = f"{100 * boot['confidence']:g}%"
        lines += [f"{data.get('num_test')} test images; intervals: percentile bootstrap, {boot['resamples']} "
                  f"resamples of the test split, seed {boot['seed']}.", "",
                  f"| metric | value | {pct} CI |", "|---|---|---|"]
        for k, val in numeric:
            ci = boot.get(k) if isinstance(boot.get(k), dict) else None
            lines.append(f"| {k} | {_fmt(val)} | " + (f"{ci['low']:.4f} - {ci['high']:.4f}" if ci else "-") + " |")
    else:
        lines += [f"{data.get('num_test')} test images (no confidence intervals: analysis off or not available for "
                  "this task).", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(val)} |" for k, val in numeric]
    lines.append("")

    lines += worst_class_lines(test.get("per_class") or {}, worst_k)
    pairs = an.get("confused_pairs") or []
    if pairs:
        lines += ["Most confused: " + "; ".join(f"{_cell(p['true'])} -> {_cell(p['predicted'])} ({p['count']})"
                                                  for p in pairs), ""]
    li = an.get("label_issues") or {}
    if li and not li.get("error"):
        lines += ["## Known data issues", "",
                  f"- {li['count']} suspected label errors among the {li['checked']} validation/test images "
                  "(cleanlab; the run's label_issues.csv lists them): the test numbers count those images with "
                  "their given labels", ""]
    skipped = data.get("skipped") or []
    if skipped:
        lines += [f"- {len(skipped)} unreadable or refused files were left out of training and testing", ""]

    cfg_text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=False)
    lines += ["## Config", "", "```yaml", cfg_text.rstrip(), "```", ""]
    path = model_dir / CARD
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
