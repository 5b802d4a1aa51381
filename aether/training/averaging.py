"""`ema.enabled=true`: an average of the weights (EMA or SWA) is what is validated, kept as
best.ckpt, tested and exported; training itself goes on from the raw weights.

Why not Lightning's WeightAveraging (or torch's AveragedModel): both deep-copy the whole
module, so a LoRA run would hold a second frozen backbone, and Lightning puts the average into a
checkpoint only in `on_save_checkpoint`, which Lightning does not call for the weights-only
best.ckpt Aether keeps (the best checkpoint would hold the raw weights). torch's
`get_ema_multi_avg_fn` also averages integer tensors as floats and truncates them
(BatchNorm's num_batches_tracked would stop counting). Here:

* only what trains is averaged: the parameters with requires_grad and the buffers (BatchNorm
  statistics) of the modules that own such a parameter; a frozen backbone is not copied. The
  set is looked at again at each epoch start (gradual_unfreeze trains more blocks later: a
  newly trained tensor joins the average from its value at that moment). Floating tensors are
  averaged in float32 at least (a bf16 EMA would not move at decay 0.999); integer ones take
  the latest value.
* the average is swapped INTO the module from validation start until the next training epoch
  starts (copies, the same Parameter objects: the optimizer and DDP see no change), so the
  validation metrics, ModelCheckpoint's best.ckpt (weights only) and, after fit, the test and the
  exported model are the average. last.ckpt, the full checkpoint for resume=, holds the RAW
  weights in its state_dict (`on_save_checkpoint`, which Lightning calls for full checkpoints
  only) and the average in this callback's state: a resumed run continues the same average.
  A run resumed with ema.enabled=false goes on from the raw weights; one resumed with
  ema.enabled=true from a run without an average starts a new one.
* ema: after every optimizer step, avg = d * avg + (1 - d) * w with d = decay, or with
  `warmup` d = min(decay, (1 + n) / (10 + n)) after n updates (timm's and TensorFlow's ramp,
  so a short run is not an average of its random start). swa: the plain mean of the weights
  at the end of each epoch from `start_epoch` on. Before the first update nothing is swapped:
  the raw weights are validated.
* FSDP (flat, sharded parameters) is refused by the validator and here.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import lightning as L
import torch

from aether.errors import AetherError

log = logging.getLogger("aether")


def _average_copy(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.is_floating_point() and t.element_size() < 4:
        return t.float().clone()  # a half-precision average would not move at decay 0.999
    return t.clone()


class WeightAverage(L.Callback):
    """EMA or SWA of the trained tensors; see the module docstring."""

    def __init__(self, mode: str = "ema", decay: float = 0.999, warmup: bool = True, start_epoch: int = 1) -> None:
        if mode not in ("ema", "swa"):
            raise AetherError(f"ema.mode={mode}: expected ema or swa")
        self.mode, self.decay, self.warmup, self.start_epoch = mode, float(decay), bool(warmup), int(start_epoch)
        self.updates = 0  # how many weight sets the average holds (ema: optimizer steps; swa: epochs)
        self.average: Dict[str, torch.Tensor] = {}  # state_dict key -> averaged tensor
        self._live: Dict[str, torch.Tensor] = {}  # the same key -> the module's tensor
        self._aliases: Dict[str, List[str]] = {}  # a tensor under several state_dict keys (tied weights)
        self._stash: Optional[Dict[str, torch.Tensor]] = None  # raw weights while the average is swapped in
        self._loaded: Optional[Dict[str, torch.Tensor]] = None  # a resumed average, bound at first use
        self._last_step = -1
        self._swa_epoch = -1  # the last epoch (0-based) whose end weights are in the SWA mean

    # ------------------------------------------------------------ which tensors

    def _track(self, pl_module: L.LightningModule) -> None:
        """Add the tensors that train now (and their modules' buffers) to the average."""
        sd = pl_module.state_dict(keep_vars=True)
        keys_of: Dict[int, List[str]] = {}
        for key, t in sd.items():
            if isinstance(t, torch.Tensor):
                keys_of.setdefault(id(t), []).append(key)
        wanted: List[Tuple[str, torch.Tensor]] = []
        for mod_name, mod in pl_module.named_modules():
            own = list(mod.named_parameters(recurse=False))
            if not any(p.requires_grad for _, p in own):
                continue
            prefix = f"{mod_name}." if mod_name else ""
            wanted += [(prefix + n, p) for n, p in own if p.requires_grad]
            wanted += [(prefix + n, b) for n, b in mod.named_buffers(recurse=False)]
        for key, t in wanted:
            keys = keys_of.get(id(t))
            if not keys or keys[0] in self._live:
                continue  # not saved in checkpoints (a non-persistent buffer), or tracked already
            first = keys[0]
            self._live[first] = t
            self._aliases[first] = keys
            if first not in self.average:
                loaded = (self._loaded or {}).get(first)
                if loaded is not None and loaded.shape != t.shape:
                    raise AetherError(f"resume: the weight average in last.ckpt has {first} of shape "
                                      f"{tuple(loaded.shape)}, the model {tuple(t.shape)}; "
                                      "resume with ema.enabled=false")
                self.average[first] = _average_copy(t)
                if loaded is not None:
                    self.average[first].copy_(loaded)  # onto the model's device, in the average's dtype
        if self._loaded is not None:
            unknown = sorted(set(self._loaded) - set(self._live))
            if unknown:
                raise AetherError(f"resume: the weight average in last.ckpt holds {len(unknown)} tensor(s) this "
                                  f"model does not train, e.g. {unknown[0]}; resume with ema.enabled=false")
            self._loaded = None

    # ------------------------------------------------------------ averaging and swapping

    @torch.no_grad()
    def _update(self) -> None:
        if self.updates == 0:
            for key, t in self._live.items():
                self.average[key].copy_(t)
        else:
            if self.mode == "ema":
                d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
                weight = 1.0 - d
            else:
                weight = 1.0 / (self.updates + 1)  # running mean of updates + 1 weight sets
            floats = [k for k, a in self.average.items() if a.is_floating_point()]
            if floats:
                avg = [self.average[k] for k in floats]
                cur = [self._live[k].detach().to(a.dtype) for k, a in zip(floats, avg)]
                torch._foreach_lerp_(avg, cur, weight)
            for key, a in self.average.items():
                if not a.is_floating_point():
                    a.copy_(self._live[key])  # integers (num_batches_tracked): the latest value
        self.updates += 1

    @torch.no_grad()
    def _swap_in(self) -> None:
        if self._stash is not None or self.updates == 0:
            return
        self._stash = {k: t.detach().clone() for k, t in self._live.items()}
        for key, t in self._live.items():
            t.copy_(self.average[key])

    @torch.no_grad()
    def _swap_out(self) -> None:
        if self._stash is None:
            return
        for key, t in self._live.items():
            t.copy_(self._stash[key])
        self._stash = None

    def _epoch_counts(self, trainer: L.Trainer) -> bool:
        return trainer.current_epoch + 1 >= self.start_epoch

    def _swa_epoch_end(self, trainer: L.Trainer) -> None:
        """The SWA mean takes this epoch's final weights once (before it is validated)."""
        if self.mode == "swa" and self._swa_epoch < trainer.current_epoch and self._epoch_counts(trainer):
            self._swap_out()
            self._update()
            self._swa_epoch = trainer.current_epoch

    # ------------------------------------------------------------ Lightning hooks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.strategies import FSDPStrategy

        if isinstance(trainer.strategy, FSDPStrategy):
            raise AetherError("ema.enabled=true: weight averaging does not work with trainer.strategy=fsdp "
                              "(its parameters are flat shards); use ddp or set ema.enabled=false")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._track(pl_module)  # after the strategy's own on_fit_start (gradual_unfreeze re-adds its groups)
        if trainer.max_epochs is not None and 0 < trainer.max_epochs < self.start_epoch and trainer.is_global_zero:
            log.warning("ema.start_epoch=%d is past trainer.max_epochs=%d: nothing is averaged, the raw weights "
                        "are validated and exported", self.start_epoch, trainer.max_epochs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out()  # training goes on from the raw weights
        self._track(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step <= self._last_step:
            return  # gradients still accumulating: no optimizer step yet
        self._last_step = trainer.global_step
        if self.mode == "ema" and self._epoch_counts(trainer):
            self._update()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._swa_epoch_end(trainer)
        self._swap_in()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs before ModelCheckpoint's (Lightning calls checkpoint callbacks last): an epoch
        # without validation is checkpointed with the average too, and fit ends with it in place
        self._swa_epoch_end(trainer)
        self._swap_in()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        # full checkpoints only (last.ckpt): they resume training, so they hold the raw weights
        if self._stash is None:
            return
        state = checkpoint.get("state_dict", {})
        for key, raw in self._stash.items():
            for alias in self._aliases.get(key, [key]):
                if alias in state:
                    state[alias] = raw

    def state_dict(self) -> Dict[str, Any]:
        return {"mode": self.mode, "updates": self.updates, "swa_epoch": self._swa_epoch,
                "average": dict(self.average) if self.updates else {}}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if state_dict.get("mode") != self.mode:
            log.info("ema: last.ckpt holds a %s average, this run asks for %s; starting a new average",
                     state_dict.get("mode"), self.mode)
            return
        self.updates = int(state_dict.get("updates", 0))
        self._swa_epoch = int(state_dict.get("swa_epoch", -1))
        self._loaded = dict(state_dict.get("average") or {}) if self.updates else None
        self.average, self._live, self._aliases, self._stash = {}, {}, {}, None

    def report(self) -> Dict[str, Any]:
        """metrics.json's `ema` section."""
        out: Dict[str, Any] = {"enabled": True, "mode": self.mode, "updates": self.updates,
                               "start_epoch": self.start_epoch, "tensors": len(self.average),
                               "values": int(sum(a.numel() for a in self.average.values()))}
        if self.mode == "ema":
            out.update(decay=self.decay, warmup=self.warmup)
        return out
