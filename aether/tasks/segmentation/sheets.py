"""task=segmentation's report picture: test images with their true and predicted masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import numpy as np

from aether.reporting.sheets import grid, overlay


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
    grid(tiles, path, cols=2)
