"""Export and serve for multilabel, detection and segmentation: each task trains tiny on drawn
shapes, is exported with `aether export` into a private BENTOML_HOME and served by a real
`bentoml serve` (the three servers start side by side); served answers must be well formed and
equal the in-process TaskPredictor's; bad input still gets a 4xx JSON; `aether predict` writes
the task's layout; ONNX works for every task (detection: up to its candidates, finished by its codec)."""

from __future__ import annotations

import base64
import csv
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from aether.deploy.server import BentoServer
from tests.conftest import run_cli, run_in_process
from tests.tasks_data import make_scenes, write_detection, write_masks, write_multilabel

TINY = ["model.pretrained=false", "trainer.max_epochs=1", "data.batch_size=8", "scheduler=none", "data/augment=none"]
OVERRIDES = {
    "multilabel": lambda root: [f"data={write_multilabel(root / 'data', n=24)}"],
    "segmentation": lambda root: [f"data={write_masks(root / 'data', n=16, size=32)}"],
    # score_threshold 0: the barely trained detector still answers boxes (its 10 best)
    "detection": lambda root: [f"data={write_detection(root / 'data', 'coco', make_scenes(16, size=64, seed=5))}",
                               "data.image_size=64", "+task_options.score_threshold=0.0",
                               "+task_options.detections_per_image=10"],
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict]:
    root = tmp_path_factory.mktemp("deploy_tasks")
    env = {"BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "AETHER_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AETHER_CACHE", env["AETHER_CACHE"])
        for task, overrides in OVERRIDES.items():
            runs[task] = root / task / "run"
            rc = run_in_process(runs[task], [*TINY, *overrides(root / task)])
            assert rc.task == task
    def export(task: str) -> None:
        extra = ["score_threshold=0.001"] if task == "detection" else []
        res = run_cli(["export", f"run={runs[task]}", *extra], cwd=root, env=env)
        assert res.returncode == 0, res.stderr

    servers = {t: BentoServer(r / "bento", root / f"{t}.log", env=env) for t, r in runs.items()}
    try:
        with ThreadPoolExecutor(len(servers)) as pool:  # export and start-up are mostly imports: overlap them
            list(pool.map(export, runs))
            list(pool.map(lambda s: s.start(), servers.values()))
        yield {"root": root, "runs": runs, "urls": {t: s.url for t, s in servers.items()}}
    finally:
        for s in servers.values():
            s.stop()


def _oblong(root: Path, task: str) -> Path:
    """A test image that is not square (80 x 48): answers must come back in ITS pixels."""
    img = make_scenes(1, size=64, seed=99)[0][1].resize((80, 48))
    path = root / task / "oblong.png"
    img.save(path)
    return path


def _compare(served: Dict, task: str) -> tuple:
    import httpx

    from aether.deploy.tasks import TaskPredictor

    run, url = served["runs"][task], served["urls"][task]
    paths = [_oblong(served["root"], task), *sorted((served["root"] / task / "data").rglob("img_00[0-2].*"))[:2]]
    extra = {"score_threshold": 0.001} if task == "detection" else {}
    results, failed = TaskPredictor(run / "model", device="cpu", **extra).predict_task_paths([str(p) for p in paths])
    assert not failed
    got = []
    for p in paths:
        r = httpx.post(f"{url}/predict", files={"image": (p.name, p.read_bytes())}, timeout=60)
        assert r.status_code == 200, r.text
        got.append(r.json())
    # bad input: a 4xx JSON naming the problem, the good files of a batch still answered
    bad = httpx.post(f"{url}/predict", files={"image": ("x.png", b"not an image")}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"] == "not_an_image", bad.text
    files = [("images", (p.name, p.read_bytes())) for p in paths[:2]] + [("images", ("y.jpg", b"\xff\xd8junk"))]
    batch = httpx.post(f"{url}/predict_batch", files=files, timeout=60)
    assert batch.status_code == 200, batch.text
    preds = batch.json()["predictions"]
    assert preds[2]["error"] and [{k: v for k, v in p.items() if k != "index"} for p in preds[:2]] == got[:2]
    meta = httpx.post(f"{url}/metadata", timeout=30).json()
    assert meta["task"] == task
    return [{k: v for k, v in r.items() if k != "path"} for r in results], got


def test_multilabel_served_labels_over_thresholds(served: Dict) -> None:
    expected, got = _compare(served, "multilabel")
    thresholds = json.loads((served["runs"]["multilabel"] / "model" / "thresholds.json").read_text())
    for e, g in zip(expected, got):
        assert set(g) == {"labels", "scores"} and set(g["scores"]) == {"circle", "square"}
        assert g["labels"] == [c for c in ("circle", "square") if g["scores"][c] >= thresholds[c]]
        assert g["labels"] == e["labels"]
        assert g["scores"] == pytest.approx(e["scores"], abs=1e-4)


def test_detection_served_boxes_in_original_pixels(served: Dict) -> None:
    expected, got = _compare(served, "detection")
    for e, g in zip(expected, got):
        assert set(g) == {"boxes", "labels", "scores"} and 0 < len(g["boxes"]) <= 10
        assert len(g["boxes"]) == len(g["labels"]) == len(g["scores"])
        assert set(g["labels"]) <= {"circle", "square"} and all(0.001 <= s <= 1 for s in g["scores"])
        assert g["labels"] == e["labels"] and g["scores"] == pytest.approx(e["scores"], abs=1e-4)
        flat = [v for b in g["boxes"] for v in b]
        assert flat == pytest.approx([v for b in e["boxes"] for v in b], abs=0.05)
    w, h = 80, 48  # the oblong image: boxes in its own pixels, not the model's 64 x 64
    assert all(0 <= b[0] <= b[2] <= w + 0.01 and 0 <= b[1] <= b[3] <= h + 0.01 for b in got[0]["boxes"])


def test_segmentation_served_mask_png_and_areas(served: Dict) -> None:
    import numpy as np
    from PIL import Image

    expected, got = _compare(served, "segmentation")
    classes = json.loads((served["runs"]["segmentation"] / "model" / "labels.json").read_text())
    for e, g, size in zip(expected, got, [(80, 48), (32, 32), (32, 32)]):
        assert (g["width"], g["height"]) == size
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(g["mask_png"]))))
        assert mask.shape == (size[1], size[0]) and mask.max() < len(classes)
        counts = np.bincount(mask.ravel(), minlength=len(classes))
        assert {c: a["pixels"] for c, a in g["areas"].items()} == {c: int(counts[i]) for i, c in enumerate(classes)}
        assert sum(a["fraction"] for a in g["areas"].values()) == pytest.approx(1.0, abs=1e-4)
        assert g["mask_png"] == e["mask_png"] and g["areas"] == e["areas"]


