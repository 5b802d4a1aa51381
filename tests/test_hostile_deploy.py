"""Hostile input to `aether predict` and to the served model: file names that are not UTF-8,
broken symlinks, FIFOs, an unwritable output folder; uploads that are small on disk and huge
decoded (decoded reduced, within a per-worker pixel budget)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest

from conftest import make_folder, run_cli, run_in_process

BIG = 6000  # 36 Mpx: under the run's pixel limit, a few hundred kB on disk


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict]:
    root = tmp_path_factory.mktemp("hostile")
    env = {"BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "AETHER_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AETHER_CACHE", env["AETHER_CACHE"])
        run_dir = root / "run"
        run_in_process(run_dir, [f"data={make_folder(root / 'imgs', per_class=12)}", "model=test_vit",
                                 "trainer.max_epochs=2", "data.max_image_pixels=50000000"])
    yield {"root": root, "run": run_dir, "env": env, "imgs": sorted((root / "imgs").rglob("*.png"))}


def _big(fmt: str, color=(220, 40, 40)) -> bytes:  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (BIG, BIG), color)
    ImageDraw.Draw(img).rectangle([BIG // 3, BIG // 3, BIG // 2, BIG // 2], fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_predict_lists_every_hostile_file_with_a_row(run: Dict, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = run["imgs"][:3]
    for p in good:
        (src / p.name).write_bytes(p.read_bytes())
    bad_name = os.fsencode(str(src)) + b"/caf\xe9-\xff.png"  # Latin-1 bytes: not valid UTF-8
    with open(bad_name, "wb") as fh:
        fh.write(good[0].read_bytes())
    os.symlink(src / "gone.png", src / "dangling.png")
    os.mkfifo(src / "pipe.png")  # opening it for reading would block until a writer comes
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", src / "linked_dir")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    res = run_cli(["predict", f"run={run['run']}", f"images={src}", f"out={out}"], cwd=tmp_path, env=run["env"],
                  timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and time.perf_counter() - t0 < 300
    rows = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    report = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert len(rows) == report["num_files"] == 7
    assert report["num_predicted"] + report["num_failed"] == 7 and report["num_predicted"] == 4
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == {*(p.name for p in good), "caf\\xe9-\\xff.png", "dangling.png", "pipe.png", "linked_dir"}
    assert by_name["caf\\xe9-\\xff.png"]["label"] == by_name[good[0].name]["label"]
    assert by_name["dangling.png"]["error"].startswith("broken_symlink")
    assert by_name["pipe.png"]["error"].startswith("not_an_image") and "regular" in by_name["pipe.png"]["error"]
    assert by_name["linked_dir"]["error"].startswith("not_an_image")
    # the JSON names the undecodable file exactly
    raw = [r for r in report["predictions"] if "path_bytes_b64" in r]
    assert [base64.b64decode(r["path_bytes_b64"]) for r in raw] == [bad_name]
    assert {Path(f["path"]).name: f["reason"] for f in report["failed"]} == {
        "dangling.png": "broken_symlink", "pipe.png": "not_an_image", "linked_dir": "not_an_image"}
    assert "caf\\xe9" in res.stdout + res.stderr or "4 of 7" in res.stdout


def test_predict_unwritable_out_fails_first_with_one_line(run: Dict, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()  # listing it would fail with "no files found": out is checked first
    for out in (tmp_path / "a_file" / "sub", tmp_path / "a_file", Path("/proc/aether-predictions")):
        res = run_cli(["predict", f"run={run['run']}", f"images={tmp_path / 'empty'}", f"out={out}"],
                      cwd=tmp_path, env=run["env"])
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aether: error: out=") and str(out) in lines[0], res.stderr
    assert not (run["run"] / "predictions").exists()


def test_large_uploads_are_decoded_reduced_with_the_same_answer(run: Dict, tmp_path: Path) -> None:
    import torch
    from PIL import Image

    from aether.deploy.decode import decode_reduced
    from aether.deploy.predictor import Predictor

    pred = Predictor(run["run"] / "model", device="cpu")
    need = pred.pre.need
    for fmt in ("PNG", "JPEG"):
        path = tmp_path / f"big.{fmt.lower()}"
        path.write_bytes(_big(fmt))
        img, size, decoded = decode_reduced(str(path), need)
        assert size == (BIG, BIG)
        assert need * 2 <= min(img.size) < need * 4  # what the transform needs, times a small factor
        # JPEG: DCT scaling decodes at most 1/8 per side; PNG has no reduced decode (budgeted instead)
        assert decoded <= (BIG // 8) ** 2 if fmt == "JPEG" else decoded == BIG * BIG
        with Image.open(path) as full:  # the old path: full decode, then the eval transform
            reference = pred.pre.transform(full.convert("RGB"))
        reduced = pred.pre.load(str(path))
        assert reduced.shape == reference.shape and float((reduced - reference).abs().mean()) < 0.05
        probs = pred.probabilities(torch.stack([reduced, reference]))
        assert probs[0].argmax() == probs[1].argmax() and abs(probs[0] - probs[1]).max() < 0.05


def test_pixel_budget_bounds_pixels_in_flight_and_refuses_only_what_never_fits() -> None:
    from aether.deploy.decode import OverBudget, PixelBudget

    budget = PixelBudget(100)
    done = []

    def work(i: int) -> None:
        with budget.hold(60):
            time.sleep(0.05)
            done.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(done) == [0, 1, 2, 3]  # all waited their turn, none refused
    assert budget.peak == 60 and budget.in_use == 0  # never two 60s at once
    with pytest.raises(OverBudget):
        with budget.hold(101):
            pass


def test_served_large_png_and_jpeg_get_answers_within_the_budget(run: Dict) -> None:
    import httpx

    from aether.deploy.predictor import Predictor
    from aether.deploy.server import BentoServer

    res = run_cli(["export", f"run={run['run']}"], cwd=run["root"], env=run["env"])
    assert res.returncode == 0, res.stderr
    blobs = {fmt: _big(fmt) for fmt in ("PNG", "JPEG")}
    for fmt, data in blobs.items():
        (run["root"] / f"up.{fmt.lower()}").write_bytes(data)
    pred = Predictor(run["run"] / "model", device="cpu")
    results, _ = pred.predict_paths([str(run["root"] / f"up.{f.lower()}") for f in blobs])
    env = {**run["env"], "AETHER_MAX_DECODED_MPX": "40"}  # one 36 Mpx PNG decoding at a time
    with BentoServer(run["run"] / "bento", run["root"] / "serve.log", env=env) as server:
        meta = httpx.post(f"{server.url}/metadata", timeout=30).json()
        assert meta["limits"]["max_decoded_pixels"] == 40_000_000

        def post(fmt: str):  # type: ignore[no-untyped-def]
            return httpx.post(f"{server.url}/predict", files={"image": (f"up.{fmt.lower()}", blobs[fmt])},
                              timeout=180)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:  # two PNGs wait for each other, they are not refused
            answers = list(pool.map(post, ["PNG", "JPEG", "PNG", "JPEG"]))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    expected = {"PNG": results[0], "JPEG": results[1]}
    for fmt, a in zip(["PNG", "JPEG", "PNG", "JPEG"], answers):
        assert a.json()["label"] == expected[fmt]["label"]
        assert a.json()["score"] == pytest.approx(expected[fmt]["score"], abs=1e-4)
