"""A torchvision detector (FCOS by default; RetinaNet, Faster R-CNN) on a torchvision FPN over a
timm `features_only` encoder.

The encoder stays outside the torchvision model (it is `DenseNet.encoder`, where the strategies
act); the detector reads its features through `_Features`, a parameter-free stand-in for
torchvision's `backbone` that is pointed at (encoder -> FPN) on every call.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn


class _Features:
    """What torchvision detectors call `backbone`: images -> OrderedDict of FPN maps."""

    def __init__(self, out_channels: int) -> None:
        self.out_channels = out_channels
        self.fn: Optional[Callable[[torch.Tensor], Dict[str, torch.Tensor]]] = None

    def __call__(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        assert self.fn is not None
        return self.fn(x)


class DetectorHead(nn.Module):
    def __init__(self, channels: List[int], reductions: List[int], num_classes: int, kind: str, width: int,
                 image_size: int, mean: List[float], std: List[float], score_thresh: float, detections: int) -> None:
        super().__init__()
        from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        # strides 8, 16, 32 from the encoder (+ two extra levels, or a max-pooled one for Faster R-CNN)
        self.levels = [i for i, r in enumerate(reductions) if r >= 8][-3:]
        self.kind = kind
        extra = LastLevelMaxPool() if kind == "faster_rcnn" else LastLevelP6P7(width, width)
        self.fpn = FeaturePyramidNetwork([channels[i] for i in self.levels], width, extra_blocks=extra)
        common = dict(min_size=image_size, max_size=image_size, image_mean=mean, image_std=std,
                      detections_per_img=detections)
        base = [reductions[i] for i in self.levels]
        sizes = [base[0] * 2 ** k for k in range(len(self.levels) + (1 if kind == "faster_rcnn" else 2))]
        if kind == "fcos":
            anchors = AnchorGenerator(tuple((s,) for s in sizes), ((1.0,),) * len(sizes))
            self.det = FCOS(_Features(width), num_classes, anchor_generator=anchors, score_thresh=score_thresh,
                            **common)
        elif kind == "retinanet":
            anchors = AnchorGenerator(tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in sizes),
                                      ((0.5, 1.0, 2.0),) * len(sizes))
            self.det = RetinaNet(_Features(width), num_classes, anchor_generator=anchors, score_thresh=score_thresh,
                                 **common)
        else:  # Faster R-CNN counts the background as class 0: labels shift by one inside
            anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
            pool = MultiScaleRoIAlign([str(i) for i in range(len(self.levels))], output_size=7, sampling_ratio=2)
            self.det = FasterRCNN(_Features(width), num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=pool,
                                  box_score_thresh=score_thresh, **common)

    def forward(self, images: List[torch.Tensor], encoder: nn.Module,
                targets: Optional[List[Dict[str, torch.Tensor]]] = None) -> Any:
        def features(x: torch.Tensor) -> Dict[str, torch.Tensor]:
            feats = encoder(x)
            return self.fpn(OrderedDict((str(j), feats[i]) for j, i in enumerate(self.levels)))

        self.det.backbone.fn = features
        shift = 1 if self.kind == "faster_rcnn" else 0
        if targets is not None and shift:
            targets = [{**t, "labels": t["labels"] + shift} for t in targets]
        out = self.det(list(images), targets)
        if shift and not self.training:
            out = [{**o, "labels": o["labels"] - shift} for o in out]
        return out
