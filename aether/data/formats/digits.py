"""The embedded default: scikit-learn's 1,797 real 8x8 handwritten digits, written once as PNG
files into Aether's cache and then read as a class-folder dataset. Chosen when data.path is
empty, or by data.format=digits; never detected."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

from aether.data.formats.base import Format
from aether.data.formats.folder import Folder
from aether.data.index import DatasetIndex


class Digits(Format):
    name = "digits"
    strict = False  # no path to check: task=<other> says itself that it needs data=PATH
    VERSION = "v1"

    def load(self, path: Optional[Path], options: Dict[str, Any]) -> DatasetIndex:
        folder = materialize_digits()
        index = Folder().load(folder, {})
        index.format = self.name
        index.notes.append(f"embedded sample: scikit-learn digits, materialised in {folder}")
        return index


def materialize_digits() -> Path:
    from aether.paths import cache_dir

    target = cache_dir() / "datasets" / f"digits-{Digits.VERSION}"
    if (target / ".complete").exists():
        return target
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if target.exists():  # left half-written by an interrupted run
        import shutil

        shutil.rmtree(target, ignore_errors=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    bunch = load_digits()
    for i, (img, label) in enumerate(zip(bunch.images, bunch.target)):
        d = tmp / str(int(label))
        d.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(img * (255.0 / 16.0), 0, 255).astype("uint8")  # 0..16 grey levels
        Image.fromarray(pixels, mode="L").save(d / f"{i:04d}.png")
    (tmp / ".complete").write_text("ok\n")
    try:
        os.replace(tmp, target)  # atomic: a concurrent run sees all of it or none
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return target
