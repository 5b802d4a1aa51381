"""task=detection's report picture: test images with their true boxes and the predicted ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

from aether.reporting.sheets import color, grid


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
            d.rectangle([v * scale for v in box], outline=color(int(label)), width=2)
            d.text((box[0] * scale + 2, box[1] * scale + 1), f"{classes[int(label)]} {score:.2f}", fill=color(int(label)))
        tiles.append(im)
    grid(tiles, path, cols=4)