def _predict_rows(served: Dict, task: str, tmp_path: Path) -> List[Dict[str, str]]:
    from aether.deploy.predict import predict_images

    folder = tmp_path / "in"
    folder.mkdir()
    _oblong(served["root"], task).replace(folder / "a.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8junk")
    res = predict_images(str(served["runs"][task]), [str(folder)], out=str(tmp_path / "out"), progress=False)
    assert res["num_predicted"] == 1 and res["failed"][0]["path"].endswith("broken.jpg")
    with open(tmp_path / "out" / "predictions.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("task", ["multilabel", "detection", "segmentation"])
def test_predict_cli_layout_per_task(served: Dict, task: str, tmp_path: Path) -> None:
    rows = _predict_rows(served, task, tmp_path)
    good, broken = rows[0], rows[1]
    assert broken["error"] and good["error"] == ""
    if task == "multilabel":
        assert set(good) == {"path", "labels", "scores", "error"} and len(good["scores"].split(";")) == 2
    elif task == "detection":
        boxes = json.loads(good["boxes"])
        assert int(good["num_boxes"]) == len(boxes) and all(set(b) == {"box", "label", "score"} for b in boxes)
    else:
        from PIL import Image

        mask = Image.open(tmp_path / "out" / good["mask"])
        assert mask.size == (80, 48) and int(good["width"]) == 80
        assert sum(int(v) for k, v in good.items() if k.startswith("pixels:")) == 80 * 48
        saved = json.loads((tmp_path / "out" / "predictions.json").read_text())
        assert "mask_png" not in saved["predictions"][0] and saved["task"] == "segmentation"


def test_onnx_parity_for_every_task(served: Dict) -> None:
    import numpy as np
    import torch

    from aether.deploy.onnx_export import OnnxRunner, export_onnx
    from aether.deploy.tasks import TaskPredictor

    for task in ("multilabel", "segmentation", "detection"):
        run = served["runs"][task]
        info = export_onnx(str(run))
        assert info["max_abs_diff"] <= 1e-4 and info["task"] == task
        x = torch.rand(3, *info["input"]["shape"][1:], generator=torch.Generator().manual_seed(0))
        predictor = TaskPredictor(run / "model", device="cpu")
        ref = predictor.outputs(x)
        got = OnnxRunner(run / "model" / "model.onnx", task=task, options=predictor.options).outputs(x.numpy())
        assert got.shape == ref.shape
        if task == "multilabel":  # sigmoid scores
            assert np.max(np.abs(got - ref)) < 1e-5
        elif task == "segmentation":  # class-id masks: only a near-tie between two logits could flip a pixel
            assert (got == ref).mean() > 0.999
        else:  # the same boxes after the same NMS: [x0, y0, x1, y1, score, label], -1 padding
            assert (ref[..., 4] >= 0).any() and np.array_equal(got[..., 5], ref[..., 5])
            assert np.max(np.abs(got - ref)) < 1e-3


# --- the codec lookup: deploy/ knows no task ------------------------------------------------------

def test_every_task_has_a_codec_found_without_importing_its_task() -> None:
    """Each registered task's codec comes from the registry entry alone: a served Bento's front
    end never imports a Task (its module imports Lightning)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from aether import registry\n"
            "from aether.tasks.codec import codec_class\n"
            "import aether.deploy.tasks, aether.deploy.predict, aether.deploy.bento, aether.deploy.onnx_export\n"
            "codecs = {t: codec_class(t) for t in registry.tasks.names()}\n"
            "assert all(c.task == t for t, c in codecs.items()), codecs\n"
            "print(sorted(codecs), sorted(m for m in ('lightning', 'torchmetrics') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("] ")[1].strip() == "[]"
    assert all(t in out.stdout for t in ("classification", "multilabel", "segmentation", "detection"))


def test_deploy_names_no_task() -> None:
    """What differs between tasks is in their codecs (aether/tasks/<task>/serving.py)."""
    root = Path(__file__).resolve().parents[1] / "aether" / "deploy"
    for path in root.glob("*.py"):
        text = path.read_text()
        assert not [t for t in ("classification", "multilabel", "segmentation", "detection")
                    if f'"{t}"' in text or f"'{t}'" in text], path


def test_codec_of_a_task_kept_elsewhere_and_unknown_task() -> None:
    """A Task whose module has no serving module beside it names its codec in `Task.codec`; a
    model of a task nobody registered is refused by name."""
    from aether import registry
    from aether.errors import AetherError
    from aether.tasks.base import Task
    from aether.tasks.classification.serving import ClassificationCodec
    from aether.tasks.codec import codec_class, model_task

    class Elsewhere(Task):
        name = "elsewhere_test"
        codec = "aether.tasks.classification.serving:ClassificationCodec"

    Elsewhere.__module__ = "elsewhere_test_module"  # a single-module plugin: no package to look beside
    registry.tasks.register("elsewhere_test", Elsewhere)
    try:
        assert codec_class("elsewhere_test") is ClassificationCodec
    finally:
        del registry.tasks._entries["elsewhere_test"]
    with pytest.raises(AetherError, match="model task 'nope': cannot serve it; expected one of .*classification"):
        codec_class("nope")
    assert model_task({}) == model_task({"task": None}) == "classification"  # model.json from before tasks
