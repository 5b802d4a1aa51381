"""The doctor's pictures: class histogram, image-size scatter, a sample grid per class."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aether.doctor.stats import Record  # noqa: E402


def class_histogram(counts: Dict[str, int], path: Path) -> None:
    names = list(counts)
    fig, ax = plt.subplots(figsize=(min(16, 3 + 0.4 * len(names)), 4))
    ax.bar(range(len(names)), [counts[n] for n in names], color="#3b75af")
    ax.set_xticks(range(len(names)), labels=names, rotation=45 if len(names) > 6 else 0,
                  ha="right" if len(names) > 6 else "center")
    ax.set_ylabel("usable images")
    ax.set_title("Images per class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def size_scatter(records: Sequence[Record], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter([r.width for r in records], [r.height for r in records], s=8, alpha=0.5)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(f"Image sizes ({len(records)} images)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_grids(by_class: Dict[str, List[Record]], out_dir: Path, per_class: int = 8) -> List[Path]:
    """One PNG per class with up to `per_class` thumbnails (first files in path order)."""
    from aether.data.images import load_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (label, records) in enumerate(sorted(by_class.items())):
        chosen = sorted(records, key=lambda r: r.path)[:per_class]
        if not chosen:
            continue
        fig, axes = plt.subplots(1, len(chosen), figsize=(1.6 * len(chosen), 1.9), squeeze=False)
        for ax, r in zip(axes[0], chosen):
            img = load_rgb(r.path)
            img.thumbnail((128, 128))
            ax.imshow(img)
            ax.set_axis_off()
        fig.suptitle(label, fontsize=10)
        fig.tight_layout()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        p = out_dir / f"{i:03d}_{safe}.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        written.append(p)
    return written
