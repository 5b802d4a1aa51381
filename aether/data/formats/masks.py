"""Segmentation masks: `images/` + `masks/` folders (also `labels/` or `annotations/`, and one
split level down: `train/images` + `train/masks`), paired by file stem. A mask is a
single-channel image whose pixel values are class ids (0 = the first class, usually background);
`task_options.ignore_index` (255) marks pixels that are neither trained nor scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aether.data.items import ItemIndex, Item
from aether.data.formats.base import Format, Match, images_under
from aether.data.index import Skipped
from aether.data.manifests import SPLIT_ALIASES
from aether.errors import AetherError

MASK_DIR_NAMES = ("masks", "labels", "annotations")
MAX_MASKS = 2000  # masks read for pixel statistics; pairing/size checks cover all of them
# modes of a mask of class ids; the doctor also accepts float masks ("F") and counts their
# values, training refuses them (a class id is an integer)
DOCTOR_SINGLE_CHANNEL = ("1", "L", "P", "I", "I;16", "F")
SINGLE_CHANNEL = ("1", "L", "P", "I", "I;16")


def mask_roots(path: Path) -> List[Tuple[Path, Path]]:
    """(images folder, masks folder) pairs at `path` and one level down."""
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


def _by_stem(d: Path) -> Dict[str, Path]:
    return {p.stem: p for p in images_under(d)}


class Masks(Format):
    name = "masks"
    task = "segmentation"
    annotated = True  # boxes, masks or label sets: the doctor examines and counts its annotations
    priority = 40
    looks_like = "images/ + masks/|labels/|annotations/"
    checks = (("size_mismatches", "mask(s) whose size differs from the image"),
              ("images_without_mask", "image(s) without a mask"),
              ("masks_without_image", "mask(s) without an image"))

    def detect(self, path: Path, task_hint: Optional[str] = None) -> Optional[Match]:
        dirs = mask_roots(path) if path.is_dir() else []
        pairs: List[Tuple[Path, Path]] = []
        img_only = mask_only = 0
        for img_dir, mask_dir in dirs:
            imgs, masks = _by_stem(img_dir), _by_stem(mask_dir)
            pairs += [(imgs[s], masks[s]) for s in sorted(imgs.keys() & masks.keys())]
            img_only += len(imgs.keys() - masks.keys())
            mask_only += len(masks.keys() - imgs.keys())
        if not pairs:
            return None
        mismatch, not_single, unreadable, pixels = self._read_masks(pairs)
        total = sum(pixels.values()) or 1
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
            "class_pixel_share": {v: pixels[v] / total for v in sorted(pixels)},
        }
        return Match(self.name, self.task, evidence, summary)

    @staticmethod
    def _read_masks(pairs: List[Tuple[Path, Path]]) -> Tuple[int, int, int, Dict[int, int]]:
        """(size mismatches, not single-channel, unreadable, pixels per value) over the pairs."""
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
                    if m.mode not in DOCTOR_SINGLE_CHANNEL:
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
        return mismatch, not_single, unreadable, pixels

    def load(self, path: Path, options: Dict[str, Any], ignore_index: Optional[int] = 255,
             class_names: Optional[List[str]] = None) -> ItemIndex:
        """`ignore_index` and `class_names` are the segmentation task's options (task_options)."""
        roots = mask_roots(path) if path.is_dir() else []
        if not roots:
            raise AetherError(f"data.path={path}: expected images/ and masks/ (or labels/, annotations/) folders, "
                              "also one split level down (train/images + train/masks)")
        items: List[Item] = []
        skipped: List[Skipped] = []
        values: set = set()
        any_ignored = False
        for img_dir, mask_dir in roots:
            split = SPLIT_ALIASES.get(img_dir.parent.name.lower()) if img_dir.parent != path else None
            imgs, masks = _by_stem(img_dir), _by_stem(mask_dir)
            skipped += [Skipped(str(imgs[s]), f"no mask with the same name in {mask_dir}") for s in sorted(imgs.keys() - masks.keys())]
            for stem in sorted(imgs.keys() & masks.keys()):
                found = _mask_values(imgs[stem], masks[stem], skipped)
                if found is None:
                    continue
                values |= found - {ignore_index}
                any_ignored = any_ignored or ignore_index in found
                items.append(Item(str(imgs[stem]), str(masks[stem]), split))
        if ignore_index == 255 and items and values <= {0} and any_ignored:
            raise AetherError(f"data.path={path}: the masks hold only the values 0 and 255, and 255 is "
                              "task_options.ignore_index, so no pixel would train as foreground (black/white masks?); "
                              "save the masks with class ids (0 = background, 1, 2, ...) or set task_options.ignore_index "
                              "to a value the masks do not use")
        k = max(values, default=0) + 1
        if class_names is not None:
            if len(class_names) < k:
                raise AetherError(f"task_options.classes names {len(class_names)} classes but the masks hold the value "
                                  f"{k - 1}; expected values 0..{len(class_names) - 1} (or {ignore_index} = ignore)")
            classes = list(class_names)
        else:
            classes = [f"class_{i}" for i in range(max(k, 2))]
        notes = [f"mask values found: {sorted(values)} -> {len(classes)} classes"
                 + (f"; {ignore_index} = ignored" if ignore_index is not None else "")]
        return ItemIndex(str(path), self.name, classes, items, skipped, notes)


def _mask_values(img: Path, mask: Path, skipped: List[Skipped]) -> Optional[set]:
    """The class ids in a usable mask, or None with the reason appended to `skipped`."""
    from PIL import Image

    try:
        with Image.open(mask) as m:
            if m.mode not in SINGLE_CHANNEL:
                skipped.append(Skipped(str(img), f"its mask {mask} is {m.mode}; expected a "
                                                 "single-channel image of class ids"))
                return None
            with Image.open(img) as im:
                if im.size != m.size:
                    skipped.append(Skipped(str(img), f"its mask {mask} is {m.size[0]}x{m.size[1]}, "
                                                     f"the image {im.size[0]}x{im.size[1]}"))
                    return None
            return {int(v) for _, v in (m.getcolors(maxcolors=1 << 16) or [])}
    except OSError as exc:
        skipped.append(Skipped(str(img), f"its mask {mask} cannot be read ({exc})"))
        return None
