"""task=detection's head over a provider's encoder: a torchvision detector (FCOS, RetinaNet,
Faster R-CNN) on an FPN (aether.tasks.detection.detector.DetectorHead); registered in aether.models.heads."""

from __future__ import annotations

from typing import Any, Dict

from torch import nn

from aether.models.backbone import Encoder


def build_head(options: Dict[str, Any], encoder: Encoder, num_classes: int, pre: Dict[str, Any]) -> nn.Module:
    from aether.tasks.detection.detector import DetectorHead

    # a model.json written before `strides` existed (or an unresolved "auto") has the old layout;
    # an NMS threshold still "tune" (never tuned) is torchvision's default for the head
    strides = options.get("strides")
    nms = options.get("nms_threshold")
    return DetectorHead(encoder.channels, encoder.reductions, num_classes, options["head"], options["fpn_channels"],
                        pre["input_size"][-1], pre["mean"], pre["std"], options["score_threshold"],
                        options["detections_per_image"], strides=strides if isinstance(strides, list) else None,
                        nms_thresh=float(nms) if isinstance(nms, (int, float)) else None)
