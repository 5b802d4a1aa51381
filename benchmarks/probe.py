"""Does `strategy=linear_probe` reach what a logistic regression on the same frozen features
reaches? Real images with real pretrained features, offline:

- "pretrained" weights: a ResNet-18 trained by Aether from scratch on scikit-learn's digits
  0-4 (32 px), saved as the run's model/model.safetensors;
- the probe task: the OTHER digits (5-9), never seen by the backbone - all of them (~900
  images) and a small subset (33 per class: 165 images, the size of the photo set in issue 14);
- `linear_probe`: `aether strategy=linear_probe model.weights=FILE ...` with the defaults
  (AdamW, cosine, light augmentation, early stopping), test accuracy of its best checkpoint;
- the baseline: the same weights' pooled features (timm forward_head(pre_logits=True), eval
  transform) of the same train split, scikit-learn LogisticRegression (C=1, lbfgs), on raw and on
  standardised features, scored on the same test split.

    python benchmarks/probe.py [--seeds 0 1 2] [--epochs 10] [--extra strategy.init=none]

Results: benchmarks/results/probe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = ["data.image_size=32", "data.crop_pct=1.0", "data.num_workers=0", "trainer.progress=none"]


def _raw(overrides: List[str]) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    from aether.config.hydra_setup import compose
    from aether.config.preflight import rewrite_data_shorthand

    raw = OmegaConf.to_container(compose(rewrite_data_shorthand(overrides)), resolve=True)
    raw.pop("hydra", None)
    return raw


def digits_folder(root: Path, digits: range, per_class: int | None = None) -> Path:
    from aether.data.formats.digits import materialize_digits

    src = materialize_digits()
    for d in digits:
        files = sorted((src / str(d)).iterdir())[:per_class]
        (root / str(d)).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, root / str(d) / f.name)
    return root


def run(overrides: List[str], run_dir: Path) -> Dict[str, Any]:
    from aether.config.validate import validate
    from aether.run import fit_and_report

    raw = _raw(overrides)
    t0 = time.perf_counter()
    fit_and_report(validate(raw), raw, run_dir, run_name="bench")
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"test_accuracy": m["test"]["accuracy"], "seconds": round(time.perf_counter() - t0, 1),
            "epochs": len(m["history"])}


def logistic_regression(overrides: List[str]) -> Dict[str, Any]:
    """sklearn on the frozen pooled features of the run's own split (same seed, same weights)."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from torch.utils.data import DataLoader

    from aether.config.validate import validate
    from aether.data.datamodule import ImageDataset
    from aether.run import prepare

    t0 = time.perf_counter()
    job = prepare(validate(_raw(overrides)))
    model = job.backbone.model.eval()
    tf = job.datamodule.eval_tf

    def feats(split: str):  # type: ignore[no-untyped-def]
        xs, ys = [], []
        with torch.no_grad():
            for x, y in DataLoader(ImageDataset(job.bundle.splits[split], tf), batch_size=128):
                xs.append(model.forward_head(model.forward_features(x), pre_logits=True))
                ys.append(y)
        return torch.cat(xs).numpy(), torch.cat(ys).numpy()

    xtr, ytr = feats("train")
    xte, yte = feats("test")
    raw_acc = float(np.mean(LogisticRegression(max_iter=5000).fit(xtr, ytr).predict(xte) == yte))
    sc = StandardScaler().fit(xtr)
    std_acc = float(np.mean(LogisticRegression(max_iter=5000).fit(sc.transform(xtr), ytr).predict(sc.transform(xte)) == yte))
    return {"raw": raw_acc, "standardised": std_acc, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for the linear_probe runs")
    ap.add_argument("--work", type=Path, default=None, help="keep the pretrained weights here between calls")
    ap.add_argument("--tag", default="probe")
    args = ap.parse_args()
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("aether").setLevel(logging.WARNING)

    work = args.work or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "pretrain" / "model" / "model.safetensors"
    if not weights.is_file():
        src = digits_folder(work / "digits-0-4", range(0, 5))
        run(["+recipe=quickstart", f"data={src}", f"trainer.max_epochs={args.pretrain_epochs}", *SHAPE],
            work / "pretrain")
    sets = {"digits 5-9 (all)": digits_folder(work / "digits-5-9", range(5, 10)),
            "digits 5-9 (33 per class)": digits_folder(work / "digits-5-9-small", range(5, 10), 33)}
    rows: Dict[str, Dict[str, List[Dict[str, Any]]]] = {k: {"linear_probe": [], "logreg": []} for k in sets}
    for name, folder in sets.items():
        for seed in args.seeds:
            common = [f"data={folder}", "model=resnet18", "model.name=resnet18", f"model.weights={weights}",
                      f"seed={seed}", *SHAPE]
            probe = run(["strategy=linear_probe", f"trainer.max_epochs={args.epochs}", *common, *args.extra],
                        work / f"run-{len(list(work.glob('run-*')))}")
            lr = logistic_regression(["strategy=linear_probe", *common])
            rows[name]["linear_probe"].append(probe)
            rows[name]["logreg"].append(lr)
            print(f"{name}, seed {seed}: linear_probe {probe['test_accuracy']:.4f} ({probe['seconds']} s, "
                  f"{probe['epochs']} epochs); logistic regression raw {lr['raw']:.4f}, "
                  f"standardised {lr['standardised']:.4f} ({lr['seconds']} s)", flush=True)

    def mean(v: List[float]) -> float:
        return round(statistics.mean(v), 4)

    out = {"backbone": "timm resnet18, trained by Aether on digits 0-4 (quickstart recipe, 32 px)",
           "seeds": args.seeds, "epochs": args.epochs, "extra_overrides": args.extra,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "results": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(out, indent=2))
    lines = ["# linear_probe vs logistic regression on the same frozen features", "",
             f"{out['backbone']}; probe on digits 5-9; {args.epochs} epochs; seeds {args.seeds}; "
             f"extra overrides {args.extra or 'none'}. Generated by `python benchmarks/probe.py`.", "",
             "| data | linear_probe (mean test acc) | logreg raw | logreg standardised | probe s | logreg s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {mean([x['test_accuracy'] for x in r['linear_probe']])} | "
                     f"{mean([x['raw'] for x in r['logreg']])} | {mean([x['standardised'] for x in r['logreg']])} | "
                     f"{mean([x['seconds'] for x in r['linear_probe']])} | {mean([x['seconds'] for x in r['logreg']])} |")
    (RESULTS / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
