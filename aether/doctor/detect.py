"""Dataset format + task detection with evidence, for the dataset doctor (`aether inspect`).

`detect(path)` tries every known format and returns a `Detection`: the chosen format and task,
human-readable evidence lines, every (format, task) pair that matched (`candidates`; more than
one means the dataset is ambiguous) and a `summary` of format-specific counts.

Formats, in priority order (the first match wins; all matches are listed in `candidates`):

* ``coco``     a .json file, or a folder holding one (top level or ``annotations/``), with
               top-level keys ``images``, ``annotations`` and ``categories``.
               Task rule: ``detection``, unless EVERY annotation has a non-empty
               ``segmentation`` AND segmentation is suggested, either by the json file name
               (contains "seg", "panoptic" or "stuff") or by ``task_hint="segmentation"``.
* ``voc``      a folder with ``Annotations/*.xml`` (Pascal VOC) -> detection.
* ``yolo``     a folder with ``data.yaml`` and/or ``labels/`` folders of ``.txt`` files with
               ``cls cx cy w h`` lines -> detection (``segmentation`` when every label line is a
               polygon, i.e. YOLO-seg).
* ``masks``    a folder with ``images/`` and ``masks/`` (or ``labels/``, ``annotations/``),
               also one split level down (``train/images`` + ``train/masks``), whose files pair
               up by stem -> segmentation.
* ``folder``   class sub-folders holding images -> classification. Only considered when no
               format above matched (every structured dataset also has image sub-folders).
* ``manifest`` a .csv/.tsv/.jsonl file -> classification.

Anything else raises `AetherError` naming the path and the formats looked for.

Bounds rule, identical for the three box formats so the same boxes give the same counts:
a box is out of bounds when it starts before 0, ends past the image width/height, or has a
negative size (COCO ``x<0, y<0, x+w>W, y+h>H, w<0, h<0``; VOC ``xmin<0, ymin<0, xmax>W, ymax>H,
xmax<xmin, ymax<ymin``; YOLO the same on ``cx±w/2, cy±h/2`` against 0..1), with a 1e-6 tolerance.

Only stdlib, Pillow and PyYAML are used; nothing here imports torch.
"""

from __future__ import annotations

import csv
import json
import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from aether.errors import AetherError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
)
MASK_DIR_NAMES = ("masks", "labels", "annotations")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")
SEGMENTATION_NAME_HINTS = ("seg", "panoptic", "stuff")
PRIORITY = ("coco", "voc", "yolo", "masks", "folder", "manifest")
# detection / segmentation formats: `data.format=` accepts them (the doctor reads them) even
# where no training adapter of that name is registered
STRUCTURED_FORMATS = ("coco", "voc", "yolo", "masks")
FORMATS_LOOKED_FOR = (
    "coco (.json with images/annotations/categories), voc (Annotations/*.xml), "
    "yolo (data.yaml or labels/*.txt), masks (images/ + masks/|labels/|annotations/), "
    "folder (class sub-folders of images), manifest (.csv/.tsv/.jsonl file)"
)
EPS = 1e-6
MAX_MASKS = 2000  # masks read for pixel statistics; pairing/size checks cover all of them


@dataclass
class Detection:
    """What `detect` found: the chosen format/task, why, and what else matched."""

    format: str
    task: str  # "classification" | "detection" | "segmentation"
    evidence: List[str] = field(default_factory=list)
    candidates: List[Tuple[str, str]] = field(default_factory=list)
    summary: Dict[str, Any] = field(default_factory=dict)

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


@dataclass
class _Match:
    format: str
    task: str
    evidence: List[str]
    summary: Dict[str, Any]


# ---------------------------------------------------------------------------------------- utils


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def _images_under(d: Path) -> List[Path]:
    return sorted(p for p in d.rglob("*") if _is_image(p) and not p.name.startswith("."))


def _spread(values: Sequence[float]) -> Dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


