"""Smart defaults: how to train on this dataset, each choice with a one-line reason.

Sizes are those of the training split (what the model learns from), and a pretrained backbone
is recommended only when its weights can be loaded here: from the Hugging Face cache, from the
hub when online, or from the user's own `model.weights` file. With none of those, a small CNN
trains from scratch at the images' own resolution.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

IMBALANCE_WARN = 3.0  # max/min class count above which class weights are recommended
# from this ratio on, weighting the loss is not enough: the smallest class appears in few
# batches, so its gradients come rarely and noisily. The balanced sampler shows every class
# equally often (focal loss, the alternative, lets the many easy images of the large classes
# count less); the two are not stacked with class weights, which would correct twice
IMBALANCE_SEVERE = 10.0

# Built-in model presets (conf/model/) worth using as frozen or adapted features, best first for
# each kind of machine; the first whose weights load wins (aether.models.weights.weights_available).
PRETRAINED_CPU = ("convnext_atto", "resnet18", "mobilenetv3", "efficientnet_b0", "deit_tiny", "vit_tiny",
                  "convnext_tiny", "resnet50", "vit_small", "deit_small", "swin_tiny", "vit_base")
PRETRAINED_GPU = ("vit_small", "vit_base", "deit_small", "convnext_tiny", "swin_tiny", "efficientnet_b0",
                  "convnext_atto", "resnet50", "resnet18", "vit_tiny", "deit_tiny", "mobilenetv3")
SCRATCH_MODEL = "resnet18"  # from scratch: the quickstart's CNN, proven on small real images
SCRATCH_MAX_SIDE = {"cpu": 128, "gpu": 224}  # from scratch, larger inputs cost more than they teach
MIN_STEPS_PER_EPOCH = 8  # fewer optimiser steps an epoch starve small data

# Training images from which the doctor recommends RandAugment (data/augment=randaugment) over the
# light crop-and-flip: below it heavy augmentation mostly adds noise to too few examples (and a few
# epochs of fine-tuning see it as such); above it the extra variety is what keeps a model from memorising.
HEAVY_AUGMENT_FROM = 2000

WeightsCheck = Callable[[str], Optional[str]]  # model preset -> "cache" | "hub" | "file" | None


def enough_steps(batch: int, n_train: int) -> int:
    """`batch`, halved (down to 8) while an epoch of `n_train` images would make fewer than
    MIN_STEPS_PER_EPOCH optimiser steps."""
    while batch > 8 and n_train // batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    return batch


def cpu_base_batch(side: int) -> int:
    """The batch size on CPU before the step rule. A CPU runs a convolution over a batch of 32
    224-px images with its cores already busy: larger batches process no more images per second,
    they only make fewer optimiser steps. Inputs of 64 px or less cost a twelfth of 224 px each,
    so 64 of them keep a step's fixed overhead small (digits at 32 px, ResNet-18, 2 idle cores:
    7.3-10.8 s an epoch at batch 32, 5.2-7.1 s at 64)."""
    return 64 if side <= 64 else 32


def cpu_batch(side: int, n_train: int) -> int:
    """The batch size on CPU: the doctor's recommendation and data.batch_size=auto."""
    return enough_steps(cpu_base_batch(side), n_train)


def hardware() -> Dict[str, Any]:
    """GPU count and memory, CPU cores - without initialising CUDA when torch is not imported yet."""
    info: Dict[str, Any] = {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                            "gpus": 0, "gpu_memory_gb": 0.0}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = torch.cuda.device_count()
            info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except Exception:  # no torch / broken driver: plan for CPU
        pass
    return info


def train_size(num_images: int, presplit_train: Optional[int], val_fraction: float, test_fraction: float) -> int:
    """Images the model trains on: the `train` split as given, or what the seeded split keeps."""
    if presplit_train is not None:
        return presplit_train
    return max(1, round(num_images * (1.0 - val_fraction - test_fraction)))


