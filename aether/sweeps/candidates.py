"""What `+recipe=auto` tries: a few candidate set-ups, each a list of overrides and a reason.

On small data the winners are usually cheap: frozen features with a solved linear head, or a
small CNN from scratch when the images are small; LoRA and a full fine-tune with layer-wise LR
decay win once there is more data. The search (aether.sweeps.auto_search) measures them on the
validation split within a time budget instead of guessing. Only what can be loaded is planned:
pretrained candidates need weights (cache, hub or `model.weights`), and nothing the user set on
the command line is changed by any candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Set

from aether.doctor.recommend import SCRATCH_MAX_SIDE, SCRATCH_MODEL, scratch_overrides

# Learning rates that work across backbones for each strategy (AdamW, batch 32), scaled linearly
# with the batch size: the usual starting points of timm/PEFT fine-tuning recipes; from scratch,
# the quickstart's one-cycle peak.
BASE_LR = {"linear_probe": 1e-3, "lora": 5e-4, "qlora": 5e-4, "gradual_unfreeze": 3e-4, "full": 1e-4,
           "scratch": 1.5e-3}
# In the search, LoRA and the layer-decayed full fine-tune train for minutes, not hours: measured on
# the digits from transferred weights (3 epochs), LLRD with the head at 3x the full LR reached val
# 0.60, at 10x 0.87, and at 10x without augmentation 0.98 (LoRA 5e-4 with augmentation 0.52, 1e-3
# without 0.93). Augmentation pays off over long schedules; a few epochs only see it as noise (and
# flips change glyphs). The from-scratch pair below measures augmentation explicitly.
SEARCH_LR_SCALE = {"lora": 2.0, "full": 10.0}
# The solved head is validated first; a few epochs refine it. As many as the search's epochs, so
# the search runs its whole schedule and the final training keeps it as trained: more epochs
# moved nothing (digits from transferred weights: val 0.9628 after 3 epochs and after 20) and
# the time goes to a challenger that still gains
PROBE_EPOCHS = SEARCH_EPOCHS = 3  # SEARCH_EPOCHS: each candidate's schedule while it is measured
LAYER_DECAY = 0.75
PLAN_SEP = " | "  # `auto.plan.NAME: "overrides | reason"`


@dataclass
class Candidate:
    name: str
    overrides: List[str]
    reason: str

    def encode(self) -> str:
        return " ".join(self.overrides) + PLAN_SEP + self.reason

    @classmethod
    def decode(cls, name: str, text: str) -> "Candidate":
        overrides, _, reason = text.partition(PLAN_SEP)
        return cls(name, overrides.split(), reason)


def learning_rate(strategy: str, batch_size: int) -> float:
    return float(f"{BASE_LR.get(strategy, 1e-4) * batch_size / 32:.3g}")


def default_budget(num_train: int, hw: Dict[str, Any]) -> Dict[str, Any]:
    """Minutes for search and final training together: a few thousand small images on 2 CPU cores
    in 5 minutes; more data (or a slower machine) buys proportionally more time, up to a cap."""
    if hw.get("gpus", 0) > 0:
        minutes = min(120.0, 10.0 * max(1.0, num_train / 50000))
        return {"value": round(minutes, 1), "reason": f"{num_train} training images on {hw['gpus']} GPU(s)"}
    minutes = min(60.0, 5.0 * max(1.0, num_train / 5000) * max(1.0, 2 / max(1, int(hw.get("cpus") or 1))))
    return {"value": round(minutes, 1), "reason": f"{num_train} training images on {hw.get('cpus')} CPU cores"}


def plan(rec: Dict[str, Dict[str, Any]], user: Dict[str, str], num_train: int, median_side: float,
         gpu: bool, model_label: str = "") -> List[Candidate]:
    """The candidates for recommendations `rec` (recipe=auto's base choices); `user` maps the config
    keys (and groups) the user set to their values: no candidate changes them."""
    if rec["model"].get("encoder_only"):
        return [c for c in (_without(c, user) for c in _encoder_task_plan(rec, model_label)) if c is not None]
    batch = int(rec["batch_size"]["value"])
    epochs = int(rec["epochs"]["value"])
    pretrained = rec["model"].get("pretrained", True)
    out: List[Candidate] = []
    if pretrained:
        model = model_label or rec["model"]["value"]
        out.append(Candidate("probe", ["strategy=linear_probe", "strategy.head_init=logreg",
                                       f"optimizer.lr={learning_rate('linear_probe', batch)}",
                                       f"trainer.max_epochs={PROBE_EPOCHS}"],
                             f"frozen {model} features + a logistic regression solved on them, refined briefly"))
        out.append(Candidate("lora", ["strategy=lora", "strategy.r=8", "strategy.alpha=16",
                                      f"optimizer.lr={learning_rate('lora', batch) * SEARCH_LR_SCALE['lora']:.3g}",
                                      "data/augment=none", f"trainer.max_epochs={epochs}"],
                             f"LoRA r=8 adapters on {model}: adapts features a little, few trainable weights; "
                             "no augmentation"))
        out.append(Candidate("full_llrd", ["strategy=full", f"strategy.layer_decay={LAYER_DECAY}",
                                           f"optimizer.lr={learning_rate('full', batch) * SEARCH_LR_SCALE['full']:.3g}",
                                           "data/augment=none", f"trainer.max_epochs={epochs}"],
                             f"every weight of {model}, layer-wise LR decay {LAYER_DECAY} (the head at "
                             f"{SEARCH_LR_SCALE['full']:g}x the full fine-tune LR); no augmentation"))
    small_images = median_side <= 64
    their_weights = any(k in user for k in ("model.weights", "model.pretrained"))  # their file is the point
    if not their_weights and (not pretrained or small_images or num_train >= 2000):
        cap = SCRATCH_MAX_SIDE["gpu" if gpu else "cpu"]
        size = int(min(cap, max(32, median_side // 32 * 32)))
        base = ["strategy=full", f"model={SCRATCH_MODEL}", *scratch_overrides(), f"data.image_size={size}",
                f"optimizer.lr={learning_rate('scratch', batch)}", f"trainer.max_epochs={max(epochs, 8)}"]
        why = ("no pretrained weights" if not pretrained else
               f"{median_side:g} px images" if small_images else f"{num_train} training images")
        out.append(Candidate("scratch", base, f"{model_label or SCRATCH_MODEL} from scratch at {size} px ({why}): "
                             "one-cycle LR, no augmentation"))
        # benchmarks/techniques.py: from scratch, EMA + label smoothing had the best mean on both real
        # sets (within seed noise), light augmentation lost a little on both: the second candidate
        # is the first with EMA and smoothing, still on clean images
        out.append(Candidate("scratch_ema", [*base, "ema.enabled=true", "loss.label_smoothing=0.1"],
                             "the same with an EMA of the weights and label smoothing 0.1"))
    return [c for c in (_without(c, user) for c in out) if c is not None]


def _encoder_task_plan(rec: Dict[str, Dict[str, Any]], model_label: str) -> List[Candidate]:
    """Detection / segmentation: a pretrained encoder fine-tuned in full and with LoRA; without
    weights, the one from-scratch network (given the whole budget)."""
    from aether.doctor.recommend import ENCODER_TASK_LR

    model = model_label or rec["model"]["value"]
    if rec["model"].get("pretrained") is False:
        return [Candidate("scratch", ["strategy=full", f"optimizer.lr={ENCODER_TASK_LR['scratch']}"],
                          f"{model} encoder and heads from scratch (no pretrained weights)")]
    return [Candidate("full", ["strategy=full", f"optimizer.lr={ENCODER_TASK_LR['full']}"],
                      f"pretrained {model} encoder fine-tuned with the new heads"),
            Candidate("lora", ["strategy=lora", "strategy.r=8", "strategy.alpha=16", f"optimizer.lr={ENCODER_TASK_LR['lora']}"],
                      f"LoRA r=8 on the pretrained {model} encoder, the heads train in full")]


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _without(c: Candidate, user: Dict[str, str]) -> "Candidate | None":
    """The candidate without what the user fixed; None when it contradicts the user's choice of
    strategy (they asked for LoRA: no probe, no full fine-tune). A user's model stays their model
    (a from-scratch candidate then trains their architecture from scratch)."""
    for o in c.overrides:
        if _key(o) == "strategy" and "strategy" in user and user["strategy"] != o.split("=", 1)[1]:
            return None
    model_set = any(k == "model" or k.startswith("model.") for k in user)
    keep = [o for o in c.overrides if _key(o) not in user and not (_key(o) == "model" and model_set)]
    return Candidate(c.name, keep, c.reason)


def keys_of(overrides: Sequence[str]) -> Set[str]:
    return {_key(o) for o in overrides}
