"""`trainer.fit_epochs_to_time` (recipe=auto's final training): the epoch count follows the time
the run has left, measured on its own epochs, and the LR schedule stretches or shrinks with it, so
a schedule ends with its decay inside the time instead of leaving time unused or being cut at a
high learning rate. Real Lightning runs on generated images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import yaml

from tests.conftest import make_folder, run_cli

FAST = ["model=test_convnext", "data.image_size=32", "data.num_workers=0", "trainer.progress=plain",
        "analysis.enabled=false", "trainer.early_stopping.enabled=false", "scheduler=onecycle", "optimizer.lr=0.01"]


def _run(tmp_path: Path, extra: List[str]) -> tuple:
    data = make_folder(tmp_path / "imgs", per_class=6)
    run = tmp_path / "run"
    r = run_cli(["+recipe=quickstart", f"data={data}", *FAST, *extra, f"hydra.run.dir={run}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    history = json.loads((run / "metrics.json").read_text())["history"]
    return r, run, history, [row["lr"] for row in history]


def test_epochs_grow_to_fill_the_time_and_the_schedule_stretches(tmp_path: Path) -> None:
    # growth is decided after epoch 1 (the first half of 3), at the first epoch's time alone: a
    # minute, not 12 s, so a first epoch slowed by a busy machine (CI: 2 cores, two test workers)
    # still leaves room for 2+ more; the 30-epoch cap ends the run within seconds all the same
    r, run, history, lrs = _run(tmp_path, ["trainer.max_epochs=3", "trainer.max_minutes=1",
                                           "trainer.fit_epochs_to_time=30"])
    n = len(history)
    assert n > 3, f"epochs did not grow: {n}"
    assert "epochs 3 -> " in r.stdout + r.stderr
    # config.yaml (what a resume trains) and the report name the epochs the run was fitted to
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == n
    # one cycle over the grown schedule: after the first epoch (at the 3-epoch schedule's peak) the
    # LR is back in a longer warm-up, rises to its peak again and has ended its decay by the last
    peak = 1 + max(range(n - 1), key=lambda i: lrs[1 + i])
    assert 2 <= peak < n // 2 and lrs[1] < lrs[peak] and lrs[peak] > 0.9 * 0.01, lrs
    assert lrs[-1] < 1e-3 * lrs[peak], lrs
    # best.ckpt: of the epochs with the best validation score, the last (the end of the schedule on a
    # plateau, not the first epoch to reach it)
    from aether.training.checkpoint_io import load_checkpoint_safely

    accs = [row["val/acc"] for row in history]
    last_best = max(i for i, a in enumerate(accs) if a == max(accs))
    assert accs.count(max(accs)) > 1, accs  # generated colours: a plateau within a few epochs
    assert load_checkpoint_safely(run / "checkpoints" / "best.ckpt")["epoch"] == history[last_best]["epoch"]


def test_epochs_shrink_to_what_the_time_holds_and_the_decay_ends_in_it(tmp_path: Path) -> None:
    r, run, history, lrs = _run(tmp_path, ["trainer.max_epochs=500", "trainer.max_minutes=0.12",
                                           "trainer.fit_epochs_to_time=500"])
    n = len(history)
    assert n < 500 and "epochs 500 -> " in r.stdout + r.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == n
    assert lrs[-1] < 1e-3 * max(lrs), lrs  # ended at the end of its decay, not cut at a high rate
    train_s = json.loads((run / "metrics.json").read_text())["time"]["train_s"]
    assert train_s < 0.12 * 60 + 3, train_s  # within its minutes, give or take an epoch's noise
