"""Pascal VOC: a folder with `Annotations/*.xml` (one `<annotation>` per image, `<object>`s with
`<bndbox>` corners in pixels), images in `JPEGImages/`; `ImageSets/Main/{train,val,test}.txt`
give the split when present."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

from aether.data.items import ItemIndex, Item
from aether.data.formats.base import Format, Match, images_under
from aether.data.formats.boxes import BOX_CHECKS, BoxClip, BoxSizes, image_size, out_of_bounds
from aether.data.index import SPLITS, Skipped
from aether.errors import AetherError


def voc_dir(path: Path) -> Optional[Path]:
    """The folder of VOC xml files, or None."""
    for name in ("Annotations", "annotations"):
        d = path / name
        if d.is_dir() and any(d.glob("*.xml")):
            return d
    return None


class Voc(Format):
    name = "voc"
    task = "detection"
    annotated = True  # boxes, masks or label sets: the doctor examines and counts its annotations
    priority = 20
    looks_like = "Annotations/*.xml"
    checks = BOX_CHECKS

    def detect(self, path: Path, task_hint: Optional[str] = None) -> Optional[Match]:
        ann_dir = voc_dir(path) if path.is_dir() else None
        if ann_dir is None:
            return None
        xmls = sorted(ann_dir.glob("*.xml"))
        objects = oob = bad = 0
        names: Dict[str, int] = {}
        per_file: List[int] = []
        sizes = BoxSizes()
        for x in xmls:
            try:
                root = ET.parse(x).getroot()
            except ET.ParseError:
                bad += 1
                continue
            if root.tag != "annotation":
                bad += 1
                continue
            size = root.find("size")
            try:
                w = float(size.findtext("width")) if size is not None else None
                h = float(size.findtext("height")) if size is not None else None
            except (TypeError, ValueError):
                w = h = None
            n = 0
            for obj in root.iter("object"):
                n += 1
                name = (obj.findtext("name") or "").strip()
                names[name] = names.get(name, 0) + 1
                bb = obj.find("bndbox")
                if bb is None or not w or not h:
                    continue
                try:
                    x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                except (TypeError, ValueError):
                    bad += 1
                    continue
                if out_of_bounds(x0, y0, x1, y1, w, h):
                    oob += 1
                sizes.add(x1 - x0, y1 - y0, w, h, pixels=True)
            objects += n
            per_file.append(n)
        if len(xmls) == bad:
            return None  # xml files but none is a VOC annotation
        jpeg = path / "JPEGImages"
        evidence = [f"{ann_dir.name}/*.xml: {len(xmls)} Pascal VOC files with {objects} objects, "
                    f"{len(names)} class names"]
        if jpeg.is_dir():
            evidence.append(f"JPEGImages/ holds {len(images_under(jpeg))} images")
        if oob:
            evidence.append(f"{oob} boxes extend outside <size> (xmin/ymin < 0, xmax > width, ymax > height)")
        if bad:
            evidence.append(f"{bad} xml files or boxes could not be read")
        summary = {
            "num_xml": len(xmls),
            "num_objects": objects,
            "num_boxes": objects,
            "class_names": dict(sorted(names.items())),
            "class_counts": dict(sorted(names.items())),
            "boxes_out_of_bounds": oob,
            "unreadable": bad,
            **sizes.tail(per_file),
        }
        return Match(self.name, self.task, evidence, summary)

    def load(self, path: Path, options: Dict[str, Any]) -> ItemIndex:
        ann_dir = voc_dir(path)
        if ann_dir is None:
            raise AetherError(f"data.path={path}: a VOC dataset needs Annotations/*.xml")
        splits = {}
        for s in SPLITS:
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
        clip, items = BoxClip(), []
        for img, w, h, objs, split in parsed:
            if not w or not h:
                w, h = image_size(img)
            items.append(Item(str(img), clip.target([b for _, b in objs], [lookup[n] for n, _ in objs], w, h), split))
        return ItemIndex(str(path), self.name, classes, items, skipped, clip.notes())
