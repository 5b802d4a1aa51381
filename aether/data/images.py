"""Opening image files (one place, used by training, evaluation and serving); checking them is
the dataset doctor's job (aether.doctor.checks)."""

from __future__ import annotations

import os

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def load_rgb(path: str) -> Image.Image:
    """Decode an image as RGB with its EXIF orientation applied."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in HIGH_DEPTH_MODES:
            im = _to_8bit(im)  # convert("RGB") would clip 16-bit values to white
        return im.convert("RGB")


HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit / float greyscale to 8-bit, stretched from the image's own min to max."""
    import numpy as np

    a = np.asarray(im, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(a.astype("uint8"), mode="L")
