"""Which training techniques pay off on real images at a fixed CPU budget? An on/off ablation.

Every technique is a set of overrides on one base run, the real CLI each time (`aether
+recipe=quickstart data=DIR seed=S hydra.run.dir=RUN ...`, from scratch: ResNet-18 at 32 px,
one-cycle, 8 epochs), on the same seeded 70/15/15 split, so each row differs from `baseline` only
by its technique. The schedule is the same for every row (a technique that costs time shows it in
its seconds; none is cut short), and each run is one subprocess pinned to `--cpus` cores with a
kill limit of `--budget-minutes`. Rows alternate in one run: per repeat and dataset the order is
rotated by one, so no technique always runs first on a cold cache or last on a warm one.

Techniques (issue 16's switches; a technique the installed Aether does not have fails with its
own error line, recorded as such, instead of stopping the benchmark):

    baseline        the quickstart recipe as it is
    ema             ema.enabled=true (EMA of the weights is what is validated, tested, exported)
    light_aug       data/augment=light (random resized crop 0.8-1 + flips)
    randaugment     data/augment=randaugment
    trivialaugment  data/augment=trivialaugment
    augmix          data/augment=augmix
    mixup           data.augment.mixup=0.2
    cutmix          data.augment.cutmix=1.0
    smoothing       loss.label_smoothing=0.1
    ema_smoothing   both (the two cheap gains together)
    tta_flip        test.tta=flip (metrics.json `tta`: plain and TTA accuracy of the same model)
    (calibration)   no row of its own: temperature scaling is the default, so every row's notes
                    hold test.ece (calibrated) beside test.ece_uncalibrated of the same model
    balanced        data.sampler=balanced
    focal           loss.name=focal
    distill         the 0.2M-parameter test ConvNeXt taught by this dataset's baseline run
                    (distill.teacher=RUN, same split) vs `student` (the same student alone)

    python benchmarks/techniques.py [--datasets digits fashion ocvdigits] [--techniques ...]
                                    [--repeats 2] [--budget-minutes 5] [--tag techniques]
                                    [--seed 1 --add]

--add keeps the records already in <tag>.json (another seed, another technique) and adds these
runs' records (a run of the same dataset, technique and seed replaces the old one), so repeats
can be made in several sittings and still give one table; the file lists every command.

Results: benchmarks/results/<tag>.{json,md}, rewritten after every run. Datasets come from
benchmarks/real_data.py (built into /tmp/aether-bench-data on first use).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import ROOT, cpu_model, spawn, tail, usable_cpus  # noqa: E402

RESULTS = HERE / "results"
BASE = ["+recipe=quickstart", "trainer.progress=none"]
STUDENT = ["model=test_convnext", "data.image_size=32"]  # on top of BASE: the distillation pair's student
TECHNIQUES: Dict[str, List[str]] = {
    "baseline": [],
    "ema": ["ema.enabled=true"],
    "light_aug": ["data/augment=light"],
    "randaugment": ["data/augment=randaugment"],
    "trivialaugment": ["data/augment=trivialaugment"],
    "augmix": ["data/augment=augmix"],
    "mixup": ["data.augment.mixup=0.2"],
    "cutmix": ["data.augment.cutmix=1.0"],
    "smoothing": ["loss.label_smoothing=0.1"],
    "ema_smoothing": ["ema.enabled=true", "loss.label_smoothing=0.1"],
    "tta_flip": ["test.tta=flip"],
    "balanced": ["data.sampler=balanced"],
    "focal": ["loss.name=focal"],
    "student": STUDENT,
    "distill": [*STUDENT, "distill.teacher={teacher}"],  # {teacher}: this dataset and seed's baseline run
}
DATASETS = {"digits": "digits", "ocvdigits": "ocvdigits", "fashion": "fashion"}  # name -> real_data builder


def _read(run: Path) -> Dict[str, Any]:
    """What a finished run measured: test accuracy, ECE when reported, TTA and distillation sections."""
    m = json.loads((run / "metrics.json").read_text())
    t = m.get("test") or {}
    out: Dict[str, Any] = {"test_accuracy": t.get("accuracy")}
    for key in ("ece", "ece_uncalibrated"):
        if key in t:
            out[key] = t[key]
    if "tta" in m:
        out["tta"] = m["tta"]
    if "distill" in m:
        out["distill"] = {k: m["distill"].get(k) for k in ("teacher_accuracy", "student_accuracy", "teacher_params",
                                                            "student_params", "same_split")}
    return out


def run_one(technique: str, data: Path, seed: int, work: Path, cpus: int, kill_after: float,
            teacher: Optional[Path]) -> Dict[str, Any]:
    run = work / f"{data.name}-{technique}-s{seed}"
    overrides = [o.format(teacher=teacher) for o in TECHNIQUES[technique]]
    cmd = [sys.executable, "-m", "aether", *BASE, f"data={data}", f"seed={seed}", f"hydra.run.dir={run}", *overrides]
    log = work / f"{run.name}.log"
    p = spawn(cmd, log, cpus, kill_after)
    rec: Dict[str, Any] = {"technique": technique, "seed": seed, "seconds": p["seconds"],
                           "command": "aether " + shlex.join(cmd[3:]), "run": str(run)}
    try:
        rec.update(_read(run))
    except (OSError, ValueError):
        rec["test_accuracy"] = None
    rec["status"] = "killed" if p["killed"] else "ok" if p["rc"] == 0 and rec.get("test_accuracy") is not None else "error"
    if rec["status"] != "ok":
        rec["error"] = tail(log, 3)
    return rec


def _mean(values: List[float]) -> Optional[float]:
    return round(statistics.mean(values), 4) if values else None


def write_results(meta: Dict[str, Any], records: List[Dict[str, Any]], tag: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=2))
    lines = [f"# Training techniques on/off, real images ({meta['schedule']})", "",
             f"Generated by `{meta['command']}` on {meta['started']} (git {meta['git']}); {meta['machine']}.", ""]
    for ds in meta["datasets"]:
        rows = [r for r in records if r["dataset"] == ds]
        base = _mean([r["test_accuracy"] for r in rows if r["technique"] == "baseline" and r["status"] == "ok"])
        student = _mean([r["test_accuracy"] for r in rows if r["technique"] == "student" and r["status"] == "ok"])
        lines += [f"## {ds}", "", "| technique | test accuracy (mean) | vs its reference | per seed | seconds (mean) | "
                  "runs ok | notes |", "|---|---:|---:|---|---:|---:|---|"]
        for tech in meta["techniques"]:
            mine = [r for r in rows if r["technique"] == tech]
            ok = [r for r in mine if r["status"] == "ok"]
            acc = _mean([r["test_accuracy"] for r in ok])
            ref = student if tech == "distill" else base
            delta = "-" if acc is None or ref is None or tech in ("baseline", "student") else f"{acc - ref:+.4f}"
            notes = []
            if any("ece" in r for r in ok):
                notes.append(f"ECE {_mean([r['ece'] for r in ok if 'ece' in r])} (uncalibrated "
                             f"{_mean([r['ece_uncalibrated'] for r in ok if 'ece_uncalibrated' in r])})")
            if any("tta" in r for r in ok):
                notes.append("tta: " + json.dumps(ok[0]["tta"])[:120])
            failed = [r for r in mine if r["status"] != "ok"]
            if failed:
                notes.append(f"{failed[0]['status']}: {failed[0].get('error', '').splitlines()[-1][:160] if failed[0].get('error') else ''}")
            seeds = " / ".join(f"{r['test_accuracy']:.4f}" for r in sorted(ok, key=lambda r: r["seed"])) or "-"
            lines.append(f"| {tech} | {'-' if acc is None else f'{acc:.4f}'} | {delta} | {seeds} | "
                         f"{_mean([r['seconds'] for r in ok]) or '-'} | {len(ok)}/{len(mine)} | {'; '.join(notes)} |")
        lines.append("")
    path = RESULTS / f"{tag}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--techniques", nargs="+", default=list(TECHNIQUES), choices=list(TECHNIQUES))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-minutes", type=float, default=5.0, help="a run still going after this is killed")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/aether-techniques"))
    ap.add_argument("--tag", default="techniques")
    ap.add_argument("--add", action="store_true", help="keep <tag>.json's records and add these runs' to them")
    args = ap.parse_args()
    import real_data

    techniques = list(args.techniques)
    if "distill" in techniques and "baseline" not in techniques:
        techniques.insert(0, "baseline")  # the teacher
    folders = {ds: getattr(real_data, DATASETS[ds])() for ds in args.datasets}
    args.work.mkdir(parents=True, exist_ok=True)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta = {"command": "python benchmarks/techniques.py " + shlex.join(sys.argv[1:]),
            "started": _dt.datetime.now().isoformat(timespec="seconds"), "git": git,
            "machine": f"{cpu_model()}, {min(args.cpus, usable_cpus())} CPU cores, load {os.getloadavg()[0]:.2f} at the start",
            "schedule": "the quickstart recipe's 8 epochs for every row, same split; seconds include start-up",
            "datasets": args.datasets, "techniques": techniques, "repeats": args.repeats}
    records: List[Dict[str, Any]] = []
    if args.add and (RESULTS / f"{args.tag}.json").is_file():
        old = json.loads((RESULTS / f"{args.tag}.json").read_text())
        records = old["records"]
        meta["command"] = "; ".join([old["meta"]["command"], meta["command"]])
        meta["started"] = f"{old['meta']['started']} and {meta['started']}"
        meta["git"] = f"{old['meta']['git']} and {git}"
        meta["datasets"] = list(dict.fromkeys([*old["meta"]["datasets"], *meta["datasets"]]))
        meta["techniques"] = list(dict.fromkeys([*old["meta"]["techniques"], *meta["techniques"]]))
    t0 = time.time()
    for rep in range(args.repeats):
        seed = args.seed + rep
        for ds in args.datasets:
            shift = rep % len(techniques)
            order = techniques[shift:] + techniques[:shift]
            if "distill" in order and order.index("distill") < order.index("baseline"):
                order.remove("distill")  # after its teacher
                order.insert(order.index("baseline") + 1, "distill")
            teacher = args.work / f"{folders[ds].name}-baseline-s{seed}"
            for tech in order:
                rec = run_one(tech, folders[ds], seed, args.work, args.cpus, args.budget_minutes * 60, teacher)
                rec["dataset"] = ds
                records = [r for r in records if (r["dataset"], r["technique"], r["seed"]) != (ds, tech, seed)]
                records.append(rec)
                print(f"[{ds} s{seed}] {tech}: {rec['status']} acc {rec.get('test_accuracy')} {rec['seconds']} s",
                      flush=True)
                meta["minutes"] = round((time.time() - t0) / 60, 1)
                meta["load_end"] = round(os.getloadavg()[0], 2)
                write_results(meta, records, args.tag)
    print(RESULTS / f"{args.tag}.md")


if __name__ == "__main__":
    main()
