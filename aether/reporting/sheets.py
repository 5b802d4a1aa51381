"""Picture helpers for the tasks' report sheets (aether.tasks.<task>.sheets): a colour per class,
masks tinted over their image, tiles pasted into one grid image."""

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
