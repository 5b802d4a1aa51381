"""COCO: a .json file, or a folder holding one (top level or `annotations/`), with the top-level
keys `images`, `annotations` and `categories`.

Task rule: detection, unless EVERY annotation has a non-empty `segmentation` AND segmentation is
suggested, either by the json file name (contains "seg", "panoptic" or "stuff") or by
`task_hint="segmentation"`. Images are looked up next to the json, in `images/`, or in the
dataset folder; with several json files, each file's name gives its split (`instances_val.json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aether.data.items import ItemIndex, Item
from aether.data.formats.base import Format, Match, load_json
from aether.data.formats.boxes import BOX_CHECKS, BoxClip, BoxSizes, image_size, out_of_bounds, split_of
from aether.data.index import Skipped
from aether.errors import AetherError

SEGMENTATION_NAME_HINTS = ("seg", "panoptic", "stuff")
ANNOTATION_DIRS = ("annotations", "Annotations", "annotation")


def is_coco(obj: Any) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in ("images", "annotations", "categories"))


def coco_files(path: Path) -> List[Tuple[Path, dict]]:
    """(file, parsed json) of every COCO file at `path`: the file itself, or a folder's."""
    if path.is_file():
        candidates = [path] if path.suffix.lower() == ".json" else []
    else:
        candidates = sorted(path.glob("*.json"))
        for sub in ANNOTATION_DIRS:
            if (path / sub).is_dir():
                candidates += sorted((path / sub).glob("*.json"))
    found = []
    for p in candidates:
        obj = load_json(p)
        if is_coco(obj):
            found.append((p, obj))
    return found


class _Tally:
    """The counts of one pass over every file's annotations (the doctor's summary)."""

    def __init__(self) -> None:
        self.images = self.annotations = self.categories = self.oob = self.unknown = self.without = 0
        self.per_image: List[int] = []
        self.all_segmented = True
        self.name_hint = False
        self.sizes = BoxSizes()
        self.class_counts: Dict[str, int] = {}  # annotations per category name (the doctor's class table)

    def add_file(self, p: Path, obj: dict) -> str:
        images = [i for i in obj["images"] if isinstance(i, dict)]
        anns = [a for a in obj["annotations"] if isinstance(a, dict)]
        cat_names = {c.get("id"): str(c.get("name", c.get("id"))) for c in obj["categories"] if isinstance(c, dict)}
        for name in cat_names.values():
            self.class_counts.setdefault(name, 0)
        sizes = {i.get("id"): (i.get("width"), i.get("height")) for i in images}
        counts = {i.get("id"): 0 for i in images}
        for a in anns:
            if a.get("category_id") not in cat_names:
                self.unknown += 1
            else:
                self.class_counts[cat_names[a["category_id"]]] += 1
            if a.get("image_id") in counts:
                counts[a["image_id"]] += 1
            if not a.get("segmentation"):
                self.all_segmented = False
            bbox = a.get("bbox")
            wh = sizes.get(a.get("image_id"))
            if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and wh and None not in wh:
                x, y, bw, bh = (float(v) for v in bbox)
                if out_of_bounds(x, y, x + bw, y + bh, float(wh[0]), float(wh[1])):
                    self.oob += 1
                self.sizes.add(bw, bh, float(wh[0]), float(wh[1]), pixels=True)
        self.images += len(images)
        self.annotations += len(anns)
        self.categories += len(cat_names)
        self.without += sum(1 for c in counts.values() if c == 0)
        self.per_image += list(counts.values())
        self.name_hint = self.name_hint or any(h in p.name.lower() for h in SEGMENTATION_NAME_HINTS)
        return (f"{p.name} has images/annotations/categories keys (COCO): {len(images)} images, "
                f"{len(anns)} annotations, {len(cat_names)} categories")


class Coco(Format):
    name = "coco"
    task = "detection"
    annotated = True  # boxes, masks or label sets: the doctor examines and counts its annotations
    priority = 10
    looks_like = ".json with images/annotations/categories"
    checks = BOX_CHECKS + (("unknown_category_ids", "annotation(s) with an unknown category id"),
                           ("images_without_annotations", "image(s) without annotations"))

    def detect(self, path: Path, task_hint: Optional[str] = None) -> Optional[Match]:
        files = coco_files(path)
        if not files:
            return None
        t = _Tally()
        evidence = [t.add_file(p, obj) for p, obj in files]
        if t.oob:
            evidence.append(f"{t.oob} boxes extend outside their image (x+w > width, y+h > height or negative)")
        if t.unknown:
            evidence.append(f"{t.unknown} annotations use a category_id missing from categories")
        segmented = t.annotations > 0 and t.all_segmented
        segmentation = segmented and (t.name_hint or task_hint == "segmentation")
        if segmented:
            why = "and the file name/task hint suggests segmentation" if segmentation else (
                "but neither file name nor task hint suggests segmentation, so: detection")
            evidence.append(f"every annotation has a segmentation {why}")
        summary = {
            "files": [str(p) for p, _ in files],
            "num_images": t.images,
            "num_annotations": t.annotations,
            "num_boxes": t.annotations,
            "num_categories": t.categories,
            "class_counts": t.class_counts,
            "boxes_out_of_bounds": t.oob,
            "unknown_category_ids": t.unknown,
            "images_without_annotations": t.without,
            **t.sizes.tail(t.per_image),
        }
        return Match(self.name, "segmentation" if segmentation else self.task, evidence, summary)

    def load(self, path: Path, options: Dict[str, Any]) -> ItemIndex:
        files = coco_files(path)
        if not files:
            raise AetherError(f"data.path={path}: no COCO .json (with images, annotations, categories) found")
        cats = sorted({(c["id"], c["name"]) for _, obj in files for c in obj["categories"]})
        classes = [n for _, n in cats]
        if len(set(classes)) != len(classes):
            raise AetherError(f"{files[0][0]}: category names repeat ({classes}); expected one id per name")
        lookup = {cid: i for i, (cid, _) in enumerate(cats)}
        clip, items, skipped, crowd = BoxClip(), [], [], 0
        for jf, obj in files:
            split = split_of(jf.stem) if len(files) > 1 else None
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
                    w, h = image_size(img)
                items.append(Item(str(img), clip.target(boxes, labels, float(w), float(h)), split))
        notes = clip.notes() + ([f"{crowd} crowd annotation(s) (iscrowd=1) left out"] if crowd else [])
        return ItemIndex(str(path), self.name, classes, items, skipped, notes)

    @staticmethod
    def _find(json_file: Path, root: Path, name: str) -> Optional[Path]:
        base = root if root.is_dir() else root.parent
        for d in (json_file.parent, json_file.parent / "images", base, base / "images", json_file.parent.parent / "images"):
            if (d / name).is_file():
                return d / name
        return None
