"""Picture helpers for the tasks' report sheets (aether.tasks.<task>.sheets): a colour per class,
masks tinted over their image, an image tile with a caption, tiles pasted into one grid image."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Tuple

import numpy as np

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def color(i: int) -> Tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def grid(tiles: Sequence[Any], path: Path, cols: int = 4) -> None:
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
            tint[mask == c] = color(int(c) - 1)
    return Image.fromarray((arr * (1 - alpha) + tint * alpha).astype(np.uint8))


def tile(path: str, lines: Sequence[Tuple[str, Tuple[int, int, int]]], side: int = 128) -> Any:
    """The image fitted into side x side, with caption lines under it."""
    from PIL import Image, ImageDraw

    from aether.data.images import load_rgb

    out = Image.new("RGB", (side, side + 13 * len(lines) + 4), (255, 255, 255))
    try:
        img = load_rgb(path)
        scale = side / max(img.size)  # small images are enlarged (pixels kept sharp), large ones shrunk
        img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                         Image.NEAREST if scale > 1 else Image.BILINEAR)
        out.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
    except Exception:  # noqa: BLE001 - a file gone since testing: an empty tile, the caption says which
        lines = [("(unreadable)", (200, 0, 0)), *lines]
    d = ImageDraw.Draw(out)
    for i, (text, colour) in enumerate(lines):
        d.text((3, side + 2 + 13 * i), text[:24], fill=colour)
    return out
