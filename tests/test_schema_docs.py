"""Every option says what it holds: each field has a `description=`, and `aether list` shows it."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import List, Literal, Optional, Tuple, Union

import pytest
from pydantic import BaseModel, Field

from tests.conftest import run_cli

WIDE = {"COLUMNS": "240"}  # one table row per line, so an option's row can be read whole


def _row(stdout: str, key: str) -> List[str]:
    """The cells of the table row whose first cell is `key`."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == key:
            return cells
    raise AssertionError(f"no row {key!r} in:\n{stdout}")


def test_every_option_of_the_run_config_has_a_description() -> None:
    from aether.config.schema import RunCfg
    from aether.listing import undescribed

    assert undescribed(RunCfg) == []  # data.augment.*, trainer.early_stopping.*, sweep.*, auto.* included


def test_every_option_of_every_registered_part_has_a_description() -> None:
    from aether import registry
    from aether.listing import undescribed

    checked = 0
    for reg in registry.REGISTRIES.values():
        for entry in reg:
            if entry.origin != "aether":
                continue  # a plugin's schema is its author's
            assert entry.config is not None, f"{reg.kind} '{entry.name}' registered without an options model"
            missing = undescribed(entry.config)
            assert not missing, f"{reg.kind} '{entry.name}': options without a description: {missing}"
            checked += len(entry.config.model_fields)
    assert checked >= 40  # lora, adamw, cosine, wandb, detection ... really were looked at


def test_every_options_model_in_the_schema_modules_has_descriptions() -> None:
    """Models not (yet) registered or reachable from RunCfg count too: a new one cannot skip it."""
    import aether.config.schema as schema
    import aether.sweeps.spec as spec
    from aether.listing import undescribed
    from aether.tasks.classification import options as c
    from aether.tasks.detection import options as d
    from aether.tasks.multilabel import options as m
    from aether.tasks.segmentation import options as s

    for module in (schema, spec, c, d, m, s):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseModel) and cls.__module__ == module.__name__:
                assert undescribed(cls) == [], f"{module.__name__}.{name}: {undescribed(cls)}"


def test_option_rows_show_type_bounds_default_and_description() -> None:
    from aether.listing import option_rows

    class Inner(BaseModel):
        flip: float = Field(0.5, ge=0, le=1, description="flip probability")

    class Demo(BaseModel):
        size: Optional[int] = Field(None, ge=8, lt=4096, description="input side")
        mode: Literal["min", "max"] = Field("min", description="direction")
        pair: Tuple[float, float] = Field((0.75, 4 / 3), description="a range")
        names: Union[str, List[str]] = Field("auto", description="targets")
        name: str = Field(..., description="required one")
        lr: float = Field(1e-3, gt=0, description="learning rate")
        inner: Inner = Field(default_factory=Inner, description="nested")

    rows = {r[0]: r[1:] for r in option_rows(Demo, "x.")}
    assert rows["x.size"] == ("int in [8, 4096) | null", "null", "input side")
    assert rows["x.mode"] == ("min | max", "min", "direction")
    assert rows["x.pair"] == ("[float, float]", "[0.75, 1.33333]", "a range")
    assert rows["x.names"] == ("str | list[str]", "auto", "targets")
    assert rows["x.name"] == ("str", "required", "required one")
    assert rows["x.lr"] == ("float > 0", "0.001", "learning rate")
    assert rows["x.inner.flip"] == ("float in [0, 1]", "0.5", "flip probability")  # nested sections flattened
    assert "x.inner" not in rows


def test_list_a_part_shows_its_options(tmp_path: Path) -> None:
    r = run_cli(["list", "strategy", "lora"], tmp_path, env=WIDE)
    assert r.returncode == 0, r.stderr
    assert "strategy 'lora' (aether): PEFT LoRA adapters" in r.stdout
    assert "set an option with strategy.OPTION=VALUE" in r.stdout
    assert _row(r.stdout, "strategy.r") == ["strategy.r", "int in [1, 1024]", "4",
                                            "rank of each low-rank adapter (trainable parameters grow linearly with it)"]
    assert _row(r.stdout, "strategy.target_modules")[1:3] == ["str | list[str]", "auto"]
    assert _row(r.stdout, "strategy.merge")[1:3] == ["bool", "true"]
    # the plural form says the same; the strategies table itself is unchanged
    assert run_cli(["list", "strategies", "lora"], tmp_path, env=WIDE).stdout == r.stdout
    table = run_cli(["list", "strategies"], tmp_path, env=WIDE)
    assert _row(table.stdout, "lora")[:2] == ["lora", "aether"] and "aether list strategy NAME" in table.stdout
    assert run_cli(["list", "strategy"], tmp_path, env=WIDE).stdout == table.stdout


def test_list_shows_where_a_config_file_presets_another_value(tmp_path: Path) -> None:
    r = run_cli(["list", "scheduler", "cosine"], tmp_path, env=WIDE)
    assert r.returncode == 0, r.stderr
    assert _row(r.stdout, "scheduler.warmup_epochs")[2] == "0.0 (conf: 1)"  # conf/scheduler/cosine.yaml
    assert _row(r.stdout, "scheduler.min_lr_ratio")[2] == "0.01"


def test_list_tasks_adapters_and_parts_without_options(tmp_path: Path) -> None:
    r = run_cli(["list", "task", "detection"], tmp_path, env=WIDE)
    assert r.returncode == 0 and "select it with task=detection" in r.stdout
    assert _row(r.stdout, "task_options.head")[1:3] == ["fcos | retinanet | faster_rcnn", "fcos"]
    assert _row(r.stdout, "task_options.nms_threshold")[1:3] == ["tune | float", "tune"]
    r = run_cli(["list", "adapter", "manifest"], tmp_path, env=WIDE)
    assert _row(r.stdout, "data.options.label_column")[1:3] == ["str", "label"]
    r = run_cli(["list", "logger", "csv"], tmp_path, env=WIDE)
    assert r.returncode == 0 and "it takes no options" in r.stdout
    r = run_cli(["list", "strategy", "lroa"], tmp_path, env=WIDE)
    assert r.returncode == 2 and "unknown strategy 'lroa' (did you mean 'lora'?)" in r.stderr


@pytest.mark.parametrize("section,key,cells", [
    ("data", "data.augment.hflip", ["float in [0, 1]", "0.5"]),
    ("data", "data.cache", ["auto | memory | disk | off", "auto"]),
    ("trainer", "trainer.early_stopping.patience", ["int >= 1", "5"]),
    ("trainer.early_stopping", "trainer.early_stopping.monitor", ["str", "val/loss"]),
    ("model", "model.name", ["str", "required (conf: resnet18.a1_in1k)"]),
    ("loss", "loss.class_weights", ["balanced | list[float] | null", "null"]),
    ("sweep", "sweep.n_trials", ["int >= 1 | null", "20"]),
    ("config", "seed", ["int in [0, 4294967295]", "42"]),
    ("config", "data", ["section", ""]),
])
def test_list_a_config_section(section: str, key: str, cells: List[str], tmp_path: Path) -> None:
    r = run_cli(["list", section], tmp_path, env=WIDE)
    assert r.returncode == 0, r.stderr
    row = _row(r.stdout, key)
    assert row[1:3] == cells and row[3]  # with its description


def test_list_unknown_section_suggests(tmp_path: Path) -> None:
    r = run_cli(["list", "trainr"], tmp_path)
    assert r.returncode == 2 and "did you mean 'trainer'" in r.stderr and "aether list KIND NAME" in r.stderr
