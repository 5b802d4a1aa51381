"""Frozen features of every image of a run's splits, from the run's own trained backbone: one
evaluation pass per split (aether.reporting.passes.eval_pass), two views of each image:

- `pre_logits`: what the classifier head reads (timm's forward_head(pre_logits=True)); the
  k-fold label-issue search (analysis.label_issues=kfold) fits a logistic regression on them.
- `identity`: each feature stage but the last (timm's forward_intermediates), average-pooled
  onto a GRID x GRID layout. A trained classifier's last features collapse by class, so two
  images of one class look alike there, and a fully pooled stage keeps little more than colour
  statistics; the earlier stages' coarse layout still tells two pictures apart, which the
  near-duplicate search (aether.reporting.near_duplicates) needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np


@dataclass
class SplitFeatures:
    pre_logits: np.ndarray  # (N, D) float32
    identity: np.ndarray  # (N, sum over the kept stages of channels * GRID^2) float32
    stages: List[int]  # width of each stage in `identity`, in order


GRID = 4  # cells across of each stage's layout in `identity`


def _pool(t: Any) -> Any:
    """A stage's output as one vector per image: the mean over its grid (NCHW) or tokens (NLC)."""
    if t.ndim == 4:
        return t.float().mean(dim=(2, 3))
    if t.ndim == 3:
        return t.float().mean(dim=1)
    return t.float().flatten(1)


def _layout(t: Any) -> Any:
    """A stage's output as (B, C * GRID * GRID): its average over each cell of a GRID x GRID
    layout (tokens of a square patch grid are folded back first; other shapes: pooled)."""
    import math

    import torch.nn.functional as F

    if t.ndim == 3:
        side = math.isqrt(t.shape[1])
        if side * side != t.shape[1]:  # prefix tokens: keep the square patch grid at the end
            t = t[:, t.shape[1] - side * side:]
        t = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
    if t.ndim != 4:
        return _pool(t)
    return F.adaptive_avg_pool2d(t.float(), GRID).flatten(1)


def features(net: Any, x: Any) -> Tuple[Any, List[Any]]:
    """(pre-logits (B, D), [each stage but the last, as its GRID x GRID layout (B, C_s * GRID^2)])
    of a timm classifier. A model without forward_intermediates, or with one stage, gives its
    forward_features' layout as its one stage."""
    if hasattr(net, "forward_intermediates"):
        final, stages = net.forward_intermediates(x)
    else:
        final, stages = net.forward_features(x), []
    kept = [_layout(s) for s in stages[:-1]] or [_layout(final)]
    return net.forward_head(final, pre_logits=True).float().flatten(1), kept


def embed_splits(module: Any, datamodule: Any, splits: Sequence[str]) -> Dict[str, SplitFeatures]:
    """Features of every image of each split, in `bundle.splits[split]` order."""
    from aether.reporting.passes import eval_pass
    from aether.reporting.heatmaps import _network

    net = _network(module.model)

    def batch(x: Any) -> Tuple[np.ndarray, List[np.ndarray]]:
        pre, stages = features(net, x)
        return pre.cpu().numpy(), [s.cpu().numpy() for s in stages]

    out: Dict[str, SplitFeatures] = {}
    for split in dict.fromkeys(splits):
        parts = eval_pass(module, datamodule, split, batch)
        if not parts:
            out[split] = SplitFeatures(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), [])
            continue
        pre = np.concatenate([p for p, _ in parts]).astype(np.float32)
        stage_sets = [np.concatenate([s[i] for _, s in parts]) for i in range(len(parts[0][1]))]
        out[split] = SplitFeatures(pre, np.concatenate(stage_sets, axis=1).astype(np.float32),
                                   [s.shape[1] for s in stage_sets])
    return out
