"""Real image sets for the benchmarks, built from files that registry packages ship (no dataset
is kept in git; the benchmark builds each one on first use into a cache folder):

- `digits`: scikit-learn's 1,797 handwritten 8x8 digits (installed with Aether).
- `trees`: aerial RGB tiles with tree-crown boxes, from the sample data inside the `deepforest`
  wheel on PyPI (NEON airborne imagery, Pascal VOC annotations; the wheel is downloaded with
  `pip download --no-deps`, its data files read, nothing of it installed). The large crops are cut
  into 400 px tiles; a box is kept in the tile holding its centre, clipped to the tile.
- `ocvdigits`: OpenCV's `digits.png`, 5,000 real handwritten digits (20x20 px, 10 classes, 500
  each), from the Debian package `opencv-doc` (./usr/share/doc/opencv-doc/examples/data/digits.png,
  the image OpenCV's digits.py / digits_svm.cpp samples train on). The .deb is fetched with
  `apt-get download opencv-doc` into the cache folder and only that file is read out of it
  (`dpkg-deb --fsys-tarfile`); nothing is installed. The 2000x1000 image is 50 rows x 100 columns
  of 20x20 cells, every 5 rows one class (0..9); written as a class-folder tree of PNGs.
- `fashion`: Fashion-MNIST, Zalando's real product photos (28x28 grey, 10 classes), from the Debian
  package `dataset-fashion-mnist` (`apt-get download`, only the training idx files read): the
  first 300 training photos of each class, 3,000 PNGs in class folders.

    python benchmarks/real_data.py trees [--out DIR]     # builds and prints the folder
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

CACHE = Path(tempfile.gettempdir()) / "aether-bench-data"
TREE_FILES = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop", "OSBS_029")
TILE = 400
OPENCV_DIGITS = "./usr/share/doc/opencv-doc/examples/data/digits.png"


def _deepforest_wheel(cache: Path) -> Path:
    wheels = sorted(cache.glob("deepforest-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
                        "deepforest==2.1.0"], check=True)
        wheels = sorted(cache.glob("deepforest-*.whl"))
    return wheels[-1]


def _voc_boxes(xml_text: str) -> List[Tuple[str, float, float, float, float]]:
    root = ET.fromstring(xml_text)
    out = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        out.append((obj.findtext("name") or "Tree", *(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return out


def _write_voc(path: Path, name: str, w: int, h: int, boxes: List[Tuple[str, float, float, float, float]]) -> None:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{x0:.1f}</xmin><ymin>{y0:.1f}</ymin>"
                   f"<xmax>{x1:.1f}</xmax><ymax>{y1:.1f}</ymax></bndbox></object>" for n, x0, y0, x1, y1 in boxes)
    path.write_text(f"<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height>"
                    f"<depth>3</depth></size>{objs}</annotation>", encoding="utf-8")


def trees(out: Path | None = None) -> Path:
    """A VOC folder (JPEGImages/, Annotations/) of 400 px aerial tiles with tree boxes."""
    from PIL import Image

    out = out or CACHE / "trees"
    if (out / "Annotations").is_dir() and any((out / "Annotations").iterdir()):
        return out
    wheel = _deepforest_wheel(CACHE)
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    Image.MAX_IMAGE_PIXELS = None  # a 2299 x 2472 crop, read once, from a known package
    counts: Dict[str, int] = {"tiles": 0, "boxes": 0}
    with zipfile.ZipFile(wheel) as zf:
        for stem in TREE_FILES:
            with zf.open(f"deepforest/data/{stem}.png") as fh:
                image = Image.open(fh).convert("RGB")
            boxes = _voc_boxes(zf.read(f"deepforest/data/{stem}.xml").decode("utf-8"))
            for ty in range(0, image.height - TILE // 2, TILE):
                for tx in range(0, image.width - TILE // 2, TILE):
                    tile = image.crop((tx, ty, min(tx + TILE, image.width), min(ty + TILE, image.height)))
                    kept = []
                    for n, x0, y0, x1, y1 in boxes:
                        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                        if tx <= cx < tx + tile.width and ty <= cy < ty + tile.height:
                            kept.append((n, max(0.0, x0 - tx), max(0.0, y0 - ty),
                                         min(float(tile.width), x1 - tx), min(float(tile.height), y1 - ty)))
                    if not kept:
                        continue
                    name = f"{stem}_{tx}_{ty}"
                    tile.save(out / "JPEGImages" / f"{name}.jpg", quality=92)
                    _write_voc(out / "Annotations" / f"{name}.xml", f"{name}.jpg", tile.width, tile.height, kept)
                    counts["tiles"] += 1
                    counts["boxes"] += len(kept)
    print(f"trees: {counts['tiles']} tiles, {counts['boxes']} boxes -> {out}", file=sys.stderr)
    return out


def digits(out: Path | None = None) -> Path:
    """scikit-learn's digits as a class-folder tree of 8x8 PNGs (the embedded default, as files)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    out = out or CACHE / "digits"
    if out.is_dir() and any(out.iterdir()):
        return out
    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * (255 / 16)).astype(np.uint8), "L").save(folder / f"{i:04d}.png")
    return out


