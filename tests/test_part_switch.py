"""Switching a part (`strategy=`, `optimizer=`, ...) on a recipe that sets options of another one:
the recipe's foreign options are dropped with a note; what the user typed is still checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aether import registry
from aether.config import hydra_setup, preflight
from aether.config.validate import ConfigError, drop_foreign_options, validate
from tests.conftest import compose_raw, run_cli

GRADUAL_NOTE = ("strategy=linear_probe: dropped strategy.every_n_epochs, strategy.groups_per_step, "
                "strategy.lr_scale (options of gradual_unfreeze set by the recipe efficientnet_gradual)")
SWITCH = ["+recipe=efficientnet_gradual", "strategy=linear_probe", "model=test_efficientnet"]
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "data.image_size=32", "trainer.progress=none", "analysis.enabled=false"]
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def sgd_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's recipe written for SGD (momentum, nesterov set), in the working folder."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine_sgd.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /optimizer: sgd\nrecipe: mine_sgd\n"
        "optimizer:\n  lr: 0.05\n  momentum: 0.8\n  nesterov: false\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the command line ---------------------------------------------------------------------------

def test_switching_the_strategy_of_a_recipe_trains_and_says_what_it_dropped(tmp_path: Path) -> None:
    proc = run_cli([*SWITCH, *FAST, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, env=ENV, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count(GRADUAL_NOTE) == 1, out[-3000:]  # shown once, not by both the pre-flight and the run
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert text.startswith(f"# NOTE: {GRADUAL_NOTE}\n")
    loaded = OmegaConf.to_container(OmegaConf.load(tmp_path / "run" / "config.yaml"), resolve=True)
    assert loaded["strategy"] == {"name": "linear_probe", "head_init": "logreg", "logreg_c": 1.0}
    validate(loaded)  # what resume= will load validates as it is


def test_an_option_the_user_types_for_the_wrong_part_is_still_an_error(tmp_path: Path) -> None:
    proc = run_cli([*SWITCH, "strategy.lr_scale=0.5", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, env=ENV)
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("aether: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert "strategy.lr_scale = 0.5: unknown key for strategy 'linear_probe'; valid keys: head_init, logreg_c" in out
    assert "every_n_epochs" not in out  # the recipe's own foreign options were dropped, not reported
    assert not (tmp_path / "run").exists()


def test_preflight_returns_the_note_and_accepts_the_switch() -> None:
    assert preflight.check(SWITCH) == [GRADUAL_NOTE]
    assert preflight.check(["+recipe=efficientnet_gradual"]) == []


def test_compose_run_drops_but_keeps_what_the_user_typed() -> None:
    raw, rc = hydra_setup.compose_run(SWITCH)
    assert rc.strategy.name == "linear_probe" and "lr_scale" not in raw["strategy"]
    with pytest.raises(ConfigError) as err:  # the caller says lr_scale was typed, so it stays
        hydra_setup.compose_run(SWITCH, user_keys={"strategy.lr_scale"})
    assert [p.key for p in err.value.problems] == ["strategy.lr_scale"]


# --- drop_foreign_options -----------------------------------------------------------------------

def test_sgd_options_of_a_recipe_are_dropped_when_switching_to_adamw(sgd_recipe: Path) -> None:
    raw = compose_raw(["+recipe=mine_sgd", "optimizer=adamw"])
    notes = drop_foreign_options(raw, {"optimizer.lr"})
    assert notes == ["optimizer=adamw: dropped optimizer.momentum, optimizer.nesterov "
                     "(options of sgd set by the recipe mine_sgd)"]
    assert raw["optimizer"]["lr"] == 0.05  # an option both take stays
    assert validate(raw).optimizer.name == "adamw"


def test_an_sgd_option_the_user_typed_is_kept_and_reported(sgd_recipe: Path) -> None:
    raw = compose_raw(["+recipe=mine_sgd", "optimizer=adamw", "optimizer.momentum=0.5"])
    notes = drop_foreign_options(raw, {"optimizer.momentum"})
    assert notes == ["optimizer=adamw: dropped optimizer.nesterov (options of sgd set by the recipe mine_sgd)"]
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert [str(p) for p in err.value.problems] == [
        "optimizer.momentum = 0.5: unknown key for optimizer 'adamw'; valid keys: lr, weight_decay, betas, eps"]


def test_a_key_no_part_takes_is_a_typo_not_a_switch() -> None:
    raw = compose_raw(["+recipe=efficientnet_gradual", "strategy=linear_probe"])
    raw["strategy"]["head_int"] = "random"
    drop_foreign_options(raw, set())
    assert "head_int" in raw["strategy"]
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert "did you mean 'head_init'" in str(err.value)
    assert [p.key for p in err.value.problems] == ["strategy.head_int"]


def test_switching_to_a_part_without_options_drops_them_all() -> None:
    raw = compose_raw(["+recipe=vit_full_llrd", "scheduler=none", "strategy=lora"])
    notes = drop_foreign_options(raw, set())
    assert notes == [
        "strategy=lora: dropped strategy.layer_decay (options of full set by the recipe vit_full_llrd)",
        "scheduler=none: dropped scheduler.warmup_epochs (options of cosine set by the recipe vit_full_llrd)"]
    assert raw["scheduler"] == {"name": "none"}
    validate(raw)


def test_a_part_without_options_says_so_in_errors() -> None:
    raw = compose_raw(["scheduler=none"])
    raw["scheduler"]["warmup_epochs"] = 2
    drop_foreign_options(raw, {"scheduler.warmup_epochs"})  # typed by the user: kept
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert [str(p) for p in err.value.problems] == [
        "scheduler.warmup_epochs = 2: unknown key; scheduler 'none' takes no options"]
    with pytest.raises(ConfigError) as err:  # the same at the pre-flight, not "valid keys: name"
        preflight.check(["scheduler=none", "scheduler.warmup_epochs=2"])
    assert "scheduler 'none' takes no options" in str(err.value) and "valid keys" not in str(err.value)


@pytest.fixture
def unchecked_strategy():  # type: ignore[no-untyped-def]
    """A plugin strategy registered without an options schema (config=None)."""
    registry.strategies.register("free_form_test", object(), config=None, origin="tests")
    yield "free_form_test"
    del registry.strategies._entries["free_form_test"]


def test_a_part_without_a_schema_is_left_alone(unchecked_strategy: str) -> None:
    raw = compose_raw(["+recipe=efficientnet_gradual"])
    raw["strategy"]["name"] = unchecked_strategy
    assert drop_foreign_options(raw, set()) == []
    assert raw["strategy"]["lr_scale"] == 0.1
    validate(raw)


def test_valid_keys_are_listed_inside_an_optional_section() -> None:
    raw = compose_raw(["+sweep=auto"])
    raw["sweep"]["n_trial"] = 3
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert "valid keys: name, n_trials" in str(err.value) and "did you mean 'n_trials'" in str(err.value)
