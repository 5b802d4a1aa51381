"""report.md: the human summary of a run, with its pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def header_lines(metrics: Dict[str, Any], cfg: Dict[str, Any]) -> List[str]:
    """Title and the run's model, strategy, optimizer and data in one bullet each."""
    d, p = metrics["data"], metrics["params"]
    return [
        f"# Aether run: {cfg.get('recipe', 'default')}",
        "",
        f"- model: `{cfg['model']['name']}` ({cfg['model']['provider']}, pretrained={cfg['model']['pretrained']}"
        + (f", weights={cfg['model']['weights']}" if cfg['model'].get('weights') else "") + ")",
        f"- strategy: `{cfg['strategy']['name']}` - trainable parameters {p['trainable']:,} of {p['total']:,} "
        f"({_pct(p['trainable'] / max(1, p['total']))})",
        f"- optimizer: `{cfg['optimizer']['name']}` lr={cfg['optimizer'].get('lr')}, scheduler: `{cfg['scheduler']['name']}`, "
        f"epochs run: {len(metrics['history'])} (max {cfg['trainer']['max_epochs']})",
        f"- data: {d['source']} ({d['format']}), {len(d['classes'])} classes, train/val/test = "
        f"{d['num_train']}/{d['num_val']}/{d['num_test']}",
        *ema_lines(metrics),
        "",
    ]


def ema_lines(metrics: Dict[str, Any]) -> List[str]:
    """ema.enabled: the validated, tested and exported weights are an average (metrics.json `ema`)."""
    e = metrics.get("ema")
    if not e:
        return []
    how = f"EMA, decay {e['decay']}" if e.get("mode") == "ema" else "SWA, the mean of epoch-end weights"
    return [f"- weights: averaged ({how}; {e['updates']} updates from epoch {e['start_epoch']}) - validated, "
            "tested and exported"]


def training_lines(metrics: Dict[str, Any]) -> List[str]:
    """Curves, throughput, cost; then the data: counts, notes, ignored and skipped files."""
    d, tm = metrics["data"], metrics["time"]
    lines = auto_lines(metrics) + [
        "## Training",
        "",
        "![curves](curves.png)",
        "",
        f"- wall time {tm['train_s']:.1f} s, {tm['images_per_s']:.1f} images/s, data wait "
        f"{_pct(tm['data_wait_fraction'])} of step time",
        f"- {tm['device_hours']:.5f} device-hours on {tm['device']} at {tm['price_per_device_hour']} "
        f"{tm['currency']}/h = **{tm['est_cost']:.4f} {tm['currency']}** estimated",
        "",
        "## Data",
        "",
    ]
    counts = d.get("class_counts", {})
    if counts:
        lines.append(f"| class | {d.get('counts_of', 'images')} |")
        lines.append("|---|---|")
        lines += [f"| {c} | {n} |" for c, n in counts.items()]
        lines.append("")
    for n in d.get("notes", []):
        lines.append(f"- note: {n}")
    ign = d.get("ignored") or {}
    if any(ign.values()):
        lines.append(f"- ignored (not images): {', '.join(f'{v} {k}' for k, v in ign.items() if v)}")
    if d["skipped"]:
        lines += ["", f"### Skipped files ({len(d['skipped'])})", "", "| file | reason |", "|---|---|"]
        lines += [f"| {s['path']} | {s['reason']} |" for s in d["skipped"]]
    else:
        lines.append("- every indexed image decoded; none skipped")
    return lines


