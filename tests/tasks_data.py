"""Generated datasets for the multilabel, segmentation and detection tests: shapes drawn with PIL
at known places, so every box and mask is known exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, List, Tuple

SHAPES = ("circle", "square")  # class 0 and 1 (mask values 1 and 2; 0 is background)
FILL = {"circle": (230, 60, 40), "square": (40, 90, 230)}


def scene(seed: int, size: int = 64, n_max: int = 2) -> Tuple[object, List[Tuple[str, List[int]]]]:
    """An image with 1..n_max non-overlapping shapes; returns (image, [(shape, [x0, y0, x1, y1])])."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    bg = tuple(rng.randint(150, 210) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    objects: List[Tuple[str, List[int]]] = []
    for _ in range(rng.randint(1, n_max)):
        for _try in range(20):
            s = rng.randint(size // 4, size // 2)
            x0, y0 = rng.randint(0, size - s), rng.randint(0, size - s)
            box = [x0, y0, x0 + s, y0 + s]
            if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for _, b in objects):
                break
        else:
            continue
        shape = rng.choice(SHAPES)
        fill = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in FILL[shape])
        # PIL includes the end pixel: draw [x0, x1-1] so the object covers exactly x0..x1 (exclusive)
        (d.ellipse if shape == "circle" else d.rectangle)([x0, y0, box[2] - 1, box[3] - 1], fill=fill)
        objects.append((shape, box))
    return img, objects


def mask_of(size: int, objects: List[Tuple[str, List[int]]]):  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw

    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    for shape, (x0, y0, x1, y1) in objects:
        value = SHAPES.index(shape) + 1
        (d.ellipse if shape == "circle" else d.rectangle)([x0, y0, x1 - 1, y1 - 1], fill=value)
    return m


def make_scenes(n: int, size: int = 64, n_max: int = 2, seed: int = 0) -> List[Tuple[str, object, list]]:
    return [(f"img_{i:03d}", *scene(seed * 10_000 + i, size, n_max)) for i in range(n)]


def write_multilabel(root: Path, n: int = 60) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,labels"]
    for name, img, objects in make_scenes(n, size=40, n_max=2, seed=7):
        img.save(root / f"{name}.png")
        rows.append(f"{name}.png,{'|'.join(sorted({s for s, _ in objects}))}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def write_masks(root: Path, n: int = 48, size: int = 64) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for name, img, objects in make_scenes(n, size, seed=3):
        img.save(root / "images" / f"{name}.jpg", quality=95)
        mask_of(size, objects).save(root / "masks" / f"{name}.png")
    return root


def write_detection(root: Path, fmt: str, scenes: list, size: int = 64) -> Path:
    """The same scenes as a COCO, YOLO or VOC dataset."""
    if fmt == "coco":
        (root / "images").mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i, (name, img, objects) in enumerate(scenes):
            img.save(root / "images" / f"{name}.png")
            images.append({"id": i + 1, "file_name": f"{name}.png", "width": size, "height": size})
            for shape, (x0, y0, x1, y1) in objects:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": SHAPES.index(shape) + 1,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        cats = [{"id": i + 1, "name": s} for i, s in enumerate(SHAPES)]
        (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    elif fmt == "yolo":
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "data.yaml").write_text("names: [" + ", ".join(SHAPES) + "]\n")
        for name, img, objects in scenes:
            img.save(root / "images" / f"{name}.png")
            lines = [f"{SHAPES.index(s)} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                     f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}" for s, (x0, y0, x1, y1) in objects]
            (root / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    elif fmt == "voc":
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        for name, img, objects in scenes:
            img.save(root / "JPEGImages" / f"{name}.png")
            objs = "".join(f"<object><name>{s}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                           f"<ymax>{y1}</ymax></bndbox></object>" for s, (x0, y0, x1, y1) in objects)
            (root / "Annotations" / f"{name}.xml").write_text(
                f"<annotation><filename>{name}.png</filename><size><width>{size}</width><height>{size}</height>"
                f"<depth>3</depth></size>{objs}</annotation>")
    return root


def boxes_by_image(scenes: list) -> Dict[str, List[Tuple[str, List[int]]]]:
    return {name: sorted(objects) for name, _, objects in scenes}
