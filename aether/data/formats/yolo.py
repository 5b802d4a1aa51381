"""YOLO: a folder with `data.yaml` (class names, splits) and/or `labels/` folders of `.txt` files
with one `cls cx cy w h` line per box (relative to the image), `images/<x>/a.jpg` labelled by
`labels/<x>/a.txt`. Every label line a polygon (YOLO-seg) reads as segmentation; training takes
each polygon's bounding box."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aether.data.items import ItemIndex, Item
from aether.data.formats.base import Format, Match, images_under
from aether.data.formats.boxes import BOX_CHECKS, EPS, BoxClip, BoxSizes, image_size, out_of_bounds, split_of
from aether.data.index import Skipped
from aether.errors import AetherError

DATA_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")


def data_yaml(path: Path) -> Optional[Path]:
    return next((path / n for n in DATA_YAML_NAMES if (path / n).is_file()), None)


def yolo_names(yaml_file: Path) -> Tuple[Optional[List[str]], Dict[str, Any]]:
    """(class names, the parsed yaml): names from `names` (list or {id: name}) or `nc`."""
    import yaml

    try:
        cfg = yaml.safe_load(yaml_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None, {}
    if not isinstance(cfg, dict):
        return None, {}
    names = cfg.get("names")
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif isinstance(cfg.get("nc"), int):
        names = [str(i) for i in range(cfg["nc"])]
    else:
        names = None
    return names, cfg


def _dirs_named(path: Path, name: str) -> List[Path]:
    return [d for d in [path, *sorted(path.rglob("*"))] if d.is_dir() and d.name == name]


def label_dirs(path: Path) -> List[Path]:
    return [d for d in _dirs_named(path, "labels") if any(d.rglob("*.txt"))]


class _LabelTally:
    """The counts of one pass over every label line (the doctor's summary)."""

    def __init__(self, names: Optional[List[str]]) -> None:
        self.names = names
        self.boxes = self.polygons = self.malformed = self.out_of_range = self.oob = self.unknown = 0
        self.class_ids: Dict[int, int] = {}
        self.per_file: List[int] = []
        self.sizes = BoxSizes()

    def add_file(self, lf: Path) -> None:
        try:
            lines = lf.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            self.malformed += 1
            return
        self.per_file.append(sum(self._add_line(line) for line in lines))

    def _add_line(self, line: str) -> int:
        """1 when the line is a box or polygon, else 0."""
        parts = line.split()
        if not parts:
            return 0
        try:
            cls = int(float(parts[0]))
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            self.malformed += 1
            return 0
        if len(vals) == 4:
            self.boxes += 1
            cx, cy, w, h = vals
            if out_of_bounds(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 1.0, 1.0) or w < 0 or h < 0:
                self.oob += 1
            self.sizes.add(w, h, 1.0, 1.0, pixels=False)  # normalised: relative sizes only
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            self.polygons += 1
        else:
            self.malformed += 1
            return 0
        self.class_ids[cls] = self.class_ids.get(cls, 0) + 1
        if any(v < -EPS or v > 1 + EPS for v in vals):
            self.out_of_range += 1
        if cls < 0 or (self.names is not None and cls >= len(self.names)):
            self.unknown += 1
        return 1


class Yolo(Format):
    name = "yolo"
    task = "detection"
    annotated = True  # boxes, masks or label sets: the doctor examines and counts its annotations
    priority = 30
    looks_like = "data.yaml or labels/*.txt"
    checks = BOX_CHECKS + (("unknown_class_ids", "label(s) with a class id beyond the names list"),
                           ("out_of_range", "label line(s) with coordinates outside 0..1"),
                           ("malformed_lines", "malformed label line(s)"),
                           ("images_without_labels", "image(s) without a label file"))

    def detect(self, path: Path, task_hint: Optional[str] = None) -> Optional[Match]:
        if not path.is_dir():
            return None
        yaml_file = data_yaml(path)
        names, cfg = yolo_names(yaml_file) if yaml_file else (None, {})
        dirs = label_dirs(path)
        if not dirs and (yaml_file is None or names is None):
            return None
        label_files = sorted({p for d in dirs for p in d.rglob("*.txt") if p.name != "classes.txt"})
        t = _LabelTally(names)
        for lf in label_files:
            t.add_file(lf)
        # images without a label file: images/<x>/a.jpg expects labels/<x>/a.txt
        label_set = {p.resolve() for p in label_files}
        images_total = images_unlabelled = 0
        for d in _dirs_named(path, "images"):
            for img in images_under(d):
                images_total += 1
                expected = d.parent / "labels" / img.relative_to(d).with_suffix(".txt")
                if expected.resolve() not in label_set:
                    images_unlabelled += 1
        if not label_files and names is None:
            return None
        evidence = [self._source_line(yaml_file, names, cfg, len(label_files)),
                    f"{t.boxes} boxes 'cls cx cy w h'" + (f", {t.polygons} polygons" if t.polygons else "")]
        n_names = len(names) if names else 0
        for count, text in ((t.oob, "boxes extend outside the image (cx±w/2 or cy±h/2 outside 0..1)"),
                            (t.out_of_range, "label lines have coordinates outside 0..1"),
                            (t.unknown, f"label lines use class ids >= {n_names} names"),
                            (t.malformed, "label lines could not be parsed")):
            if count:
                evidence.append(f"{count} {text}")
        if images_unlabelled:
            evidence.append(f"{images_unlabelled} of {images_total} images have no label file")
        summary = {
            "num_label_files": len(label_files),
            "num_boxes": t.boxes,
            "num_polygons": t.polygons,
            "class_ids": dict(sorted(t.class_ids.items())),
            # by name where data.yaml names them (ids beyond the names are warned about, not classes;
            # a named class no label uses shows with 0); by id when there is no names list
            "class_counts": ({n: t.class_ids.get(i, 0) for i, n in enumerate(names)} if names is not None
                             else {str(i): c for i, c in sorted(t.class_ids.items())}),
            "num_names": len(names) if names is not None else None,
            "out_of_range": t.out_of_range,
            "boxes_out_of_bounds": t.oob,
            "unknown_class_ids": t.unknown,
            "malformed_lines": t.malformed,
            "num_images": images_total,
            "images_without_labels": images_unlabelled,
            **t.sizes.tail(t.per_file),
        }
        return Match(self.name, "segmentation" if t.polygons and not t.boxes else self.task, evidence, summary)

    @staticmethod
    def _source_line(yaml_file: Optional[Path], names: Optional[List[str]], cfg: Dict[str, Any], n_files: int) -> str:
        if yaml_file is None:
            return f"labels/ folders hold {n_files} .txt files (no data.yaml)"
        splits = [k for k in ("train", "val", "test") if k in cfg]
        return (f"{yaml_file.name} names {len(names) if names is not None else 'no'} classes"
                + (f" and splits {'/'.join(splits)}" if splits else "") + f"; labels/*.txt files: {n_files}")

    def load(self, path: Path, options: Dict[str, Any]) -> ItemIndex:
        yaml_file = data_yaml(path)
        names = yolo_names(yaml_file)[0] if yaml_file else None
        image_dirs = _dirs_named(path, "images")
        if not image_dirs:
            raise AetherError(f"data.path={path}: a YOLO dataset needs images/ folders next to labels/ folders")
        clip, items, skipped, max_id = BoxClip(), [], [], -1
        for d in image_dirs:
            for img in images_under(d):
                rel = img.relative_to(d)
                label_file = d.parent / "labels" / rel.with_suffix(".txt")
                lines = label_file.read_text(encoding="utf-8").splitlines() if label_file.is_file() else []
                w, h = image_size(img) if lines else (1, 1)
                boxes, labels, bad = self._targets(label_file, lines, names, w, h)
                max_id = max([max_id, *labels])  # the good lines before a bad one count too (as they always did)
                if bad:
                    skipped.append(Skipped(str(img), bad))
                    continue
                split = split_of(*rel.parts[:-1], d.parent.name)
                items.append(Item(str(img), clip.target(boxes, labels, float(w), float(h)), split))
        classes = names if names is not None else [str(i) for i in range(max_id + 1)]
        return ItemIndex(str(path), self.name, classes, items, skipped, clip.notes())

    @staticmethod
    def _targets(label_file: Path, lines: List[str], names: Optional[List[str]], w: float, h: float
                 ) -> Tuple[List[List[float]], List[int], Optional[str]]:
        """(pixel boxes, class ids, None) of one label file; at the first bad line, what was read
        before it and why the line is bad."""
        boxes: List[List[float]] = []
        labels: List[int] = []
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
                return boxes, labels, f"{label_file}:{n}: expected 'class cx cy w h' (or a polygon), got {line.strip()!r}"
            if cls < 0 or (names is not None and cls >= len(names)):
                return boxes, labels, f"{label_file}:{n}: class id {cls} is not in data.yaml names (0..{len(names or []) - 1})"
            boxes.append(box)
            labels.append(cls)
        return boxes, labels, None
