"""Which checkpoint should a run test: its best epoch on validation, or its last?

For classification run folders, scores the exported model (best.ckpt's weights) and the weights
of checkpoints/last.ckpt on the same test images (the rows of RUN/errors.csv, which lists every
test image) through the same loaded pipeline (aether.load), and prints / writes both accuracies.
This is how the tie rule of best.ckpt (aether.training.callbacks.BestCheckpoint) was chosen: on a
small validation split the first epoch to reach a plateau was kept over the end of the schedule.

    python benchmarks/last_vs_best.py RUN [RUN ...] [--out benchmarks/results/last-vs-best.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _accuracy(run: Path, paths: List[str], labels: List[str]) -> float:
    import aether

    preds = aether.load(run).predict(paths, batch_size=64)
    return sum(p["label"] == y for p, y in zip(preds, labels)) / max(1, len(labels))


def score(run: Path, scratch: Path) -> Dict[str, object]:
    from safetensors.torch import load_file, save_file

    from aether.training.checkpoint_io import load_checkpoint_safely

    rows = list(csv.DictReader((run / "errors.csv").open(encoding="utf-8")))
    paths, labels = [r["path"] for r in rows], [r["true"] for r in rows]
    last_run = scratch / run.name
    shutil.copytree(run / "model", last_run / "model")
    for name in ("config.yaml", "metrics.json"):
        shutil.copy2(run / name, last_run / name)
    exported = load_file(str(run / "model" / "model.safetensors"))
    state = load_checkpoint_safely(run / "checkpoints" / "last.ckpt")["state_dict"]
    weights = {k: state.get(k, state.get("model." + k, v)).contiguous() for k, v in exported.items()}
    save_file(weights, str(last_run / "model" / "model.safetensors"))
    history = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["history"]
    best = load_checkpoint_safely(run / "checkpoints" / "best.ckpt")
    return {"run": str(run), "test_images": len(rows), "epochs": len(history), "best_epoch": int(best["epoch"]) + 1,
            "best": round(_accuracy(run, paths, labels), 4), "last": round(_accuracy(last_run, paths, labels), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            r = score(run, Path(tmp))
            results.append(r)
            print(f"{run}: best.ckpt (epoch {r['best_epoch']} of {r['epochs']}) {r['best']:.4f}, "
                  f"last.ckpt {r['last']:.4f} on {r['test_images']} test images")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
