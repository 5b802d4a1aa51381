"""Does `+recipe=auto` beat the usual alternatives on real images, on the same wall-clock budget?

Four methods on the same data, the same seeded 70/15/15 split (Aether's `build_data`, so every
method scores the same test images) and the same budget per method (default 5 minutes, each
method in its own subprocess pinned to 2 CPU cores, no GPU; the time is the subprocess's wall
clock, start-up and imports included):

- `auto`: the real CLI, `aether +recipe=auto data=DIR hydra.run.dir=RUN trainer.progress=none
  auto.budget_minutes=B seed=S` (HF_HUB_OFFLINE=1); test accuracy from RUN/metrics.json, the
  candidates it tried from RUN/auto.json when it writes one (winner, leaderboard; null if not).
  When the composed `+recipe=auto` config has no `auto.budget_minutes` key the budget override is
  left out (`--auto-budget-key`), and the run is recorded as such.
- `timm_train_defaults`: timm train.py's defaults as an Aether config (benchmarks/defaults.py's
  TIMM_TRAIN_DEFAULTS on the quickstart backbone: ResNet-18, 32 px, batch 64, no early stopping).
  timm's 300 epochs do not fit the budget, so the schedule is fitted to it: a 1-epoch run first
  measures the epoch time and the fixed cost of a run (set-up, test, export), then a second run
  trains as many epochs as fit in what is left (capped at timm's 300) - so timm's 5 warm-up epochs
  and cosine decay to 0 run to their end, as with `train.py --epochs N`, instead of being cut
  while the LR is still high. A Lightning `max_time` (set through a small wrapper around
  `lightning.Trainer`) stops it at the budget should the estimate be short. The calibration run
  counts against the budget (its accuracy is not used).
- `plain_loop`: defaults.py's hand-written PyTorch loop (Adam 1e-3, constant LR, no augmentation,
  batch 64, same backbone and eval transform); epochs until the next one would not end before the
  deadline; scored after its last epoch.
- `logreg_probe`: scikit-learn LogisticRegression (lbfgs, C=1) on standardised frozen features
  of the training split, scored on the test split. Without pretrained weights (digits,
  ocvdigits) the features are the raw pixels at the images' own size (8x8, 20x20 grey);
  digits_transfer uses the pooled features of the weights file's backbone (probe.py's code).

Datasets (benchmarks/real_data.py builds them into /tmp/aether-bench-data):

- `digits`: scikit-learn's 1,797 real 8x8 handwritten digits, from scratch;
- `ocvdigits`: OpenCV's 5,000 real 20x20 handwritten digits (Debian package opencv-doc), from scratch;
- `fashion`: 3,000 of Fashion-MNIST's real 28x28 product photos (Debian package dataset-fashion-mnist), from scratch;
- `digits_transfer`: the digits again, every method starting from a ResNet-18 that Aether trained
  from scratch on ocvdigits (`--pretrain-epochs`, cached as .safetensors with its classifier
  removed; `model.name=resnet18 model.weights=FILE` for the Aether runs).

The methods alternate in one run: per repeat and dataset the method order is rotated by one, so
each method takes each position in turn (`--repeats 4` for every position once with 4 methods).

    python benchmarks/auto.py [--datasets digits ocvdigits digits_transfer] [--methods ...]
                              [--repeats 2] [--budget-minutes 5] [--tag auto]

Results: benchmarks/results/<tag>.{json,md}, rewritten after every measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
METHODS = ("auto", "timm_train_defaults", "plain_loop", "logreg_probe")
DATASETS = {
    "digits": {"folder": "digits", "transfer": False,
               "about": "scikit-learn digits: 1,797 real handwritten 8x8 digits, 10 classes; from scratch"},
    "ocvdigits": {"folder": "ocvdigits", "transfer": False,
                  "about": "OpenCV digits.png (Debian package opencv-doc): 5,000 real handwritten 20x20 digits, "
                           "10 classes; from scratch"},
    "fashion": {"folder": "fashion", "transfer": False,
                "about": "Fashion-MNIST (Debian package dataset-fashion-mnist): 3,000 real 28x28 product photos, "
                         "10 classes (300 each); from scratch"},
    "digits_transfer": {"folder": "digits", "transfer": True,
                        "about": "scikit-learn digits, every method starting from a ResNet-18 that Aether trained "
                                 "from scratch on ocvdigits (classifier removed)"},
}
TIMM_EPOCHS = 300  # train.py's default --epochs
LABELS = {"auto": "Aether `+recipe=auto`",
          "timm_train_defaults": "timm train.py defaults (SGD, warm-up 5 + cosine, RRC 0.08, jitter; epochs fitted)",
          "plain_loop": "plain PyTorch loop (Adam 1e-3, no aug, epochs fitted)",
          "logreg_probe": "logistic regression probe"}

from machine import cpu_model, spawn, tail, usable_cpus  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)


# ------------------------------------------------------------------ the methods (in a worker process)


def _quiet() -> None:
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("aether").setLevel(logging.WARNING)


def _weights_overrides(weights: Optional[str]) -> List[str]:
    return ["model.name=resnet18", f"model.weights={weights}"] if weights else []


@contextlib.contextmanager
def lightning_max_time(seconds: float) -> Iterator[None]:
    """Every lightning.Trainer built inside gets max_time=seconds (Aether has no time-limit key)."""
    import lightning

    original = lightning.Trainer

    class TimedTrainer(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("max_time", _dt.timedelta(seconds=max(1.0, seconds)))
            super().__init__(*args, **kwargs)

    lightning.Trainer = TimedTrainer
    try:
        yield
    finally:
        lightning.Trainer = original


def work_timm(data: str, weights: Optional[str], seed: int, deadline: float, work: Path) -> Dict[str, Any]:
    from defaults import TIMM_TRAIN_DEFAULTS, run_aether

    overrides = [*TIMM_TRAIN_DEFAULTS, f"data.path={data}", *_weights_overrides(weights)]
    work.mkdir(parents=True, exist_ok=True)
    calib = run_aether(overrides, seed, 1, work)
    epoch_s = float(calib["epoch_seconds"][0] or calib["seconds"])
    fixed_s = max(0.0, calib["seconds"] - epoch_s)  # set-up, sanity check, test, export
    train_s = deadline - time.time() - fixed_s - 2.0  # 2 s margin for the process to exit
    epochs = min(TIMM_EPOCHS, int(train_s // epoch_s)) if train_s > 0 else 0
    out: Dict[str, Any] = {"calibration": {"seconds": calib["seconds"], "epoch_s": round(epoch_s, 2),
                                           "fixed_s": round(fixed_s, 2), "test_accuracy": calib["test_accuracy"]},
                           "epochs_planned": epochs}
    if epochs < 2:  # no room for a second run: the 1-epoch calibration run is the result
        return {**out, "test_accuracy": calib["test_accuracy"], "epochs": 1,
                "note": "the budget left no room for a second run: the calibration run's result"}
    with lightning_max_time(train_s):
        final = run_aether(overrides, seed, epochs, work)
    return {**out, "test_accuracy": final["test_accuracy"], "epochs": final["epochs"],
            "stopped_by_max_time": final["epochs"] < epochs}


def work_plain(data: str, weights: Optional[str], seed: int, deadline: float) -> Dict[str, Any]:
    from defaults import run_plain

    r = run_plain(seed, 10**6, data=Path(data), weights=Path(weights) if weights else None, deadline=deadline)
    return {"test_accuracy": r["test_accuracy"], "epochs": r["epochs"]}


def _split(data: str, seed: int) -> Any:
    """Aether's data bundle for this folder and seed: the split every method uses."""
    from aether.config.validate import validate
    from aether.tasks.classification.data import build_data
    from defaults import _raw

    rc = validate(_raw(["+recipe=quickstart", f"seed={seed}", f"data.path={data}"]))
    return build_data(rc.data, seed)


