"""Class-activation heatmaps (`aether explain`, aether.reporting.heatmaps): CNN and ViT backbones,
small inputs, bad files named, one heatmap per image."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.conftest import make_folder, run_cli


def _model_folder(root: Path, name: str, side: int = 32) -> Path:
    """A run folder holding just model/ (what `aether explain` reads) for an untrained timm model:
    where the heatmap falls does not matter here, that it is computed through the right layer does."""
    import timm

    from aether.models.saved import save_model_dir

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3)
    pre = {"input_size": [3, side, side], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
           "crop_pct": 1.0, "crop_mode": "center"}
    save_model_dir(root / "model", model, {"provider": "timm", "name": name, "kwargs": {}}, ["blue", "green", "red"], pre)
    return root


@pytest.mark.parametrize("name", ["test_convnext", "test_vit"])
def test_heatmaps_for_cnn_and_vit_backbones(name: str, tmp_path: Path) -> None:
    from aether.deploy.explain import explain_images

    run = _model_folder(tmp_path / "run", name)
    images = make_folder(tmp_path / "imgs", per_class=2)
    (images / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    res = explain_images(str(run), [str(images)], method="gradcam")
    assert res["num_files"] == 7 and res["num_explained"] == 6
    assert [Path(f["path"]).name for f in res["failed"]] == ["broken.png"]  # named, not dropped
    rows = list(csv.DictReader((run / "explain" / "explanations.csv").open()))
    assert len(rows) == 7 and rows[-1]["heatmap"].startswith("error: ")
    for row in rows[:-1]:
        assert (run / "explain" / row["heatmap"]).is_file() and row["predicted"] in ("blue", "green", "red")


@pytest.mark.parametrize("name,method", [("test_convnext", "layercam"), ("test_vit", "gradcam")])
def test_heatmap_has_a_grid_even_on_small_inputs(name: str, method: str, tmp_path: Path) -> None:
    """32 px into a stride-32 CNN leaves its last stage one cell: an earlier stage is explained."""
    from aether.deploy.predictor import Predictor
    from aether.reporting.heatmaps import Heatmapper

    predictor = Predictor(_model_folder(tmp_path / "run", name) / "model", device="cpu")
    images = make_folder(tmp_path / "imgs", per_class=1)
    batch = torch.stack([predictor.pre.load(str(p)) for p in sorted(images.rglob("*.png"))])
    cams, probs = Heatmapper(predictor.model, predictor.pre.preprocessing, method).heatmaps(batch)
    assert cams.shape == (3, 32, 32) and probs.shape == (3, 3)
    assert all(c.std() > 0.01 for c in cams) and cams.min() >= 0 and cams.max() <= 1 + 1e-6


def test_layouts_become_nchw() -> None:
    from aether.reporting.heatmaps import reshape_for

    nhwc = torch.randn(2, 7, 7, 96)  # Swin
    assert reshape_for(96, 0)(nhwc).shape == (2, 96, 7, 7)
    tokens = torch.randn(2, 1 + 16, 192)  # ViT: class token + a 4 x 4 patch grid
    out = reshape_for(192, 1)(tokens)
    assert out.shape == (2, 192, 4, 4) and torch.equal(out[:, :, 0, 1], tokens[:, 2, :])


def test_explain_command_and_its_errors(tmp_path: Path) -> None:
    run = _model_folder(tmp_path / "run", "test_convnext")
    images = make_folder(tmp_path / "imgs", per_class=1)
    r = run_cli(["explain", f"run={run}", f"images={images}", f"out={tmp_path / 'heat'}"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3 of 3 files explained (gradcam)" in r.stdout
    assert len(list((tmp_path / "heat").glob("*.png"))) == 3
    r = run_cli(["explain", f"run={run}", f"images={images}", "method=saliency"], tmp_path)
    assert r.returncode == 2 and "aether: error: explain: method='saliency' is not one of gradcam" in r.stderr
    assert "Traceback" not in r.stderr
