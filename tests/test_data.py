"""Dataset adapters, image checks and the split: nothing is lost silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aether.config.schema import DataCfg
from aether.tasks.classification.data import build_data
from aether.data.split import fraction_split
from aether.errors import AetherError
from tests.conftest import draw, make_folder


def test_flat_folder_with_bad_files_reported(image_folder: Path) -> None:
    (image_folder / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (image_folder / "green" / "empty.png").write_bytes(b"")
    (image_folder / "blue" / "notes.txt").write_text("not an image")
    (image_folder / "blue" / ".hidden.png").write_bytes(b"x")
    (image_folder / "stray.png").write_bytes((image_folder / "red" / "red_000.png").read_bytes())
    bundle = build_data(DataCfg(path=str(image_folder)), seed=1)
    assert bundle.classes == ["blue", "green", "red"]
    skipped = {Path(s.path).name: s.reason for s in bundle.skipped}
    assert set(skipped) == {"broken.jpg", "empty.png", "stray.png"}
    assert skipped["empty.png"].startswith("empty") and skipped["broken.jpg"].startswith(("truncated", "corrupt"))
    assert "class folder" in skipped["stray.png"]
    assert bundle.index.ignored == {"hidden": 1, "non_image": 1}
    total = sum(len(v) for v in bundle.splits.values())
    assert total == 60  # every good image is in exactly one split
    summary = bundle.summary()
    assert all({"path", "reason"} <= set(s) for s in summary["skipped"])


def test_split_is_stratified_and_deterministic(image_folder: Path) -> None:
    a = build_data(DataCfg(path=str(image_folder), val_fraction=0.2, test_fraction=0.2), seed=7)
    b = build_data(DataCfg(path=str(image_folder), val_fraction=0.2, test_fraction=0.2), seed=7)
    c = build_data(DataCfg(path=str(image_folder), val_fraction=0.2, test_fraction=0.2), seed=8)
    paths = lambda x, s: [p.path for p in x.splits[s]]  # noqa: E731
    assert paths(a, "test") == paths(b, "test") and paths(a, "test") != paths(c, "test")
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        per_class = {}
        for s in a.splits[split]:
            per_class[s.label] = per_class.get(s.label, 0) + 1
        assert per_class == {0: n, 1: n, 2: n}


def test_split_keeps_a_training_image_for_tiny_classes() -> None:
    from aether.data.index import Sample

    samples = [Sample(f"a{i}", 0) for i in range(10)] + [Sample("b0", 1)]
    out = fraction_split(samples, 0.2, 0.2, seed=0, stratum=lambda s: s.label)
    assert [s.path for s in out["train"] if s.label == 1] == ["b0"]


def test_nested_class_tree(tmp_path: Path) -> None:
    make_folder(tmp_path / "d" / "animals", per_class=6, classes=["cat", "dog"])
    make_folder(tmp_path / "d" / "vehicles", per_class=6, classes=["car"])
    bundle = build_data(DataCfg(path=str(tmp_path / "d")), seed=0)
    assert bundle.classes == ["animals/cat", "animals/dog", "vehicles/car"]


def test_presplit_folders_are_respected(tmp_path: Path) -> None:
    for split, n in (("train", 8), ("val", 3), ("test", 2)):
        make_folder(tmp_path / "d" / split, per_class=n, classes=["red", "blue"])
    bundle = build_data(DataCfg(path=str(tmp_path / "d")), seed=0)
    assert (len(bundle.splits["train"]), len(bundle.splits["val"]), len(bundle.splits["test"])) == (16, 6, 4)
    assert all("/test/" in s.path for s in bundle.splits["test"])
    assert bundle.index.presplit


def test_presplit_without_val_carves_it_from_train(tmp_path: Path) -> None:
    make_folder(tmp_path / "d" / "train", per_class=10, classes=["red", "blue"])
    make_folder(tmp_path / "d" / "test", per_class=3, classes=["red", "blue"])
    bundle = build_data(DataCfg(path=str(tmp_path / "d"), val_fraction=0.2), seed=0)
    assert len(bundle.splits["val"]) == 4 and len(bundle.splits["test"]) == 6
    assert any("carved" in n for n in bundle.notes)


def test_csv_and_jsonl_manifests(tmp_path: Path) -> None:
    imgs = make_folder(tmp_path / "imgs", per_class=8, classes=["red", "green"])
    rows = [(f"imgs/{c}/{c}_{i:03d}.png", c) for c in ("red", "green") for i in range(8)]
    rows.append(("imgs/missing.png", "red"))
    (tmp_path / "m.csv").write_text("path,label\n" + "\n".join(f"{p},{label}" for p, label in rows) + "\n")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"file": p, "y": label}) for p, label in rows) + "\n")
    a = build_data(DataCfg(path=str(tmp_path / "m.csv")), seed=0)
    b = build_data(DataCfg(path=str(tmp_path / "m.jsonl"), options={"path_column": "file", "label_column": "y"}), seed=0)
    for bundle in (a, b):
        assert bundle.classes == ["green", "red"]
        assert sum(len(v) for v in bundle.splits.values()) == 16
        assert [Path(s.path).name for s in bundle.skipped] == ["missing.png"]
        assert bundle.skipped[0].reason.startswith("missing")
    assert imgs.exists()


def test_manifest_with_wrong_columns_says_which(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,label\nx.png,a\n")
    with pytest.raises(AetherError, match="path_column"):
        build_data(DataCfg(path=str(tmp_path / "m.csv")), seed=0)


def test_one_class_is_a_clear_error(tmp_path: Path) -> None:
    make_folder(tmp_path / "d", per_class=5, classes=["red"])
    with pytest.raises(AetherError, match="at least 2"):
        build_data(DataCfg(path=str(tmp_path / "d")), seed=0)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AetherError, match="no such file"):
        build_data(DataCfg(path=str(tmp_path / "nope")), seed=0)


def test_embedded_digits_are_real_and_complete() -> None:
    bundle = build_data(DataCfg(), seed=0)
    assert bundle.index.format == "digits"
    assert bundle.classes == [str(i) for i in range(10)]
    assert sum(len(v) for v in bundle.splits.values()) == 1797
    assert not bundle.skipped


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    from PIL import Image

    from aether.data.images import load_rgb

    img = draw((200, 0, 0), seed=1, size=40).resize((60, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(str(tmp_path / "r.jpg")).size == (30, 60)


def test_16bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from aether.data.images import load_rgb

    a = (np.arange(64 * 64).reshape(64, 64) * 16).astype("uint16")  # 0 .. 65520
    Image.fromarray(a).save(tmp_path / "deep.png")
    rgb = np.asarray(load_rgb(str(tmp_path / "deep.png")))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) > 200
