"""Sweeps as users run them: grids and Optuna searches through the `aether` command, each trial a
normal run folder; summaries and a best recipe that re-runs; resume after a kill; pruning;
parallel trials with joblib (and W&B offline runs grouped by sweep); recipe=auto's choices."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import AETHER, make_folder, run_cli, wandb_offline_run

# A LoRA recipe shrunk to seconds: the tiny test ViT, 32 px, few batches, no post-test analysis
TINY = ["+recipe=vit_lora", "data=imgs", "model=test_vit", "data.image_size=32", "data.batch_size=8",
        "data.num_workers=0", "trainer.progress=plain", "trainer.early_stopping.enabled=false", "analysis.enabled=false",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
CHECK_RUN = Path("/work/shared/tools/check_run.py")


def _summary(sweep: Path) -> list:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _check_run(run: Path) -> None:
    if CHECK_RUN.is_file():
        r = subprocess.run([sys.executable, str(CHECK_RUN), str(run)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_grid_2x2_gives_4_run_dirs_and_a_summary_with_4_rows(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", per_class=8)
    sweep = tmp_path / "grid"
    r = run_cli(["-m", *TINY, "trainer.max_epochs=1", "optimizer.lr=1e-3,3e-3", "strategy.r=4,8",
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1", "2", "3"]
    rows = _summary(sweep)
    assert len(rows) == 4 and {row["state"] for row in rows} == {"COMPLETE"}
    assert {(float(row["optimizer.lr"]), int(row["strategy.r"])) for row in rows} == \
        {(1e-3, 4), (1e-3, 8), (3e-3, 4), (3e-3, 8)}
    values = [float(row["val/acc"]) for row in rows]
    assert values == sorted(values, reverse=True)  # best first
    assert json.loads((sweep / "summary.json").read_text())["counts"]["COMPLETE"] == 4
    for png in ("optimization_history.png", "param_importance.png"):
        assert (sweep / png).stat().st_size > 1000
    _check_run(sweep / "0")


def test_a_killed_sweep_continues_without_repeating_finished_trials(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", per_class=8)
    sweep = tmp_path / "sweep"
    args = [AETHER, *TINY, "trainer.max_epochs=1", "+sweep=lora_optuna",
            "sweep.n_trials=3", f"hydra.sweep.dir={sweep}"]
    p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True, env=os.environ.copy())
    deadline = time.time() + 120
    while not (sweep / "1" / ".hydra").is_dir() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # trial 0 finished, trial 1 running: killed
    p.wait()
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1" / "metrics.json").is_file()
    first_done = (sweep / "0" / "metrics.json").stat().st_mtime_ns

    r = run_cli(args[1:], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "trial 1 was interrupted; retrying it" in log
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == first_done  # not re-run
    summary = json.loads((sweep / "summary.json").read_text())
    states = {t["trial"]: t["state"] for t in summary["trials"]}
    assert states[1] == "FAIL" and sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 3
    params = {t["trial"]: t["params"] for t in summary["trials"]}
    assert params[2] == params[1]  # the killed trial, retried with its parameters
    assert "1 of 3 trials already finished" in log
    # the first trial started from the recipe's own values (vit_lora: r=8, alpha=16)
    first = yaml.safe_load((sweep / "0" / "config.yaml").read_text())
    assert first["strategy"]["r"] == 8 and first["strategy"]["alpha"] == 16 and first["sweep"]["trial"] == 0


def test_optuna_sweep_prunes_a_bad_trial_and_its_best_recipe_reruns(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", per_class=8)
    (tmp_path / "conf" / "sweep").mkdir(parents=True)  # a user's own sweep file, found in ./conf
    (tmp_path / "conf" / "sweep" / "lr_check.yaml").write_text(
        "# @package _global_\n# two sound learning rates, then one that cannot learn\n"
        "defaults:\n  - override /hydra/sweeper: aether_optuna\n"
        "sweep:\n  name: lr_check\n  n_trials: 3\n  pruner: median\n  pruner_warmup_epochs: 1\n"
        "  pruner_startup_trials: 2\n  start_from_config: false\n"
        "  params:\n    optimizer.lr: choice(0.003, 1.0e-9)\n    strategy.r: choice(4, 8)\n"
        "  enqueue:\n    - {optimizer.lr: 0.003, strategy.r: 4}\n    - {optimizer.lr: 0.003, strategy.r: 8}\n"
        "    - {optimizer.lr: 1.0e-9, strategy.r: 8}\n")
    sweep = tmp_path / "sweep"
    r = run_cli([*TINY, "trainer.max_epochs=3", "trainer.limit_train_batches=3", "scheduler=none",
                 "+sweep=lr_check", f"hydra.sweep.dir={sweep}"], tmp_path)  # no -m: +sweep implies it
    assert r.returncode == 0, r.stderr[-3000:]
    assert (sweep / "optuna.db").is_file()
    rows = {int(row["trial"]): row for row in _summary(sweep)}
    assert [rows[i]["state"] for i in range(3)] == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = json.loads((sweep / "2" / "metrics.json").read_text())
    assert bad["sweep"]["state"] == "pruned" and len(bad["history"]) < 3  # stopped early
    assert len(json.loads((sweep / "0" / "metrics.json").read_text())["history"]) == 3
    _check_run(sweep / "2")  # a pruned trial is still a complete run folder
    assert "trial 2: **pruned** after epoch 2" in (sweep / "2" / "report.md").read_text()

    best = json.loads((sweep / "summary.json").read_text())["best"]
    assert best["params"]["optimizer.lr"] == 0.003
    (tmp_path / "recipes").mkdir()
    shutil.copy(sweep / "best_recipe.yaml", tmp_path / "recipes" / "best_recipe.yaml")
    r = run_cli(["+recipe=best_recipe", "hydra.run.dir=rerun"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    again = yaml.safe_load((tmp_path / "rerun" / "config.yaml").read_text())
    trial = yaml.safe_load((sweep / best["run_dir"] / "config.yaml").read_text())
    trial.pop("sweep")
    assert again.pop("recipe") == "best_recipe" and trial.pop("recipe") == "vit_lora"
    assert again == trial  # the same model, strategy, optimizer values, data and trainer
    _check_run(tmp_path / "rerun")


def test_parallel_trials_with_joblib_and_wandb_runs_grouped_by_sweep(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", per_class=8)
    sweep = tmp_path / "sweep"
    r = run_cli([*TINY, "trainer.max_epochs=1", "+sweep=lora_optuna", "sweep.n_trials=2", "logger=wandb",
                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"], tmp_path,
                env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "joblib" in (r.stdout + r.stderr).lower()
    rows = _summary(sweep)
    assert len(rows) == 2
    for n in ("0", "1"):
        m = json.loads((sweep / n / "metrics.json").read_text())
        assert set(m["sweep"]["reported"]) == {"0"}  # the worker reached its trial in the study
        cfg = yaml.safe_load((sweep / n / "config.yaml").read_text())
        assert cfg["logger"]["group"] == "lora_optuna-sweep"  # one W&B group per sweep
        wb = wandb_offline_run(sweep / n)  # each trial its own offline run, with the values it tried
        assert wb["config"]["optimizer.lr"] == cfg["optimizer"]["lr"]
        assert wb["config"]["strategy.r"] == cfg["strategy"]["r"]


def test_sweep_through_the_submitit_launcher(tmp_path: Path) -> None:
    """hydra-submitit-launcher (the `slurm` extra, in `dev`): its local executor runs the same
    plugin, job pickling and result collection as on SLURM, as subprocesses of this machine."""
    make_folder(tmp_path / "imgs", per_class=8)
    sweep = tmp_path / "sweep"
    r = run_cli(["-m", *TINY, "trainer.max_epochs=1", "optimizer.lr=1e-3,3e-3", "hydra/launcher=submitit_local",
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Submitit 'local' sweep" in r.stdout + r.stderr
    rows = _summary(sweep)
    assert len(rows) == 2 and {row["state"] for row in rows} == {"COMPLETE"}
    assert list((sweep / ".submitit").iterdir())  # the executor's job folders live inside the sweep
    _check_run(sweep / "1")
    # the SLURM preset composes onto the plugin just exercised (submitting needs a SLURM cluster)
    r = run_cli([*TINY, "hydra/launcher=aether_slurm", f"hydra.sweep.dir={sweep}", "--cfg", "hydra"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    launcher = yaml.safe_load(r.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["gpus_per_node"] == 1


def test_recipe_auto_picks_for_the_data_and_says_why(tmp_path: Path) -> None:
    make_folder(tmp_path / "tiny", per_class=6)
    make_folder(tmp_path / "larger", per_class=250)
    hf = {"HF_HOME": str(tmp_path / "hf")}  # a cache of our own: nothing pretrained in it yet
    r = run_cli(["+recipe=auto", "data=tiny", "--cfg", "job"], tmp_path, env=hf)
    assert r.returncode == 0, r.stderr[-3000:]
    scratch = yaml.safe_load(r.stdout)  # no weights can be loaded: a small CNN from scratch, native size
    assert scratch["model"]["pretrained"] is False and scratch["strategy"]["name"] == "full"
    assert "no pretrained weights can be loaded" in r.stderr and scratch["scheduler"]["name"] == "onecycle"
    # convnext_atto's weights in the cache (a file of the right shapes): the pretrained road opens
    import timm
    from safetensors.torch import save_file

    sd = timm.create_model("convnext_atto", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "atto.safetensors"))
    r = run_cli(["weights", "import", str(tmp_path / "atto.safetensors"), "model=convnext_atto"], tmp_path, env=hf)
    assert r.returncode == 0, r.stderr[-2000:]
    picks = {}
    for name in ("tiny", "larger"):
        r = run_cli(["+recipe=auto", f"data={name}", "--cfg", "job"], tmp_path, env=hf)
        assert r.returncode == 0, r.stderr[-3000:]
        cfg = yaml.safe_load(r.stdout)
        picks[name] = cfg
        assert "strategy = " in r.stderr and "optimizer.lr = " in r.stderr and "trainer = " in r.stderr
        assert "weights in the local cache" in r.stderr
        assert set(cfg["auto"]) >= {"strategy", "model", "image_size", "batch_size", "epochs", "lr", "trainer"}
    assert picks["tiny"]["strategy"]["name"] == "linear_probe" and picks["larger"]["strategy"]["name"] == "lora"
    assert picks["tiny"]["optimizer"]["lr"] != picks["larger"]["optimizer"]["lr"]
    # sizes count the training split (70 % of 18 and 750 images), not the whole folder
    assert "13 training images" in picks["tiny"]["auto"]["strategy"]
    assert "525 training images" in picks["larger"]["auto"]["strategy"]
    assert picks["tiny"]["data"]["image_size"] == 32  # 40-px images are not upscaled to 224
    # the user's own choice is printed as theirs, with their value
    r = run_cli(["+recipe=auto", "data=tiny", "model.name=resnet18", "--cfg", "job"], tmp_path, env=hf)
    assert r.returncode == 0 and "model = resnet18 (yours)" in r.stderr, r.stderr[-2000:]


def test_sweep_errors_are_clear_before_anything_runs(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", per_class=4)
    r = run_cli([*TINY, "strategy=full", "+sweep=lora_optuna"], tmp_path)
    assert r.returncode == 2 and "for strategy 'full'; valid keys: layer_decay" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    r = run_cli([*TINY, "+sweep=lora_optuna", "sweep.n_trials=0"], tmp_path)
    assert r.returncode == 2 and "sweep.n_trials" in r.stderr
    r = run_cli([*TINY, "+sweep=lora_optuna", "hydra/launcher=aether_slurm"], tmp_path)
    assert r.returncode == 2 and "sbatch" in r.stderr and "Traceback" not in r.stderr  # no SLURM on this machine
