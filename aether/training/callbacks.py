"""Callbacks: per-epoch history (resumable), throughput and data-wait, progress display."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Dict, List, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

log = logging.getLogger("aether")


class Throughput(L.Callback):
    """Images per second over training steps, and the share of step time spent waiting on data."""

    def __init__(self) -> None:
        self.images = 0
        self.busy_s = 0.0
        self.wait_s = 0.0
        self.epoch_images = 0
        self.epoch_start = 0.0
        self.last_rate = 0.0
        self._t0 = 0.0
        self._last_end = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_images, self.epoch_start = 0, time.perf_counter()
        self._last_end = self.epoch_start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self._t0 = time.perf_counter()
        self.wait_s += self._t0 - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        # every rank's DistributedSampler shard has the same length (padded) and the same batch
        # size, so the whole job trains world_size x this rank's batch per step: count that, not
        # rank 0's share (img/s, time.images_per_s). The data wait stays rank 0's own.
        n = len(batch[1]) * trainer.world_size
        self.busy_s += now - self._t0
        self.images += n
        self.epoch_images += n
        self._last_end = now
        self.last_rate = self.epoch_images / max(1e-9, now - self.epoch_start)

    @property
    def data_wait_fraction(self) -> float:
        total = self.busy_s + self.wait_s
        return self.wait_s / total if total else 0.0


METRIC_PREFIXES = ("train/", "val/")


class BestCheckpoint(ModelCheckpoint):
    """best.ckpt: the best epoch by the monitored metric, a tie going to the later epoch.

    Lightning's ModelCheckpoint keeps the first of equal scores. On a small validation split the
    score moves in steps of one image and plateaus, so the first epoch to reach the plateau (often
    still at a high learning rate) was kept over the end of the schedule: digits, 269 validation
    images, auto's final one-cycle training, seed 3: epoch 10 of 35 kept (test 0.9814) while the
    last epoch had the same validation score and tested 0.9963."""

    @property
    def state_key(self) -> str:
        # the name Lightning files this callback's state under in last.ckpt: ModelCheckpoint's, so
        # runs checkpointed before this class resume with their best score and path
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def check_monitor_top_k(self, trainer: L.Trainer, current: Optional[torch.Tensor] = None) -> bool:
        if current is None or self.save_top_k != 1 or not self.best_k_models:
            return super().check_monitor_top_k(trainer, current)
        at_least = {"min": torch.le, "max": torch.ge}[self.mode]
        decision = bool(at_least(current, self.best_k_models[self.kth_best_model_path]))
        return trainer.strategy.reduce_boolean_decision(decision)  # every rank decides alike


def epoch_metrics(callback_metrics: Dict[str, Any]) -> Dict[str, float]:
    """The epoch's scalar train/ and val/ metrics, whatever the task logs (val/acc, val/map,
    val/map_50, val/miou ...), losses first: one list for the history, the epoch line and
    metrics.json, so a task's headline metric is never left out."""
    out: Dict[str, float] = {}
    for key in sorted(callback_metrics, key=lambda k: (not k.startswith("train/"), "loss" not in k, k)):
        value = callback_metrics[key]
        if key.startswith(METRIC_PREFIXES) and getattr(value, "numel", lambda: 1)() == 1:
            out[key] = round(float(value), 6)
    return out


class History(L.Callback):
    """One row of metrics per epoch; saved in checkpoints so a resumed run keeps its history."""

    def __init__(self, throughput: Throughput) -> None:
        self.rows: List[Dict[str, Any]] = []
        self.throughput = throughput
        self._epoch_t0 = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row: Dict[str, Any] = {"epoch": trainer.current_epoch, **epoch_metrics(trainer.callback_metrics)}
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None
        row["time_s"] = round(time.perf_counter() - self._epoch_t0, 3)
        row["images_per_s"] = round(self.throughput.last_rate, 1)
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> Dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class EpochLine(L.Callback):
    """One log line per epoch: the progress display for logs, CI and non-terminal output."""

    def __init__(self, history: History) -> None:
        self.history = history

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history.rows:
            return
        r = self.history.rows[-1]
        parts = [f"epoch {r['epoch'] + 1}/{trainer.max_epochs}"]
        parts += [f"{key} {value:.4f}" for key, value in r.items() if key.startswith(METRIC_PREFIXES)]
        parts.append(f"{r['images_per_s']:.0f} img/s")
        parts.append(f"data wait {100 * self.history.throughput.data_wait_fraction:.0f}%")
        parts.append(f"{r['time_s']:.1f}s")
        if torch.cuda.is_available():
            parts.append(f"gpu mem {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        log.info("  ".join(parts))


class AetherProgressBar(RichProgressBar):
    """Lightning's Rich bar (elapsed and ETA) with img/s and, on CUDA, GPU memory."""

    def __init__(self, throughput: Throughput) -> None:
        super().__init__(leave=True)
        self.throughput = throughput

    def get_metrics(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if self.throughput.last_rate:
            items["img/s"] = f"{self.throughput.last_rate:.0f}"
            items["data wait"] = f"{100 * self.throughput.data_wait_fraction:.0f}%"
        if torch.cuda.is_available():
            items["mem"] = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}G"
        return items


def progress_callbacks(mode: str, throughput: Throughput, history: History) -> List[L.Callback]:
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "plain"
    if mode == "rich":
        return [AetherProgressBar(throughput), EpochLine(history)]
    return [EpochLine(history)] if mode == "plain" else []


def early_stop_note(trainer: L.Trainer) -> Optional[str]:
    """The line that says a run ended before max_epochs because early stopping stopped it (a
    run that silently ends at epoch 7 of 30 looks like a crash or a bug)."""
    from lightning.pytorch.callbacks import EarlyStopping

    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, EarlyStopping) and cb.stopped_epoch:
            best = float(cb.best_score)
            return (f"early stopping: {cb.monitor} did not improve by {cb.min_delta:g} for {cb.patience} epochs "
                    f"(best {best:.4f}); stopped after epoch {cb.stopped_epoch + 1} of {trainer.max_epochs} "
                    "(trainer.early_stopping.enabled=false or a larger trainer.early_stopping.patience trains on)")
    return None
