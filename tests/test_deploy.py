"""Deployment end to end: `aether export` -> a real `bentoml serve` on loopback -> HTTP requests,
`aether predict`, `aether export format=onnx`.

One tiny model is trained once for the module and one server is started once; the BentoML
model store lives in a temporary BENTOML_HOME so the user's store is never touched.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from aether.deploy.server import BentoServer
from conftest import AETHER, make_folder, run_cli, run_in_process

BENTOML = str(Path(AETHER).parent / "bentoml")
MAX_PIXELS = 1_000_000  # the run's data.max_image_pixels: the served model inherits it
MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict]:
    """A trained run, exported into a private model store, served by `bentoml serve`."""
    root = tmp_path_factory.mktemp("deploy")
    env = {"BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "AETHER_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AETHER_CACHE", env["AETHER_CACHE"])
        run = root / "run"
        run_in_process(run, [f"data={make_folder(root / 'imgs', per_class=12)}", "model=test_vit",
                             "trainer.max_epochs=1", f"data.max_image_pixels={MAX_PIXELS}"])
    res = run_cli(["export", f"run={run}", f"max_upload_mb={MAX_UPLOAD_MB}"], cwd=root, env=env)
    assert res.returncode == 0, res.stderr
    with BentoServer(run / "bento", root / "serve.log", env=env) as server:  # stopped by its PID on exit
        yield {"root": root, "run": run, "env": env, "url": server.url, "export_out": res.stdout}


def _images(run: Path) -> List[Path]:
    imgs = sorted((run.parent / "imgs").rglob("*.png"))
    return imgs[::4]  # 9 images over the 3 classes


def _in_process(run: Path, paths: List[Path]) -> Dict[str, Dict]:
    from aether.deploy.predictor import Predictor

    results, failed = Predictor(run / "model", device="cpu").predict_paths([str(p) for p in paths], k=3)
    assert not failed
    return {r["path"]: r for r in results}


def _post(url: str, field: str, name: str, data: bytes, client=None):  # type: ignore[no-untyped-def]
    import httpx

    return (client or httpx).post(f"{url}/predict", files={field: (name, data)}, timeout=60)


def test_export_writes_store_version_and_bento_dir(deploy: Dict) -> None:
    run, env = deploy["run"], deploy["env"]
    assert "bentoml serve" in deploy["export_out"]
    settings = json.loads((run / "bento" / "aether_serve.json").read_text())
    name, version = settings["tag"].split(":")
    assert name == "aether-default-test_vit"
    stored = Path(env["BENTOML_HOME"]) / "models" / name / version
    assert (stored / "model.safetensors").is_file() and (stored / "labels.json").is_file()
    assert not list(stored.rglob("*.pkl"))  # weights and label map travel as safetensors + JSON
    assert "lock_packages: false" in (run / "bento" / "bentofile.yaml").read_text()
    card = (run / "model" / "MODEL_CARD.md").read_text()  # the model card travels with the model
    assert (stored / "MODEL_CARD.md").read_text() == card == (run / "bento" / "MODEL_CARD.md").read_text()
    assert settings["batching"]["enabled"] and settings["batching"]["max_batch_size"] >= 4
    assert settings["limits"]["max_pixels"] == MAX_PIXELS

    # a newer run (here: the same run with changed weights) adds a version under the same name
    from safetensors.torch import load_file, save_file

    newer = deploy["root"] / "newer"
    (newer / "model").mkdir(parents=True)
    for f in ("model.json", "labels.json", "preprocessing.json", "metrics.json", "config.yaml"):
        src = run / "model" / f if (run / "model" / f).exists() else run / f
        (newer / ("model" if src.parent.name == "model" else "") / f).write_bytes(src.read_bytes())
    weights = {k: v + 0.01 for k, v in load_file(str(run / "model" / "model.safetensors")).items()}
    save_file(weights, str(newer / "model" / "model.safetensors"))
    assert run_cli(["export", f"run={newer}"], cwd=deploy["root"], env=env).returncode == 0
    listed = subprocess.run([BENTOML, "models", "list", "-o", "json"], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120)
    tags = [m["tag"] for m in json.loads(listed.stdout)]
    assert settings["tag"] in tags and len([t for t in tags if t.startswith(name + ":")]) == 2


def test_served_labels_equal_in_process_predictions(deploy: Dict) -> None:
    import httpx

    url, run = deploy["url"], deploy["run"]
    paths = _images(run)
    expected = _in_process(run, paths)
    for p in paths:
        r = httpx.post(f"{url}/predict", files={"image": (p.name, p.read_bytes())}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == expected[str(p)]["label"]
        assert body["score"] == pytest.approx(expected[str(p)]["score"], abs=1e-4)
        assert [t["label"] for t in body["top_k"]] == [t["label"] for t in expected[str(p)]["top_k"]]

    # several files in one request; a bad one gets an error in its place, the others a label
    files = [("images", (p.name, p.read_bytes())) for p in paths[:3]] + [("images", ("x.png", b"not an image"))]
    r = httpx.post(f"{url}/predict_batch", files=files, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [x.get("label") for x in preds[:3]] == [expected[str(p)]["label"] for p in paths[:3]]
    assert preds[3]["error"] == "not_an_image"


def test_metadata_and_health(deploy: Dict) -> None:
    import httpx

    url = deploy["url"]
    for probe in ("readyz", "livez", "healthz"):
        assert httpx.get(f"{url}/{probe}", timeout=10).status_code == 200
    meta = httpx.post(f"{url}/metadata", timeout=10).json()
    assert meta["classes"] == ["blue", "green", "red"]
    assert meta["input_size"] == [3, 32, 32]
    assert meta["tag"].startswith("aether-default-test_vit:")
    assert "accuracy" in meta["metrics"] and meta["batching"]["enabled"] is True


def _bad_inputs() -> Dict[str, tuple]:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buf, "JPEG", quality=95)
    jpeg = buf.getvalue()
    bomb = io.BytesIO()
    Image.new("L", (2000, 2000)).save(bomb, "PNG")  # 4 Mpx in a few kB; the run allows 1 Mpx
    return {
        "not_an_image": ("image", "notes.jpg", b"hello, I am plain text", 400, "not_an_image"),
        "empty": ("image", "empty.png", b"", 400, "empty"),
        "truncated": ("image", "cut.jpg", jpeg[: len(jpeg) // 2], 400, "truncated"),
        "decompression_bomb": ("image", "bomb.png", bomb.getvalue(), 413, "decompression_bomb"),
        "oversized": ("image", "big.png", os.urandom(int(1.5 * 1024 * 1024)), 413, "too_large"),
        "wrong_field": ("picture", "ok.png", b"", 400, None),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_gets_4xx_json_and_server_keeps_serving(deploy: Dict, case: str) -> None:
    import httpx

    field, name, data, status, code = _bad_inputs()[case]
    good = _images(deploy["run"])[0]
    if case == "wrong_field":
        data = good.read_bytes()
    r = _post(deploy["url"], field, name, data)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] if code is None else body["error"] == code
    assert body["detail"]
    ok = httpx.post(f"{deploy['url']}/predict", files={"image": (good.name, good.read_bytes())}, timeout=60)
    assert ok.status_code == 200 and ok.json()["label"] in ("blue", "green", "red")


def test_malformed_multipart_gets_400(deploy: Dict) -> None:
    import httpx

    url, good = deploy["url"], _images(deploy["run"])[0].read_bytes()
    r = httpx.post(f"{url}/predict", content=b"xx", headers={"content-type": "multipart/form-data"}, timeout=30)
    assert r.status_code == 400 and "boundary" in r.json()["detail"]
    r = httpx.post(f"{url}/predict", files=[("image", ("a.png", good)), ("image", ("b.png", good))], timeout=30)
    assert r.status_code == 400 and "/predict_batch" in r.json()["detail"]
    r = httpx.post(f"{url}/predict", json={"image": "/etc/passwd"}, timeout=30)  # a path is not an upload
    assert r.status_code == 400 and r.json()["error"]


def test_oversized_chunked_upload_is_refused(deploy: Dict) -> None:
    """Without a Content-Length the limit is enforced while reading."""
    import httpx

    def chunks() -> Iterator[bytes]:
        for _ in range(24):
            yield b"\0" * 65536

    r = httpx.post(f"{deploy['url']}/predict", content=chunks(), timeout=60,
                   headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_concurrent_burst_all_succeed(deploy: Dict) -> None:
    import httpx

    url, run = deploy["url"], deploy["run"]
    paths = _images(run)
    expected = _in_process(run, paths)
    jobs = [paths[i % len(paths)] for i in range(100)]
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16)) as client:
        def one(p: Path):  # type: ignore[no-untyped-def]
            return p, client.post(f"{url}/predict", files={"image": (p.name, p.read_bytes())})

        with ThreadPoolExecutor(max_workers=16) as pool:  # 16 requests in flight at most
            results = list(pool.map(one, jobs))
    assert [r.status_code for _, r in results] == [200] * 100
    assert all(r.json()["label"] == expected[str(p)]["label"] for p, r in results)


def test_predict_cli_writes_csv_and_json_with_failures(deploy: Dict, tmp_path: Path) -> None:
    import csv

    imgs = tmp_path / "new"
    imgs.mkdir()
    paths = _images(deploy["run"])[:5]
    for p in paths:
        (imgs / p.name).write_bytes(p.read_bytes())
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    (imgs / "zero.png").write_bytes(b"")
    out = tmp_path / "out"
    res = run_cli(["predict", f"run={deploy['run']}", f"images={imgs}", f"out={out}", "top_k=2"], cwd=tmp_path,
                  env=deploy["env"])
    assert res.returncode == 0, res.stderr
    assert "5 of 7 files classified" in res.stdout and "broken.jpg" in res.stderr
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 7
    expected = _in_process(deploy["run"], paths)
    by_name = {Path(r["path"]).name: r for r in rows}
    for p in paths:
        assert by_name[p.name]["label"] == expected[str(p)]["label"]
        assert len(by_name[p.name]["top_k"].split(";")) == 2
    assert by_name["zero.png"]["error"].startswith("empty") and by_name["zero.png"]["label"] == ""
    report = json.loads((out / "predictions.json").read_text())
    reasons = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    assert set(reasons) == {"broken.jpg", "zero.png"} and reasons["zero.png"] == "empty"
    assert reasons["broken.jpg"] in ("truncated", "not_an_image", "corrupt")


def test_export_onnx_dynamic_batch_and_parity(deploy: Dict) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    from aether.deploy.onnx_export import parity
    from aether.deploy.predictor import Predictor

    run = deploy["run"]
    res = run_cli(["export", f"run={run}", "format=onnx"], cwd=deploy["root"], env=deploy["env"])
    assert res.returncode == 0, res.stderr
    info = json.loads((run / "model" / "onnx.json").read_text())
    assert info["max_abs_diff"] <= 1e-4 and info["batch_sizes"] == [1, 3]
    pred = Predictor(run / "model", device="cpu")
    x = torch.stack([pred.pre.load(str(p)) for p in _images(run)[:5]])  # 5 real images: a batch size not exported
    session = ort.InferenceSession(str(run / "model" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": x.numpy()})[0]
    with torch.inference_mode():
        ref = pred.model(x).numpy()
    assert got.shape == (5, 3) and np.max(np.abs(got - ref)) <= 1e-4
    # the onnxruntime serving backend: same probabilities as PyTorch; stored as its own version
    from aether.deploy.onnx_export import OnnxRunner

    probs = OnnxRunner(run / "model" / "model.onnx").probabilities(x.numpy())
    assert np.max(np.abs(probs - pred.probabilities(x))) <= 1e-5
    res = run_cli(["export", f"run={run}", "backend=onnx"], cwd=deploy["root"], env=deploy["env"])
    assert res.returncode == 0 and "onnx backend" in res.stdout, res.stderr
    settings = json.loads((run / "bento" / "aether_serve.json").read_text())
    name, version = settings["tag"].split(":")
    assert settings["backend"] == "onnx"
    assert (Path(deploy["env"]["BENTOML_HOME"]) / "models" / name / version / "model.onnx").is_file()
    # the check is real: a model that differs from the exported one is caught
    with torch.no_grad():
        for prm in pred.model.parameters():
            prm.add_(0.05)
    assert parity(pred.model, run / "model" / "model.onnx", (3, 32, 32))["max_abs_diff"] > 1e-4


def test_openvino_backend_serves_the_same_labels_and_explain_answers_heatmaps(deploy: Dict) -> None:
    """`backend=openvino explain=true`: the OpenVINO IR (agreement-checked on the run's test split)
    serves the same labels and scores as PyTorch, and /explain answers a Grad-CAM overlay PNG;
    the torch-backend server, exported without explain=true, answers /explain with a 404 JSON."""
    import base64
    import io

    import httpx
    from PIL import Image

    run, env = deploy["run"], deploy["env"]
    r = httpx.post(f"{deploy['url']}/explain", files={"image": ("a.png", _images(run)[0].read_bytes())}, timeout=60)
    assert r.status_code == 404 and r.json()["error"] == "explain_not_enabled", r.text
    res = run_cli(["export", f"run={run}", "backend=openvino", "explain=true", "explain_method=layercam"],
                  cwd=deploy["root"], env=env)
    assert res.returncode == 0 and "openvino backend" in res.stdout and "/explain" in res.stdout, res.stderr
    settings = json.loads((run / "bento" / "aether_serve.json").read_text())
    name, version = settings["tag"].split(":")
    stored = Path(env["BENTOML_HOME"]) / "models" / name / version
    assert settings["backend"] == "openvino" and (stored / "openvino" / "model.xml").is_file()
    assert json.loads((stored / "openvino.json").read_text())["top1_agreement"] >= 0.99
    assert "openvino==" in (run / "bento" / "bentofile.yaml").read_text()
    paths = _images(run)[:4]
    expected = _in_process(run, paths)
    with BentoServer(run / "bento", deploy["root"] / "serve-openvino.log", env=env) as server:
        assert httpx.post(f"{server.url}/metadata", timeout=10).json()["backend"] == "openvino"
        for p in paths:
            body = httpx.post(f"{server.url}/predict", files={"image": (p.name, p.read_bytes())}, timeout=60).json()
            assert body["label"] == expected[str(p)]["label"], body
            assert body["score"] == pytest.approx(expected[str(p)]["score"], abs=1e-4)
        r = httpx.post(f"{server.url}/explain", files={"image": (paths[0].name, paths[0].read_bytes())}, timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == expected[str(paths[0])]["label"] and body["method"] == "layercam"
        heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
        assert heat.size == (32, 32) and heat.mode == "RGB"
        r = httpx.post(f"{server.url}/explain", files={"image": ("x.png", b"not an image")}, timeout=60)
        assert r.status_code == 400 and r.json()["error"] == "not_an_image"
    res = run_cli(["export", f"run={run}", "backend=tensorflow"], cwd=deploy["root"], env=env)
    assert res.returncode == 2 and "backend='tensorflow': expected one of torch, onnx, openvino" in res.stderr


def test_export_and_predict_argument_errors(tmp_path: Path) -> None:
    res = run_cli(["export", f"run={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 2 and "missing: model.safetensors" in res.stderr
    res = run_cli(["export", "run=x", "fromat=onnx"], cwd=tmp_path)
    assert res.returncode == 2 and "did you mean 'format'" in res.stderr
    res = run_cli(["predict", f"run={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 2 and "missing images=" in res.stderr
