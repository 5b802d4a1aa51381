"""A torchvision detector (FCOS by default; RetinaNet, Faster R-CNN) on a torchvision FPN over a
backbone provider's multi-scale encoder (aether.models.backbone.Encoder: feature maps, channels,
strides).

The encoder stays outside the torchvision model (it is `EncoderNet.encoder`, where the strategies
act); the detector reads its features through `_Features`, a parameter-free stand-in for
torchvision's `backbone` that is pointed at (encoder -> FPN) on every call.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock


class _Features:
    """What torchvision detectors call `backbone`: images -> OrderedDict of FPN maps."""

    def __init__(self, out_channels: int) -> None:
        self.out_channels = out_channels
        self.fn: Optional[Callable[[torch.Tensor], Dict[str, torch.Tensor]]] = None

    def __call__(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        assert self.fn is not None
        return self.fn(x)


# A level of stride s serves objects whose side is about REACH[head] * s to twice that: FCOS
# assigns a box to the level whose regression range (4s, 8s] holds its largest centre-to-edge
# distance (about half the box side; the finest level also takes everything smaller, the coarsest
# everything larger); RetinaNet / Faster R-CNN levels get anchors of 4s, 5s and 6.3s (torchvision's
# RetinaNet sizes, three aspect ratios) and match boxes of about that size.
REACH = {"fcos": 8, "retinanet": 4, "faster_rcnn": 4}
MIN_LOCATIONS = 2  # the finest level must lay at least 2 x 2 grid points on the small objects ...
SMALL_PERCENTILE = 10  # ... the 10th percentile of the boxes' short side (clipped slivers aside)
USUAL_FINEST = 8  # torchvision's P3: the finest level unless the objects are too small for it


def stride_ladder(reductions: List[int]) -> List[int]:
    """The strides a head can read: the encoder's own (stride 4 and coarser) and two extra levels
    coarser than its deepest (P6, P7 as in torchvision's FCOS / RetinaNet)."""
    own = sorted({r for r in reductions if r >= 4}) or sorted(set(reductions))
    return own + [own[-1] * 2, own[-1] * 4]


def choose_strides(short_sides: List[float], long_sides: List[float], reductions: List[int],
                   kind: str) -> Tuple[List[int], str]:
    """The FPN levels (strides) that cover the training boxes, and why. Sides are in pixels at
    the network's input size. The finest level is stride 8 (torchvision's P3), stride 4 when the
    small objects (10th percentile of the short side) are under 2 x 8 px, and coarser when even
    the smallest objects belong to a coarser level (a finer one would get no box); the coarsest
    is the first level whose range reaches the largest box. Levels past it are dropped: with no
    training box they learn background only, and can only add false positives (and compute)."""
    ladder = stride_ladder(reductions)
    reach = REACH[kind]
    if not short_sides:
        return ladder[ladder.index(USUAL_FINEST):] if USUAL_FINEST in ladder else ladder, "no boxes to measure"
    small = _percentile(short_sides, SMALL_PERCENTILE)
    large = max(long_sides)
    usual = [s for s in ladder if s >= USUAL_FINEST]
    finest = usual[0] if usual else ladder[-1]
    if small < MIN_LOCATIONS * finest and ladder[0] < finest:
        finest = max(s for s in ladder if s < finest)  # stride 4: more grid points on tiny objects
    while finest * 2 in ladder[:-2] and reach * finest * 2 <= small:  # (the finest is one of the encoder's)
        finest *= 2  # even the smallest objects belong to the next level
    coarsest = next((s for s in ladder if s >= finest and 2 * reach * s > large), ladder[-1])
    strides = [s for s in ladder if finest <= s <= coarsest]
    why = (f"{kind}: a level of stride s takes objects of about {reach}s-{2 * reach}s px; training boxes at the "
           f"input size: short side 10th percentile {small:.0f} px, long side max {large:.0f} px")
    return strides, why


def _percentile(values: List[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * q / 100))]