class _BoxSizes:
    """Box-size statistics that read the same for every box format: sizes relative to the image
    (YOLO only has those), plus aspect ratios and COCO's small/medium/large pixel-area buckets
    (< 32², < 96², more) where the image size in pixels is known (COCO, VOC). Zero- or negative-size boxes are counted
    apart as `degenerate`: they train nothing and often explain a detector's mAP of 0."""

    def __init__(self) -> None:
        self.rel_w: List[float] = []
        self.rel_h: List[float] = []
        self.rel_area: List[float] = []
        self.aspect: List[float] = []
        self.buckets = {"small": 0, "medium": 0, "large": 0}
        self.degenerate = 0

    def add(self, bw: float, bh: float, img_w: float, img_h: float, pixels: bool) -> None:
        if bw <= 0 or bh <= 0 or img_w <= 0 or img_h <= 0:
            self.degenerate += 1
            return
        self.rel_w.append(bw / img_w)
        self.rel_h.append(bh / img_h)
        self.rel_area.append(bw * bh / (img_w * img_h))
        if pixels:  # a normalised box's w/h is not its shape on screen
            self.aspect.append(bw / bh)
            area = bw * bh
            self.buckets["small" if area < 32 ** 2 else "medium" if area < 96 ** 2 else "large"] += 1

    def summary(self) -> Dict[str, Any]:
        r = lambda d: {k: round(v, 4) for k, v in d.items()}  # noqa: E731
        out: Dict[str, Any] = {"relative_width": r(_spread(self.rel_w)), "relative_height": r(_spread(self.rel_h)),
                               "relative_area": r(_spread(self.rel_area)), "degenerate": self.degenerate}
        if self.aspect:  # pixel sizes known (COCO, VOC)
            out["aspect_ratio"] = r(_spread(self.aspect))
            out["coco_area_buckets"] = dict(self.buckets)
        return out


def _out_of_bounds(x0: float, y0: float, x1: float, y1: float, w: float, h: float) -> bool:
    """Box given by corners against an image of size w x h (pixels, or 1 x 1 when normalised)."""
    return x0 < -EPS or y0 < -EPS or x1 > w + EPS or y1 > h + EPS or x1 < x0 - EPS or y1 < y0 - EPS


def _load_json(p: Path) -> Optional[Any]:
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_coco(obj: Any) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in ("images", "annotations", "categories"))


# ----------------------------------------------------------------------------------------- coco


def _coco_files(path: Path) -> List[Tuple[Path, dict]]:
    if path.is_file():
        candidates = [path] if path.suffix.lower() == ".json" else []
    else:
        candidates = sorted(path.glob("*.json"))
        for sub in ("annotations", "Annotations", "annotation"):
            if (path / sub).is_dir():
                candidates += sorted((path / sub).glob("*.json"))
    found = []
    for p in candidates:
        obj = _load_json(p)
        if _is_coco(obj):
            found.append((p, obj))
    return found


