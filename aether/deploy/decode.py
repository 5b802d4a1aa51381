"""Decoding uploads and files for a model without holding more pixels than it needs.

A 9000x9000 PNG is 236 KB on disk and 243 MB decoded; eight of them at once drove one serving
worker to 9 GB. Two defences, both here:

- `decode_reduced` decodes as small as the model allows: JPEG in draft mode (DCT scaling to 1/2,
  1/4 or 1/8 while decoding), then `Image.reduce` (an f x f box filter, i.e. antialiased) before
  the RGB conversion and EXIF rotation, so only the decoder's own buffer is ever full size. The
  result keeps at least twice the side the evaluation transform resizes to, so the transform's
  own antialiased resize does the last step as it always did.
- `PixelBudget` bounds the pixels being decoded at once in one process: a request waits (first
  come, first served) until its pixels fit; only an image that alone exceeds the budget is
  refused. The serving front end and `aether predict` hold one each.

Files are opened with O_NONBLOCK and fstat'ed before reading, so a FIFO (or a file swapped for
one) is refused instead of blocking a worker forever.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from contextlib import contextmanager
from typing import Any, Deque, Iterator, Tuple

Size = Tuple[int, int]
REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "La", "RGBa"})
KEEP = 2  # the reduced image keeps >= KEEP x the side the transform needs


class OverBudget(Exception):
    """One image that needs more pixels than the whole budget."""


class PixelBudget:
    """A counting semaphore over decoded pixels, FIFO so a large image is not starved by a
    stream of small ones."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.in_use = 0
        self.peak = 0  # the most pixels ever held at once (the tests and the benchmark read it)
        self._cond = threading.Condition()
        self._queue: Deque[object] = deque()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = max(0, int(pixels))
        if pixels > self.total:
            raise OverBudget(f"{pixels} decoded pixels exceed this worker's decode budget of {self.total} "
                             "(AETHER_MAX_DECODED_MPX)")
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._queue[0] is not ticket or self.in_use + pixels > self.total:
                self._cond.wait()
            self._queue.popleft()
            self.in_use += pixels
            self.peak = max(self.peak, self.in_use)
            self._cond.notify_all()  # the next in line may fit as well
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= pixels
                self._cond.notify_all()


def open_regular(path: str) -> Any:
    """A binary file object for `path`, refusing anything but a regular file without blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _plan(im: Any, need: int) -> int:
    """Set JPEG draft mode on an opened image if that helps; the remaining reduce factor."""
    w, h = im.size
    factor = max(1, min(w, h) // (KEEP * max(1, need)))
    if factor > 1 and im.format in ("JPEG", "MPO"):
        im.draft("RGB", (max(1, w // factor), max(1, h // factor)))  # picks a scale >= that size
        w, h = im.size
        factor = max(1, min(w, h) // (KEEP * max(1, need)))
    return factor


def decoded_pixels(path: str, need: int) -> int:
    """The pixels `decode_reduced(path, need)` will materialise (from the header alone); 0 when
    the header cannot be read (the doctor's check then says why)."""
    from PIL import Image

    try:
        with open_regular(path) as fh, Image.open(fh) as im:
            _plan(im, need)
            return int(im.size[0] * im.size[1])
    except Exception:
        return 0


def decode_reduced(path: str, need: int) -> Tuple[Any, Size, int]:
    """(RGB image, oriented original (width, height), pixels decoded). `need`: the short side the
    model's transform resizes to."""
    from PIL import Image, ImageOps

    from aether.data.images import HIGH_DEPTH_MODES, _to_8bit

    with open_regular(path) as fh, Image.open(fh) as im:
        w, h = im.size
        factor = _plan(im, need)
        im.load()
        decoded = im.size[0] * im.size[1]
        if im.mode in HIGH_DEPTH_MODES:
            im = _to_8bit(im)  # convert("RGB") would clip 16-bit values to white
        if factor > 1:
            if im.mode not in REDUCIBLE:  # palette, 1-bit, CMYK, ...: reduce needs real colours
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            im = im.reduce(factor)
        oriented = ImageOps.exif_transpose(im)
        if oriented.size != im.size:  # rotated by 90 degrees: so is the original size
            w, h = h, w
        return oriented.convert("RGB"), (w, h), decoded
