"""The Python API as a notebook uses it: `aether.train(...)` -> Run (metrics, paths, export),
`aether.load(RUN).predict(...)`, and that it is the CLI's road: the same run folder as
`aether train`, the same records as `aether predict`, the same errors as exceptions."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import aether
from aether import AetherError
from tests.conftest import make_folder, run_cli

# A notebook user's own recipe in the project folder (./recipes), tiny enough for CPU tests.
TINY_RECIPE = """# @package _global_
# tiny: a smoke-test recipe
defaults:
  - override /model: test_convnext
recipe: tiny
data:
  image_size: 32
  batch_size: 16
  num_workers: 0
trainer:
  max_epochs: 1
  progress: plain
  early_stopping:
    enabled: false
"""
OVERRIDES = ["optimizer.lr=3e-3", "seed=7"]


def _files(run_dir: Path) -> List[str]:
    """The run folder's files, relative, without what differs from run to run by nature (the
    Lightning logger's version folders hold the same names)."""
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict]:
    """One run trained from Python (default run folder), one by `aether train` with the same
    arguments, in the same project folder."""
    root = tmp_path_factory.mktemp("api")
    make_folder(root / "imgs", per_class=12)
    (root / "recipes").mkdir()
    (root / "recipes" / "tiny.yaml").write_text(TINY_RECIPE)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # a notebook started in its project folder
        mp.setenv("AETHER_CACHE", str(root / "cache"))
        handlers = list(logging.getLogger().handlers)
        run = aether.train(recipe="tiny", data="imgs", overrides=OVERRIDES)
        handlers_after = list(logging.getLogger().handlers)
        cli = run_cli(["+recipe=tiny", "data=imgs", *OVERRIDES, "hydra.run.dir=cli_run"], root,
                      env={"AETHER_CACHE": str(root / "cache")})
        assert cli.returncode == 0, cli.stderr[-3000:]
        yield {"root": root, "run": run, "cli_dir": root / "cli_run", "handlers": (handlers, handlers_after)}