def _match_coco(path: Path, task_hint: Optional[str]) -> Optional[_Match]:
    files = _coco_files(path)
    if not files:
        return None
    evidence: List[str] = []
    n_img = n_ann = n_cat = oob = unknown = without = 0
    per_image: List[int] = []
    all_segmented = True
    name_hint = False
    sizes_stats = _BoxSizes()
    class_counts: Dict[str, int] = {}  # annotations per category name (the doctor's class table)
    for p, obj in files:
        images = [i for i in obj["images"] if isinstance(i, dict)]
        anns = [a for a in obj["annotations"] if isinstance(a, dict)]
        cat_names = {c.get("id"): str(c.get("name", c.get("id"))) for c in obj["categories"] if isinstance(c, dict)}
        cats = set(cat_names)
        for name in cat_names.values():
            class_counts.setdefault(name, 0)
        sizes = {i.get("id"): (i.get("width"), i.get("height")) for i in images}
        counts = {i.get("id"): 0 for i in images}
        file_oob = file_unknown = 0
        for a in anns:
            if a.get("category_id") not in cats:
                file_unknown += 1
            else:
                name = cat_names[a["category_id"]]
                class_counts[name] += 1
            if a.get("image_id") in counts:
                counts[a["image_id"]] += 1
            if not a.get("segmentation"):
                all_segmented = False
            bbox = a.get("bbox")
            wh = sizes.get(a.get("image_id"))
            if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and wh and None not in wh:
                x, y, bw, bh = (float(v) for v in bbox)
                if _out_of_bounds(x, y, x + bw, y + bh, float(wh[0]), float(wh[1])):
                    file_oob += 1
                sizes_stats.add(bw, bh, float(wh[0]), float(wh[1]), pixels=True)
        n_img += len(images)
        n_ann += len(anns)
        n_cat += len(cats)
        oob += file_oob
        unknown += file_unknown
        without += sum(1 for c in counts.values() if c == 0)
        per_image += list(counts.values())
        name_hint = name_hint or any(h in p.name.lower() for h in SEGMENTATION_NAME_HINTS)
        evidence.append(
            f"{p.name} has images/annotations/categories keys (COCO): {len(images)} images, "
            f"{len(anns)} annotations, {len(cats)} categories"
        )
    if oob:
        evidence.append(f"{oob} boxes extend outside their image (x+w > width, y+h > height or negative)")
    if unknown:
        evidence.append(f"{unknown} annotations use a category_id missing from categories")
    segmentation = n_ann > 0 and all_segmented and (name_hint or task_hint == "segmentation")
    if n_ann > 0 and all_segmented:
        why = "and the file name/task hint suggests segmentation" if segmentation else (
            "but neither file name nor task hint suggests segmentation, so: detection")
        evidence.append(f"every annotation has a segmentation {why}")
    summary = {
        "files": [str(p) for p, _ in files],
        "num_images": n_img,
        "num_annotations": n_ann,
        "num_boxes": n_ann,
        "num_categories": n_cat,
        "class_counts": class_counts,
        "boxes_out_of_bounds": oob,
        "unknown_category_ids": unknown,
        "images_without_annotations": without,
        "boxes_per_image": _spread(per_image),
        "box_sizes": sizes_stats.summary(),
        "degenerate_boxes": sizes_stats.degenerate,
    }
    return _Match("coco", "segmentation" if segmentation else "detection", evidence, summary)


# ------------------------------------------------------------------------------------------ voc


def _voc_dir(path: Path) -> Optional[Path]:
    for name in ("Annotations", "annotations"):
        d = path / name
        if d.is_dir() and any(d.glob("*.xml")):
            return d
    return None


def _match_voc(path: Path) -> Optional[_Match]:
    if not path.is_dir():
        return None
    ann_dir = _voc_dir(path)
    if ann_dir is None:
        return None
    xmls = sorted(ann_dir.glob("*.xml"))
    objects = oob = bad = 0
    names: Dict[str, int] = {}
    per_file: List[int] = []
    sizes_stats = _BoxSizes()
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
            if _out_of_bounds(x0, y0, x1, y1, w, h):
                oob += 1
            sizes_stats.add(x1 - x0, y1 - y0, w, h, pixels=True)
        objects += n
        per_file.append(n)
    if len(xmls) == bad:
        return None  # xml files but none is a VOC annotation
    jpeg = path / "JPEGImages"
    evidence = [f"{ann_dir.name}/*.xml: {len(xmls)} Pascal VOC files with {objects} objects, "
                f"{len(names)} class names"]
    if jpeg.is_dir():
        evidence.append(f"JPEGImages/ holds {len(_images_under(jpeg))} images")
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
        "boxes_per_image": _spread(per_file),
        "box_sizes": sizes_stats.summary(),
        "degenerate_boxes": sizes_stats.degenerate,
    }
    return _Match("voc", "detection", evidence, summary)


# ----------------------------------------------------------------------------------------- yolo


def _yolo_names(data_yaml: Path) -> Tuple[Optional[List[str]], Dict[str, Any]]:
    import yaml

    try:
        cfg = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
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


def _label_dirs(path: Path) -> List[Path]:
    dirs = [d for d in [path, *path.rglob("*")] if d.is_dir() and d.name == "labels"]
    return [d for d in dirs if any(d.rglob("*.txt"))]


