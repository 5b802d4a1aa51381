"""The example out-of-tree plugin (plugins/aether-torchvision) proves the extension API end to end:
installed into a separate folder, found through the `aether.plugins` entry point, selected with
`model.provider=torchvision`, trained, saved, and rebuilt by `load_model_dir`; its dataset format
`labels_txt` is detected by `aether inspect`, read strictly when named, and selected from a
recipe's YAML for a training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "aether-torchvision"
AETHER = Path(sys.executable).parent / "aether"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 220)}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plugin")


@pytest.fixture(scope="module")
def env(work: Path) -> Dict[str, str]:
    """Build and install the plugin into its own folder (offline: no deps, no build isolation)
    and return an environment that puts that folder first on PYTHONPATH."""
    target = work / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(PLUGIN)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(target.glob("aether_torchvision-*.dist-info/entry_points.txt"))
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(target)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e.update(HF_HUB_OFFLINE="1", AETHER_CACHE=str(work / "cache"), NO_COLOR="1", COLUMNS="200")
    return e


def _run(cmd: List[str], env: Dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _colour_image(rgb, rng):  # type: ignore[no-untyped-def]
    """A solid colour with a little noise and a random grey square: easy, but not identical images."""
    import numpy as np
    from PIL import Image

    px = np.clip(np.array(rgb) + rng.normal(0, 12, (40, 40, 3)), 0, 255)
    x, y = rng.integers(0, 28, 2)
    px[y:y + 12, x:x + 12] = 128
    return Image.fromarray(px.astype("uint8"))


def _make_images(root: Path, per_class: int = 12) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _colour_image(rgb, rng).save(root / name / f"{i:02d}.png")
    return root


def _make_listed(root: Path, per_class: int = 12) -> Path:
    """One flat folder of images whose labels only labels.txt knows (the plugin's format)."""
    import numpy as np

    rng = np.random.default_rng(1)
    (root / "pics").mkdir(parents=True)
    lines = ["# path label"]
    for name, rgb in COLOURS.items():
        for i in range(per_class):
            rel = f"pics/{name[0]}{i:02d}.png"
            _colour_image(rgb, rng).save(root / rel)
            lines.append(f"{rel} {name}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def run_dir(work: Path, env: Dict[str, str]) -> Path:
    data = _make_images(work / "imgs")
    run = work / "run"
    _run([str(AETHER), "model.provider=torchvision", "model.name=mobilenet_v3_small", "model.pretrained=false",
          f"data={data}", "data.image_size=32", "data.batch_size=8", "data.num_workers=0", "trainer.max_epochs=1",
          "trainer.accelerator=cpu", "trainer.progress=none", f"hydra.run.dir={run}"], env, cwd=work)
    return run


def test_plugin_is_listed(work: Path, env: Dict[str, str]) -> None:
    out = _run([str(AETHER), "list", "backbones"], env, cwd=work).stdout
    assert "torchvision" in out and "timm" in out


def test_plugin_trains_end_to_end(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["provider"] == "torchvision" and info["name"] == "mobilenet_v3_small"
    assert info["num_classes"] == len(COLOURS)
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_saved_model_rebuilds(work: Path, env: Dict[str, str], run_dir: Path) -> None:
    code = (
        "import sys, json, torch\n"
        "from pathlib import Path\n"
        "from aether.models.saved import load_model_dir\n"
        "model, classes, pre = load_model_dir(Path(sys.argv[1]))\n"
        "size = pre['input_size']\n"
        "with torch.no_grad():\n"
        "    logits = model(torch.randn(2, *size))\n"
        "print(json.dumps({'type': type(model).__module__, 'classes': classes, 'shape': list(logits.shape),\n"
        "                  'finite': bool(torch.isfinite(logits).all())}))\n"
    )
    out = _run([sys.executable, "-c", code, str(run_dir / "model")], env, cwd=work).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["type"].startswith("torchvision.models")
    assert result["classes"] == sorted(COLOURS)
    assert result["shape"] == [2, len(COLOURS)] and result["finite"]


@pytest.fixture(scope="module")
def listed(work: Path) -> Path:
    return _make_listed(work / "listed")


def test_plugin_format_is_listed(work: Path, env: Dict[str, str]) -> None:
    out = _run([str(AETHER), "list", "adapters"], env, cwd=work).stdout
    assert "labels_txt" in out and "aether-torchvision" in out and "folder" in out


def test_plugin_format_detected_by_inspect(work: Path, env: Dict[str, str], listed: Path) -> None:
    out_dir = work / "inspect"
    out = _run([str(AETHER), "inspect", f"data={listed}", f"hydra.run.dir={out_dir}"], env, cwd=work).stdout
    assert "labels_txt (classification), 36 usable images, 3 classes, 0 bad" in out, out
    rep = json.loads((out_dir / "report.json").read_text())
    assert rep["format"] == "labels_txt" and rep["classes"] == {c: 12 for c in sorted(COLOURS)}
    # named on the command line, the format is read strictly: class folders are not a labels.txt
    folders = _make_images(work / "folders")
    proc = subprocess.run([str(AETHER), "inspect", f"data={folders}", "data.format=labels_txt",
                           f"hydra.run.dir={work / 'inspect-folders'}"], env=env, cwd=work, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "data.format=labels_txt" in proc.stderr and "not a labels_txt dataset" in proc.stderr
    assert "looks like folder" in proc.stderr


def test_plugin_format_trains_selected_from_yaml(work: Path, env: Dict[str, str], listed: Path) -> None:
    (work / "recipes").mkdir(exist_ok=True)
    (work / "recipes" / "listed.yaml").write_text("# @package _global_\nrecipe: listed\ndata:\n  format: labels_txt\n")
    run = work / "listed-run"
    _run([str(AETHER), "+recipe=listed", f"data={listed}", "model.provider=torchvision",
          "model.name=mobilenet_v3_small", "model.pretrained=false", "data.image_size=32", "data.batch_size=8",
          "data.num_workers=0", "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.progress=none",
          f"hydra.run.dir={run}"], env, cwd=work)
    m = json.loads((run / "metrics.json").read_text())
    assert m["data"]["format"] == "labels_txt" and m["data"]["classes"] == sorted(COLOURS)
    assert m["data"]["num_train"] + m["data"]["num_val"] + m["data"]["num_test"] == 36
    assert 0.0 <= m["test"]["accuracy"] <= 1.0
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["format"] == "labels_txt"
