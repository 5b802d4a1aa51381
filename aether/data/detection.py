"""Object detection data: COCO, YOLO and Pascal VOC adapters that all load to the same targets,
`{"boxes": [[x0, y0, x1, y1], ...] in pixels, "labels": [class index, ...]}` per image, and a
box-aware Dataset (torchvision v2 transforms move the boxes with their image).

Coordinates follow the dataset doctor's bounds rule (aether.doctor.detect): COCO `x, y, w, h`,
VOC `xmin, ymin, xmax, ymax` and YOLO `cx, cy, w, h` (relative) all describe the same pixel box
edges, so one drawing exported in the three formats gives identical targets. Boxes are clipped to
their image; boxes with no area left are dropped and counted in the run's data notes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from aether.config.schema import AugmentCfg
from aether.data.dense import DenseIndex, Item
from aether.data.item_dataset import ItemDataset
from aether.data.index import Skipped
from aether.errors import AetherError

SPLIT_WORDS = ("train", "val", "test")


def _split_of(*names: str) -> Optional[str]:
    from aether.data.adapters import SPLIT_ALIASES

    for n in names:
        for token in n.lower().replace("-", "_").replace(".", "_").split("_"):
            if token in SPLIT_ALIASES:
                return SPLIT_ALIASES[token]
    return None


class _Boxes:
    """Clips boxes to their image and counts the ones dropped (so nothing vanishes unreported)."""

    def __init__(self) -> None:
        self.dropped = 0

    def target(self, boxes: List[List[float]], labels: List[int], w: float, h: float) -> Dict[str, Any]:
        out_b, out_l = [], []
        for (x0, y0, x1, y1), lab in zip(boxes, labels):
            x0, x1 = max(0.0, min(x0, w)), max(0.0, min(x1, w))
            y0, y1 = max(0.0, min(y0, h)), max(0.0, min(y1, h))
            if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
                self.dropped += 1
                continue
            out_b.append([round(x0, 4), round(y0, 4), round(x1, 4), round(y1, 4)])
            out_l.append(int(lab))
        return {"boxes": out_b, "labels": out_l}

    def notes(self) -> List[str]:
        return [f"{self.dropped} box(es) with no area inside their image were dropped"] if self.dropped else []


def _image_size(path: Path) -> Tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


class CocoAdapter:
    name = "coco"

    @staticmethod
    def detect(path: Path) -> bool:
        return False  # the dataset doctor detects it; task=auto follows

    def load(self, path: Path, options: Dict[str, Any]) -> DenseIndex:
        from aether.doctor.detect import _coco_files

        files = _coco_files(path)
        if not files:
            raise AetherError(f"data.path={path}: no COCO .json (with images, annotations, categories) found")
        cats = sorted({(c["id"], c["name"]) for _, obj in files for c in obj["categories"]})
        classes = [n for _, n in cats]
        if len(set(classes)) != len(classes):
            raise AetherError(f"{files[0][0]}: category names repeat ({classes}); expected one id per name")
        lookup = {cid: i for i, (cid, _) in enumerate(cats)}
        clip, items, skipped, crowd = _Boxes(), [], [], 0
        for jf, obj in files:
            split = _split_of(jf.stem) if len(files) > 1 else None
            anns: Dict[Any, List[dict]] = {}
            for a in obj["annotations"]:
                anns.setdefault(a.get("image_id"), []).append(a)
            for im in obj["images"]:
                img = self._find(jf, path, im["file_name"])
                if img is None:
                    skipped.append(Skipped(im["file_name"], f"listed in {jf.name} but not found next to it or in images/"))
                    continue
                boxes, labels = [], []
                for a in anns.get(im["id"], []):
                    if a.get("iscrowd"):  # a crowd region, not one object: neither trained nor scored
                        crowd += 1
                        continue
                    if a.get("category_id") not in lookup:
                        skipped.append(Skipped(str(img), f"annotation {a.get('id')} has unknown category_id "
                                                         f"{a.get('category_id')} ({jf.name})"))
                        continue
                    x, y, bw, bh = (float(v) for v in a["bbox"])
                    boxes.append([x, y, x + bw, y + bh])
                    labels.append(lookup[a["category_id"]])
                w, h = im.get("width"), im.get("height")
                if not w or not h:
                    w, h = _image_size(img)
                items.append(Item(str(img), clip.target(boxes, labels, float(w), float(h)), split))
        notes = clip.notes() + ([f"{crowd} crowd annotation(s) (iscrowd=1) left out"] if crowd else [])
        return DenseIndex(str(path), self.name, classes, items, skipped, notes)

    @staticmethod
    def _find(json_file: Path, root: Path, name: str) -> Optional[Path]:
        base = root if root.is_dir() else root.parent
        for d in (json_file.parent, json_file.parent / "images", base, base / "images", json_file.parent.parent / "images"):
            if (d / name).is_file():
                return d / name
        return None


class YoloAdapter:
    name = "yolo"

    @staticmethod
    def detect(path: Path) -> bool:
        return False

    def load(self, path: Path, options: Dict[str, Any]) -> DenseIndex:
        from aether.doctor.detect import _images_under, _yolo_names

        data_yaml = next((path / n for n in ("data.yaml", "data.yml", "dataset.yaml") if (path / n).is_file()), None)
        names = _yolo_names(data_yaml)[0] if data_yaml else None
        image_dirs = [d for d in [path, *sorted(path.rglob("*"))] if d.is_dir() and d.name == "images"]
        if not image_dirs:
            raise AetherError(f"data.path={path}: a YOLO dataset needs images/ folders next to labels/ folders")
        clip, items, skipped, max_id = _Boxes(), [], [], -1
        for d in image_dirs:
            for img in _images_under(d):
                rel = img.relative_to(d)
                label_file = d.parent / "labels" / rel.with_suffix(".txt")
                split = _split_of(*rel.parts[:-1], d.parent.name)
                boxes, labels, bad = [], [], None
                lines = label_file.read_text(encoding="utf-8").splitlines() if label_file.is_file() else []
                w, h = _image_size(img) if lines else (1, 1)
                for n, line in enumerate(lines, 1):
                    parts = line.split()
                    if not parts:
                        continue
                    try:
                        cls, vals = int(float(parts[0])), [float(v) for v in parts[1:]]
                    except ValueError:
                        vals, cls = [], -1
                    if len(vals) == 4:
                        cx, cy, bw, bh = vals
                        box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
                    elif len(vals) >= 6 and len(vals) % 2 == 0:  # YOLO-seg polygon: its bounding box
                        xs, ys = vals[0::2], vals[1::2]
                        box = [min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h]
                    else:
                        bad = f"{label_file}:{n}: expected 'class cx cy w h' (or a polygon), got {line.strip()!r}"
                        break
                    if cls < 0 or (names is not None and cls >= len(names)):
                        bad = f"{label_file}:{n}: class id {cls} is not in data.yaml names (0..{len(names or []) - 1})"
                        break
                    boxes.append(box)
                    labels.append(cls)
                    max_id = max(max_id, cls)
                if bad:
                    skipped.append(Skipped(str(img), bad))
                    continue
                items.append(Item(str(img), clip.target(boxes, labels, float(w), float(h)), split))
        classes = names if names is not None else [str(i) for i in range(max_id + 1)]
        return DenseIndex(str(path), self.name, classes, items, skipped, clip.notes())


class VocAdapter:
    name = "voc"

    @staticmethod
    def detect(path: Path) -> bool:
        return False

    def load(self, path: Path, options: Dict[str, Any]) -> DenseIndex:
        from aether.doctor.detect import _voc_dir

        ann_dir = _voc_dir(path)
        if ann_dir is None:
            raise AetherError(f"data.path={path}: a VOC dataset needs Annotations/*.xml")
        splits = {}
        for s in SPLIT_WORDS:
            f = path / "ImageSets" / "Main" / f"{s}.txt"
            if f.is_file():
                splits.update({line.strip(): s for line in f.read_text().splitlines() if line.strip()})
        parsed, skipped = [], []
        for x in sorted(ann_dir.glob("*.xml")):
            try:
                root = ET.parse(x).getroot()
                fname = root.findtext("filename") or f"{x.stem}.jpg"
                size = root.find("size")
                w, h = (float(size.findtext("width")), float(size.findtext("height"))) if size is not None else (0, 0)
                objs = [(o.findtext("name").strip(), [float(o.find("bndbox").findtext(k))
                                                      for k in ("xmin", "ymin", "xmax", "ymax")])
                        for o in root.iter("object")]
            except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
                skipped.append(Skipped(str(x), f"not a readable VOC annotation ({exc})"))
                continue
            img = next((p for p in (path / "JPEGImages" / fname, path / "images" / fname, x.parent / fname) if p.is_file()), None)
            if img is None:
                skipped.append(Skipped(str(x), f"its image {fname} is not in JPEGImages/"))
                continue
            parsed.append((img, w, h, objs, splits.get(x.stem)))
        classes = sorted({n for *_, objs, _ in parsed for n, _ in objs})
        lookup = {c: i for i, c in enumerate(classes)}
        clip, items = _Boxes(), []
        for img, w, h, objs, split in parsed:
            if not w or not h:
                w, h = _image_size(img)
            items.append(Item(str(img), clip.target([b for _, b in objs], [lookup[n] for n, _ in objs], w, h), split))
        return DenseIndex(str(path), self.name, classes, items, skipped, clip.notes())


ADAPTERS = {"coco": CocoAdapter, "yolo": YoloAdapter, "voc": VocAdapter}


def instance_counts(index: DenseIndex) -> Dict[str, int]:
    c = Counter(lab for it in index.items for lab in it.target["labels"])
    return {name: c.get(i, 0) for i, name in enumerate(index.classes)}


def box_transforms(size: int, aug: Optional[AugmentCfg]) -> Any:
    """Resize to size x size (+ scale-jittered crop, flips, colour jitter when training); boxes follow
    their image.
    Normalisation happens inside the torchvision detector (its `image_mean` / `image_std`)."""
    from torchvision.transforms import v2

    steps: List[Any] = []
    if aug is not None:
        if tuple(aug.scale) != (1.0, 1.0):
            # scale jitter that moves the boxes with the crop (flips alone were the only augmentation:
            # a few dozen images are memorised in a few epochs); boxes cut to nothing are dropped below
            steps.append(v2.RandomResizedCrop((size, size), scale=tuple(aug.scale), ratio=tuple(aug.ratio),
                                              antialias=True))
        if aug.hflip:
            steps.append(v2.RandomHorizontalFlip(aug.hflip))
        if aug.vflip:
            steps.append(v2.RandomVerticalFlip(aug.vflip))
        if aug.color_jitter:
            steps.append(v2.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter))
    steps += [v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return v2.Compose(steps)


class DetectionDataset(ItemDataset):
    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        import numpy as np
        from torchvision import tv_tensors

        it = self.items[i]
        img = self.image(it)
        image = tv_tensors.Image(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1))
        boxes = tv_tensors.BoundingBoxes(torch.tensor(it.target["boxes"], dtype=torch.float32).reshape(-1, 4),
                                         format="XYXY", canvas_size=(img.height, img.width))
        target = {"boxes": boxes, "labels": torch.tensor(it.target["labels"], dtype=torch.int64)}
        x, t = self.transform(image, target)
        return x.as_subclass(torch.Tensor), {"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]}


def collate(batch: List[Any]) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]:
    return [b[0] for b in batch], [b[1] for b in batch]