def work_logreg(data: str, weights: Optional[str], seed: int) -> Dict[str, Any]:
    if weights:  # the weights file's frozen backbone: probe.py's feature extraction + sklearn
        from probe import SHAPE, logistic_regression

        r = logistic_regression(["strategy=linear_probe", f"data={data}", "model=resnet18", "model.name=resnet18",
                                 f"model.weights={weights}", f"seed={seed}", *SHAPE])
        return {"test_accuracy": r["standardised"], "test_accuracy_unstandardised": r["raw"],
                "features": "frozen ResNet-18 features of the weights file (512, pooled), standardised"}
    import numpy as np
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    bundle = _split(data, seed)
    size = Image.open(bundle.splits["train"][0].path).size

    def pixels(split: str):  # type: ignore[no-untyped-def]
        xs = []
        for s in bundle.splits[split]:
            img = Image.open(s.path).convert("L")
            xs.append(np.asarray(img if img.size == size else img.resize(size), dtype=np.float32).ravel())
        return np.stack(xs), np.array([s.label for s in bundle.splits[split]])

    xtr, ytr = pixels("train")
    xte, yte = pixels("test")
    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=5000).fit(sc.transform(xtr), ytr)
    return {"test_accuracy": float(np.mean(clf.predict(sc.transform(xte)) == yte)),
            "features": f"raw pixels ({size[0]}x{size[1]} grey = {xtr.shape[1]}), standardised (no pretrained weights)"}


