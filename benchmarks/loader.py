#!/usr/bin/env python
"""Aether's training data loader vs torchvision ImageFolder + DataLoader, images per second.

Both sides load the same generated folder of JPEGs (photo-like content and sizes), with the
same training transform (timm's, from Aether's config: RandomResizedCrop + flip at the model's
size, ToTensor + Normalize), the same batch size and the same number of worker processes, and
deliver float32 normalised batches on the CPU (Aether's device-side normalisation runs here on
the CPU and is timed).

  torchvision  `ImageFolder(root, transform)` + `DataLoader(shuffle=True)`: decode every JPEG
               every epoch.
  aether cold  no cache: the first epoch decodes each image once (reduced, data.cache=disk),
               writes it into the cache and augments it; sealing the cache is timed too.
  aether warm  the cache exists (a second epoch, or the next run on the same data).

Rounds alternate torchvision, aether cold, torchvision, aether warm, ... in one process; the
dataset doctor's pass over the files (which every Aether run also makes, cached by path/size/
mtime) is outside the timing: benchmarks/doctor.py measures it. Targets: warm >= 3x, cold >= 1x.

    python benchmarks/loader.py                     # 5,000 JPEGs, 224 px, batch 64, 2 rounds
    python benchmarks/loader.py --images 20000 --workers 8 --rounds 3

Results: benchmarks/results/loader.json and loader.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from machine import cpu_model, usable_cpus  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)

TARGET_WARM, TARGET_COLD = 3.0, 1.0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=5000, help="JPEGs to generate (10 classes)")
    p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "aether-loader-bench"),
                   help="folder for the generated images (reused when it holds the same count)")
    p.add_argument("--image-size", type=int, default=224, help="training crop (data.image_size)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for both sides (0: usable CPUs)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (torchvision, cold, torchvision, warm)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    return p.parse_args(argv)


# ------------------------------------------------------------------ data


def generate(root: Path, n: int) -> None:
    """Photo-like JPEGs: smooth structure plus texture (so they compress like photos, ~50-150
    KB), 500-1024 px wide, 4:3 to 16:9, quality 90."""
    import numpy as np
    from PIL import Image

    stamp = root / f".complete-{n}"
    if stamp.is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(n):
        w = int(rng.integers(500, 1025))
        h = int(w / rng.uniform(4 / 3, 16 / 9))
        base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        arr = np.asarray(base, dtype=np.int16) + rng.integers(-24, 25, (h, w, 1), dtype=np.int16)
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    stamp.write_text("")
    print(f"[loader] generated {n} JPEGs in {root} in {time.perf_counter() - t0:.0f}s", flush=True)


# ------------------------------------------------------------------ the two sides


def aether_data(args: argparse.Namespace, workers: int) -> Any:
    from aether.config import hydra_setup
    from aether.data.datamodule import ClassificationData
    from aether.tasks.classification.data import build_data
    from aether.data.transforms import resolve_preprocessing

    overrides = [f"data.path={args.data}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
                 f"data.num_workers={workers}", "data.cache=disk", "data.val_fraction=0.05",
                 "data.test_fraction=0.05", "model=resnet18"]
    _, rc = hydra_setup.compose_run(overrides)
    bundle = build_data(rc.data, rc.seed)  # the doctor's pass: not timed
    # every image trains: the same files as ImageFolder sees
    bundle.splits["train"] = bundle.splits["train"] + bundle.splits["val"] + bundle.splits["test"]
    pre = resolve_preprocessing({"input_size": (3, 224, 224), "interpolation": "bilinear"}, args.image_size, None)
    return rc, pre, bundle, ClassificationData


def epoch_aether(setup: Any) -> Dict[str, float]:
    rc, pre, bundle, cls = setup
    t0 = time.perf_counter()
    dm = cls(bundle, pre, rc.data)  # fresh: nothing memoised from an earlier round
    loader = dm.train_dataloader()  # builds the cache when there is none
    n = 0
    for x, y in loader:
        x, y = dm.on_after_batch_transfer((x, y), 0)
        n += len(y)
    dm.fast.complete("train", dm.cfg.num_workers)  # sealing: what training does at the epoch's end
    assert x.dtype.is_floating_point
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 1)}


def epoch_torchvision(args: argparse.Namespace, setup: Any, workers: int) -> Dict[str, float]:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from aether.data.transforms import train_transform

    rc, pre, _, _ = setup
    t0 = time.perf_counter()
    ds = ImageFolder(args.data, transform=train_transform(pre, rc.data.augment))
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    n = 0
    for x, y in loader:
        n += len(y)
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 1)}


def clear_cache() -> None:
    from aether.data.cache import cache_root

    shutil.rmtree(cache_root(), ignore_errors=True)


# ------------------------------------------------------------------ main


def write_md(path: Path, res: Dict[str, Any]) -> None:
    s = res["summary"]
    lines = ["# Data loader throughput: Aether vs torchvision ImageFolder + DataLoader", "",
             f"{res['config']['images']} generated JPEGs ({res['config']['mean_kb']:.0f} KB, "
             f"{res['config']['mean_size']} px on average), crop {res['config']['image_size']} px, batch "
             f"{res['config']['batch_size']}, {res['config']['workers']} workers on both sides, "
             f"{res['config']['rounds']} alternated rounds; median images/s over the rounds.", "",
             "| loader | images/s | vs torchvision | target |", "|---|---:|---:|---:|",
             f"| torchvision ImageFolder + DataLoader | {s['torchvision']:.0f} | 1.00x | |",
             f"| Aether, cold (cache built in the epoch) | {s['aether_cold']:.0f} | {s['cold_speedup']:.2f}x | "
             f">= {TARGET_COLD:.0f}x |",
             f"| Aether, warm (cache reused) | {s['aether_warm']:.0f} | {s['warm_speedup']:.2f}x | "
             f">= {TARGET_WARM:.0f}x |", "",
             f"Each Aether epoch against the torchvision epoch just before it (median of the pairs): cold "
             f"{s['cold_speedup_paired']:.2f}x, warm {s['warm_speedup_paired']:.2f}x.", "",
             "Rounds (images/s): " + "; ".join(f"{r['side']} {r['images_per_s']:.0f}" for r in res["rounds"]), "",
             "## Machine", ""] + [f"- {k}: {v}" for k, v in res["machine"].items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workers = args.workers or usable_cpus()
    # the benchmark's own cache folder: never the user's
    os.environ["AETHER_CACHE"] = os.path.join(args.data + "-cache")
    import logging

    logging.getLogger("aether").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(usable_cpus())  # as a training process: Aether normalises uint8 batches here
    data = Path(args.data)
    generate(data, args.images)
    setup = aether_data(args, workers)
    rounds: List[Dict[str, Any]] = []
    for r in range(args.rounds):
        for side in ("torchvision", "aether_cold", "torchvision", "aether_warm"):
            if side == "aether_cold":
                clear_cache()
            res = epoch_torchvision(args, setup, workers) if side == "torchvision" else epoch_aether(setup)
            rounds.append({"round": r, "side": side, **res})
            print(f"[loader] round {r} {side:12s} {res['images_per_s']:8.0f} img/s ({res['seconds']:.1f}s)", flush=True)
    med = {side: statistics.median(x["images_per_s"] for x in rounds if x["side"] == side)
           for side in ("torchvision", "aether_cold", "aether_warm")}
    # each Aether epoch against the torchvision epoch just before it: robust to load that drifts
    # during the run (other processes on a shared machine)
    paired = {side: [b["images_per_s"] / a["images_per_s"] for a, b in zip(rounds, rounds[1:])
                     if a["side"] == "torchvision" and b["side"] == side] for side in ("aether_cold", "aether_warm")}
    summary = {**med, "cold_speedup": round(med["aether_cold"] / med["torchvision"], 2),
               "warm_speedup": round(med["aether_warm"] / med["torchvision"], 2),
               "cold_speedup_paired": round(statistics.median(paired["aether_cold"]), 2),
               "warm_speedup_paired": round(statistics.median(paired["aether_warm"]), 2)}
    files = list(data.rglob("*.jpg"))
    from PIL import Image

    sizes = [Image.open(f).size for f in files[:200]]
    config = {"images": len(files), "image_size": args.image_size, "batch_size": args.batch_size, "workers": workers,
              "rounds": args.rounds, "mean_kb": sum(f.stat().st_size for f in files) / len(files) / 1024,
              "mean_size": f"{statistics.mean(w for w, _ in sizes):.0f}x{statistics.mean(h for _, h in sizes):.0f}"}
    import PIL

    machine = {"cpu": cpu_model(), "usable_cpus": usable_cpus(), "torch": torch.__version__, "pillow": PIL.__version__,
               "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    res = {"config": config, "summary": summary, "rounds": rounds, "machine": machine,
           "targets": {"warm": TARGET_WARM, "cold": TARGET_COLD},
           "met": summary["warm_speedup"] >= TARGET_WARM and summary["cold_speedup"] >= TARGET_COLD}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    write_md(out / "loader.md", res)
    print(f"[loader] torchvision {med['torchvision']:.0f} img/s; aether cold {med['aether_cold']:.0f} "
          f"({summary['cold_speedup']:.2f}x), warm {med['aether_warm']:.0f} ({summary['warm_speedup']:.2f}x) "
          f"-> {out / 'loader.md'}", flush=True)
    clear_cache()
    return 0 if res["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
