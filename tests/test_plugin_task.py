"""A task from a plugin takes the same road as the built-in ones: the example plugin's
`task=regression` (aether_torchvision.regression), selected by name on the command line and
from a recipe's YAML, trains, is tested and writes the run directory like any task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from tests.conftest import SHRINK
from tests.test_plugin import AETHER, _run, env, work  # noqa: F401  (the installed plugin's fixtures)


def _brightness_set(root: Path, n: int = 48) -> Path:
    """Grey images whose brightness is the target (0..1): learnable in a few epochs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = ["path,value"]
    for i in range(n):
        v = float(rng.uniform(0, 1))
        px = np.clip(v * 255 + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype("uint8")
        Image.fromarray(px).save(root / "img" / f"{i:03d}.png")
        rows.append(f"img/{i:03d}.png,{v:.4f}")
    (root / "values.csv").write_text("\n".join(rows) + "\n")
    return root / "values.csv"


@pytest.fixture(scope="module")
def regression_run(work: Path, env: Dict[str, str]) -> Path:  # noqa: F811
    data = _brightness_set(work / "reg")
    # a user's recipe (./recipes, found first) selects the plugin's task by name from YAML
    recipes = work / "recipes"
    recipes.mkdir()
    (recipes / "brightness.yaml").write_text("# @package _global_\nrecipe: brightness\ntask: regression\n"
                                             "task_options:\n  value_column: value\n")
    run = work / "reg-run"
    _run([str(AETHER), "+recipe=brightness", f"data={data}", *SHRINK,
          "trainer.max_epochs=6", "optimizer.lr=0.003", f"hydra.run.dir={run}"], env, cwd=work)
    return run


def test_plugin_task_is_listed(work: Path, env: Dict[str, str]) -> None:  # noqa: F811
    out = _run([str(AETHER), "list", "tasks"], env, cwd=work).stdout
    assert "regression" in out and "detection" in out


def test_plugin_task_trains_from_yaml(regression_run: Path) -> None:
    metrics = json.loads((regression_run / "metrics.json").read_text())
    assert metrics["data"]["task"] == "regression"
    t = metrics["test"]
    assert t["count"] > 0 and t["mae"] < 0.2  # a constant guess of the mean is ~0.25 off on U(0, 1)
    info = json.loads((regression_run / "model" / "model.json").read_text())
    assert info["task"] == "regression" and 0.2 < info["target_mean"] < 0.8
    assert (regression_run / "model" / "model.safetensors").is_file()
    assert "MAE" in (regression_run / "report.md").read_text()


def test_plugin_task_predicts_and_exports(work: Path, env: Dict[str, str], regression_run: Path) -> None:  # noqa: F811
    """`aether predict` and `aether export` reach the plugin's serving codec (aether_torchvision/
    serving.py) through the task recorded in model.json: the answers are numbers in the data's
    units, and the ONNX graph gives the same ones."""
    import csv

    images = work / "reg" / "img"
    _run([str(AETHER), "predict", f"run={regression_run}", f"images={images}", f"out={work / 'reg-pred'}"], env, cwd=work)
    with open(work / "reg-pred" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 and all(r["error"] == "" for r in rows)
    truth = {f"{i:03d}.png": float(line.split(",")[1])
             for i, line in enumerate((work / "reg" / "values.csv").read_text().splitlines()[1:])}
    errors = [abs(float(r["value"]) - truth[Path(r["path"]).name]) for r in rows]
    assert sum(errors) / len(errors) < 0.2
    _run([str(AETHER), "export", f"run={regression_run}", "format=onnx"], env, cwd=work)
    assert (regression_run / "model" / "model.onnx").is_file()
    onnx = json.loads((regression_run / "model" / "onnx.json").read_text())
    assert onnx["task"] == "regression" and onnx["max_abs_diff"] <= onnx["atol"]
