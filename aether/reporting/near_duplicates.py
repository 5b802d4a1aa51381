"""Leakage in feature space: images of different splits that the trained network sees as the
same picture. The dataset doctor's perceptual hashes find exact and resized copies; a crop, a
recolour or a re-encode moves a hash but barely moves the network's embedding, and one such
copy in test is a test image the model has already learned.

Embeddings are the backbone's pooled pre-logits features (timm's `forward_head(pre_logits=True)`)
of the evaluation transform, L2-normalised; a pair across splits (train-val, train-test, val-test)
at or above the cosine threshold is reported, most similar first, with the two images side by side.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger("aether")

PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))


def _network(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def embed(model: Any, paths: Sequence[str], preprocessing: Dict[str, Any], batch_size: int = 64) -> Any:
    """(len(paths), D) float32 tensor of unit-length embeddings, on the CPU."""
    import torch

    from aether.data.images import load_rgb
    from aether.data.transforms import eval_transform

    net = _network(model)
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise TypeError(f"{type(net).__name__} has no forward_features/forward_head (not a timm classifier)")
    transform = eval_transform(preprocessing)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                x = torch.stack([transform(load_rgb(p)) for p in paths[start:start + batch_size]]).to(device)
                feats = net.forward_head(net.forward_features(x), pre_logits=True).float().flatten(1)
                out.append(torch.nn.functional.normalize(feats, dim=1).cpu())
    finally:
        net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 1)


def cross_split_pairs(emb: Dict[str, Any], threshold: float, max_pairs: int) -> List[Tuple[str, int, str, int, float]]:
    """[(split a, index in a, split b, index in b, cosine)], cosine >= threshold, most similar first."""
    import torch

    found: List[Tuple[str, int, str, int, float]] = []
    for a, b in PAIRS:
        ea, eb = emb.get(a), emb.get(b)
        if ea is None or eb is None or not len(ea) or not len(eb):
            continue
        for start in range(0, len(ea), 1024):  # blocks of rows: a 50k x 50k matrix never exists at once
            sims = ea[start:start + 1024] @ eb.T
            rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
            found += [(a, start + int(i), b, int(j), float(sims[i, j])) for i, j in zip(rows, cols)]
    found.sort(key=lambda t: -t[4])
    return found[:max_pairs]


def find_near_duplicates(model: Any, splits: Dict[str, Sequence[Any]], preprocessing: Dict[str, Any],
                         threshold: float = 0.97, max_images: int = 20000, max_pairs: int = 50
                         ) -> Dict[str, Any]:
    """{"threshold", "checked", "pairs": [{"a", "split_a", "b", "split_b", "cosine"}], "note"}.
    `splits`: {split: items with .path}. Past `max_images` in all, a seeded sample of each split
    is checked, and the note says so."""
    import random

    total = sum(len(v) for v in splits.values())
    note = ""
    paths: Dict[str, List[str]] = {}
    for name in ("train", "val", "test"):
        items = [i.path for i in splits.get(name, [])]
        if total > max_images:
            keep = max(1, int(len(items) * max_images / total))
            items = random.Random(0).sample(items, min(keep, len(items)))
        paths[name] = items
    if total > max_images:
        note = f"checked a seeded sample of {sum(len(v) for v in paths.values())} of {total} images"
    emb = {name: embed(model, p, preprocessing) for name, p in paths.items() if p}
    pairs = [{"a": paths[a][i], "split_a": a, "b": paths[b][j], "split_b": b, "cosine": round(c, 4)}
             for a, i, b, j, c in cross_split_pairs(emb, threshold, max_pairs)]
    return {"threshold": threshold, "checked": sum(len(v) for v in paths.values()), "pairs": pairs, "note": note}


def write_near_duplicates(run_dir: Path, found: Dict[str, Any], shown: int = 6) -> List[str]:
    """near_duplicates.csv, near_duplicates.png (the top pairs side by side); the report's lines."""
    pairs = found["pairs"]
    with (run_dir / "near_duplicates.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["split_a", "path_a", "split_b", "path_b", "cosine"])
        w.writerows([[p["split_a"], p["a"], p["split_b"], p["b"], p["cosine"]] for p in pairs])
    lines = ["## Near duplicates across splits", ""]
    checked = f"{found['checked']} images checked" + (f" ({found['note']})" if found.get("note") else "")
    if not pairs:
        lines += [f"None at cosine >= {found['threshold']:g} in the trained network's embedding ({checked}).", ""]
        return lines
    lines += [f"**{len(pairs)}** pair(s) of images in different splits look alike to the trained network "
              f"(cosine >= {found['threshold']:g}; {checked}): a test image with a copy in train overstates "
              "the test metric. Every pair: `near_duplicates.csv`.", ""]
    picture = _sheet(pairs[:shown], run_dir / "near_duplicates.png")
    if picture:
        lines += [f"![near duplicates]({picture.name})", ""]
    return lines


def _sheet(pairs: List[Dict[str, Any]], out: Path) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aether.data.images import load_rgb

    fig, axes = plt.subplots(len(pairs), 2, figsize=(4.4, 2.3 * len(pairs)), squeeze=False)
    for row, p in zip(axes, pairs):
        for ax, key in zip(row, ("a", "b")):
            ax.axis("off")
            try:
                ax.imshow(load_rgb(p[key]))
            except OSError:
                continue
            ax.set_title(f"{p['split_' + key]}: {Path(p[key]).name}" + (f"  cos {p['cosine']:.3f}" if key == "b" else ""),
                         fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