class _ExtraLevels(ExtraFPNBlock):
    """Levels coarser than the encoder's deepest, made from the FPN's last map: 3x3 stride-2 convs
    named p6, p7 (torchvision's LastLevelP6P7, same parameter names and init) or, for Faster R-CNN,
    max pooling (torchvision's LastLevelMaxPool)."""

    def __init__(self, n: int, width: int, pool: bool) -> None:
        super().__init__()
        self.n, self.pool = n, pool
        if not pool:
            for k in range(n):
                conv = nn.Conv2d(width, width, 3, 2, 1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.constant_(conv.bias, 0)
                setattr(self, f"p{6 + k}", conv)

    def forward(self, results: List[torch.Tensor], x: List[torch.Tensor],
                names: List[str]) -> Tuple[List[torch.Tensor], List[str]]:
        import torch.nn.functional as F

        p = results[-1]
        for k in range(self.n):
            p = F.max_pool2d(p, 1, 2, 0) if self.pool else getattr(self, f"p{6 + k}")(p if k == 0 else F.relu(p))
            results.append(p)
            names.append(f"p{6 + k}")
        return results, names


class DetectorHead(nn.Module):
    def __init__(self, channels: List[int], reductions: List[int], num_classes: int, kind: str, width: int,
                 image_size: int, mean: List[float], std: List[float], score_thresh: float, detections: int,
                 strides: Optional[List[int]] = None, nms_thresh: Optional[float] = None) -> None:
        super().__init__()
        from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

        self.kind = kind
        if strides is None:
            # the layout of models saved before `strides` existed: strides 8, 16, 32 from the encoder
            # + two extra levels (a max-pooled one for Faster R-CNN), anchors of one stride
            self.levels = [i for i, r in enumerate(reductions) if r >= 8][-3:]
            n_extra = 1 if kind == "faster_rcnn" else 2
            self.outputs = list(range(len(self.levels) + n_extra))
            base = [reductions[i] for i in self.levels]
            sizes = [base[0] * 2 ** k for k in range(len(self.outputs))]
            scales = [(s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in sizes]
        else:
            # the FPN reads every encoder level from the finest stride down to the deepest (their
            # context flows top-down into the fine levels); the head reads the `strides` levels
            ladder = stride_ladder(reductions)
            if strides[0] not in reductions or any(s not in ladder for s in strides):
                from aether.errors import AetherError

                raise AetherError(f"task_options.strides={strides}: this encoder offers strides {ladder} (the first "
                                  f"one of {ladder[:-2]})")
            last = {r: i for i, r in enumerate(reductions)}  # the deepest feature of each stride
            own = sorted(r for r in last if r >= strides[0])
            self.levels = [last[r] for r in own]
            n_extra = sum(1 for s in strides if s > own[-1])
            self.outputs = [i for i, r in enumerate(own + [own[-1] * 2, own[-1] * 4][:n_extra]) if r in strides]
            sizes = list(strides)
            scales = [(4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in sizes]
        extra = _ExtraLevels(n_extra, width, pool=kind == "faster_rcnn") if n_extra else None
        self.fpn = FeaturePyramidNetwork([channels[i] for i in self.levels], width, extra_blocks=extra)
        for i in range(len(self.levels)):
            if i not in self.outputs:  # an output no head reads: no 3x3 conv (no parameter without gradient)
                self.fpn.layer_blocks[i] = nn.Identity()
        common = dict(min_size=image_size, max_size=image_size, image_mean=mean, image_std=std,
                      detections_per_img=detections)
        if nms_thresh is not None:
            common["nms_thresh" if kind != "faster_rcnn" else "box_nms_thresh"] = nms_thresh
        if kind == "fcos":
            anchors = AnchorGenerator(tuple((s,) for s in sizes), ((1.0,),) * len(sizes))
            self.det = FCOS(_Features(width), num_classes, anchor_generator=anchors, score_thresh=score_thresh,
                            **common)
        elif kind == "retinanet":
            anchors = AnchorGenerator(tuple(scales), ((0.5, 1.0, 2.0),) * len(sizes))
            self.det = RetinaNet(_Features(width), num_classes, anchor_generator=anchors, score_thresh=score_thresh,
                                 **common)
        else:  # Faster R-CNN counts the background as class 0: labels shift by one inside
            per_level = tuple((s,) for s in sizes) if strides is None else tuple(scales)
            anchors = AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(sizes))
            names = [str(j) for j in self.outputs if j < len(self.levels)]
            pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
            self.det = FasterRCNN(_Features(width), num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=pool,
                                  box_score_thresh=score_thresh, **common)

    def postprocess(self, nms_thresh: Optional[float] = None, detections: Optional[int] = None) -> Tuple[float, int]:
        """Set (and return the previous) NMS IoU threshold and number of boxes kept per image."""
        target = self.det.roi_heads if self.kind == "faster_rcnn" else self.det
        before = (float(target.nms_thresh), int(target.detections_per_img))
        if nms_thresh is not None:
            target.nms_thresh = float(nms_thresh)
        if detections is not None:
            target.detections_per_img = int(detections)
        return before

    def pyramid(self, x: torch.Tensor, encoder: Callable[[torch.Tensor], List[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Normalised, batched images -> the FPN maps the detector's head reads."""
        feats = encoder(x)
        maps = list(self.fpn(OrderedDict((str(j), feats[i]) for j, i in enumerate(self.levels))).items())
        return OrderedDict(maps[j] for j in self.outputs)

    def forward(self, images: List[torch.Tensor], encoder: Callable[[torch.Tensor], List[torch.Tensor]],
                targets: Optional[List[Dict[str, torch.Tensor]]] = None) -> Any:
        self.det.backbone.fn = lambda x: self.pyramid(x, encoder)
        shift = 1 if self.kind == "faster_rcnn" else 0
        if targets is not None and shift:
            targets = [{**t, "labels": t["labels"] + shift} for t in targets]
        out = self.det(list(images), targets)
        if shift and not self.training:
            out = [{**o, "labels": o["labels"] - shift} for o in out]
        return out


# torchvision's FCOS / RetinaNet keep this many (location, class) candidates per level before NMS
TOPK_CANDIDATES = 1000
CANDIDATE_COLUMNS = 5  # x0, y0, x1, y1, level; then one score per class


class Candidates(nn.Module):
    """An FCOS or RetinaNet network up to its data-dependent post-processing, for export: (N, 3,
    S, S) images in [0, 1] -> (N, A, 5 + classes) fixed tensors, one row per anchor of every level:
    [x0, y0, x1, y1] the box it regresses (decoded and clipped to the image, in input pixels), the
    index of its FPN level, and its score per class (FCOS: sqrt(sigmoid(class) * sigmoid(
    centre-ness)); RetinaNet: sigmoid(class)) - what torchvision's postprocess_detections reads.
    The score filter, the per-level top-k, NMS and the best `detections_per_image` (whose output
    sizes depend on the data) are aether.tasks.detection.serving.finish_candidates, on any runtime.

    The anchors and the level sizes depend on the input size alone: computed once here, on a
    blank image. A Faster R-CNN's region proposals go through NMS before its box head, so it has
    no such fixed point: refused."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        from torchvision.models.detection.image_list import ImageList

        from aether.errors import AetherError

        head = net.head
        if head.kind not in ("fcos", "retinanet"):
            raise AetherError(f"task_options.head={head.kind}: not exportable (its region proposals go through NMS "
                              "before the box head, so the network has no fixed-size output to export); fcos and "
                              "retinanet export, or serve this model with the PyTorch backend")
        det = head.det
        if int(det.topk_candidates) != TOPK_CANDIDATES:
            raise AetherError(f"the detector keeps {det.topk_candidates} candidates per level, the export "
                              f"{TOPK_CANDIDATES}")
        self.net, self.kind = net, head.kind
        self.size = int(det.transform.min_size[0])
        div = int(det.transform.size_divisible)
        self.padded = -(-self.size // div) * div  # torchvision pads the batch to a multiple of size_divisible
        device = next(net.parameters()).device  # a model served on a GPU: its anchors there too
        with torch.no_grad():
            x = self.normalized(torch.zeros(1, 3, self.size, self.size, device=device))
            feats = list(head.pyramid(x, net.features).values())
            anchors = det.anchor_generator(ImageList(x, [(self.size, self.size)]), feats)[0]
        per_location = int(det.anchor_generator.num_anchors_per_location()[0])
        self.level_sizes = [int(f.shape[-2] * f.shape[-1]) * per_location for f in feats]
        level = torch.cat([torch.full((n,), float(i), device=device) for i, n in enumerate(self.level_sizes)])
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("level", level, persistent=False)

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """What torchvision's GeneralizedRCNNTransform makes of S x S images (its resize to S is
        the identity): normalised, zero-padded to the batch size it pads to."""
        import torch.nn.functional as F

        x = self.net.head.det.transform.normalize(x)
        pad = self.padded - self.size
        return F.pad(x, (0, pad, 0, pad)) if pad else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import boxes as box_ops

        head = self.net.head
        det = head.det
        out = det.head(list(head.pyramid(self.normalized(x), self.net.features).values()))
        scores = torch.sigmoid(out["cls_logits"])
        if self.kind == "fcos":
            scores = torch.sqrt(scores * torch.sigmoid(out["bbox_ctrness"]))
        reg = out["bbox_regression"]
        anchors = self.anchors.unsqueeze(0).expand(reg.shape[0], -1, -1)
        if self.kind == "fcos":
            boxes = det.box_coder.decode(reg, anchors)
        else:
            boxes = det.box_coder.decode_single(reg.reshape(-1, 4), anchors.reshape(-1, 4)).reshape(reg.shape)
        boxes = box_ops.clip_boxes_to_image(boxes, (self.size, self.size))
        level = self.level.reshape(1, -1, 1).expand(reg.shape[0], -1, 1)
        return torch.cat([boxes, level, scores], dim=-1)
