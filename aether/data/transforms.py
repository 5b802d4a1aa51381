"""Transforms derived from the backbone's timm data config plus the `data.augment` options.

`preprocessing` is a plain dict (input_size, interpolation, mean, std, crop_pct, crop_mode)
saved with every model, so evaluation, prediction and serving rebuild the exact eval
transform from it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from aether.config.schema import AugmentCfg
from aether.errors import AetherError


def resolve_preprocessing(model_data_config: Dict[str, Any], image_size: Optional[int],
                          crop_pct: Optional[float]) -> Dict[str, Any]:
    pre = {
        "input_size": list(model_data_config.get("input_size", (3, 224, 224))),
        "interpolation": model_data_config.get("interpolation", "bicubic"),
        "mean": [float(x) for x in model_data_config.get("mean", (0.485, 0.456, 0.406))],
        "std": [float(x) for x in model_data_config.get("std", (0.229, 0.224, 0.225))],
        "crop_pct": float(model_data_config.get("crop_pct", 0.875)),
        "crop_mode": model_data_config.get("crop_mode", "center"),
    }
    if image_size is not None:
        pre["input_size"] = [pre["input_size"][0], image_size, image_size]
    if crop_pct is not None:
        pre["crop_pct"] = float(crop_pct)
    return pre


def eval_transform(pre: Dict[str, Any]) -> Callable:
    from timm.data import create_transform

    return create_transform(
        input_size=tuple(pre["input_size"]), is_training=False, interpolation=pre["interpolation"],
        mean=tuple(pre["mean"]), std=tuple(pre["std"]), crop_pct=pre["crop_pct"], crop_mode=pre["crop_mode"],
    )


def train_transform(pre: Dict[str, Any], aug: AugmentCfg, separate: bool = False) -> Callable:
    """`separate=True`: timm's (PIL geometry, PIL colour, tensor) stages, for the cached path."""
    from timm.data import create_transform

    try:
        return _posterize_keeps_a_bit(create_transform(separate=separate,
            input_size=tuple(pre["input_size"]), is_training=True, interpolation=pre["interpolation"],
            mean=tuple(pre["mean"]), std=tuple(pre["std"]),
            scale=tuple(aug.scale), ratio=tuple(aug.ratio), hflip=aug.hflip, vflip=aug.vflip,
            color_jitter=aug.color_jitter or None, auto_augment=aug.auto_augment, re_prob=aug.re_prob,
        ))
    except (AssertionError, ValueError, KeyError) as exc:  # timm's parser asserts on a section it does not know
        if aug.auto_augment is None:
            raise
        raise AetherError(f"data.augment.auto_augment={aug.auto_augment}: timm cannot read this policy "
                          f"({str(exc) or type(exc).__name__}); e.g. rand-m9-mstd0.5-inc1 (RandAugment), "
                          "augmix-m3-w3 (AugMix), original (AutoAugment)") from None


def _at_least_one_bit(img: Any, bits_to_keep: int, **kwargs: Any) -> Any:
    from timm.data import auto_augment

    return auto_augment.posterize(img, max(1, int(bits_to_keep)), **kwargs)


def _posterize_keeps_a_bit(transform: Any) -> Any:
    """timm 1.0.31's "increasing" posterize (the `inc1` of rand-m9-mstd0.5-inc1, trivialaugment)
    keeps 4 - int(m / 10 * 4) bits: 0 at magnitude 10, which m9 +- 0.5 reaches whenever the drawn
    magnitude is clipped to the top. Pillow 13 refuses 0 bits (ValueError) where older Pillows
    returned a black image, so one unlucky draw stopped a training run mid-epoch. Every posterize
    op of the policy keeps at least one bit instead (an all-black image taught nothing anyway)."""
    from timm.data import auto_augment

    seen: List[Any] = [transform]
    while seen:
        t = seen.pop()
        if isinstance(t, (tuple, list)):
            seen.extend(t)
        elif isinstance(t, auto_augment.AugmentOp):
            if t.aug_fn is auto_augment.posterize:
                t.aug_fn = _at_least_one_bit
        else:
            seen.extend(getattr(t, name) for name in ("transforms", "ops") if isinstance(getattr(t, name, None), list))
            seen.extend(sub for policy in getattr(t, "policy", None) or [] for sub in policy)  # AutoAugment
    return transform


def joint_augment(size: int, aug: AugmentCfg, crop: bool = True) -> List[Any]:
    """The training augmentation of the item-based tasks as torchvision v2 steps, which move a
    target with its image (boxes and masks follow every crop and flip): a scale-jittered crop to
    size x size (`crop`), flips, colour jitter. Detection and segmentation add their own resizing,
    conversion and clean-up around it."""
    from torchvision.transforms import v2

    steps: List[Any] = []
    if crop:
        steps.append(v2.RandomResizedCrop((size, size), scale=tuple(aug.scale), ratio=tuple(aug.ratio), antialias=True))
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip:
        steps.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.color_jitter:
        steps.append(v2.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter))
    return steps
