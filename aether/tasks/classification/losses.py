"""task=classification's losses: cross-entropy, or the multi-class (softmax) focal loss.

torchvision.ops.sigmoid_focal_loss is the binary / one-sigmoid-per-label form; a single-label
classifier's softmax needs the multi-class form, written here:

    loss_i = - sum_c  w_c * q_ic * (1 - p_ic)^gamma * log p_ic,   mean = sum_i loss_i / sum_i w_{y_i}

with p the softmax, q the (label-smoothed) target: (1 - eps) on the true class plus eps / K on
every class, w the class weights (loss.class_weights: focal's alpha, one per class; all 1 when
null). The reduction is PyTorch's weighted mean, so gamma = 0 is exactly nn.CrossEntropyLoss
with the same weight and label_smoothing.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """The mean multi-class focal loss of `logits` (N x K) against class indices `target` (N)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    k = logits.shape[-1]
    q = F.one_hot(target, k).to(logp.dtype) * (1.0 - label_smoothing) + label_smoothing / k
    # (1 - p)^gamma: torch.pow(0, 0) is 1, so gamma = 0 leaves every term as cross-entropy's
    focus = (1.0 - logp.exp()).clamp(min=0.0).pow(gamma)
    w = torch.ones(k, device=logp.device, dtype=logp.dtype) if weight is None else weight.to(logp)
    per_image = -(w * q * focus * logp).sum(-1)
    return per_image.sum() / w[target].sum().clamp(min=torch.finfo(logp.dtype).tiny)


class FocalLoss(nn.Module):
    """focal_loss as a criterion; `weight` is a buffer (moves with the module, like CE's)."""

    def __init__(self, gamma: float = 2.0, weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.label_smoothing = float(gamma), float(label_smoothing)
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.weight, self.label_smoothing)


def criterion(name: str, gamma: float, weight: Optional[torch.Tensor], label_smoothing: float) -> nn.Module:
    """loss.name: ce -> nn.CrossEntropyLoss, focal -> FocalLoss (same weight and label smoothing)."""
    if name == "focal":
        return FocalLoss(gamma, weight, label_smoothing)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
