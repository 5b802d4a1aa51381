"""DDP on CPU (gloo, 2 processes) through the real CLI: one run folder, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import AETHER, SHRINK, make_folder, run_cli, run_in_process


def _shape(x: Any) -> Any:
    """The structure of a metrics.json: keys, list lengths and value types, not the values."""
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_shape(v) for v in x]
    return "number" if isinstance(x, (int, float)) else type(x).__name__


def test_ddp_two_cpu_processes_one_run_dir(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs", per_class=12)
    common = [*SHRINK, f"data={folder}", "trainer.max_epochs=1", "model.pretrained=false",
              "data.batch_size=4"]
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli([*common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=wandb",
                    f"hydra.run.dir={work / 'run'}"], cwd=work, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: 2 processes" in proc.stdout, proc.stdout[-3000:]

    # exactly one run folder (no second ${now} folder, no per-rank .hydra/ or logs outside it)
    configs = sorted(p.parent.relative_to(work) for p in work.rglob("config.yaml") if ".hydra" not in p.parts)
    assert configs == [Path("run")], configs
    assert sorted(p.name for p in work.iterdir()) == ["run"]
    run = work / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not list(run.rglob("*train_ddp_process*"))
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one W&B run, from rank 0
    ddp = json.loads((run / "metrics.json").read_text())

    single = tmp_path / "single"
    run_in_process(single, [*common[len(SHRINK):], "logger=wandb"])
    one = json.loads((single / "metrics.json").read_text())
    # the same `distributed` section either way; only its verdict is null for one process
    assert ddp["distributed"] == {"world_size": 2, "strategy": "DDPStrategy", "params_in_sync": True}
    assert one["distributed"]["world_size"] == 1 and one["distributed"]["params_in_sync"] is None
    ddp["distributed"]["params_in_sync"] = None
    assert _shape(ddp) == _shape(one)
    # the test split is scored over both ranks' shards (synced metrics), not one rank's half
    assert sum(c["support"] for c in ddp["test"]["per_class"].values()) == ddp["data"]["num_test"]


def test_ddp_multilabel_scores_and_tunes_on_every_ranks_images(tmp_path: Path) -> None:
    """Multilabel's thresholds and test metrics come from gathered predictions (not torchmetrics
    states): under DDP they cover both ranks' shards, as one process's do."""
    from tests.tasks_data import write_multilabel

    manifest = write_multilabel(tmp_path / "ml", n=40)
    common = [f"data={manifest}", "trainer.max_epochs=1", "model.pretrained=false", "data.batch_size=4"]
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli([*SHRINK, *common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                    f"hydra.run.dir={work / 'run'}"], cwd=work, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((work / "run" / "metrics.json").read_text())
    run_in_process(tmp_path / "single", common)
    one = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert ddp["data"]["task"] == "multilabel" and ddp["distributed"]["world_size"] == 2
    support = {c: v["support"] for c, v in ddp["test"]["per_class"].items()}
    assert support == {c: v["support"] for c, v in one["test"]["per_class"].items()} and sum(support.values()) > 0


def test_multirun_with_ddp_one_folder_per_trial(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs", per_class=12)
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli(["-m", *SHRINK, f"data={folder}", "trainer.max_epochs=1", "data.batch_size=4", "trainer=ddp",
                    "trainer.accelerator=cpu", "trainer.devices=2", "optimizer.lr=1e-3,3e-3",
                    f"hydra.sweep.dir={work / 'sweep'}"], cwd=work, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("distributed: 2 processes") == 2  # each trial starts its own ranks
    assert sorted(p.name for p in work.iterdir()) == ["sweep"]
    lrs = []
    for trial in ("0", "1"):
        assert (work / "sweep" / trial / "metrics.json").is_file()
        assert (work / "sweep" / trial / "checkpoints" / "last.ckpt").is_file()
        lrs.append(next(line for line in (work / "sweep" / trial / "config.yaml").read_text().splitlines()
                        if line.strip().startswith("lr:")).split(":")[1].strip())
    assert lrs == ["0.001", "0.003"]
    # one folder per trial (no per-rank folders), plus the sweep's own files: its summary has both trials
    entries = {p.name for p in (work / "sweep").iterdir()}
    assert {p for p in entries if p.isdigit()} == {"0", "1"}
    assert {"multirun.yaml", "summary.csv", "summary.json", "best_recipe.yaml"} <= entries
    assert len((work / "sweep" / "summary.csv").read_text().strip().splitlines()) == 3  # header + 2 trials


def test_ddp_gradual_unfreeze_keeps_ranks_in_sync(tmp_path: Path) -> None:
    """A block group unfrozen at epoch 1 joins DDP's gradient all-reduce (the model is re-wrapped):
    without that each rank would step it on its own gradients and the replicas would drift."""
    folder = make_folder(tmp_path / "imgs", per_class=8)
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli([*SHRINK, f"data={folder}", "model.pretrained=false", "data.batch_size=4", "trainer.max_epochs=2",
                    "strategy=gradual_unfreeze", "strategy.every_n_epochs=1", "strategy.lr_scale=1.0",
                    "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.run.dir={work / 'run'}"],
                   cwd=work, timeout=300, env={"OMP_NUM_THREADS": "1", "AETHER_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["distributed"] == {"world_size": 2, "strategy": "DDPStrategy", "params_in_sync": True}
    # both ranks filled one shared image cache per split, sealed once (no partial left behind)
    caches = sorted(p.name for p in (tmp_path / "cache" / "images").iterdir())
    assert len(caches) == 3 and not [c for c in caches if "." in c], caches
    assert "DDP: model re-wrapped at epoch 2" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    assert "OUT OF SYNC" not in proc.stdout + proc.stderr
    # img/s counts both ranks' images: each rank trains floor(ceil(n/2) / 4) full batches an epoch
    n, t = metrics["data"]["num_train"], metrics["time"]
    images = 2 * 2 * (-(-n // 2) // 4) * 4  # epochs x ranks x batches x batch size
    assert abs(t["images_per_s"] * t["train_s"] - images) < 0.02 * images, (t, n)


def test_torchrun_ranks_share_one_run_dir_and_one_cache(tmp_path: Path) -> None:
    """Ranks started by an external launcher (torchrun here; srun alike) compose the same command
    line without creating anything; rank 0's Hydra makes the one run folder."""
    import sys

    folder = make_folder(tmp_path / "imgs", per_class=8)
    work = tmp_path / "work"
    work.mkdir()
    torchrun = str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "--no-python", AETHER, *SHRINK,
                           f"data={folder}", "model.pretrained=false", "data.batch_size=4", "trainer=ddp",
                           "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.run.dir={work / 'run'}"],
                          cwd=work, capture_output=True, text=True, timeout=300,
                          # a run folder left in the environment (as an earlier in-process run leaves it) must
                          # not make torchrun's rank 1 train from that folder's config
                          env={**os.environ, "OMP_NUM_THREADS": "1", "AETHER_CACHE": str(tmp_path / "cache"),
                               "AETHER_RUN_DIR": str(tmp_path / "an-earlier-run")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in work.iterdir()) == ["run"]
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["distributed"] == {"world_size": 2, "strategy": "DDPStrategy", "params_in_sync": True}
    assert sum(c["support"] for c in metrics["test"]["per_class"].values()) == metrics["data"]["num_test"]
    # both ranks filled the same cache per split (a rank's own would be left unsealed)
    caches = sorted(p.name for p in (tmp_path / "cache" / "images").iterdir())
    assert len(caches) == 3 and not [c for c in caches if "." in c], caches


