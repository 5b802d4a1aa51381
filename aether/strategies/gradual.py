"""`gradual_unfreeze`: train the head first, then unfreeze the backbone block groups top-down.

The schedule lives in a Lightning callback (BaseFinetuning, so a resumed run rebuilds the
optimizer's extra parameter groups); newly unfrozen groups join the optimizer with their own
learning rate (`lr_scale` x the head's) and follow the LR schedule from then on.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

from aether.errors import AetherError
from aether.models.backbone import Backbone
from aether.strategies.base import Strategy, eval_frozen_modules, layer_map

log = logging.getLogger("aether")


class GradualUnfreeze(Strategy):
    name = "gradual_unfreeze"

    def apply(self, backbone: Backbone) -> nn.Module:
        model = backbone.model
        lm = layer_map(model)
        head_names = {f"{n}" for n, p in model.named_parameters() if any(p is q for q in backbone.head.parameters())}
        top = max(lm.values())
        # depth groups below the head group, deepest first: the order they are unfrozen in
        self.groups: List[List[str]] = [
            [n for n, _ in model.named_parameters() if lm.get(n, top) == lid and n not in head_names]
            for lid in sorted({v for v in lm.values() if v != top}, reverse=True)
        ]
        self.groups = [g for g in self.groups if g]
        for n, p in model.named_parameters():
            p.requires_grad_(lm.get(n, top) == top or n in head_names)
        return model

    def unfrozen_groups_at(self, epoch: int) -> int:
        """How many block groups are trainable during `epoch` (0-based)."""
        o = self.options
        steps = sum(1 for m in o.milestones if m <= epoch) if o.milestones else epoch // o.every_n_epochs
        return min(len(self.groups), steps * o.groups_per_step)

    def on_train_mode(self, model: nn.Module) -> None:
        eval_frozen_modules(model)

    def callbacks(self) -> List[Any]:
        return [UnfreezeSchedule(self)]

    def describe(self) -> str:
        o = self.options
        when = f"at epochs {o.milestones}" if o.milestones else f"every {o.every_n_epochs} epoch(s)"
        return f"gradual_unfreeze ({len(self.groups)} block groups, {o.groups_per_step} {when}, lr x{o.lr_scale})"


class UnfreezeSchedule(BaseFinetuning):
    def __init__(self, strategy: GradualUnfreeze) -> None:
        super().__init__()
        self.strategy = strategy
        self.steps: List[Dict[str, Any]] = []  # (epoch, groups unfrozen so far) for tests and reports
        self._wrapped: Optional[frozenset] = None  # the trainable names the DDP wrapper was built with

    def freeze_before_training(self, pl_module: Any) -> None:
        pass  # the strategy froze the backbone when it was applied

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        _refuse_unsupported_strategy(trainer)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # the DDP wrapper was built just before this hook, with the parameters trainable now
        self._wrapped = _trainable(pl_module)
        super().on_fit_start(trainer, pl_module)  # a resumed run: re-adds the saved param groups
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    p.requires_grad_(True)
        _sync_schedulers(trainer)
        self._follow_in_ddp(trainer, pl_module, "at the start of the resumed run")  # groups unfrozen before

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function
        self._follow_in_ddp(trainer, pl_module, f"at epoch {trainer.current_epoch + 1}")

    def _follow_in_ddp(self, trainer: Any, pl_module: Any, when: str) -> None:
        """Several DDP processes: re-wrap the model when its trainable parameters changed, or the
        newly unfrozen ones would train on each rank's own gradients (see `rewrap_ddp`)."""
        from aether.training.distributed import rewrap_ddp

        now = _trainable(pl_module)
        if self._wrapped is not None and now != self._wrapped and rewrap_ddp(trainer):
            if trainer.is_global_zero:
                log.info("DDP: model re-wrapped %s, %d trainable parameter tensors now all-reduced (was %d)",
                         when, len(now), len(self._wrapped))
            self._wrapped = now

    def finetune_function(self, pl_module: Any, epoch: int, optimizer: Any) -> None:
        named = dict(pl_module.model.named_parameters())
        target = self.strategy.unfrozen_groups_at(epoch)
        base_lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
        base_lr /= optimizer.param_groups[0].get("lr_scale", 1.0)
        for names in self.strategy.groups[:target]:
            params = [named[n] for n in names if not named[n].requires_grad]
            if not params:
                continue
            for p in params:
                p.requires_grad_(True)
            lr = base_lr * self.strategy.options.lr_scale
            wd = max(g.get("weight_decay", 0.0) for g in optimizer.param_groups)
            optimizer.add_param_group({"params": params, "lr": lr, "initial_lr": lr, "weight_decay": wd,
                                       "lr_scale": self.strategy.options.lr_scale})
            _sync_schedulers(pl_module.trainer)  # the new group follows the LR schedule too
        eval_frozen_modules(pl_module.model)
        self.steps.append({"epoch": epoch, "groups": target})


def _trainable(pl_module: Any) -> frozenset:
    return frozenset(n for n, p in pl_module.named_parameters() if p.requires_grad)


def _refuse_unsupported_strategy(trainer: Any) -> None:
    """gradual_unfreeze changes which parameters train in the middle of a run. Under DDP Aether
    re-wraps the model when that happens; FSDP fixes `requires_grad` per flattened shard unit when
    it wraps (later unfreezing would not reach the optimizer or the gradient reduction, even on
    one device), and other multi-process strategies are not re-wrapped: refuse them by name
    rather than train silently wrong replicas."""
    from lightning.pytorch.strategies import DDPStrategy

    name = type(trainer.strategy).__name__
    if "FSDP" in name or (getattr(trainer, "world_size", 1) > 1 and not isinstance(trainer.strategy, DDPStrategy)):
        raise AetherError(f"strategy=gradual_unfreeze does not work with {name} ({trainer.world_size} process(es)): "
                          "parameters unfrozen during the run would not be trained consistently. Use trainer=ddp or "
                          "one device (trainer=default / gpu), or another strategy (full, lora)")


def _sync_schedulers(trainer: Any) -> None:
    """Give every optimizer param group a base LR (and LR function) in its scheduler: groups added
    after the scheduler was built - now or in the run being resumed - would otherwise be skipped
    by it, or break LambdaLR's one-function-per-group bookkeeping."""
    for cfg in trainer.lr_scheduler_configs:
        sched = cfg.scheduler
        groups = sched.optimizer.param_groups
        if hasattr(sched, "base_lrs"):
            sched.base_lrs = list(sched.base_lrs[:len(groups)]) + [
                g.get("initial_lr", g["lr"]) for g in groups[len(sched.base_lrs):]]
        if hasattr(sched, "lr_lambdas"):
            sched.lr_lambdas = list(sched.lr_lambdas[:len(groups)]) + [
                sched.lr_lambdas[0]] * (len(groups) - len(sched.lr_lambdas))
