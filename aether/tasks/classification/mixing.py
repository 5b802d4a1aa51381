"""Mixup / CutMix for task=classification: timm's `Mixup` on each training batch, soft targets,
and the epoch from which training sees clean images again (`data.augment.mixup_off_epoch`).

Label smoothing (`loss.label_smoothing`) goes into the soft targets as timm does it (Mixup's
own `label_smoothing`), so the soft-target loss adds none of its own. Validation and test
batches are never mixed: their loss stays plain cross-entropy on the true labels.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from aether.config.schema import AugmentCfg


def mixes(aug: AugmentCfg) -> bool:
    """Whether `data.augment` asks for Mixup or CutMix at all."""
    return bool(aug.mixup > 0 or aug.cutmix > 0) and aug.mixup_prob > 0


class Mixing:
    """The mixing step of the training loop: `(x, y, epoch) -> (x, targets)`; `targets` are soft
    (rows of class probabilities summing to 1) while mixing is on, the class indices `y`
    themselves from `off_epoch` on."""

    def __init__(self, aug: AugmentCfg, num_classes: int, label_smoothing: float = 0.0) -> None:
        from timm.data import Mixup

        self.num_classes, self.smoothing = num_classes, label_smoothing
        self.off_epoch: Optional[int] = aug.mixup_off_epoch
        self.mix = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mixup_prob,
                         switch_prob=aug.mixup_switch_prob, mode=aug.mixup_mode,
                         label_smoothing=label_smoothing, num_classes=num_classes)

    def on(self, epoch: int) -> bool:
        return self.off_epoch is None or epoch < self.off_epoch

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.on(epoch) or len(x) < 2:
            return x, y
        if len(x) % 2:  # timm mixes pairs: a ragged batch mixes all but its last image, which keeps its label
            head, target = self.mix(x[:-1].clone(), y[:-1])
            last = self.soft(y[-1:]).to(target.dtype)
            return torch.cat([head, x[-1:]]), torch.cat([target, last])
        return self.mix(x.clone(), y)  # timm mixes in place: the batch as loaded stays as it was

    def soft(self, y: torch.Tensor) -> torch.Tensor:
        """Class indices as the (smoothed) one-hot rows the mixed targets are made of."""
        off = self.smoothing / self.num_classes
        return torch.full((len(y), self.num_classes), off, device=y.device).scatter_(
            1, y.view(-1, 1), 1.0 - self.smoothing + off)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weight: Optional[Any] = None) -> torch.Tensor:
    """Cross-entropy against soft targets (timm's SoftTargetCrossEntropy, with `loss.class_weights`
    applied per class when set): mean over the batch of -sum_c w_c t_c log p_c."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, targets.to(logits.dtype), weight=weight)
