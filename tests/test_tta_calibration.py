"""test.tta (test-time augmentation) and calibration=temperature (+ reject_below), classification.

One tiny run (3 colour classes with some labels swapped, so the validation split has errors to
calibrate against) serves the end-to-end checks; the fitting and the ECE are also checked on
synthetic logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aether.errors import AetherError
from tests.conftest import compose_raw, make_folder, run_in_process


def _noisy_folder(root: Path) -> Path:
    """16 images per colour class, 3 of each moved to the next class: label noise the network
    cannot learn, so validation and test hold errors."""
    make_folder(root, per_class=16)
    names = sorted(p.name for p in root.iterdir())
    for i, name in enumerate(names):
        nxt = names[(i + 1) % len(names)]
        for f in sorted((root / name).glob("*.png"))[-3:]:
            shutil.move(str(f), str(root / nxt / f"moved_{f.name}"))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ttacal")
    data = _noisy_folder(base / "imgs")
    run_dir = base / "run"
    run_in_process(run_dir, [f"data={data}", "test.tta=flip", "data.val_fraction=0.3", "data.test_fraction=0.2",
                             "optimizer.lr=0.01", "calibration.reject_below=0.5"])
    return run_dir


def _batch(run: Path, n: int = 6) -> torch.Tensor:
    from aether.deploy.predictor import Preprocessor

    pre = Preprocessor.from_model_dir(run / "model")
    files = sorted((run.parent / "imgs").rglob("*.png"))[:n]
    return torch.stack([pre.load(str(f)) for f in files])


# ------------------------------------------------------------------ units: the fit, the views


def test_temperature_fitted_on_val_logits_lowers_ece_on_held_out_logits() -> None:
    from aether.tasks.classification.calibration import ece, fit_temperature

    gen = torch.Generator().manual_seed(0)
    n, k = 4000, 5
    y = torch.randint(0, k, (n,), generator=gen)
    clean = torch.randn(n, k, generator=gen)
    clean[torch.arange(n), y] += 1.5  # about 70% right
    # the true posterior is softmax(1.5 * clean) (Gaussian scores, class shift 1.5): 4 * clean is
    # the same ranking, 4 / 1.5 times too sure
    logits = 4.0 * clean
    (val_z, test_z), (val_y, test_y) = logits.split(n // 2), y.split(n // 2)
    t, fit = fit_temperature(val_z, val_y)
    assert 2.4 < t < 3.0 and fit["nll_after"] < fit["nll_before"] and fit["note"] == ""
    before, after = ece(torch.softmax(test_z, 1), test_y), ece(torch.softmax(test_z / t, 1), test_y)
    assert after < before / 3 and after < 0.03
    # nothing to calibrate against: left at 1, and said
    right = torch.eye(k)[y[:50]] * 3
    assert fit_temperature(right, y[:50])[0] == 1.0 and "left at 1" in fit_temperature(right, y[:50])[1]["note"]
    assert fit_temperature(torch.zeros((0, k)), torch.zeros(0))[0] == 1.0


def test_tta_views() -> None:
    from aether.tasks.classification import tta

    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    flip = tta.views(x, "flip")
    assert len(flip) == 2 and torch.equal(flip[0], x) and torch.equal(flip[1], x.flip(-1))
    crops = tta.views(x, "multi_crop")
    assert len(crops) == tta.num_views("multi_crop") == 5 and all(v.shape == x.shape for v in crops)
    assert not torch.equal(crops[1], crops[4])  # top-left and bottom-right corners
    with pytest.raises(AetherError, match="tta='mirror': expected one of none, flip, multi_crop"):
        tta.views(x, "mirror")


def test_options_are_validated_and_other_tasks_refuse_them() -> None:
    from aether.config.validate import ConfigError, validate
    from aether.run import check_test_options
    from aether.tasks.multilabel.options import MultilabelTaskCfg
    from aether.tasks.multilabel.task import Multilabel

    with pytest.raises(ConfigError, match="test.tta"):
        validate(compose_raw(["test.tta=mirror"]))
    with pytest.raises(ConfigError, match="calibration.reject_below"):
        validate(compose_raw(["calibration.reject_below=1.5"]))
    task = Multilabel(MultilabelTaskCfg())
    rc = validate(compose_raw(["test.tta=flip"]))
    with pytest.raises(AetherError, match="test.tta=flip: task=multilabel has no test-time augmentation"):
        check_test_options(rc, task)
    rc = validate(compose_raw([]))
    check_test_options(rc, task)  # calibration=temperature is the default: multilabel just does not calibrate
    rc._explicit = {"calibration"}
    with pytest.raises(AetherError, match="calibration=temperature: task=multilabel has no confidence calibration"):
        check_test_options(rc, task)


# ------------------------------------------------------------------ the run and its exported model


def test_metrics_and_report_record_tta_and_calibration(run: Path) -> None:
    m = json.loads((run / "metrics.json").read_text())
    a = m["tta"]
    assert a["mode"] == "flip" and a["views"] == 2 and set(a["plain"]) == set(a["tta"]) >= {"accuracy", "ece"}
    assert a["tta"]["accuracy"] == m["test"]["accuracy"]  # the test results are with TTA
    assert a["plain"]["ece"] != a["tta"]["ece"]  # the averaged probabilities differ from the plain ones
    c = m["calibration"]
    saved = json.loads((run / "model" / "calibration.json").read_text())
    assert c["method"] == saved["method"] == "temperature" and saved["reject_below"] == 0.5
    assert c["temperature"] == saved["temperature"] != 1.0 and c["fit"]["note"] == ""  # val had errors
    assert c["fit"]["nll_after"] < c["fit"]["nll_before"]
    assert m["test"]["ece"] == c["ece"] and m["test"]["ece_uncalibrated"] == c["ece_uncalibrated"]
    assert m["test"]["ece"] != m["test"]["ece_uncalibrated"]
    assert json.loads((run / "model" / "model.json").read_text())["test_tta"] == "flip"
    report = (run / "report.md").read_text()
    assert "## Test-time augmentation" in report and "| metric | plain | with TTA |" in report
    assert "## Calibration" in report and "![reliability diagram](reliability.png)" in report
    assert (run / "reliability.png").stat().st_size > 1000


def test_exported_predictors_return_calibrated_tta_probabilities(run: Path) -> None:
    from aether.deploy.onnx_export import OnnxRunner
    from aether.deploy.predictor import Predictor
    from aether.deploy.tasks import TaskPredictor

    t = json.loads((run / "model" / "calibration.json").read_text())["temperature"]
    x = _batch(run)
    plain = TaskPredictor(run / "model", device="cpu", tta="none")
    with torch.inference_mode():
        logits = plain.model(x).float()
        flipped = plain.model(x.flip(-1)).float()
    calibrated = torch.softmax(logits / t, 1).numpy()
    assert np.allclose(plain.outputs(x), calibrated, atol=1e-6)  # softmax(logits / T)
    assert not np.allclose(calibrated, torch.softmax(logits, 1).numpy(), atol=1e-3)
    # the run's test.tta=flip is the default: the mean of both views' calibrated softmax
    with_tta = (torch.softmax(logits / t, 1) + torch.softmax(flipped / t, 1)).numpy() / 2
    served = TaskPredictor(run / "model", device="cpu")
    assert served.options["tta"] == "flip" and np.allclose(served.outputs(x), with_tta, atol=1e-6)
    assert not np.allclose(served.outputs(x), plain.outputs(x), atol=1e-4)  # TTA changes the answers
    assert np.allclose(Predictor(run / "model", device="cpu").probabilities(x), with_tta, atol=1e-6)
    # the graph from the quick TorchScript exporter (`aether export format=onnx` and its parity
    # check are test_deploy's): what is checked here is the runner's temperature and views
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(plain.model, (x[:2],), str(run / "model" / "model.onnx"), input_names=["images"],
                          output_names=["logits"], dynamo=False, opset_version=17,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    runner = OnnxRunner(run / "model" / "model.onnx")  # the bento's onnx backend reads the same folder
    assert np.allclose(runner.outputs(x.numpy()), with_tta, atol=1e-4)
    assert np.allclose(runner.probabilities(x.numpy()), with_tta, atol=1e-4)
    none = OnnxRunner(run / "model" / "model.onnx", options={"tta": "none"})
    assert np.allclose(none.outputs(x.numpy()), calibrated, atol=1e-4)


def test_reject_threshold_answers_unknown(run: Path, tmp_path: Path) -> None:
    from aether.deploy.predict import predict_images

    images = str(run.parent / "imgs" / "red")
    free = predict_images(str(run), [images], out=str(tmp_path / "a"), progress=False, reject_below=1e-6)
    scores = sorted(r["score"] for r in free["predictions"])
    assert all(r["label"] != "unknown" for r in free["predictions"])
    cut = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    res = predict_images(str(run), [images], out=str(tmp_path / "b"), progress=False, reject_below=cut)
    labels = {r["path"]: r["label"] for r in res["predictions"]}
    for r in free["predictions"]:
        assert (labels[r["path"]] == "unknown") == (r["score"] < cut)
    assert "unknown" in labels.values() and set(labels.values()) != {"unknown"}
    # the run's calibration.reject_below=0.5 is the default threshold
    default = predict_images(str(run), [images], out=str(tmp_path / "c"), progress=False)
    assert [r["label"] == "unknown" for r in default["predictions"]] == \
        [r["score"] < 0.5 for r in default["predictions"]]
    with pytest.raises(AetherError, match=r"reject_below=1.5: expected a probability in \(0, 1\]"):
        predict_images(str(run), [images], out=str(tmp_path / "d"), progress=False, reject_below=1.5)