def _pick_backbone(num_train: int, hw: Dict[str, Any], weights: Optional[WeightsCheck]) -> Dict[str, Any]:
    gpu = hw.get("gpus", 0) > 0
    if not gpu:
        first = "convnext_atto" if num_train < 5000 else "resnet50"
        why = f"CPU only ({hw.get('cpus')} cores): a small backbone keeps epochs short"
    elif num_train < 2000:
        first, why = "vit_small", "small data on a GPU: ViT-S/16 features with a light head"
    else:
        first, why = "vit_base", "thousands of images on a GPU: ViT-B/16 pays off"
    if weights is None:  # no check asked for (unit tests of the rules)
        return {"value": first, "reason": why, "source": None}
    order = [first, *[m for m in (PRETRAINED_GPU if gpu else PRETRAINED_CPU) if m != first]]
    for name in order:
        source = weights(name)
        if source:
            where = {"cache": "in the local cache", "hub": "downloadable now", "file": "your model.weights"}[source]
            if name != first:
                why = f"{first}'s weights cannot be loaded here; {name}'s are {where}"
            return {"value": name, "reason": f"{why} (weights {where})", "source": source}
    return {"value": None, "reason": "no pretrained weights can be loaded here (offline, nothing in the cache, "
            "no model.weights): training from scratch", "source": None}


