"""Confusion matrix and training curves as PNG (matplotlib, headless, no font downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def confusion_matrix_png(matrix: List[List[int]], classes: List[str], path: Path) -> None:
    k = len(classes)
    size = min(14, 3 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    rows = [sum(r) or 1 for r in matrix]
    norm = [[v / rows[i] for v in r] for i, r in enumerate(matrix)]
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels=classes, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_yticks(range(k), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test split; colour = share of the true class)")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if matrix[i][j]:
                    ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i][j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_png(history: List[Dict[str, Any]], path: Path) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] + 1 for r in history]
    for key, ax, style in (("train/loss", ax_loss, "-o"), ("val/loss", ax_loss, "-s"),
                           ("train/acc", ax_acc, "-o"), ("val/acc", ax_acc, "-s"),
                           # the headline validation metric of the other tasks
                           ("val/map", ax_acc, "-s"), ("val/map_50", ax_acc, "-^"), ("val/miou", ax_acc, "-s")):
        xs = [e for e, r in zip(epochs, history) if key in r]
        ys = [r[key] for r in history if key in r]
        if ys:
            ax.plot(xs, ys, style, label=key, markersize=3)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy" if any("val/acc" in r for r in history) else "validation score")
    ax_acc.set_ylim(0, 1.02)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability_png(before: List[Dict[str, Any]], after: Optional[List[Dict[str, Any]]], temperature: float,
                    path: Path) -> None:
    """The reliability diagram of the test split: per confidence bin, accuracy against mean
    confidence (the diagonal is perfect calibration), before and (when calibrated) after
    temperature scaling; the bars below count the images per bin."""
    # laid out by hand (no tight_layout): every classification run draws it, so it is kept cheap
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    fig.subplots_adjust(left=0.13, right=0.97, top=0.94, bottom=0.09, hspace=0.08)
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    width = before[0]["hi"] - before[0]["lo"] if before else 1 / 15
    series = [("uncalibrated", before, "-o", "tab:red")]
    if after is not None:
        series.append((f"temperature T={temperature:.3g}", after, "-s", "tab:blue"))
    for i, (label, bins, style, color) in enumerate(series):
        xs = [b["confidence"] for b in bins if b["count"]]
        ys = [b["accuracy"] for b in bins if b["count"]]
        ax.plot(xs, ys, style, color=color, label=label, markersize=4)
        offset = (i - (len(series) - 1) / 2) * width / len(series)
        ax_n.bar([(b["lo"] + b["hi"]) / 2 + offset for b in bins], [b["count"] for b in bins],
                 width=width / len(series), color=color, alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (test split, top-1 confidence)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax_n.set_xlabel("confidence")
    ax_n.set_ylabel("images")
    ax_n.grid(alpha=0.3)
    fig.savefig(path, dpi=80)
    plt.close(fig)