def _match_yolo(path: Path) -> Optional[_Match]:
    if not path.is_dir():
        return None
    data_yaml = next((path / n for n in ("data.yaml", "data.yml", "dataset.yaml") if (path / n).is_file()), None)
    names, cfg = _yolo_names(data_yaml) if data_yaml else (None, {})
    label_dirs = _label_dirs(path)
    if data_yaml is not None and names is None and not label_dirs:
        return None
    if data_yaml is None and not label_dirs:
        return None
    label_files = sorted({p for d in label_dirs for p in d.rglob("*.txt") if p.name != "classes.txt"})
    boxes = polygons = malformed = out_of_range = oob = unknown = 0
    class_ids: Dict[int, int] = {}
    per_file: List[int] = []
    sizes_stats = _BoxSizes()
    for lf in label_files:
        n = 0
        try:
            lines = lf.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            malformed += 1
            continue
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            try:
                cls = int(float(parts[0]))
                vals = [float(v) for v in parts[1:]]
            except ValueError:
                malformed += 1
                continue
            if len(vals) == 4:
                boxes += 1
                cx, cy, w, h = vals
                if _out_of_bounds(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 1.0, 1.0) or w < 0 or h < 0:
                    oob += 1
                sizes_stats.add(w, h, 1.0, 1.0, pixels=False)  # normalised: relative sizes only
            elif len(vals) >= 6 and len(vals) % 2 == 0:
                polygons += 1
            else:
                malformed += 1
                continue
            n += 1
            class_ids[cls] = class_ids.get(cls, 0) + 1
            if any(v < -EPS or v > 1 + EPS for v in vals):
                out_of_range += 1
            if cls < 0 or (names is not None and cls >= len(names)):
                unknown += 1
        per_file.append(n)
    # images without a label file: images/<x>/a.jpg expects labels/<x>/a.txt
    label_set = {p.resolve() for p in label_files}
    images_total = images_unlabelled = 0
    for d in [d for d in [path, *path.rglob("*")] if d.is_dir() and d.name == "images"]:
        for img in _images_under(d):
            images_total += 1
            expected = d.parent / "labels" / img.relative_to(d).with_suffix(".txt")
            if expected.resolve() not in label_set:
                images_unlabelled += 1
    if not label_files and names is None:
        return None
    evidence = []
    if data_yaml is not None:
        splits = [k for k in ("train", "val", "test") if k in cfg]
        evidence.append(
            f"{data_yaml.name} names {len(names) if names is not None else 'no'} classes"
            + (f" and splits {'/'.join(splits)}" if splits else "")
            + f"; labels/*.txt files: {len(label_files)}"
        )
    else:
        evidence.append(f"labels/ folders hold {len(label_files)} .txt files (no data.yaml)")
    evidence.append(f"{boxes} boxes 'cls cx cy w h'" + (f", {polygons} polygons" if polygons else ""))
    if oob:
        evidence.append(f"{oob} boxes extend outside the image (cx±w/2 or cy±h/2 outside 0..1)")
    if out_of_range:
        evidence.append(f"{out_of_range} label lines have coordinates outside 0..1")
    if unknown:
        evidence.append(f"{unknown} label lines use class ids >= {len(names) if names else 0} names")
    if malformed:
        evidence.append(f"{malformed} label lines could not be parsed")
    if images_unlabelled:
        evidence.append(f"{images_unlabelled} of {images_total} images have no label file")
    summary = {
        "num_label_files": len(label_files),
        "num_boxes": boxes,
        "num_polygons": polygons,
        "class_ids": dict(sorted(class_ids.items())),
        # by name where data.yaml names them (ids beyond the names are warned about, not classes;
        # a named class no label uses shows with 0); by id when there is no names list
        "class_counts": ({n: class_ids.get(i, 0) for i, n in enumerate(names)} if names is not None
                         else {str(i): c for i, c in sorted(class_ids.items())}),
        "num_names": len(names) if names is not None else None,
        "out_of_range": out_of_range,
        "boxes_out_of_bounds": oob,
        "unknown_class_ids": unknown,
        "malformed_lines": malformed,
        "num_images": images_total,
        "images_without_labels": images_unlabelled,
        "boxes_per_image": _spread(per_file),
        "box_sizes": sizes_stats.summary(),
        "degenerate_boxes": sizes_stats.degenerate,
    }
    task = "segmentation" if polygons and not boxes else "detection"
    return _Match("yolo", task, evidence, summary)