def work_pretrain(out: Path, epochs: int, seed: int, work: Path) -> Dict[str, Any]:
    """A ResNet-18 trained by Aether from scratch on ocvdigits (quickstart recipe, 32 px), saved
    without its classifier: the 'pretrained weights' of digits_transfer."""
    import real_data
    from probe import SHAPE, run
    from safetensors.torch import load_file, save_file

    run_dir = work / "pretrain-ocvdigits"
    r = run(["+recipe=quickstart", f"data={real_data.ocvdigits()}", f"trainer.max_epochs={epochs}", f"seed={seed}",
             *SHAPE], run_dir)
    sd = load_file(str(run_dir / "model" / "model.safetensors"))
    kept = {k: v.contiguous() for k, v in sd.items() if not k.startswith("fc.")}
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"file": str(out), "trained_on": f"ocvdigits (its 70% train split, seed {seed})",
            "model": "timm resnet18, 32 px", "recipe": "+recipe=quickstart", "epochs": r["epochs"],
            "seconds": r["seconds"], "ocvdigits_test_accuracy": r["test_accuracy"], "classifier": "removed (fc.*)"}
    out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    save_file(kept, str(out.with_suffix(".part")), metadata={"format": "pt"})
    out.with_suffix(".part").replace(out)  # last: the weights file is there only when complete
    return info


