"""Hostile runs: config values that cannot train, two runs in one folder, a damaged resume.

Each test builds its hostile input itself and asserts the one `aether: error:` line (or the
ConfigError problem) that names the key, value or file and what to do.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.conftest import run_cli, run_in_process
from tests.test_cli import FAST, _probe

TINY = ["+recipe=quickstart", *FAST, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1"]

# override -> the dotted key its error must name
HOSTILE = {
    "optimizer.lr=inf": "optimizer.lr",
    "trainer.gradient_clip_val=inf": "trainer.gradient_clip_val",
    "trainer.devices=0": "trainer.devices",
    "trainer.limit_train_batches=0": "trainer.limit_train_batches",
    "trainer.limit_val_batches=-1": "trainer.limit_val_batches",
    "trainer.limit_test_batches=1.5": "trainer.limit_test_batches",
    "seed=-1": "seed",
}


def _errors(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if line.startswith("aether: error:")]


def _files(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- config values


@pytest.mark.parametrize("override", list(HOSTILE))
def test_each_hostile_value_is_named_by_the_validator(override: str) -> None:
    from aether.config.preflight import check
    from aether.config.validate import ConfigError

    with pytest.raises(ConfigError) as err:
        check(["+recipe=quickstart", override])
    assert [p.key for p in err.value.problems] == [HOSTILE[override]]


def test_more_cpu_processes_than_usable_cpus_is_refused() -> None:
    from aether.config.preflight import check
    from aether.config.validate import ConfigError

    cpus = len(os.sched_getaffinity(0))
    with pytest.raises(ConfigError) as err:
        check(["+recipe=quickstart", "trainer.accelerator=cpu", f"trainer.devices={cpus + 1}"])
    (problem,) = err.value.problems
    assert problem.key == "trainer.devices" and f"at most {cpus}" in problem.expected


def test_hostile_values_are_one_error_before_torch_is_imported(tmp_path: Path) -> None:
    out = _probe(repr(["+recipe=quickstart", *HOSTILE, "hydra.run.dir=run"]), tmp_path)
    assert out.returncode == 2 and "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert _errors(out.stderr) == [f"aether: error: invalid config ({len(HOSTILE)} problems):"]
    assert all(f"  - {key} = " in out.stderr for key in HOSTILE.values())
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


def test_more_gpus_than_visible_is_refused_before_the_data_is_read(tmp_path: Path) -> None:
    import torch

    from aether.config.validate import ConfigError

    gpus = torch.cuda.device_count()
    # the data folder does not exist: reading it first would fail with a data error instead
    with pytest.raises(ConfigError) as err:
        run_in_process(tmp_path / "run", [f"data={tmp_path / 'no_such_folder'}", "trainer.accelerator=gpu",
                                          f"trainer.devices={gpus + 1}"])
    (problem,) = err.value.problems
    assert problem.key == "trainer.devices"
    assert ("no GPU is visible" if gpus == 0 else f"only {gpus} GPU(s)") in problem.expected


def test_a_diverging_run_stops_with_one_error_and_exports_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # finite, so the validator lets it through; the first step sends the weights to ~1e30
    r = run_cli([*TINY, "trainer.max_epochs=2", "optimizer.lr=1e30", f"hydra.run.dir={run}"], tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    (line,) = _errors(r.stderr)
    assert "training diverged" in line and "optimizer.lr=1e+30" in line and "exported nothing" in line
    assert "Traceback" not in r.stderr
    assert not (run / "metrics.json").exists() and not (run / "model").exists() and not (run / "bento").exists()


# ---------------------------------------------------------------- one run per folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run (tests copy it before changing anything)."""
    root = tmp_path_factory.mktemp("finished")
    env = {"AETHER_CACHE": str(tmp_path_factory.getbasetemp() / "aether-cache")}
    r = run_cli([*TINY, "trainer.max_epochs=2", f"hydra.run.dir={root / 'run'}"], root, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_a_second_run_into_a_finished_folder_is_refused(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    before = _files(run)
    r = run_cli([*TINY, "trainer.max_epochs=1", f"hydra.run.dir={run}"], tmp_path)
    assert r.returncode == 2
    (line,) = _errors(r.stderr)
    assert f"hydra.run.dir={run} already holds a finished run" in line and f"resume={run}" in line
    # in-process (no CLI pre-check): the run's own lock refuses it before writing a file
    from aether.errors import AetherError

    with pytest.raises(AetherError, match="already holds a finished run"):
        run_in_process(run, ["+recipe=quickstart", "trainer.max_epochs=1"])
    assert _files(run) == before  # nothing of the first run was overwritten, not even .hydra/


def test_a_live_folder_is_refused_and_freed_when_its_run_dies(finished_run: Path, tmp_path: Path) -> None:
    from aether.training.run_lock import RunLock, check_run_folder

    run = _copy(finished_run, tmp_path)
    holder = subprocess.Popen(  # a live resume of the run, as another process
        [sys.executable, "-c", "import sys, time\nfrom aether.training.run_lock import RunLock\n"
         f"RunLock({str(run)!r}, resume={str(run)!r}).__enter__()\nprint('held', flush=True)\ntime.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for args in ([f"resume={run}", "trainer.max_epochs=3"], [*TINY, f"hydra.run.dir={run}"]):
            r = run_cli(args, tmp_path)
            assert r.returncode == 2
            (line,) = _errors(r.stderr)
            assert f"hydra.run.dir={run} is in use by another run (pid {holder.pid}" in line
        with pytest.raises(Exception, match="in use by another run"):
            RunLock(run, resume=str(run)).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs
        holder.wait()
    check_run_folder([f"resume={run}", f"hydra.run.dir={run}"])  # free again: no stale lock
    with RunLock(run, resume=str(run)):
        pass


# ---------------------------------------------------------------- resume


def test_resume_keeps_the_csv_history_and_removes_stale_temporaries(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    stale = run / "checkpoints" / ".last.ckpt.tmp-4242"  # a save killed midway
    stale.write_bytes(b"half a checkpoint")
    r = run_cli([f"resume={run}", "trainer.max_epochs=3"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not stale.exists() and "checkpoints/.last.ckpt.tmp-4242" in r.stdout + r.stderr
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows if r["val/acc"]] == [0, 1, 2]  # epochs 0 and 1 from before resume
    assert [int(r["epoch"]) for r in rows if r["train/loss"]] == [0, 1, 2]
    assert len([r for r in rows if r["test/accuracy"]]) == 1  # the first test row belonged to epoch 2's place


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_last_checkpoint_is_named_and_changes_nothing(damage: str, finished_run: Path,
                                                                 tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2:]
    else:
        mid = len(data) // 2
        data[mid:mid + 4096] = bytes(4096)
    last.write_bytes(bytes(data))
    before = _files(run)
    r = run_cli([f"resume={run}", "trainer.max_epochs=3"], tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    (line,) = _errors(r.stderr)
    assert f"{last} is damaged" in line and "best.ckpt" in line and f"aether export run={run}" in line
    assert "config.yaml was left as it was" in line and "Traceback" not in r.stderr
    assert _files(run) == before


def test_an_interrupted_run_with_a_damaged_last_checkpoint_exports_its_best(finished_run: Path, tmp_path: Path,
                                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    """No model/ (the run never finished) and last.ckpt truncated: the error offers best.ckpt,
    and `aether predict` / `aether export` rebuild model/ from it."""
    run = _copy(finished_run, tmp_path)
    shutil.rmtree(run / "model")
    (run / "metrics.json").unlink()
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    env = {"AETHER_CACHE": str(tmp_path_factory.getbasetemp() / "aether-cache")}
    r = run_cli([f"resume={run}", "trainer.max_epochs=3"], tmp_path, env=env)
    (line,) = _errors(r.stderr)
    assert "best.ckpt" in line and f"exports (aether export run={run})" in line
    digits = sorted(Path(env["AETHER_CACHE"], "datasets").rglob("*.png"))[:6]
    images = tmp_path / "new"
    images.mkdir()
    for i, p in enumerate(digits):
        (images / f"{i}.png").write_bytes(p.read_bytes())
    r = run_cli(["predict", f"run={run}", f"images={images}", f"out={tmp_path / 'out'}"], tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "model" / "model.safetensors").is_file() and "6 of 6 files classified" in r.stdout