def _opencv_digits_png(cache: Path) -> Path:
    """digits.png out of the `opencv-doc` .deb (downloaded once into the cache with apt-get)."""
    png = cache / "opencv-digits.png"
    if png.is_file():
        return png
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob("opencv-doc_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", "-q", "opencv-doc"], cwd=cache, check=True)
        debs = sorted(cache.glob("opencv-doc_*.deb"))
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:  # streamed: the .deb holds ~95 MB of docs
            for member in tf:
                if member.name == OPENCV_DIGITS:
                    fh = tf.extractfile(member)
                    assert fh is not None
                    tmp = png.with_suffix(".part")
                    tmp.write_bytes(fh.read())
                    tmp.replace(png)
                    break
        proc.stdout.read()  # drain, so dpkg-deb exits cleanly
    if not png.is_file():
        raise SystemExit(f"{debs[-1]} has no {OPENCV_DIGITS}")
    return png


def ocvdigits(out: Path | None = None) -> Path:
    """OpenCV's 5,000 handwritten 20x20 digits as a class-folder tree (0/ .. 9/, 500 PNGs each)."""
    from PIL import Image

    out = out or CACHE / "ocvdigits"
    if out.is_dir() and sum(1 for _ in out.glob("*/*.png")) == 5000:
        return out
    sheet = Image.open(_opencv_digits_png(CACHE)).convert("L")
    if sheet.size != (2000, 1000):
        raise SystemExit(f"digits.png is {sheet.size}, expected 2000x1000")
    cell = 20
    for row in range(50):
        label = row // 5
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for col in range(100):
            box = (col * cell, row * cell, (col + 1) * cell, (row + 1) * cell)
            sheet.crop(box).save(folder / f"{row:02d}_{col:02d}.png")
    print(f"ocvdigits: 5000 images, 10 classes -> {out}", file=sys.stderr)
    return out


FASHION_DIR = "./usr/share/datasets/fashion-mnist/"
FASHION_CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle_boot")
FASHION_PER_CLASS = 300  # of the 60,000 training photos: a small set, where defaults matter most


def _fashion_idx(cache: Path) -> Dict[str, bytes]:
    """The training images and labels (idx, gunzipped) out of Debian's `dataset-fashion-mnist` .deb."""
    import gzip

    debs = sorted(cache.glob("dataset-fashion-mnist_*.deb"))
    if not debs:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "-q", "dataset-fashion-mnist"], cwd=cache, check=True)
        debs = sorted(cache.glob("dataset-fashion-mnist_*.deb"))
    wanted = {FASHION_DIR + "train-images-idx3-ubyte.gz": "images", FASHION_DIR + "train-labels-idx1-ubyte.gz": "labels"}
    found: Dict[str, bytes] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            for member in tf:
                if member.name in wanted:
                    fh = tf.extractfile(member)
                    assert fh is not None
                    found[wanted[member.name]] = gzip.decompress(fh.read())
        proc.stdout.read()
    if set(found) != {"images", "labels"}:
        raise SystemExit(f"{debs[-1]} lacks the Fashion-MNIST training files under {FASHION_DIR}")
    return found


def fashion(out: Path | None = None) -> Path:
    """Fashion-MNIST (Zalando's product photos, 28x28 grey, 10 classes; Debian package
    `dataset-fashion-mnist`): the first FASHION_PER_CLASS training photos of each class as a
    class-folder tree of PNGs (3,000 images)."""
    import numpy as np
    from PIL import Image

    out = out or CACHE / "fashion"
    if out.is_dir() and sum(1 for _ in out.glob("*/*.png")) == FASHION_PER_CLASS * len(FASHION_CLASSES):
        return out
    idx = _fashion_idx(CACHE)
    images = np.frombuffer(idx["images"], dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(idx["labels"], dtype=np.uint8, offset=8)
    for c, name in enumerate(FASHION_CLASSES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == c)[:FASHION_PER_CLASS]:
            Image.fromarray(images[i], "L").save(folder / f"{i:05d}.png")
    print(f"fashion: {FASHION_PER_CLASS * len(FASHION_CLASSES)} images, 10 classes -> {out}", file=sys.stderr)
    return out


BUILDERS = {"trees": trees, "digits": digits, "ocvdigits": ocvdigits, "fashion": fashion}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(BUILDERS))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    print(BUILDERS[args.name](args.out))
