"""Test-time augmentation (`test.tta`, `aether predict tta=`): the softmax averaged over views
of the evaluation input.

The views are made from the input tensor (already resized, cropped and normalised by the
evaluation transform), so training's test, `aether predict`, the ONNX runner and the BentoML
service - which all receive that tensor - see the same views:

    none        the input
    flip        the input and its horizontal mirror
    multi_crop  the input and its 4 corner crops of 90% of the side, each resized back to the
                input size (90%: 81% of the area, inside the default training crop scale [0.8, 1])

Light (torch only): the serving codec imports it.
"""

from __future__ import annotations

from typing import Any, Callable, List

from aether.errors import AetherError

MODES = ("none", "flip", "multi_crop")
CROP = 0.9


def check_mode(mode: Any, where: str = "tta") -> str:
    if mode not in MODES:
        raise AetherError(f"{where}={mode!r}: expected one of {', '.join(MODES)}")
    return str(mode)


def views(x: Any, mode: str) -> List[Any]:
    """The views of a (N, 3, H, W) batch, the batch itself first."""
    import torch.nn.functional as F

    check_mode(mode)
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(-1)]
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ch, cw = max(1, round(h * CROP)), max(1, round(w * CROP))
    out = [x]
    for top, left in ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw)):
        crop = x[..., top:top + ch, left:left + cw]
        out.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False))
    return out


def num_views(mode: str) -> int:
    return {"none": 1, "flip": 2, "multi_crop": 5}[check_mode(mode)]


def average(view_logits: List[Any], temperature: float = 1.0) -> Any:
    """The mean of softmax(logits / temperature) over the views' logits."""
    import torch

    total = None
    for z in view_logits:
        p = torch.softmax(z.float() / temperature, dim=1)
        total = p if total is None else total + p
    assert total is not None
    return total / len(view_logits)


def probabilities(logits: Callable[[Any], Any], x: Any, mode: str = "none", temperature: float = 1.0) -> Any:
    """softmax(logits(view) / temperature) averaged over the views of `x` (a torch batch)."""
    return average([logits(v) for v in views(x, mode)], temperature)