def worker(args: argparse.Namespace) -> None:
    _quiet()
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    t0 = time.perf_counter()
    if args.worker == "pretrain":
        res = work_pretrain(Path(args.weights), args.pretrain_epochs, args.seed, Path(args.work))
    elif args.worker == "timm_train_defaults":
        res = work_timm(args.data, args.weights, args.seed, args.deadline, Path(args.work))
    elif args.worker == "plain_loop":
        res = work_plain(args.data, args.weights, args.seed, args.deadline)
    elif args.worker == "logreg_probe":
        res = work_logreg(args.data, args.weights, args.seed)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    res["worker_seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.result).write_text(json.dumps(res, indent=2))


# ------------------------------------------------------------------ the harness


def auto_budget_mode(requested: str) -> str:
    """How to pass the budget to `+recipe=auto`: `set` (auto.budget_minutes=B), `force`
    (++auto.budget_minutes=B) or `omit`; `detect` looks for the key in the composed config."""
    if requested != "detect":
        return requested
    try:
        sys.path.insert(0, str(ROOT))
        from omegaconf import OmegaConf

        from aether.config.hydra_setup import compose

        raw = OmegaConf.to_container(compose(["+recipe=auto"]), resolve=False)
        auto = raw.get("auto") if isinstance(raw, dict) else None
        return "set" if isinstance(auto, dict) and "budget_minutes" in auto else "omit"
    except Exception as exc:  # noqa: BLE001 - a config that does not compose: say so, leave the key out
        print(f"auto.budget_minutes: cannot compose +recipe=auto ({exc}); leaving the key out", file=sys.stderr)
        return "omit"


def run_auto(data: Path, weights: Optional[Path], seed: int, budget_min: float, run_dir: Path, mode: str,
             cpus: int, kill_after: float) -> Dict[str, Any]:
    budget = {"set": [f"auto.budget_minutes={budget_min:g}"], "force": [f"++auto.budget_minutes={budget_min:g}"],
              "omit": []}[mode]
    cmd = [sys.executable, "-m", "aether", "+recipe=auto", f"data={data}", f"hydra.run.dir={run_dir}",
           "trainer.progress=none", f"seed={seed}", *budget,
           *(["model.name=resnet18", f"model.weights={weights}"] if weights else [])]
    log = run_dir.parent / f"{run_dir.name}.log"
    p = spawn(cmd, log, cpus, kill_after)
    rec: Dict[str, Any] = {"seconds": p["seconds"], "command": "aether " + shlex.join(cmd[3:]),
                           "budget_override": budget[0] if budget else None, "test_accuracy": None}
    try:
        rec["test_accuracy"] = json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"]
    except (OSError, KeyError, ValueError):
        pass
    try:
        auto = json.loads((run_dir / "auto.json").read_text())
        rec["auto_json"] = {k: auto.get(k) for k in ("budget_minutes", "winner", "leaderboard")}
        rec["winner"] = auto.get("winner")
    except (OSError, ValueError):
        rec["auto_json"] = None  # not written (yet): recorded as null
        rec["winner"] = None
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
        rec["choices"] = cfg.get("auto") if isinstance(cfg, dict) else None  # the recipe's picks with reasons
    except Exception:  # noqa: BLE001 - no config.yaml: the run failed before it started
        rec["choices"] = None
    rec["status"] = "killed" if p["killed"] else "ok" if p["rc"] == 0 and rec["test_accuracy"] is not None else "error"
    if rec["status"] != "ok":
        rec["error"] = tail(log)
    return rec


def run_worker(method: str, data: Path, weights: Optional[Path], seed: int, budget_s: float, work: Path,
               cpus: int, kill_after: float) -> Dict[str, Any]:
    result = work / f"{work.name}.json"
    deadline = time.time() + budget_s
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--data", str(data), "--seed", str(seed),
           "--deadline", repr(deadline), "--work", str(work), "--result", str(result),
           *(["--weights", str(weights)] if weights else [])]
    work.mkdir(parents=True, exist_ok=True)
    log = work.parent / f"{work.name}.log"
    p = spawn(cmd, log, cpus, kill_after)
    rec: Dict[str, Any] = {"seconds": p["seconds"], "test_accuracy": None}
    if result.is_file():
        rec.update(json.loads(result.read_text()))
    rec["status"] = "killed" if p["killed"] else "ok" if p["rc"] == 0 and rec["test_accuracy"] is not None else "error"
    if rec["status"] != "ok":
        rec["error"] = tail(log)
    return rec


def pretrained_weights(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    import real_data

    out = real_data.CACHE / "weights" / f"resnet18-ocvdigits-{args.pretrain_epochs}ep-seed0.safetensors"
    if not (out.is_file() and out.with_suffix(".json").is_file()):
        print(f"pretraining a ResNet-18 on ocvdigits ({args.pretrain_epochs} epochs) -> {out}", flush=True)
        real_data.ocvdigits()
        pw = work / "pretrain"
        pw.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "pretrain", "--weights", str(out),
               "--pretrain-epochs", str(args.pretrain_epochs), "--seed", "0", "--work", str(pw),
               "--result", str(pw / "result.json")]
        p = spawn(cmd, work / "pretrain.log", args.cpus, 3600)
        if p["rc"] != 0 or not out.is_file():
            raise SystemExit(f"pretraining failed:\n{tail(work / 'pretrain.log', 30)}")
    return json.loads(out.with_suffix(".json").read_text())


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def summarise(records: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for r in records:
        out.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)  # type: ignore[arg-type]
    summary: Dict[str, Dict[str, Any]] = {}
    for ds, methods in out.items():
        for m, rows in methods.items():
            accs = [r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None]
            summary.setdefault(ds, {})[m] = {
                "runs": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
                "mean": round(statistics.mean(accs), 4) if accs else None,
                "min": round(min(accs), 4) if accs else None, "max": round(max(accs), 4) if accs else None,
                "seconds_mean": round(statistics.mean(r["seconds"] for r in rows), 1),
                "seconds_max": max(r["seconds"] for r in rows),
                "within_budget": sum(bool(r["within_budget"]) for r in rows)}
    return summary


