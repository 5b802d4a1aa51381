"""metrics.json: the machine-readable result of a run (the run-directory contract)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from aether.training.distributed import section


def build_metrics(rc: Any, job: Any, trainer: Any, mon: Any, train_s: float,
                  history: List[Dict[str, Any]]) -> Dict[str, Any]:
    device = "cuda" if type(trainer.accelerator).__name__.lower().startswith("cuda") else "cpu"
    price = rc.cost.gpu_per_hour if device == "cuda" else rc.cost.cpu_per_hour
    device_hours = train_s / 3600 * trainer.world_size
    test = dict(job.module.test_results)
    confusion = test.pop("confusion_matrix", None)  # classification and multilabel only
    best_score = mon.checkpoint.best_model_score
    return {
        "test": test,
        "history": history,
        "params": job.params,
        "data": job.bundle.summary(),
        "time": {
            "train_s": round(train_s, 3),
            "images_per_s": round(mon.throughput.images / train_s, 2) if train_s else 0.0,
            "data_wait_fraction": round(mon.throughput.data_wait_fraction, 4),
            "device_hours": round(device_hours, 9),
            "device": device,
            "num_devices": trainer.world_size,
            "price_per_device_hour": price,
            "currency": rc.cost.currency,
            "est_cost": round(device_hours * price, 9),
        },
        "best_checkpoint": {"path": mon.checkpoint.best_model_path or None, "monitor": rc.trainer.checkpoint.monitor,
                            "score": float(best_score) if best_score is not None else None},
        "distributed": section(trainer, getattr(mon, "params_in_sync", None)),
        "strategy": {"name": job.strategy.name, **job.strategy.report()},  # e.g. the linear probe's closed-form head
        **({"confusion_matrix": confusion} if confusion is not None else {}),
    }


def auto_section(run_dir: Path, max_epochs: Optional[int] = None) -> Dict[str, Any]:
    """metrics.json's `auto` section: the search's summary, when this run was recipe=auto's winner.
    `max_epochs`: the final training's epoch count as it ended (trainer.fit_epochs_to_time re-fits
    the one auto.json planned)."""
    path = run_dir / "auto.json"
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    final = summary.get("final") if isinstance(summary, dict) else None
    if isinstance(final, dict) and not final.get("kept") and max_epochs:
        final["epochs"] = int(max_epochs)
    return {"auto": summary}
