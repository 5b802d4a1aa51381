"""Hostile input must never run code: poisoned checkpoints, config naming `_target_`s, and a user
recipe under a built-in name (used, but announced)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from aether.errors import AetherError
from tests.conftest import SHRINK, make_folder, run_cli

ENV = {"OMP_NUM_THREADS": "1"}
FSDP_CPU = ["trainer.strategy=fsdp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32"]


class Payload:
    """Unpickling this calls os.system: the marker file appears if anything runs the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def poison(ckpt: Path, marker: Path) -> None:
    """The real checkpoint, plus a callback state whose unpickling runs a command."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state.setdefault("callbacks", {})["Evil"] = Payload(marker)
    torch.save(state, ckpt)


def one_error(proc) -> str:  # type: ignore[no-untyped-def]
    """The single `aether: error:` line of a refused command (and no traceback)."""
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("aether: error:")]
    assert proc.returncode == 2 and len(errors) == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-epoch run folder (config.yaml, checkpoints/best.ckpt + last.ckpt, model/)."""
    root = tmp_path_factory.mktemp("hostile")
    folder = make_folder(root / "imgs", per_class=6)
    env = {**ENV, "AETHER_CACHE": str(root / "cache")}
    proc = run_cli([*SHRINK, f"data={folder}", "model.pretrained=false", "trainer.max_epochs=1",
                    "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", f"hydra.run.dir={root / 'run'}"],
                   cwd=root, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


# --- checkpoints -------------------------------------------------------------------------------

def test_checkpoint_io_refuses_pickled_code_even_when_asked_for_a_full_unpickle(run_copy: Path, tmp_path: Path) -> None:
    from aether.training.checkpoint_io import DirectCheckpointIO

    marker = tmp_path / "MARKER"
    ckpt = run_copy / "checkpoints" / "last.ckpt"
    assert DirectCheckpointIO().load_checkpoint(ckpt)["epoch"] == 0  # Aether's own checkpoint loads weights-only
    poison(ckpt, marker)
    with pytest.raises(AetherError, match="last.ckpt: refused"):
        DirectCheckpointIO().load_checkpoint(ckpt, weights_only=False)  # what a strategy may ask for
    assert not marker.exists()


def test_fsdp_strategy_loads_checkpoints_weights_only(run_copy: Path, tmp_path: Path) -> None:
    """Lightning's FSDPStrategy reads a full checkpoint with a plain Unpickler, bypassing CheckpointIO."""
    from aether.training.distributed import lightning_strategy

    marker = tmp_path / "MARKER"
    ckpt = run_copy / "checkpoints" / "best.ckpt"
    poison(ckpt, marker)
    strategy = lightning_strategy("fsdp", torch.nn.Linear(2, 2), accelerator="cpu")
    with pytest.raises(AetherError, match="best.ckpt: refused"):
        strategy.load_checkpoint(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("strategy", ["default", "fsdp"])
def test_resume_from_a_poisoned_last_ckpt_is_refused(run_copy: Path, tmp_path: Path, strategy: str) -> None:
    marker = tmp_path / "MARKER"
    poison(run_copy / "checkpoints" / "last.ckpt", marker)
    extra = FSDP_CPU if strategy == "fsdp" else []
    proc = run_cli([f"resume={run_copy}", "trainer.max_epochs=2", *extra], tmp_path, env=ENV, timeout=300)
    assert "last.ckpt: refused" in one_error(proc)
    assert not marker.exists()


def test_resume_with_fsdp_reads_aether_checkpoints_weights_only(tmp_path: Path) -> None:
    """The guarded FSDP loader still resumes a real FSDP run (loop, callback and optimizer state)."""
    run, tiny = tmp_path / "run", ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", *FSDP_CPU]
    proc = run_cli([*SHRINK, f"data={make_folder(tmp_path / 'imgs', per_class=6)}", "model.pretrained=false",
                    "trainer.max_epochs=1", *tiny, f"hydra.run.dir={run}"], tmp_path, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli([f"resume={run}", "trainer.max_epochs=2", *tiny], tmp_path, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("name", ["fsdp_cpu_offload", "deepspeed"])
def test_strategies_with_their_own_checkpoint_unpickler_are_refused(name: str) -> None:
    from aether.training.distributed import lightning_strategy

    with pytest.raises(AetherError, match=f"trainer.strategy={name}: .* own unpickler"):
        lightning_strategy(name, torch.nn.Linear(2, 2))
    assert lightning_strategy("ddp", torch.nn.Linear(2, 2)) == "ddp"  # CheckpointIO-based: kept


def test_export_and_predict_never_read_the_checkpoints(run_copy: Path, tmp_path: Path) -> None:
    """Export and predict read model/ (safetensors + JSON) only: poisoned checkpoints beside it stay unread."""
    marker = tmp_path / "MARKER"
    for name in ("best.ckpt", "last.ckpt"):
        poison(run_copy / "checkpoints" / name, marker)
    images = make_folder(tmp_path / "new", per_class=1)
    proc = run_cli(["predict", f"run={run_copy}", f"images={images}", f"out={tmp_path / 'pred'}"], tmp_path, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "pred" / "predictions.csv").is_file()
    proc = run_cli(["export", f"run={run_copy}"], tmp_path,
                   env={**ENV, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists()


# --- config that would instantiate code --------------------------------------------------------

def _callback(marker: Path) -> dict:
    return {"callbacks": {"x": {"_target_": "os.system", "_args_": [f"touch {marker}"]}}}


def test_a_user_recipe_with_a_target_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "evil.yaml"
    recipe.write_text("# @package _global_\n" + OmegaConf.to_yaml({"recipe": "evil", "hydra": _callback(marker)}))
    proc = run_cli(["+recipe=evil", "--cfg", "job"], tmp_path, env=ENV)
    line = one_error(proc)
    assert str(recipe) in line and "hydra.callbacks" in line
    assert not marker.exists()


def test_a_conf_group_file_with_a_target_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    (tmp_path / "conf" / "model").mkdir(parents=True)
    evil = tmp_path / "conf" / "model" / "evil.yaml"
    evil.write_text(OmegaConf.to_yaml({"name": "resnet18", "extra": {"_target_": "builtins.print"}}))
    proc = run_cli(["model=evil", "--cfg", "job"], tmp_path, env=ENV)
    line = one_error(proc)
    assert str(evil) in line and "model.extra._target_" in line
    # and one that reaches into hydra: through its package header
    evil.write_text("# @package _global_\n" + OmegaConf.to_yaml({"hydra": _callback(marker)}))
    proc = run_cli(["model=evil", f"data={make_folder(tmp_path / 'imgs', per_class=2)}"], tmp_path, env=ENV)
    assert str(evil) in one_error(proc)
    assert not marker.exists()


@pytest.mark.parametrize("overrides", [
    ["+hydra.callbacks.x._target_=os.system", "+hydra.callbacks.x._args_=[touch MARKER]"],
    ["+hydra.callbacks={x: {_target_: os.system, _args_: [touch MARKER]}}"],
    ["hydra.job_logging.handlers.console.class=os.system"],
    ["+model._target_=builtins.print"],
])
def test_command_line_overrides_naming_code_are_refused(tmp_path: Path, overrides: list) -> None:
    proc = run_cli([*overrides, "--cfg", "job"], tmp_path, env=ENV)
    line = one_error(proc)
    assert line.startswith("aether: error: command line: ") and overrides[0] in line
    assert not (tmp_path / "MARKER").exists()


def test_plain_hydra_settings_stay_accepted() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from aether.config.trust import check_overrides

    check_overrides(OverridesParser.create().parse_overrides([
        "hydra.run.dir=out/x", "hydra.sweep.dir=multi", "hydra.job.chdir=false", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", "hydra.verbose=true", "~hydra.callbacks.sweep_summary"]))
    with pytest.raises(AetherError, match="hydra.launcher.setup"):  # submitit's shell lines run on the workers
        check_overrides(OverridesParser.create().parse_overrides(["+hydra.launcher.setup=[touch x]"]))


def test_resuming_a_config_yaml_edited_to_name_code_is_refused(run_copy: Path, tmp_path: Path) -> None:
    cfg = OmegaConf.load(run_copy / "config.yaml")
    cfg.strategy._target_ = "builtins.print"
    OmegaConf.save(cfg, run_copy / "config.yaml")
    proc = run_cli([f"resume={run_copy}", "trainer.max_epochs=2"], tmp_path, env=ENV)
    line = one_error(proc)
    assert str(run_copy / "config.yaml") in line and "strategy._target_" in line


# --- a user recipe under a built-in name -------------------------------------------------------

def test_a_user_recipe_shadowing_a_builtin_is_used_and_announced(tmp_path: Path) -> None:
    from aether.paths import builtin_recipes_dir

    (tmp_path / "recipes").mkdir()
    mine = tmp_path / "recipes" / "quickstart.yaml"
    text = (builtin_recipes_dir() / "quickstart.yaml").read_text()
    mine.write_text(text.replace("batch_size: 64", "batch_size: 8"))
    folder = make_folder(tmp_path / "imgs", per_class=4)
    proc = run_cli(["+recipe=quickstart", *SHRINK[:1], "data.image_size=32", f"data={folder}", "trainer.max_epochs=1",
                    "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.progress=plain",
                    "data.num_workers=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path,
                   env={**ENV, "AETHER_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [line for line in (proc.stdout + proc.stderr).splitlines() if "] " in line]
    assert "shadows Aether's built-in recipe 'quickstart'" in log[0], log[:3]
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert config.startswith(f"# NOTE: recipe=quickstart is {mine}, which shadows")
    loaded = OmegaConf.load(tmp_path / "run" / "config.yaml")  # still a plain config, resumable
    assert loaded.data.batch_size == 8 and loaded.recipe == "quickstart"
