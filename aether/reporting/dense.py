"""Pictures for dense tasks: segmentation overlays and detection boxes drawn on test images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def _color(i: int) -> Tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def _grid(tiles: Sequence[Any], path: Path, cols: int = 4) -> None:
    from PIL import Image

    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * w, (i // cols) * h))
    sheet.save(path)


def overlay(image: Any, mask: np.ndarray, alpha: float = 0.5, background: int = 0) -> Any:
    """`image` (PIL, same size as mask) with each non-background class tinted in its colour."""
    from PIL import Image

    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = arr.copy()
    for c in np.unique(mask):
        if c != background and c < 255:
            tint[mask == c] = _color(int(c) - 1)
    return Image.fromarray((arr * (1 - alpha) + tint * alpha).astype(np.uint8))


def segmentation_sheet(samples: List[Tuple[Any, np.ndarray, np.ndarray]], path: Path) -> None:
    """Per sample: the image, the true mask overlaid, the predicted mask overlaid (side by side)."""
    from PIL import Image

    tiles = []
    for img, true, pred in samples:
        w, h = img.size
        tile = Image.new("RGB", (3 * w, h))
        for j, im in enumerate((img.convert("RGB"), overlay(img, true), overlay(img, pred))):
            tile.paste(im, (j * w, 0))
        tiles.append(tile.resize((3 * 96, 96)) if h < 96 else tile)
    _grid(tiles, path, cols=2)


def detection_sheet(samples: List[Tuple[Any, Dict[str, Any], Dict[str, Any]]], classes: List[str], threshold: float,
                    path: Path) -> None:
    """Per sample: true boxes (thin, white) and predictions above `threshold` (class colour, score)."""
    from PIL import ImageDraw

    tiles = []
    for img, target, pred in samples:
        scale = max(1.0, 160 / max(img.size))
        im = img.convert("RGB").resize((int(img.size[0] * scale), int(img.size[1] * scale)))
        d = ImageDraw.Draw(im)
        for box in target["boxes"]:
            d.rectangle([v * scale for v in box], outline=(255, 255, 255), width=1)
        for box, label, score in zip(pred["boxes"], pred["labels"], pred["scores"]):
            if score < threshold:
                continue
            d.rectangle([v * scale for v in box], outline=_color(int(label)), width=2)
            d.text((box[0] * scale + 2, box[1] * scale + 1), f"{classes[int(label)]} {score:.2f}", fill=_color(int(label)))
        tiles.append(im)
    _grid(tiles, path, cols=4)