def test_fsdp_two_cpu_processes_exports_full_weights(tmp_path: Path) -> None:
    """FSDP over gloo: after fit every rank holds a shard; the test split and the exported model/
    use the full weights of best.ckpt (not rank 0's shard)."""
    import torch

    from aether.models.saved import load_model_dir

    folder = make_folder(tmp_path / "imgs", per_class=8)
    work = tmp_path / "work"
    work.mkdir()
    fsdp = [*SHRINK, "model=test_vit", f"data={folder}", "model.pretrained=false", "data.batch_size=4",
            "trainer.max_epochs=1", "trainer=fsdp", "trainer.accelerator=cpu", "trainer.precision=32"]
    proc = run_cli([*fsdp, "trainer.devices=2", f"hydra.run.dir={work / 'run'}"], cwd=work, timeout=300,
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = work / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["distributed"] == {"world_size": 2, "strategy": "CPUFSDPStrategy", "params_in_sync": None}
    assert sum(c["support"] for c in metrics["test"]["per_class"].values()) == metrics["data"]["num_test"]
    model, classes, _ = load_model_dir(run / "model")
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    exported = model.state_dict()
    assert {f"model.{k}" for k in exported} == {k for k in best if k.startswith("model.")}
    for k, v in exported.items():
        assert torch.equal(v, best[f"model.{k}"]), k
    x = torch.randn(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, len(classes))

    # gradual_unfreeze cannot follow its schedule under FSDP: refused by name, before training
    proc = run_cli([*fsdp, "trainer.devices=1", "strategy=gradual_unfreeze", f"hydra.run.dir={work / 'refused'}"],
                   cwd=work, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "strategy=gradual_unfreeze does not work with CPUFSDPStrategy" in proc.stderr, proc.stderr[-3000:]
