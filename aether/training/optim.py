"""Optimizers and LR schedulers (registered by name in aether.catalog).

Schedulers are step-based LambdaLR functions where possible: their state holds only the step
count, so a resumed run with a larger `trainer.max_epochs` stretches the schedule instead of
failing (torch's OneCycleLR, for one, stores its total and refuses to step past it).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import torch

from aether.training import optim_options as s


def _with_lr(groups: List[Dict[str, Any]], lr: float) -> List[Dict[str, Any]]:
    return [{**g, "lr": lr * g.get("lr_scale", 1.0)} for g in groups]


def build_adamw(groups: List[Dict[str, Any]], o: s.AdamWCfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(_with_lr(groups, o.lr), lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def build_adam(groups: List[Dict[str, Any]], o: s.AdamCfg) -> torch.optim.Optimizer:
    return torch.optim.Adam(_with_lr(groups, o.lr), lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def build_sgd(groups: List[Dict[str, Any]], o: s.SGDCfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(_with_lr(groups, o.lr), lr=o.lr, momentum=o.momentum,
                           nesterov=o.nesterov and o.momentum > 0)


def _per_step(optimizer: torch.optim.Optimizer, fn: Callable[[int], float]) -> Dict[str, Any]:
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "interval": "step"}


def build_cosine(optimizer: torch.optim.Optimizer, o: s.CosineCfg, steps_per_epoch: int,
                 max_epochs: int) -> Optional[Dict[str, Any]]:
    total = max(1, steps_per_epoch * max_epochs)
    warmup = min(int(round(o.warmup_epochs * steps_per_epoch)), total - 1)

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return _per_step(optimizer, fn)


def build_onecycle(optimizer: torch.optim.Optimizer, o: s.OneCycleCfg, steps_per_epoch: int,
                   max_epochs: int) -> Optional[Dict[str, Any]]:
    total = max(2, steps_per_epoch * max_epochs)
    up = max(1, int(o.pct_start * total))
    start, end = 1.0 / o.div_factor, 1.0 / (o.div_factor * o.final_div_factor)

    def cos(a: float, b: float, t: float) -> float:
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    def fn(step: int) -> float:
        return cos(start, 1.0, step / up) if step < up else cos(1.0, end, (step - up) / max(1, total - up))

    return _per_step(optimizer, fn)


def build_step(optimizer: torch.optim.Optimizer, o: s.StepCfg, steps_per_epoch: int,
               max_epochs: int) -> Optional[Dict[str, Any]]:
    return {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, o.step_size, o.gamma), "interval": "epoch"}


def build_plateau(optimizer: torch.optim.Optimizer, o: s.PlateauCfg, steps_per_epoch: int,
                  max_epochs: int) -> Optional[Dict[str, Any]]:
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=o.mode, factor=o.factor, patience=o.patience)
    return {"scheduler": sched, "interval": "epoch", "monitor": o.monitor}


def build_constant(optimizer: torch.optim.Optimizer, o: Any, steps_per_epoch: int,
                   max_epochs: int) -> Optional[Dict[str, Any]]:
    return None