# ---------------------------------------------------------------------------------------- masks


def _mask_roots(path: Path) -> List[Tuple[Path, Path]]:
    roots = [path] + sorted(d for d in path.iterdir() if d.is_dir())
    pairs = []
    for r in roots:
        if not (r / "images").is_dir():
            continue
        for name in MASK_DIR_NAMES:
            if (r / name).is_dir():
                pairs.append((r / "images", r / name))
                break
    return pairs


def _match_masks(path: Path) -> Optional[_Match]:
    if not path.is_dir():
        return None
    dirs = _mask_roots(path)
    if not dirs:
        return None
    pairs: List[Tuple[Path, Path]] = []
    img_only = mask_only = 0
    for img_dir, mask_dir in dirs:
        imgs = {p.stem: p for p in _images_under(img_dir)}
        masks = {p.stem: p for p in _images_under(mask_dir)}
        pairs += [(imgs[s], masks[s]) for s in sorted(imgs.keys() & masks.keys())]
        img_only += len(imgs.keys() - masks.keys())
        mask_only += len(masks.keys() - imgs.keys())
    if not pairs:
        return None
    from PIL import Image

    mismatch = not_single = unreadable = 0
    pixels: Dict[int, int] = {}
    for i, (img_p, mask_p) in enumerate(pairs):
        try:
            with Image.open(img_p) as im:
                img_size = im.size  # header only
            with Image.open(mask_p) as m:
                if m.size != img_size:
                    mismatch += 1
                if m.mode not in ("1", "L", "P", "I", "I;16", "F"):
                    not_single += 1
                    continue
                if i >= MAX_MASKS:
                    continue
                colors = m.getcolors(maxcolors=1 << 16)  # one decode per mask
        except OSError:
            unreadable += 1
            continue
        for count, value in colors or ():
            v = int(value)
            pixels[v] = pixels.get(v, 0) + count
    total = sum(pixels.values()) or 1
    share = {v: pixels[v] / total for v in sorted(pixels)}
    evidence = [
        f"{', '.join(f'{i.relative_to(path)}/ + {m.relative_to(path)}/' for i, m in dirs)}: "
        f"{len(pairs)} image/mask pairs by file stem",
        f"mask label values: {sorted(pixels)}",
    ]
    if img_only or mask_only:
        evidence.append(f"{img_only} images without a mask, {mask_only} masks without an image")
    if mismatch:
        evidence.append(f"{mismatch} masks differ in size from their image")
    if not_single:
        evidence.append(f"{not_single} masks are not single-channel")
    if len(pairs) > MAX_MASKS:
        evidence.append(f"pixel statistics from the first {MAX_MASKS} of {len(pairs)} masks")
    summary = {
        "pairs": len(pairs),
        "images_without_mask": img_only,
        "masks_without_image": mask_only,
        "size_mismatches": mismatch,
        "non_single_channel_masks": not_single,
        "unreadable": unreadable,
        "label_values": sorted(pixels),
        "class_pixel_share": share,
    }
    return _Match("masks", "segmentation", evidence, summary)


# ----------------------------------------------------------------------- folder and manifest


def _match_folder(path: Path) -> Optional[_Match]:
    if not path.is_dir():
        return None
    classes = {}
    for d in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        n = len(_images_under(d))
        if n:
            classes[d.name] = n
    if not classes:
        return None
    evidence = [f"{len(classes)} sub-folders hold images ({sum(classes.values())} in all): "
                + ", ".join(f"{k} ({v})" for k, v in list(classes.items())[:10])
                + (" ..." if len(classes) > 10 else "")]
    summary = {"num_classes": len(classes), "num_images": sum(classes.values()), "images_per_class": classes}
    return _Match("folder", "classification", evidence, summary)


