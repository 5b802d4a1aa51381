"""What the three box formats (COCO, VOC, YOLO) share, so the same boxes give the same counts
and the same training targets whichever format they were exported in.

Bounds rule: a box is out of bounds when it starts before 0, ends past the image width/height,
or has a negative size (COCO `x<0, y<0, x+w>W, y+h>H, w<0, h<0`; VOC `xmin<0, ymin<0, xmax>W,
ymax>H, xmax<xmin, ymax<ymin`; YOLO the same on `cx±w/2, cy±h/2` against 0..1), with a 1e-6
tolerance. Loading: every format yields `{"boxes": [[x0, y0, x1, y1], ...] in pixels, "labels":
[class index, ...]}` per image; boxes are clipped to their image and boxes with no area left are
dropped and counted in the run's data notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aether.data.formats.base import spread
from aether.data.manifests import SPLIT_ALIASES

EPS = 1e-6
# annotation warnings of every box format (Format.checks): summary key, what it counts
BOX_CHECKS: Tuple[Tuple[str, str], ...] = (
    ("boxes_out_of_bounds", "box(es) outside their image"),
    ("degenerate_boxes", "box(es) of zero or negative size"),
)


def out_of_bounds(x0: float, y0: float, x1: float, y1: float, w: float, h: float) -> bool:
    """Box given by corners against an image of size w x h (pixels, or 1 x 1 when normalised)."""
    return x0 < -EPS or y0 < -EPS or x1 > w + EPS or y1 > h + EPS or x1 < x0 - EPS or y1 < y0 - EPS


class BoxSizes:
    """Box-size statistics that read the same for every box format: sizes relative to the image
    (YOLO only has those), plus aspect ratios and COCO's small/medium/large pixel-area buckets
    (< 32², < 96², more) where the image size in pixels is known (COCO, VOC). Zero- or
    negative-size boxes are counted apart as `degenerate`: they train nothing and often explain
    a detector's mAP of 0."""

    def __init__(self) -> None:
        self.rel_w: List[float] = []
        self.rel_h: List[float] = []
        self.rel_area: List[float] = []
        self.aspect: List[float] = []
        self.buckets = {"small": 0, "medium": 0, "large": 0}
        self.degenerate = 0

    def add(self, bw: float, bh: float, img_w: float, img_h: float, pixels: bool) -> None:
        if bw <= 0 or bh <= 0 or img_w <= 0 or img_h <= 0:
            self.degenerate += 1
            return
        self.rel_w.append(bw / img_w)
        self.rel_h.append(bh / img_h)
        self.rel_area.append(bw * bh / (img_w * img_h))
        if pixels:  # a normalised box's w/h is not its shape on screen
            self.aspect.append(bw / bh)
            area = bw * bh
            self.buckets["small" if area < 32 ** 2 else "medium" if area < 96 ** 2 else "large"] += 1

    def summary(self) -> Dict[str, Any]:
        r = lambda d: {k: round(v, 4) for k, v in d.items()}  # noqa: E731
        out: Dict[str, Any] = {"relative_width": r(spread(self.rel_w)), "relative_height": r(spread(self.rel_h)),
                               "relative_area": r(spread(self.rel_area)), "degenerate": self.degenerate}
        if self.aspect:  # pixel sizes known (COCO, VOC)
            out["aspect_ratio"] = r(spread(self.aspect))
            out["coco_area_buckets"] = dict(self.buckets)
        return out

    def tail(self, per_image: Sequence[float]) -> Dict[str, Any]:
        """The last keys of every box format's summary (the doctor prints them the same way)."""
        return {"boxes_per_image": spread(per_image), "box_sizes": self.summary(), "degenerate_boxes": self.degenerate}


class BoxClip:
    """Clips boxes to their image and counts the ones dropped (so nothing vanishes unreported)."""

    def __init__(self) -> None:
        self.dropped = 0

    def target(self, boxes: List[List[float]], labels: List[int], w: float, h: float) -> Dict[str, Any]:
        out_b, out_l = [], []
        for (x0, y0, x1, y1), lab in zip(boxes, labels):
            x0, x1 = max(0.0, min(x0, w)), max(0.0, min(x1, w))
            y0, y1 = max(0.0, min(y0, h)), max(0.0, min(y1, h))
            if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
                self.dropped += 1
                continue
            out_b.append([round(x0, 4), round(y0, 4), round(x1, 4), round(y1, 4)])
            out_l.append(int(lab))
        return {"boxes": out_b, "labels": out_l}

    def notes(self) -> List[str]:
        return [f"{self.dropped} box(es) with no area inside their image were dropped"] if self.dropped else []


def split_of(*names: str) -> Optional[str]:
    """The split a file or folder name announces (`instances_val2017`, `train`), if any."""
    for n in names:
        for token in n.lower().replace("-", "_").replace(".", "_").split("_"):
            if token in SPLIT_ALIASES:
                return SPLIT_ALIASES[token]
    return None


def image_size(path: Path) -> Tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size
