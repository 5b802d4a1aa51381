"""How a fit went, read from the Trainer after `fit`: best validation score, epochs done and
what ended them (recipe=auto compares candidates by it)."""

from __future__ import annotations

from typing import Any, Dict, Sequence


def candidate_result(trainer: Any, checkpoint: Any, train_s: float, history: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """How a candidate's training went: best val score, epochs done, and what ended it."""
    from lightning.pytorch.callbacks import EarlyStopping, Timer

    epochs = int(trainer.current_epoch)
    status = "complete"
    if any(isinstance(cb, EarlyStopping) and cb.stopped_epoch for cb in trainer.callbacks):
        status = "early_stopped"
    elif epochs < int(trainer.max_epochs or 0):
        status = "budget"  # the Timer (its share of the budget) ended it
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    minutes = (timer.time_elapsed("train") if timer else train_s) / 60
    score = checkpoint.best_model_score
    # an epoch's time once the decoded-image cache is built (the first epoch builds it; the
    # winner's full training reuses it): what the rest of the budget is divided by
    times = sorted(float(r["time_s"]) for r in history[1:] if r.get("time_s")) or \
        [float(r["time_s"]) for r in history[:1] if r.get("time_s")]
    epoch_s = times[len(times) // 2] if times else minutes * 60 / max(1, epochs)
    return {"score": None if score is None else float(score), "epochs": epochs, "status": status,
            "train_minutes": round(minutes, 3), "epoch_seconds": round(epoch_s, 2)}
