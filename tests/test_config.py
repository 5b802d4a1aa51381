"""Composition and validation of the shipped configs, and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from aether.config import hydra_setup, preflight
from aether.config.validate import ConfigError, validate
from tests.conftest import compose_raw

RECIPES = hydra_setup.group_options("recipe")
MODELS = hydra_setup.group_options("model")


def test_the_shipped_recipes_are_there() -> None:
    for name in ("quickstart", "vit_lora", "resnet_full", "vit_linear_probe", "convnext_linear_probe"):
        assert name in RECIPES


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_and_validates(recipe: str) -> None:
    raw = compose_raw([f"+recipe={recipe}"])
    rc = validate(raw)
    assert rc.recipe == recipe  # each recipe names itself for the report


@pytest.mark.parametrize("model", MODELS)
def test_every_model_preset_validates(model: str) -> None:
    rc = validate(compose_raw([f"model={model}"]))
    assert rc.model.name


def test_at_least_nine_backbone_presets_across_families() -> None:
    families = {"vit", "deit", "efficientnet", "convnext", "swin", "resnet"}
    assert all(any(m.startswith(f) for m in MODELS) for f in families)
    assert len([m for m in MODELS if not m.startswith("test_")]) >= 9


def test_data_shorthand_is_a_plain_value(tmp_path: Path) -> None:
    raw = compose_raw(["+recipe=quickstart", f"data={tmp_path}"])
    assert raw["data"]["path"] == str(tmp_path)
    assert preflight.rewrite_data_shorthand(["data=./x", "data.batch_size=3"]) == ["data.path=./x", "data.batch_size=3"]


def test_misspelt_recipe_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as err:
        preflight.check(["+recipe=vit_loar"])
    assert "vit_lora" in str(err.value) and "did you mean" in str(err.value)


def test_unknown_key_names_the_valid_one() -> None:
    with pytest.raises(ConfigError) as err:
        preflight.check(["+recipe=quickstart", "optimizer.lrr=1e-3"])
    msg = str(err.value)
    assert "optimizer.lrr" in msg and "did you mean 'lr'" in msg


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        preflight.check(["model=resnet19", "trainer.max_epoch=3", "optimizer.lr=-1", "trainer.precision=8",
                         "data.batch_size=0"])
    keys = {p.key for p in err.value.problems}
    # group and key problems come first; value problems are checked once those are fixed
    assert {"model", "trainer.max_epoch"} <= keys
    with pytest.raises(ConfigError) as err:
        preflight.check(["optimizer.lr=-1", "trainer.precision=8", "data.batch_size=0", "strategy.name=lora2"])
    keys = {p.key for p in err.value.problems}
    assert {"optimizer.lr", "trainer.precision", "data.batch_size", "strategy.name"} <= keys
    text = str(err.value)
    assert "greater than 0" in text and "16-mixed" in text  # says what was expected


def test_every_value_of_a_sweep_is_checked() -> None:
    with pytest.raises(ConfigError) as err:
        preflight.check(["optimizer.lr=1e-3,-5"])
    assert any(p.key == "optimizer.lr" and p.value == -5 for p in err.value.problems)


def test_unknown_keys_inside_a_users_recipe_are_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(
        "# @package _global_\nrecipe: mine\noptimizer:\n  lrr: 0.1\ntrainer:\n  max_epochs: 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(compose_raw(["+recipe=mine"]))
    msg = str(err.value)
    assert "optimizer.lrr" in msg and "did you mean 'lr'" in msg and "trainer.max_epochs" in msg


def test_users_recipes_and_conf_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "quickstart.yaml").write_text("# @package _global_\nrecipe: my_quickstart\n")
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny_mine.yaml").write_text("provider: timm\nname: test_vit\npretrained: false\n")
    monkeypatch.chdir(tmp_path)
    raw = compose_raw(["+recipe=quickstart", "model=tiny_mine"])
    assert raw["recipe"] == "my_quickstart"
    assert raw["model"]["name"] == "test_vit"
    assert "tiny_mine" in hydra_setup.group_options("model")


def test_part_options_are_checked_against_the_registered_schema() -> None:
    raw = compose_raw(["+recipe=quickstart"])
    raw["scheduler"] = {"name": "cosine", "warmup_epoch": 1}
    raw["logger"] = {"name": "wandb", "project": 3.5, "mode": "sometimes"}
    with pytest.raises(ConfigError) as err:
        validate(raw)
    msg = str(err.value)
    assert "scheduler.warmup_epoch" in msg and "did you mean 'warmup_epochs'" in msg
    assert "logger.mode" in msg


def test_every_recipe_says_what_it_is_for_and_when_it_shines() -> None:
    from aether.paths import builtin_recipes_dir

    for f in builtin_recipes_dir().glob("*.yaml"):
        head = f.read_text().split("defaults:")[0]
        assert "Shines on" in head, f"{f.name} lacks a 'Shines on: ...' comment"


def test_strategies_recipes_cover_families_and_strategies() -> None:
    needed = {"vit_lora", "vit_linear_probe", "deit_lora", "swin_lora", "convnext_lora", "convnext_linear_probe",
              "efficientnet_gradual", "resnet_full", "vit_full_llrd", "vit_qlora", "quickstart"}
    assert needed <= set(RECIPES)
    strategies = {validate(compose_raw([f"+recipe={r}"])).strategy.name for r in RECIPES}
    assert strategies == {"full", "linear_probe", "lora", "qlora", "gradual_unfreeze"}
