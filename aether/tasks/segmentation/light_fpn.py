"""A light FPN decoder over a backbone provider's encoder (`task_options.decoder=light_fpn`, the
default before smp's DeepLabV3+): lateral 1x1 convs, a top-down path, one 3x3 conv per level,
levels summed at stride 4 and a 1x1 classifier upsampled to the input (Kirillov et al.'s semantic
FPN, reduced to what small data needs)."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn


class FPNDecoder(nn.Module):
    def __init__(self, channels: List[int], reductions: List[int], num_classes: int, width: int = 64) -> None:
        super().__init__()
        # stride-2 features (ResNet's stem) cost memory and add little: stride 4 and coarser
        self.levels = [i for i, r in enumerate(reductions) if r >= 4] or list(range(len(channels)))
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], width, 1) for i in self.levels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            for _ in self.levels)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
        feats = encoder(x)
        feats = [feats[i] for i in self.levels]
        p = self.lateral[-1](feats[-1])
        pyramid = [p]
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            p = lat(f) + F.interpolate(p, size=f.shape[-2:], mode="nearest")
            pyramid.insert(0, p)
        size = pyramid[0].shape[-2:]
        fused = sum(F.interpolate(s(q), size=size, mode="bilinear", align_corners=False)
                    for s, q in zip(self.smooth, pyramid))
        return F.interpolate(self.classifier(fused), size=x.shape[-2:], mode="bilinear", align_corners=False)