def _match_manifest(path: Path) -> Optional[_Match]:
    if not (path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES):
        return None
    columns: List[str] = []
    rows = 0
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.suffix.lower() == ".jsonl":
                for line in f:
                    if line.strip():
                        if not columns:
                            obj = json.loads(line)
                            columns = list(obj) if isinstance(obj, dict) else []
                        rows += 1
            else:
                reader = csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
                columns = next(reader, [])
                rows = sum(1 for r in reader if r)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        raise AetherError(f"{path}: could not read manifest: {e}") from e
    evidence = [f"{path.name} is a {path.suffix.lower()[1:]} manifest with {rows} rows, columns: {columns}"]
    return _Match("manifest", "classification", evidence, {"num_rows": rows, "columns": columns})


# ------------------------------------------------------------------------------------- detect


def detect(path: Path, *, task_hint: Optional[str] = None, fmt: Optional[str] = None) -> Detection:
    """Detect the dataset format and task at `path` (a folder, or a COCO/manifest file).

    `task_hint="segmentation"` lets a COCO file whose annotations all carry segmentations be
    reported as segmentation. `fmt` (`data.format`) reads the data as that format only: no
    guessing, no ambiguity; an error says why it does not fit and what the data looks like
    instead. Raises `AetherError` when nothing matches."""
    path = Path(path)
    if not path.exists():
        raise AetherError(f"{path}: no such file or folder")
    matchers: Dict[str, Callable[[], Optional[_Match]]] = {
        "coco": lambda: _match_coco(path, task_hint),
        "voc": lambda: _match_voc(path),
        "yolo": lambda: _match_yolo(path),
        "masks": lambda: _match_masks(path),
        "manifest": lambda: _match_manifest(path),
    }
    if fmt is not None:
        return _detect_as(path, fmt, {**matchers, "folder": lambda: _match_folder(path)}, task_hint)
    matches = [m for name in PRIORITY if name in matchers for m in [matchers[name]()] if m is not None]
    if not matches:
        folder = _match_folder(path)  # only when no structured format matched
        if folder is not None:
            matches = [folder]
    if not matches:
        raise AetherError(f"{path}: not a dataset format Aether recognises; looked for {FORMATS_LOOKED_FOR}")
    matches.sort(key=lambda m: PRIORITY.index(m.format))
    best = matches[0]
    evidence = list(best.evidence)
    for other in matches[1:]:
        evidence.append(
            f"ambiguous: also looks like {other.format} ({other.task}): {other.evidence[0]}; "
            f"picked {best.format} by priority {' > '.join(PRIORITY)}; "
            f"set data.format={other.format} to choose it (or data.format={best.format} to silence this)"
        )
    return Detection(
        format=best.format,
        task=best.task,
        evidence=evidence,
        candidates=[(m.format, m.task) for m in matches],
        summary=best.summary,
    )



def _detect_as(path: Path, fmt: str, matchers: Dict[str, Callable[[], Optional[_Match]]],
               task_hint: Optional[str]) -> Detection:
    if fmt not in matchers:
        raise AetherError(f"data.format={fmt}: the dataset doctor knows {', '.join(PRIORITY)}")
    m = matchers[fmt]()
    if m is None:
        try:
            auto = detect(path, task_hint=task_hint)
            instead = f"it looks like {auto.format} ({auto.task}): {auto.evidence[0]}"
        except AetherError:
            instead = "no known format matches it"
        raise AetherError(f"data.format={fmt}: {path} is not a {fmt} dataset; {instead}. "
                          f"Formats: {FORMATS_LOOKED_FOR}")
    return Detection(format=m.format, task=m.task, evidence=[f"data.format={fmt} (set, not detected)", *m.evidence],
                     candidates=[(m.format, m.task)], summary=m.summary)


__all__ = ["Detection", "detect", "PRIORITY", "FORMATS_LOOKED_FOR", "STRUCTURED_FORMATS"]