def recommend(num_images: int, counts: Dict[str, int], sizes: Dict[str, Any], hw: Dict[str, Any],
              num_train: Optional[int] = None, weights: Optional[WeightsCheck] = None) -> Dict[str, Dict[str, Any]]:
    """The recommendations for a dataset of `num_images` (`num_train` of them in the training split)."""
    n = num_images if num_train is None else num_train
    rec: Dict[str, Dict[str, Any]] = {}
    per_class = min(counts.values()) if counts else 0
    gpu = hw.get("gpus", 0) > 0
    backbone = _pick_backbone(n, hw, weights)
    median_side = min(sizes.get("width", {}).get("median", 224), sizes.get("height", {}).get("median", 224))

    if backbone["value"] is None:  # from scratch: the quickstart's recipe, sized to the data
        rec["strategy"] = {"value": "full", "reason": f"{n} training images and no pretrained weights: "
                           "every weight trains, from scratch"}
        rec["model"] = {"value": SCRATCH_MODEL, "reason": backbone["reason"], "pretrained": False}
        cap = SCRATCH_MAX_SIDE["gpu" if gpu else "cpu"]
        size = int(min(cap, max(32, median_side // 32 * 32)))
        rec["image_size"] = {"value": size, "reason": f"median image side {median_side:g} px: from scratch the "
                             f"images' own resolution (at most {cap} px) teaches as much as upscaling, at less cost"}
    else:
        if n < 500 or per_class < 20:
            rec["strategy"] = {"value": "linear_probe", "reason": f"{n} training images ({per_class} in the smallest "
                               "class): frozen pretrained features generalise best and cannot overfit much"}
        elif n < 5000:
            rec["strategy"] = {"value": "lora", "reason": f"{n} training images: adapt the backbone a little "
                               "(LoRA) without the overfitting risk of a full fine-tune"}
        else:
            rec["strategy"] = {"value": "full", "reason": f"{n} training images: enough to fine-tune every weight"}
        rec["model"] = {"value": backbone["value"], "reason": backbone["reason"]}
        size = 224 if median_side >= 200 else max(32, int(median_side // 32 * 32) or 32)
        rec["image_size"] = {"value": size, "reason": f"median image side {median_side:g} px"
                             + ("" if size == 224 else ": upscaling small images to 224 px adds cost, not detail")}

    rec["augment"] = augment_preset(n, scratch=backbone["value"] is None)

    if gpu:
        base = 64 if hw.get("gpu_memory_gb", 0) >= 16 else 32
        why = f"{hw['gpus']} GPU(s), {hw.get('gpu_memory_gb')} GiB"
    else:
        base = cpu_base_batch(size)
        why = f"CPU, {size} px inputs: " + ("64 a batch keeps each step's overhead small" if base == 64
                                           else "larger batches do not run faster")
    batch = enough_steps(base, n)
    rec["batch_size"] = {"value": batch, "reason": why if batch == base else (
        f"{n} training images: small batches give at least {MIN_STEPS_PER_EPOCH} optimiser steps an epoch")}

    epochs = 30 if n < 1000 else 15 if n < 10000 else 8
    rec["epochs"] = {"value": epochs, "reason": f"{n} training images: about "
                     f"{max(1, n // rec['batch_size']['value']) * epochs} optimiser steps, early stopping on"}

    from aether.doctor.stats import imbalance_ratio

    ratio = imbalance_ratio(counts)
    imbalance = imbalance_advice(ratio, counts)
    if imbalance:
        rec[imbalance[0]] = imbalance[1]
    return rec


def augment_preset(num_train: int, scratch: bool = False) -> Dict[str, Any]:
    """The data/augment preset for `num_train` training images (conf/data/augment/)."""
    if scratch:  # what scratch_overrides() applies
        return {"value": "none", "reason": f"{num_train} training images, a small CNN from scratch: clean images "
                "(the quickstart's recipe; augmentation slowed it more than it helped)"}
    if num_train < HEAVY_AUGMENT_FROM:
        return {"value": "light", "reason": f"{num_train} training images (< {HEAVY_AUGMENT_FROM:,}): crop and flip "
                "only; heavy augmentation on few images mostly adds noise"}
    return {"value": "randaugment", "reason": f"{num_train} training images (>= {HEAVY_AUGMENT_FROM:,}): "
            "RandAugment and random erasing add the variety that keeps a model from memorising"}
def imbalance_advice(ratio: float, counts: Dict[str, int]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(recommendation name, {value, reason}) for a class imbalance of `ratio` (largest / smallest
    class): the balanced sampler from IMBALANCE_SEVERE on, class weights above IMBALANCE_WARN."""
    if ratio >= IMBALANCE_SEVERE:
        small = min(counts, key=lambda c: counts[c]) if counts else "?"
        return "sampler", {"value": "balanced", "reason": (
            f"imbalance ratio {ratio:g} >= {IMBALANCE_SEVERE:g} (smallest class '{small}', {counts.get(small, 0)} "
            "images): weighting the loss still shows the small classes in few batches; the balanced sampler "
            "(data.sampler=balanced) draws every class equally often. Alternative: loss.name=focal "
            "(the many easy images of the large classes count less)")}
    if ratio > IMBALANCE_WARN:
        return "class_weights", {"value": "balanced", "reason": f"imbalance ratio {ratio:g} > {IMBALANCE_WARN:g}: "
                                 "weight the loss so small classes count"}
    return None


def as_overrides(rec: Dict[str, Dict[str, Any]]) -> List[str]:
    """The recommendations as command-line overrides (what `recipe=auto` will apply)."""
    if rec["model"].get("encoder_only"):  # detection / segmentation: sizes and epochs are the task's
        out = [f"strategy={rec['strategy']['value']}", f"model={rec['model']['value']}"]
        return out + (["model.pretrained=false", "model.weights=null"] if rec["model"].get("pretrained") is False else [])
    out = [f"strategy={rec['strategy']['value']}", f"model={rec['model']['value']}",
           f"data.image_size={rec['image_size']['value']}", f"data.batch_size={rec['batch_size']['value']}",
           f"trainer.max_epochs={rec['epochs']['value']}"]
    if rec["model"].get("pretrained") is False:
        out += scratch_overrides()  # its data/augment=none is the augment recommendation
    elif "augment" in rec:
        out.append(f"data/augment={rec['augment']['value']}")
    if "class_weights" in rec:
        out.append("loss.class_weights=balanced")
    if "sampler" in rec:
        out.append(f"data.sampler={rec['sampler']['value']}")
    return out


def scratch_overrides() -> List[str]:
    """What a from-scratch CNN needs beyond its model: no pretrained weights, the quickstart's
    one-cycle schedule and weight decay, no augmentation (small data punishes heavy augmentation)."""
    return ["model.pretrained=false", "model.weights=null", "scheduler=onecycle", "optimizer.weight_decay=0.05",
            "data/augment=none", "data.crop_pct=1.0"]


ENCODER_TASK_LR = {"full": 5e-4, "lora": 1e-3, "scratch": 1e-3}  # AdamW, the detection/segmentation recipes' rates


def recommend_encoder_only(task: str, num_train: int, hw: Dict[str, Any],
                    weights: Optional[WeightsCheck]) -> Dict[str, Dict[str, Any]]:
    """Detection / segmentation: the encoder (pretrained only when its weights load) and the strategy;
    input size, batch size and epochs are fitted to the boxes or masks by the task itself."""
    backbone = _pick_backbone(num_train, hw, weights)
    if backbone["value"] is None:
        return {"strategy": {"value": "full", "reason": f"{num_train} training images, no pretrained weights: "
                             f"the {task} network trains from scratch"},
                "model": {"value": SCRATCH_MODEL, "reason": backbone["reason"], "pretrained": False, "encoder_only": True}}
    return {"strategy": {"value": "full", "reason": f"{task}: the heads are new, the pretrained encoder adapts "
                         "with them (full fine-tune, small LR)"},
            "model": {"value": backbone["value"], "reason": backbone["reason"], "encoder_only": True}}