def _note(ds: str, m: str, rows: List[Dict[str, Any]]) -> str:
    if m == "logreg_probe":
        return next((r["features"] for r in rows if r.get("features")), "")
    if m in ("timm_train_defaults", "plain_loop"):
        ep = [r["epochs"] for r in rows if r.get("epochs") is not None]
        return f"epochs {', '.join(map(str, ep))}" if ep else ""
    if m == "auto":
        bits = []
        winners = [str(r["winner"]) for r in rows if r.get("winner")]
        if winners:
            bits.append("winner " + ", ".join(winners))
        if any(r.get("auto_json") is None for r in rows):
            bits.append("no auto.json")
        if rows and rows[0].get("budget_override") is None:
            bits.append("run without auto.budget_minutes")
        return "; ".join(bits)
    return ""


def write_results(meta: Dict[str, Any], records: List[Dict[str, Any]], tag: str) -> str:
    summary = summarise(records)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps({**meta, "summary": summary, "runs": records}, indent=2))
    b = meta["budget_minutes"]
    lines = [f"# `+recipe=auto` vs the usual alternatives on real images, {b:g} minutes each", "",
             f"Generated by `{meta['command']}` on {meta['started']} ({meta['total_minutes']} min in all; "
             f"git {meta['git']}).", "",
             "| | |", "|---|---|",
             f"| machine | {meta['machine']} |",
             f"| software | {meta['software']} |",
             f"| budget | {b:g} min wall clock per method and run (each method in its own subprocess pinned to "
             f"{meta['cpus']} CPU cores, no GPU; seconds include start-up and imports) |",
             f"| repeats | {meta['repeats']} (seeds {meta['seeds']}); the method order rotated by one per repeat |",
             "| split | Aether's seeded stratified 70/15/15 split of each folder; every method scores the same test images |",
             f"| timm defaults | `{' '.join(meta['timm_train_defaults_overrides'])}` on `+recipe=quickstart` "
             "(ResNet-18, 32 px, batch 64); a 1-epoch run measures the epoch, then timm's 300 epochs are cut to what "
             "fits the rest of the budget (the cosine schedule runs to its end), Lightning max_time as a stop |",
             f"| auto budget | {meta['auto_budget_mode']}: "
             + {"set": "`auto.budget_minutes=B` passed", "force": "`++auto.budget_minutes=B` passed",
                "omit": "left out (the composed `+recipe=auto` config has no `auto.budget_minutes` key, "
                        "or `--auto-budget-key omit`)"}.get(meta["auto_budget_mode"], "auto not run") + " |"]
    if meta.get("pretrained"):
        p = meta["pretrained"]
        lines.append(f"| digits_transfer weights | {p['model']}, {p['recipe']}, {p['epochs']} epochs on "
                     f"{p['trained_on']} ({p['seconds']} s, ocvdigits test accuracy {p['ocvdigits_test_accuracy']:.4f}); "
                     f"{p['classifier']} |")
    for ds, methods in summary.items():
        lines += ["", f"## {ds}", "", DATASETS[ds]["about"] + ".", "",
                  "| method | test accuracy (mean) | min–max | seconds (mean / max) | within budget | notes |",
                  "|---|---:|---:|---:|---:|---|"]
        for m in [x for x in METHODS if x in methods]:
            s = methods[m]
            rows = [r for r in records if r["dataset"] == ds and r["method"] == m]
            acc = f"{s['mean']:.4f}" if s["mean"] is not None else "–"
            rng = f"{s['min']:.4f}–{s['max']:.4f}" if s["mean"] is not None else "–"
            failed = s["runs"] - s["ok"]
            note = _note(ds, m, rows) + (f"; {failed} of {s['runs']} runs failed ({rows[-1]['status']})" if failed else "")
            lines.append(f"| {LABELS[m]} | {acc} | {rng} | {s['seconds_mean']} / {s['seconds_max']} | "
                         f"{s['within_budget']}/{s['runs']} | {note.strip('; ')} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{tag}.md").write_text(text)
    return text


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the first repeat's seed (repeat r uses seed+r)")
    ap.add_argument("--budget-minutes", type=float, default=5.0)
    ap.add_argument("--cpus", type=int, default=2, help="CPU cores each method's subprocess is pinned to")
    ap.add_argument("--pretrain-epochs", type=int, default=4, help="digits_transfer's weights: epochs on ocvdigits")
    ap.add_argument("--auto-budget-key", choices=("detect", "set", "force", "omit"), default="detect",
                    help="how `+recipe=auto` gets the budget (detect: `auto.budget_minutes=B` when the key exists)")
    ap.add_argument("--kill-after", type=float, default=2.0,
                    help="a method still running after this many budgets (+1 min) is killed and recorded as such")
    ap.add_argument("--work", type=Path, default=None, help="keep the run folders and logs here")
    ap.add_argument("--tag", default="auto", help="results file name: benchmarks/results/TAG.{json,md}")
    # internal: one method in this process
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    import real_data

    started = _dt.datetime.now().isoformat(timespec="seconds")
    t_start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="aether-bench-auto-"))
    work.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget_minutes * 60
    kill_after = args.kill_after * budget_s + 60
    cpus = min(args.cpus, usable_cpus())
    mode = auto_budget_mode(args.auto_budget_key) if "auto" in args.methods else "not run"
    folders = {ds: getattr(real_data, DATASETS[ds]["folder"])() for ds in args.datasets}
    pre = pretrained_weights(args, work) if any(DATASETS[d]["transfer"] for d in args.datasets) else None
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    meta: Dict[str, Any] = {
        "command": "python benchmarks/auto.py" + ("" if len(sys.argv) < 2 else " " + shlex.join(sys.argv[1:])),
        "started": started, "total_minutes": None,
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip() or "unknown",
        "machine": f"{cpu_model()}, {usable_cpus()} usable CPU cores; load average {load0:.2f} at the start",
        "software": ", ".join(f"{d} {_version(d)}" for d in ("torch", "timm", "lightning", "scikit-learn")),
        "cpus": cpus, "budget_minutes": args.budget_minutes, "repeats": args.repeats,
        "seeds": [args.seed + r for r in range(args.repeats)], "methods": args.methods, "datasets": args.datasets,
        "dataset_descriptions": {d: DATASETS[d]["about"] for d in args.datasets},
        "auto_budget_mode": mode, "pretrained": pre, "work": str(work)}
    from defaults import TIMM_TRAIN_DEFAULTS

    meta["timm_train_defaults_overrides"] = TIMM_TRAIN_DEFAULTS
    records: List[Dict[str, Any]] = []
    methods = list(args.methods)
    for r in range(args.repeats):
        seed = args.seed + r
        for ds in args.datasets:
            k = r % len(methods)
            order = methods[k:] + methods[:k]
            weights = Path(pre["file"]) if DATASETS[ds]["transfer"] and pre else None
            for pos, m in enumerate(order):
                name = f"{ds}-{m}-r{r}"
                if m == "auto":
                    rec = run_auto(folders[ds], weights, seed, args.budget_minutes, work / name, mode, cpus, kill_after)
                else:
                    rec = run_worker(m, folders[ds], weights, seed, budget_s, work / name, cpus, kill_after)
                rec = {"dataset": ds, "method": m, "repeat": r, "seed": seed, "position": pos, **rec,
                       "within_budget": rec["status"] == "ok" and rec["seconds"] <= budget_s}
                records.append(rec)
                acc = f"{rec['test_accuracy']:.4f}" if rec["test_accuracy"] is not None else "none"
                print(f"[{ds} r{r} #{pos}] {m}: test accuracy {acc}, {rec['seconds']} s, {rec['status']}"
                      + ("" if rec["within_budget"] else " (over budget)"), flush=True)
                if rec["status"] != "ok":
                    print("  " + rec.get("error", "").replace("\n", "\n  "), flush=True)
                meta["total_minutes"] = round((time.perf_counter() - t_start) / 60, 1)
                write_results(meta, records, args.tag)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    meta["machine"] += f", {load1:.2f} at the end"
    meta["total_minutes"] = round((time.perf_counter() - t_start) / 60, 1)
    print(write_results(meta, records, args.tag))
    print(f"runs and logs: {work}")


if __name__ == "__main__":
    main()
