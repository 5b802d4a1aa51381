"""Dataset format + task detection (aether.data.formats, as the doctor calls it) on tiny generated
datasets; formats registered like a plugin's join detection by their priority."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from PIL import Image, ImageDraw

from aether.data.formats.base import Format, Match
from aether.doctor.detect import Detection, detect
from aether.errors import AetherError

# The same boxes, expressed below in COCO, YOLO and VOC. (x, y, w, h) in pixels, class index.
# Class index 9 is unknown (COCO: category_id 10 not in categories; YOLO: id >= len(names)).
IMAGES: List[Tuple[str, int, int]] = [("a", 100, 80), ("b", 120, 100), ("c", 64, 64)]
BOXES: Dict[str, List[Tuple[float, float, float, float, int]]] = {
    "a": [(10, 10, 30, 20, 0), (60, 40, 50, 30, 1)],  # second: x+w = 110 > 100 -> out of bounds
    "b": [(0, 0, 120, 100, 0), (20, 30, 40, 40, 9)],  # first touches every edge: in bounds
    "c": [],  # an image without annotations
}
NAMES = ["cat", "dog"]
NUM_BOXES, NUM_OOB = 4, 1


def _draw(path: Path, w: int, h: int, boxes=()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    for x, y, bw, bh, _ in boxes:
        d.rectangle([x, y, x + bw - 1, y + bh - 1], outline="red")
    im.save(path)


def make_coco(root: Path, name: str = "annotations.json", segmentation: bool = False) -> Path:
    images, anns = [], []
    for i, (stem, w, h) in enumerate(IMAGES, start=1):
        _draw(root / "images" / f"{stem}.jpg", w, h, BOXES[stem])
        images.append({"id": i, "file_name": f"{stem}.jpg", "width": w, "height": h})
        for x, y, bw, bh, c in BOXES[stem]:
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": c + 1, "bbox": [x, y, bw, bh],
                   "area": bw * bh, "iscrowd": 0}
            if segmentation:
                ann["segmentation"] = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
            anns.append(ann)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    p = root / name
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return p


def make_yolo(root: Path, with_yaml: bool = True) -> Path:
    for stem, w, h in IMAGES:
        _draw(root / "images" / "train" / f"{stem}.jpg", w, h, BOXES[stem])
        if stem == "c":
            continue  # no label file for the empty image
        lines = [f"{c} {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}" for x, y, bw, bh, c in BOXES[stem]]
        lp = root / "labels" / "train" / f"{stem}.txt"
        lp.parent.mkdir(parents=True, exist_ok=True)
        lp.write_text("\n".join(lines) + "\n")
    if with_yaml:
        (root / "data.yaml").write_text(
            "path: .\ntrain: images/train\nval: images/train\nnames:\n  0: cat\n  1: dog\n")
    return root


def make_voc(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for stem, w, h in IMAGES:
        _draw(root / "JPEGImages" / f"{stem}.jpg", w, h, BOXES[stem])
        objs = "".join(
            f"<object><name>{NAMES[c] if c < len(NAMES) else 'zebra'}</name><bndbox><xmin>{x}</xmin>"
            f"<ymin>{y}</ymin><xmax>{x + bw}</xmax><ymax>{y + bh}</ymax></bndbox></object>"
            for x, y, bw, bh, c in BOXES[stem])
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")
    return root


def make_masks(root: Path) -> Path:
    for stem, size, mask_size in [("a", (32, 32), (32, 32)), ("b", (32, 32), (16, 16))]:
        _draw(root / "images" / f"{stem}.png", *size)
        m = Image.new("L", mask_size, 0)
        d = ImageDraw.Draw(m)
        d.rectangle([0, 0, 7, 7], fill=1)  # 64 pixels of class 1
        d.rectangle([8, 8, 11, 11], fill=2)  # 16 pixels of class 2
        (root / "masks").mkdir(parents=True, exist_ok=True)
        m.save(root / "masks" / f"{stem}.png")
    _draw(root / "images" / "c.png", 32, 32)  # image without a mask
    return root


def _ok(d: Detection, fmt: str, task: str) -> None:
    assert (d.format, d.task) == (fmt, task), d
    assert d.evidence and all(isinstance(e, str) and e for e in d.evidence)
    assert d.candidates[0] == (fmt, task)


def test_coco_file_and_folder(tmp_path):
    p = make_coco(tmp_path)
    for target in (p, tmp_path):
        d = detect(target)
        _ok(d, "coco", "detection")
        s = d.summary
        assert (s["num_images"], s["num_annotations"], s["num_categories"]) == (3, NUM_BOXES, 2)
        assert s["boxes_out_of_bounds"] == NUM_OOB
        assert s["unknown_category_ids"] == 1
        assert s["images_without_annotations"] == 1
        assert s["boxes_per_image"] == {"min": 0, "median": 2, "max": 2}
        assert d.candidates == [("coco", "detection")]
        assert any("COCO" in e for e in d.evidence)


def test_coco_segmentation_rule(tmp_path):
    # all annotations segmented but nothing suggests segmentation -> detection
    p = make_coco(tmp_path / "plain", segmentation=True)
    assert detect(p).task == "detection"
    assert detect(p, task_hint="segmentation").task == "segmentation"
    # file name suggests it
    q = make_coco(tmp_path / "named", name="instances_seg.json", segmentation=True)
    _ok(detect(q), "coco", "segmentation")
    # name suggests it but bbox-only annotations -> detection
    r = make_coco(tmp_path / "bbox", name="instances_seg.json")
    assert detect(r).task == "detection"


def test_yolo(tmp_path):
    d = detect(make_yolo(tmp_path))
    _ok(d, "yolo", "detection")
    s = d.summary
    assert s["num_label_files"] == 2
    assert s["num_boxes"] == NUM_BOXES
    assert s["boxes_out_of_bounds"] == NUM_OOB
    assert s["unknown_class_ids"] == 1
    assert s["class_ids"] == {0: 2, 1: 1, 9: 1}
    assert s["images_without_labels"] == 1
    assert s["num_names"] == 2
    assert any("data.yaml names 2 classes" in e for e in d.evidence)


def test_yolo_without_yaml_and_out_of_range(tmp_path):
    root = make_yolo(tmp_path, with_yaml=False)
    (root / "labels" / "train" / "a.txt").write_text("0 1.2 0.5 0.1 0.1\n0 0.5 0.5 0.2 0.2\n")
    d = detect(root)
    _ok(d, "yolo", "detection")
    assert d.summary["out_of_range"] == 1
    assert d.summary["unknown_class_ids"] == 0  # no names known: only negative ids count
    assert d.summary["num_names"] is None


def test_voc(tmp_path):
    d = detect(make_voc(tmp_path))
    _ok(d, "voc", "detection")
    s = d.summary
    assert (s["num_xml"], s["num_objects"], s["boxes_out_of_bounds"]) == (3, NUM_BOXES, NUM_OOB)
    assert s["class_names"] == {"cat": 2, "dog": 1, "zebra": 1}


def test_same_boxes_same_counts_across_formats(tmp_path):
    results = {
        "coco": detect(make_coco(tmp_path / "coco")),
        "yolo": detect(make_yolo(tmp_path / "yolo")),
        "voc": detect(make_voc(tmp_path / "voc")),
    }
    assert {k: r.format for k, r in results.items()} == {k: k for k in results}
    assert {r.summary["num_boxes"] for r in results.values()} == {NUM_BOXES}
    assert {r.summary["boxes_out_of_bounds"] for r in results.values()} == {NUM_OOB}
    # boxes per image agree where every image is counted (COCO counts the empty image, VOC its xml)
    assert results["coco"].summary["boxes_per_image"] == results["voc"].summary["boxes_per_image"]


def test_masks(tmp_path):
    d = detect(make_masks(tmp_path))
    _ok(d, "masks", "segmentation")
    s = d.summary
    assert s["pairs"] == 2
    assert s["images_without_mask"] == 1 and s["masks_without_image"] == 0
    assert s["size_mismatches"] == 1
    assert s["label_values"] == [0, 1, 2]
    total = 32 * 32 + 16 * 16
    assert s["class_pixel_share"][1] == pytest.approx(2 * 64 / total)
    assert s["class_pixel_share"][2] == pytest.approx(2 * 16 / total)
    assert sum(s["class_pixel_share"].values()) == pytest.approx(1.0)


def test_folder_and_manifest(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(2):
            _draw(tmp_path / "f" / cls / f"{i}.png", 8, 8)
    d = detect(tmp_path / "f")
    _ok(d, "folder", "classification")
    assert d.summary["num_classes"] == 2 and d.summary["num_images"] == 4

    csv = tmp_path / "m.csv"
    csv.write_text("path,label\nf/cat/0.png,cat\nf/dog/0.png,dog\n")
    d = detect(csv)
    _ok(d, "manifest", "classification")
    assert d.summary == {"num_rows": 2, "columns": ["path", "label"]}
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"path": "a.png", "label": "cat"}\n')
    assert detect(jl).summary["num_rows"] == 1


def test_structured_formats_are_not_also_folder(tmp_path):
    d = detect(make_yolo(tmp_path))  # has image sub-folders, but is not a classification folder
    assert d.candidates == [("yolo", "detection")]


def test_ambiguous_voc_and_yolo(tmp_path):
    root = make_voc(tmp_path)
    lp = root / "labels" / "a.txt"
    lp.parent.mkdir()
    lp.write_text("0 0.5 0.5 0.2 0.2\n")
    d = detect(root)
    _ok(d, "voc", "detection")  # VOC wins by priority
    assert d.candidates == [("voc", "detection"), ("yolo", "detection")]
    amb = [e for e in d.evidence if e.startswith("ambiguous:")]
    assert len(amb) == 1 and "yolo" in amb[0] and "data.format=yolo" in amb[0]


def test_unrecognised_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AetherError) as e:
        detect(tmp_path)
    assert str(tmp_path) in str(e.value) and "coco" in str(e.value) and "yolo" in str(e.value)
    with pytest.raises(AetherError):
        detect(tmp_path / "notes.txt")
    with pytest.raises(AetherError):
        detect(tmp_path / "missing")
    bad = tmp_path / "other.json"
    bad.write_text('{"foo": 1}')
    with pytest.raises(AetherError):
        detect(bad)


def test_box_sizes_read_the_same_in_every_box_format(tmp_path):
    results = {
        "coco": detect(make_coco(tmp_path / "coco")).summary,
        "yolo": detect(make_yolo(tmp_path / "yolo")).summary,
        "voc": detect(make_voc(tmp_path / "voc")).summary,
    }
    rel = {k: (s["box_sizes"]["relative_area"], s["box_sizes"]["relative_width"], s["box_sizes"]["relative_height"])
           for k, s in results.items()}
    assert rel["coco"] == rel["voc"] == rel["yolo"]
    assert results["coco"]["box_sizes"]["aspect_ratio"] == results["voc"]["box_sizes"]["aspect_ratio"]
    # the 120x100 box fills image b: relative area 1; the smallest is 30x20 in a 100x80 image
    assert rel["coco"][0]["max"] == 1.0 and rel["coco"][0]["min"] == pytest.approx(600 / 8000, abs=1e-4)
    # pixel areas: 600 px² is small (< 32²), 1500 and 1600 medium (< 96²), 12000 large (COCO's buckets)
    for k in ("coco", "voc"):
        assert results[k]["box_sizes"]["coco_area_buckets"] == {"small": 1, "medium": 2, "large": 1}
    assert "coco_area_buckets" not in results["yolo"]["box_sizes"]  # normalised: no pixel sizes, no shapes
    assert {s["degenerate_boxes"] for s in results.values()} == {0}


def test_a_degenerate_box_is_counted(tmp_path):
    p = make_coco(tmp_path)
    data = json.loads(p.read_text())
    data["annotations"][0]["bbox"] = [10, 10, 0, 20]  # zero width
    p.write_text(json.dumps(data))
    s = detect(p).summary
    assert s["degenerate_boxes"] == 1 and s["box_sizes"]["degenerate"] == 1


def test_data_format_overrides_detection(tmp_path):
    root = make_voc(tmp_path / "both")
    lp = root / "labels" / "a.txt"
    lp.parent.mkdir()
    lp.write_text("0 0.5 0.5 0.2 0.2\n")
    d = detect(root, fmt="yolo")  # auto picks voc (priority); the override reads it as YOLO
    _ok(d, "yolo", "detection")
    assert d.candidates == [("yolo", "detection")]
    assert "set, not detected" in d.evidence[0] and not any(e.startswith("ambiguous") for e in d.evidence)
    with pytest.raises(AetherError) as e:
        detect(make_coco(tmp_path / "coco"), fmt="voc")
    msg = str(e.value)
    assert "data.format=voc" in msg and "not a voc dataset" in msg and "looks like coco" in msg


def test_class_counts_agree_across_box_formats(tmp_path):
    """`aether inspect` printed '0 classes' for COCO and YOLO: every box format now reports its
    classes by name with the number of boxes of each (the unknown id 9 is not a class)."""
    from aether.config.schema import DataCfg
    from aether.doctor.inspect import inspect_structured

    for fmt, make in (("coco", make_coco), ("yolo", make_yolo)):
        made = make(tmp_path / fmt)
        rep = inspect_structured(DataCfg(path=str(made if fmt == "yolo" else made.parent)), tmp_path / f"out-{fmt}")
        assert rep is not None and rep["format"] == fmt
        assert rep["classes"] == {"cat": 2, "dog": 1}, fmt
    voc = detect(make_voc(tmp_path / "voc"))
    assert voc.summary["class_counts"] == {"cat": 2, "dog": 1, "zebra": 1}


# --------------------------------------------------------------- formats: registry and priority


def test_every_format_is_a_registered_adapter_with_its_task():
    from aether import registry
    from aether.data import formats

    expected = {"coco": "detection", "voc": "detection", "yolo": "detection", "masks": "segmentation",
                "multilabel": "multilabel", "folder": "classification", "manifest": "classification",
                "digits": "classification"}
    assert {n: formats.task_of(n) for n in expected if n in registry.adapters} == expected
    # the structured formats are read as themselves when named; the classification ones as before
    assert [n for n in expected if formats.detects_when_named(n)] == ["coco", "voc", "yolo", "masks"]
    assert [n for n in expected if formats.is_strict(n)] == ["coco", "voc", "yolo", "masks", "multilabel"]


class ListFile(Format):
    """A format as a plugin writes one: `list.txt` of `path label` lines (test only)."""

    name = "listfile"
    priority = 45
    looks_like = "list.txt"

    def detect(self, path, task_hint=None):  # type: ignore[no-untyped-def]
        lst = path / "list.txt" if path.is_dir() else None
        if lst is None or not lst.is_file():
            return None
        return Match(self.name, self.task, [f"list.txt has {len(lst.read_text().splitlines())} lines"])


@pytest.fixture
def with_format(monkeypatch):  # type: ignore[no-untyped-def]
    """Registers formats for one test (the registry is restored afterwards)."""
    from aether import registry

    monkeypatch.setattr(registry.adapters, "_entries", dict(registry.adapters._entries))

    def register(name, cls, priority=None):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(registry, "plugin_errors", list(registry.plugin_errors))
        if priority is not None:
            cls = type(cls.__name__, (cls,), {"priority": priority})
        registry.adapters.register(name, cls, origin="test-plugin")

    return register


def test_a_registered_format_joins_detection_by_its_priority(tmp_path, with_format):
    with_format("listfile", ListFile)
    root = tmp_path / "f"
    for cls in ("cat", "dog"):
        _draw(root / cls / "0.png", 8, 8)
    assert detect(root).format == "folder"
    (root / "list.txt").write_text("cat/0.png cat\ndog/0.png dog\n")
    d = detect(root)  # before the class-folder fallback: no ambiguity with it
    _ok(d, "listfile", "classification")
    assert d.candidates == [("listfile", "classification")] and d.evidence == ["list.txt has 2 lines"]
    # named, it is read strictly; the error lists it among the formats looked for
    with pytest.raises(AetherError) as e:
        detect(make_coco(tmp_path / "coco").parent, fmt="listfile")
    assert "not a listfile dataset" in str(e.value) and "looks like coco" in str(e.value)
    assert "masks (images/ + masks/|labels/|annotations/), listfile (list.txt), folder" in str(e.value)


def test_a_format_priority_can_come_first(tmp_path, with_format):
    with_format("listfile", ListFile, priority=5)
    root = make_yolo(tmp_path)
    (root / "list.txt").write_text("images/train/a.jpg cat\n")
    d = detect(root)
    assert d.format == "listfile" and d.candidates == [("listfile", "classification"), ("yolo", "detection")]
    amb = [e for e in d.evidence if e.startswith("ambiguous:")]
    assert len(amb) == 1 and "by priority listfile > coco > voc > yolo > masks > folder > manifest" in amb[0]


def test_an_adapter_from_before_formats_still_detects(tmp_path, with_format):
    class OldAdapter:  # detect(path) -> bool, no priority, no task: tried after the built-ins
        @staticmethod
        def detect(path):  # type: ignore[no-untyped-def]
            return path.suffix == ".parquet"

        def load(self, path, options):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    with_format("old", OldAdapter)
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    d = detect(tmp_path / "x.parquet")
    _ok(d, "old", "classification")
    assert "its detect() accepts x.parquet" in d.evidence[0]
    assert detect(make_voc(tmp_path / "voc")).candidates == [("voc", "detection")]


def test_formats_import_neither_the_doctor_nor_torch(tmp_path):
    """The doctor calls formats, never the reverse; detecting a dataset imports no torch."""
    import ast
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1] / "aether" / "data" / "formats"
    for py in root.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("aether.doctor") or n == "torch" or n.startswith("torch.")
                           for n in names), (py, names)
    make_coco(tmp_path / "coco")
    make_masks(tmp_path / "masks")
    code = ("import sys\nfrom aether.data.formats.auto import detect\n"
            f"print([detect(p).format for p in sys.argv[1:]], 'torch' in sys.modules, 'aether.doctor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "coco"), str(tmp_path / "masks")],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "['coco', 'masks'] False False", out.stdout + out.stderr


def test_a_broken_plugin_format_does_not_stop_detection(tmp_path, with_format):
    from aether import registry

    with_format("broken", "no_such_module_for_aether_tests:Format")
    assert detect(make_voc(tmp_path)).format == "voc"
    assert any("'broken'" in e and "failed to load" in e for e in registry.plugin_errors)
