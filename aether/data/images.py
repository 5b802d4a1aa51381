"""Opening and checking image files (one place, used by training, evaluation and serving)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, List, Optional, Tuple

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def load_rgb(path: str) -> Image.Image:
    """Decode an image as RGB with its EXIF orientation applied."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def check_image(path: str) -> Optional[str]:
    """Fully decode `path`; return why it is unusable, or None when it is fine."""
    try:
        if not os.path.exists(path):
            return "file not found" if not os.path.islink(path) else "broken symlink"
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG: decode at reduced size, still reads every byte
            im.load()
    except UnidentifiedImageError:
        return "not a decodable image (unknown or corrupt format)"
    except Image.DecompressionBombError as exc:
        return f"decompression bomb refused: {exc}"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"cannot decode: {exc}"
    return None


def check_images(paths: Iterable[str], progress: Optional[Callable[[int], None]] = None) -> List[Tuple[str, str]]:
    """Check many images in parallel threads (Pillow decodes without the GIL); return the bad ones."""
    paths = list(paths)
    bad: List[Tuple[str, str]] = []
    workers = min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (path, reason) in enumerate(zip(paths, pool.map(check_image, paths, chunksize=64))):
            if reason is not None:
                bad.append((path, reason))
            if progress is not None and (i + 1) % 256 == 0:
                progress(256)
    return bad