def test_train_leaves_the_run_folder_aether_train_leaves(trained: Dict) -> None:
    run, cli_dir = trained["run"], trained["cli_dir"]
    rel = run.dir.relative_to(trained["root"] / "outputs")  # the CLI's default: outputs/<date>/<time>
    assert re.fullmatch(r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", rel.as_posix()), rel
    assert _files(run.dir) == _files(cli_dir)  # config.yaml, metrics.json, report.md, model/, .hydra/, cli.log ...
    for name in ("config.yaml", ".hydra/overrides.yaml"):  # same composition, same recipe from ./recipes
        assert (run.dir / name).read_text() == (cli_dir / name).read_text(), name
    assert "recipe: tiny" in (run.dir / "config.yaml").read_text()
    assert run.metrics.keys() == aether.Run(cli_dir).metrics.keys()
    before, after = trained["handlers"]
    assert before == after  # the notebook's logging is given back (Hydra set it up for the run only)


def test_run_gives_metrics_paths_and_config(trained: Dict) -> None:
    run = trained["run"]
    assert 0.0 <= run.metrics["test"]["accuracy"] <= 1.0
    assert run.metrics["data"]["classes"] == ["blue", "green", "red"]
    assert run.paths["report"].is_file() and run.paths["best_checkpoint"].is_file()
    assert (run.paths["model"] / "model.safetensors").is_file()
    assert run.config["optimizer"]["lr"] == 3e-3 and run.config["seed"] == 7
    assert str(run.dir) in repr(run)
    with pytest.raises(AetherError, match="not a run folder"):
        aether.Run(trained["root"] / "imgs")


def test_load_predicts_the_records_aether_predict_writes(trained: Dict, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    run = trained["run"]
    images = tmp_path / "new"
    images.mkdir()
    sources = sorted((trained["root"] / "imgs").rglob("*.png"))[::6]
    for p in sources:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    (images / "zero.png").write_bytes(b"")
    res = run_cli(["predict", f"run={run.dir}", f"images={images}", f"out={tmp_path / 'out'}", "top_k=2",
                   "device=cpu"], tmp_path)
    assert res.returncode == 0, res.stderr
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())

    model = aether.load(run.dir, device="cpu", top_k=2)
    assert model.task == "classification" and model.classes == written["classes"]
    records = model.predict(images)  # a folder, walked as `aether predict` walks it
    assert [r for r in records if "reason" not in r] == written["predictions"]
    assert [r for r in records if "reason" in r] == written["failed"]
    assert len(records) == len(sources) + 2

    # in-memory images take the files' road: the same answer as the file they came from
    first = next(r for r in records if r["path"] == str(images / sources[0].name))
    pil = Image.open(sources[0])
    # (another batch: the last digit may differ)
    for rec in model.predict([pil, np.asarray(pil.convert("RGB"))]):
        assert rec["path"] is None and rec["label"] == first["label"]
        assert rec["score"] == pytest.approx(first["score"], abs=1e-4)
    (again,) = run.predict(str(images / sources[0].name), device="cpu", top_k=2)
    assert again["path"] == first["path"] and again["label"] == first["label"]
    with pytest.raises(AetherError, match="cannot read a dict"):
        model.predict({"not": "an image"})


def test_export_is_aether_export(trained: Dict) -> None:
    run = trained["run"]
    info = run.export(format="onnx")
    assert Path(info["path"]).is_file() and info["max_abs_diff"] <= info["atol"]
    assert (run.paths["model"] / "onnx.json").is_file()
    with pytest.raises(AetherError, match="did you mean 'format'"):
        run.export(fromat="onnx")
    with pytest.raises(AetherError, match="expected bento, onnx, torchscript, openvino or tensorrt"):
        run.export(format="tflite")


def test_a_bad_override_is_an_aether_error_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AetherError) as err:
        aether.train(recipe="quickstart", overrides=["optimizer.lrr=1e-3", "model=resnet19"])
    msg = str(err.value)  # every problem at once, as `aether: error:` prints them
    assert "optimizer.lrr" in msg and "did you mean 'lr'" in msg
    assert "resnet19" in msg and "no such model" in msg
    with pytest.raises(AetherError, match="no such recipe.*did you mean 'quickstart'"):
        aether.train(recipe="quikstart")
    assert not (tmp_path / "outputs").exists()  # refused before anything was written


def test_arguments_the_api_refuses_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    cases = [({"overrides": "trainer.max_epochs=1"}, "expected a list of 'key=value' strings"),
             ({"overrides": ["-m", "optimizer.lr=1e-3"]}, "command-line flag"),
             ({"overrides": ["optimizer.lr=1e-3,3e-3"]}, "sweeps over several values"),
             ({"overrides": ["+sweep=lora_optuna"]}, "aether -m"),
             ({"data": "imgs", "overrides": ["data=other"]}, "data is given twice"),
             ({"run_dir": "a-file/run"}, "the output folder a-file/run cannot be created: ")]
    for kwargs, expected in cases:
        with pytest.raises(AetherError, match=re.escape(expected)):
            aether.train(**kwargs)


@pytest.mark.parametrize("value", ["./imgs", "my imgs,v2", "it's", 'q"x', "back\\slash", "ends\\", "a\\'b", "x\\\\",
                                   "[x]=y"])
def test_paths_reach_hydra_unchanged(value: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from aether.api import _quoted

    parsed = OverridesParser.create().parse_overrides([f"data.path={_quoted(value)}"])[0]
    assert not parsed.is_sweep_override() and parsed.value() == value


def test_import_aether_stays_light(tmp_path: Path) -> None:
    code = ("import sys, aether\n"
            "assert callable(aether.train) and callable(aether.load) and aether.Run and aether.Model\n"
            "assert {'train', 'load', 'Run', 'Model', 'AetherError'} <= set(dir(aether))\n"
            "heavy = ('torch', 'lightning', 'timm', 'hydra', 'omegaconf')\n"
            "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        aether.trian  # noqa: B018
