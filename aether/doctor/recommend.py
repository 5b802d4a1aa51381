"""Smart defaults: how to train on this dataset, each choice with a one-line reason."""

from __future__ import annotations

import os
from typing import Any, Dict, List

IMBALANCE_WARN = 3.0  # max/min class count above which class weights are recommended


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


def recommend(num_images: int, counts: Dict[str, int], sizes: Dict[str, Any], hw: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    rec: Dict[str, Dict[str, Any]] = {}
    per_class = min(counts.values()) if counts else 0
    if num_images < 500 or per_class < 20:
        rec["strategy"] = {"value": "linear_probe", "reason": f"{num_images} images ({per_class} in the smallest class): "
                           "frozen pretrained features generalise best and cannot overfit much"}
    elif num_images < 5000:
        rec["strategy"] = {"value": "lora", "reason": f"{num_images} images: adapt the backbone a little "
                           "(LoRA) without the overfitting risk of a full fine-tune"}
    else:
        rec["strategy"] = {"value": "full", "reason": f"{num_images} images: enough to fine-tune every weight"}

    gpu = hw.get("gpus", 0) > 0
    if not gpu:
        rec["model"] = {"value": "convnext_atto" if num_images < 5000 else "resnet50",
                        "reason": f"CPU only ({hw.get('cpus')} cores): a small backbone keeps epochs short"}
    elif num_images < 2000:
        rec["model"] = {"value": "vit_small", "reason": "small data on a GPU: ViT-S/16 features with a light head"}
    else:
        rec["model"] = {"value": "vit_base", "reason": "thousands of images on a GPU: ViT-B/16 pays off"}

    median_side = min(sizes.get("width", {}).get("median", 224), sizes.get("height", {}).get("median", 224))
    size = 224 if median_side >= 200 else max(32, int(median_side // 32 * 32) or 32)
    rec["image_size"] = {"value": size, "reason": f"median image side {median_side:g} px"
                         + ("" if size == 224 else ": upscaling small images to 224 px adds cost, not detail")}

    if gpu:
        batch = 64 if hw.get("gpu_memory_gb", 0) >= 16 else 32
        rec["batch_size"] = {"value": batch, "reason": f"{hw['gpus']} GPU(s), {hw.get('gpu_memory_gb')} GiB"}
    else:
        rec["batch_size"] = {"value": 32, "reason": "CPU: larger batches do not run faster"}

    epochs = 30 if num_images < 1000 else 15 if num_images < 10000 else 8
    rec["epochs"] = {"value": epochs, "reason": f"{num_images} images: about "
                     f"{max(1, num_images // rec['batch_size']['value']) * epochs} optimiser steps, early stopping on"}

    from aether.doctor.stats import imbalance_ratio

    ratio = imbalance_ratio(counts)
    if ratio > IMBALANCE_WARN:
        rec["class_weights"] = {"value": "balanced", "reason": f"imbalance ratio {ratio:g} > {IMBALANCE_WARN:g}: "
                                "weight the loss so small classes count"}
    return rec


def as_overrides(rec: Dict[str, Dict[str, Any]]) -> List[str]:
    """The recommendations as command-line overrides (what `recipe=auto` will apply)."""
    out = [f"strategy={rec['strategy']['value']}", f"model={rec['model']['value']}",
           f"data.image_size={rec['image_size']['value']}", f"data.batch_size={rec['batch_size']['value']}",
           f"trainer.max_epochs={rec['epochs']['value']}"]
    if "class_weights" in rec:
        out.append("loss.class_weights=balanced")
    return out
