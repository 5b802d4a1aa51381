"""`aether inspect`: a messy folder is explained file by file, and training obeys the verdict."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from PIL import Image

from tests.conftest import make_folder, run_cli, run_in_process


def _messy(root: Path) -> Path:
    make_folder(root, per_class=12)
    (root / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "green" / "empty.png").write_bytes(b"")
    good = (root / "blue" / "blue_000.png").read_bytes()
    (root / "red" / "copied_from_blue.png").write_bytes(good)  # same bytes, another label
    Image.open(root / "green" / "green_001.png").resize((44, 40)).save(root / "green" / "near_copy.png")
    Image.new("CMYK", (40, 40), (0, 200, 200, 0)).save(root / "red" / "cmyk.jpg")
    (root / "notes.txt").write_text("ignored")
    return root


def test_inspect_names_every_problem(tmp_path: Path) -> None:
    data = _messy(tmp_path / "imgs")
    out = tmp_path / "out"
    r = run_cli(["inspect", f"data={data}", f"hydra.run.dir={out}"], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr  # bad files are errors
    rep = json.loads((out / "report.json").read_text())
    assert rep["format"] == "folder" and rep["task"] == "classification"
    bad = {Path(b["path"]).name: b["reason"] for b in rep["bad"]}
    assert set(bad) == {"corrupt.jpg", "empty.png"}
    assert bad["empty.png"].startswith("empty")
    assert rep["num_images"] == sum(rep["classes"].values()) == 36 + 3
    exact = [d for d in rep["duplicates"] if d["kind"] == "exact"]
    assert exact and "conflicting_labels" in exact[0]["flags"]
    assert any(d["kind"] == "near" and any(p.endswith("near_copy.png") for p in d["paths"]) for d in rep["duplicates"])
    assert any("CMYK" in w for w in rep["warnings"])
    assert {"strategy", "model", "image_size", "batch_size", "epochs"} <= set(rep["recommendations"])
    assert all(v["reason"] for v in rep["recommendations"].values())
    for png in ("class_histogram.png", "image_sizes.png"):
        assert (out / png).stat().st_size > 1000
    assert len(list((out / "samples").glob("*.png"))) == 3
    assert "corrupt.jpg" in r.stdout and "recommend" in r.stdout


def test_clean_data_exits_0_and_strict_fails_on_warnings(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "imgs", per_class=8)
    r = run_cli(["inspect", f"data={data}", f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    make_folder(data, per_class=40, classes=["red"])  # red now has 5x the images of the others
    r = run_cli(["inspect", f"data={data}", f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    assert r.returncode == 0
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["imbalance_ratio"] == 5.0 and rep["recommendations"]["class_weights"]["value"] == "balanced"
    r = run_cli(["inspect", f"data={data}", "--strict", f"hydra.run.dir={tmp_path / 'c'}"], tmp_path)
    assert r.returncode == 1


def test_inspect_reads_a_zip_and_refuses_escaping_members(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "src" / "dataset", per_class=6)
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(data.rglob("*.png")):
            z.write(f, f"dataset/{f.relative_to(data)}")
        z.writestr("../escape.png", b"x")
        z.writestr("__MACOSX/dataset/._red", b"x")
    r = run_cli(["inspect", f"data={archive}", f"hydra.run.dir={tmp_path / 'out'}"], tmp_path,
                env={"AETHER_CACHE": str(tmp_path / "cache")})
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["num_images"] == 18 and set(rep["classes"]) == {"red", "green", "blue"}
    assert any("escape.png" in b["path"] and "refused" in b["reason"] for b in rep["bad"])
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "cache" / "escape.png").exists()
    assert r.returncode == 2


def test_training_obeys_the_doctor(tmp_path: Path) -> None:
    data = _messy(tmp_path / "imgs")
    shutil.rmtree(data / "red")  # keep the run small; blue and green remain, with the bad files in green
    run = tmp_path / "run"
    run_in_process(run, [f"data={data}", "trainer.max_epochs=1"])
    m = json.loads((run / "metrics.json").read_text())
    skipped = {Path(s["path"]).name: s["reason"] for s in m["data"]["skipped"]}
    assert set(skipped) == {"empty.png"}
    assert m["data"]["num_train"] + m["data"]["num_val"] + m["data"]["num_test"] == 12 + 13


def test_near_duplicates_do_not_chain() -> None:
    from aether.doctor.stats import Record, near_duplicates

    def rec(i: int, h: int) -> Record:
        return Record(f"p{i}", "a", None, 64, 64, "PNG", "RGB", f"sha{i}", f"{h:016x}")

    chain = [0, 0b111, 0b111111, 0b111111111, 0b111111111111]  # each 3 bits from the previous
    groups = near_duplicates([rec(i, h) for i, h in enumerate(chain)], max_bits=4)
    assert all(len(g) <= 2 for g in groups)  # 0 and 12 bits apart never end up together
    tiny = [Record(f"t{i}", "a", None, 8, 8, "PNG", "L", f"s{i}", "0" * 16) for i in range(3)]
    assert near_duplicates(tiny) == []  # 8 px images: a perceptual hash cannot tell copies from lookalikes


def test_recommendations_follow_data_size() -> None:
    from aether.doctor.recommend import recommend

    cpu = {"cpus": 2, "gpus": 0, "gpu_memory_gb": 0.0}
    sizes = {"width": {"median": 400}, "height": {"median": 300}}
    tiny = recommend(60, {"a": 30, "b": 30}, sizes, cpu)
    mid = recommend(3000, {"a": 1500, "b": 1500}, sizes, cpu)
    big = recommend(20000, {"a": 10000, "b": 10000}, sizes, {"cpus": 16, "gpus": 1, "gpu_memory_gb": 80.0})
    assert [x["strategy"]["value"] for x in (tiny, mid, big)] == ["linear_probe", "lora", "full"]
    assert big["model"]["value"] == "vit_base" and big["batch_size"]["value"] == 64
    assert tiny["image_size"]["value"] == 224 and "class_weights" not in tiny
    skewed = recommend(600, {"a": 500, "b": 100}, sizes, cpu)
    assert skewed["class_weights"]["value"] == "balanced"
    # CPU: 224 px inputs batch 32; small ones 64 (as data.batch_size=auto picks: one rule)
    from aether.doctor.recommend import cpu_batch

    assert mid["batch_size"]["value"] == 32 == cpu_batch(224, 3000)
    small = recommend(3000, {"a": 1500, "b": 1500}, {"width": {"median": 28}, "height": {"median": 28}}, cpu)
    assert small["image_size"]["value"] == 32 and small["batch_size"]["value"] == 64 == cpu_batch(32, 3000)
    assert tiny["batch_size"]["value"] == 8  # 60 images: halved towards 8 optimiser steps an epoch, down to 8


def test_inspect_explains_a_coco_detection_dataset_and_training_says_why_not(tmp_path: Path) -> None:
    d = tmp_path / "coco"
    (d / "images").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 48), (i * 90, 40, 40)).save(d / "images" / f"{i}.jpg")
    (d / "images" / "broken.jpg").write_bytes(b"nope")
    coco = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(2)],
            "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [4, 4, 20, 20]},
                            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [50, 30, 30, 30]}],
            "categories": [{"id": 1, "name": "box"}]}
    (d / "annotations.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    r = run_cli(["inspect", f"data={d}", f"hydra.run.dir={out}"], tmp_path)
    rep = json.loads((out / "report.json").read_text())
    assert rep["format"] == "coco" and rep["task"] == "detection" and rep["evidence"]
    assert rep["num_images"] == 2 and [Path(b["path"]).name for b in rep["bad"]] == ["broken.jpg"]
    assert any("outside their image" in w for w in rep["warnings"]) and any("unknown category" in w for w in rep["warnings"])
    assert r.returncode == 2
    assert rep["summary"]["box_sizes"]["coco_area_buckets"] == {"small": 2, "medium": 0, "large": 0}
    # task=auto would train it as detection (tests/test_tasks.py); forced classification says why not
    r = run_cli(["task=classification", f"data={d}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert r.returncode == 2 and "coco detection dataset" in r.stderr and "aether inspect" in r.stderr
    assert "task=detection" in r.stderr
    # data.format overrides detection: read as VOC it does not fit, and the error says what it is
    r = run_cli(["inspect", f"data={d}", "data.format=voc", f"hydra.run.dir={tmp_path / 'voc'}"], tmp_path)
    assert r.returncode == 2 and "not a voc dataset" in r.stderr and "looks like coco" in r.stderr
    r = run_cli(["inspect", f"data={d}", "data.format=cocoo"], tmp_path)
    assert r.returncode == 2 and "data.format" in r.stderr and "coco" in r.stderr


def test_every_fault_is_named_in_report_json(tmp_path: Path) -> None:
    """Each file of the fault zoo (tests/test_checks.py) inside a class folder: every fatal fault
    appears in `bad` under its name, every warning in `issues`, nothing is lost."""
    from tests.test_checks import build_zoo

    data = tmp_path / "data"
    (data / "faults").mkdir(parents=True)
    zoo = build_zoo(data / "faults")
    make_folder(data, per_class=4, classes=["red", "green"])
    out = tmp_path / "out"
    r = run_cli(["inspect", f"data={data}", f"hydra.run.dir={out}"], tmp_path)
    assert r.returncode == 2
    rep = json.loads((out / "report.json").read_text())
    reasons = {Path(b["path"]).name: b["reason"] for b in rep["bad"]}
    fatal = {"empty.jpg": "empty", "garbage.jpg": "not_an_image", "truncated.jpg": "truncated",
             "truncated.png": "truncated", "bomb.png": "decompression_bomb", "tiny.png": "too_small",
             "broken_link.png": "broken_symlink"}
    for name, code in fatal.items():
        assert reasons[name].startswith(code), (name, reasons.get(name))
    assert rep["ignored"]["non_image"] == 1  # icon.ico: not an image extension Aether reads; counted, not lost
    for code in ("mode_cmyk", "mode_16bit", "mode_palette_alpha", "mode_la", "exif_rotated", "animated",
                 "extension_mismatch"):
        assert rep["issues"].get(code, 0) >= 1, code
    indexed = len([p for p in zoo if p != "icon.ico"]) + 8
    assert rep["num_images"] + len(rep["bad"]) == indexed  # every indexed file accounted for