def write_report(run_dir: Path, metrics: Dict[str, Any], cfg: Dict[str, Any], extra: Sequence[str] = ()) -> Path:
    """report.md of a classification run; `extra`: more sections (markdown lines) after the test results."""
    t = metrics["test"]
    lines = header_lines(metrics, cfg) + [
        "## Test results (best checkpoint)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy (top-1) | {_pct(t['accuracy'])} |",
        f"| accuracy (top-5) | {_pct(t['accuracy_top5'])} |",
        f"| F1 (macro) | {t['f1_macro']:.4f} |",
        *([f"| expected calibration error (ECE) | {t['ece']:.4f} |"] if t.get("ece") is not None else []),
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for c, r in t["per_class"].items():
        lines.append(f"| {c} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""] + tta_lines(metrics) + calibration_lines(metrics)
    lines += list(extra) + training_lines(metrics)
    lines += ["", "Files: `config.yaml` (resolved config), `metrics.json`, `checkpoints/` (best, last), "
              "`model/` (safetensors weights, labels, preprocessing).", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def auto_lines(metrics: Dict[str, Any]) -> List[str]:
    """report.md's section on the search: the leaderboard as a table."""
    a = metrics.get("auto")
    if not a:
        return []
    lines = ["## recipe=auto: the search", "",
             f"Budget {a['budget_minutes']:g} min; candidates scored on the validation split ({a['monitor']}); "
             f"the winner, **{a['winner']}**, was continued in this folder and tested once "
             "(`best_recipe.yaml` re-runs it; each candidate's folder is under `auto/`).", "",
             f"| # | candidate | {a['monitor']} | seconds | epochs | status | reason |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(a["leaderboard"], 1):
        v = "-" if r["val_metric"] is None else f"{r['val_metric']:.4f}"
        lines.append(f"| {i} | {r['candidate']} | {v} | {r['seconds']:.1f} | {r['epochs'] or '-'} | {r['status']} | "
                     f"{r.get('error') or r['reason']} |")
    return lines + [""]


def _num(x: Any, pct: bool = False) -> str:
    return "-" if x is None else _pct(x) if pct else f"{x:.4f}"


def tta_lines(metrics: Dict[str, Any]) -> List[str]:
    """report.md's test-time augmentation section: the test split scored plain and with TTA."""
    a = metrics.get("tta")
    if not a:
        return []
    p, t = a["plain"], a["tta"]
    return ["## Test-time augmentation", "",
            f"`test.tta={a['mode']}`: the softmax averaged over {a['views']} views of each test image; the test "
            f"results above are with it. {a['changed_predictions']} test image(s) changed their top class.", "",
            "| metric | plain | with TTA |", "|---|---|---|",
            f"| accuracy (top-1) | {_num(p['accuracy'], True)} | {_num(t['accuracy'], True)} |",
            f"| accuracy (top-5) | {_num(p['accuracy_top5'], True)} | {_num(t['accuracy_top5'], True)} |",
            f"| F1 (macro) | {_num(p['f1_macro'])} | {_num(t['f1_macro'])} |",
            f"| ECE | {_num(p['ece'])} | {_num(t['ece'])} |", ""]


def calibration_lines(metrics: Dict[str, Any]) -> List[str]:
    """report.md's calibration section: the temperature, ECE before and after, the reliability diagram."""
    c = metrics.get("calibration")
    if not c:
        return []
    lines = ["## Calibration", ""]
    fit = c.get("fit") or {}
    if c["method"] == "temperature":
        lines += [f"Temperature scaling fitted on the validation split ({fit.get('num_images', 0)} images): "
                  f"**T = {c['temperature']:.4g}** (validation NLL {_num(fit.get('nll_before'))} -> "
                  f"{_num(fit.get('nll_after'))}); probabilities are softmax(logits / T) here and in the exported "
                  "model (`model/calibration.json`).", "",
                  "| test split | ECE (15 bins) |", "|---|---|",
                  f"| uncalibrated | {_num(c.get('ece_uncalibrated'))} |",
                  f"| calibrated | {_num(c.get('ece'))} |", ""]
        if fit.get("note"):  # "" = nothing to say
            lines += [f"- note: {fit['note']}", ""]
    else:
        lines += [f"`calibration=none`: the network's own softmax; test ECE (15 bins) {_num(c.get('ece'))}.", ""]
    if c.get("reject_below") is not None:
        lines += [f"Answers whose top probability is below {c['reject_below']:g} are labelled `unknown` by "
                  "`aether predict` and the served model.", ""]
    return lines + ["![reliability diagram](reliability.png)", ""]


def md_cell(text: Any) -> str:
    """Text for a markdown table cell (a class or file name may hold | or a newline)."""
    return str(text).replace("|", "\\|").replace("\n", " ").replace("\r", " ")
