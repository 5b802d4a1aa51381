#!/usr/bin/env python
"""Dataset-doctor throughput: Aether's image checker vs a plain Pillow loop vs cleanvision.

One run, one generated folder (>= 10,000 mixed images: mostly small JPEGs and PNGs of varied
sizes, 64-512 px, plus a few faulty files - empty, truncated, random bytes, CMYK, 16-bit PNG -
and exact duplicates). The folder is generated once into a cache dir and reused; generation is
not timed. Before timing, every file is read once so all contenders see a warm OS page cache.

Contenders (wall time of the whole call, images/s = files / seconds):

  aether_cold   `check_files(paths, workers=W, cache_path=<fresh sqlite>)`, iterator consumed
                fully (spawn process pool start-up included)
  aether_warm   the same call again with the same cache (unchanged files -> cache hits)
  pillow_verify single process: `Image.open(p).verify()` per file
  pillow_load   single process: `Image.open(p).load()` per file (full decode)
  cleanvision   `Imagelab(filepaths=paths).find_issues(issue_types=...)` restricted to the issue
                types that overlap Aether's checks: exact_duplicates (Aether: sha256),
                near_duplicates (Aether: dhash), odd_size (Aether: too_small / too_large).

Target: Aether (cold and warm) >= 5x cleanvision's throughput.
Results: benchmarks/results/doctor.json and doctor.md.

    python benchmarks/doctor.py                      # 10,000 images
    python benchmarks/doctor.py --images 20000 --workers 4 --skip-cleanvision
"""

from __future__ import annotations

import sys
import os

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as _dt  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET = 5.0
CLEANVISION_ISSUES = {"exact_duplicates": {}, "near_duplicates": {}, "odd_size": {}}
FAULTS_PER_KIND = 5
DUPLICATE_FRACTION = 0.01
GEN_VERSION = 2


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=10000, help="number of files in the generated folder")
    p.add_argument("--workers", type=int, default=None,
                   help="Aether check_files workers (default: None -> os.cpu_count())")
    p.add_argument("--skip-cleanvision", action="store_true", help="do not run cleanvision")
    p.add_argument("--skip-pillow-load", action="store_true", help="skip the Pillow full-decode loop")
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "aether-bench-inspect"),
                   help="where the generated image folder lives (reused when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Dataset generation (once, cached)
# ----------------------------------------------------------------------------------------------


def _smooth_image(rng, np, w: int, h: int):
    from PIL import Image

    # A small random grid upsampled bilinearly plus mild noise: photo-like compressibility,
    # cheap to make, and distinct perceptual hashes per image.
    gw, gh = rng.randint(2, 9), rng.randint(2, 9)
    grid = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
    im = Image.fromarray(grid, "RGB").resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.int16)
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-2, 3, size=arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8), "RGB")


def generate(folder: Path, n: int, seed: int) -> Dict[str, Any]:
    """Create `n` files in `folder` (reused when its manifest matches). Returns the manifest."""
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("images") == n and manifest.get("seed") == seed and manifest.get("version") == GEN_VERSION:
                if all((folder / f).exists() for f in manifest["files"][:: max(1, n // 200)]):
                    manifest["reused"] = True
                    return manifest
        except Exception:
            pass
    import numpy as np
    from PIL import Image

    if folder.exists():
        shutil.rmtree(folder)
    img_dir = folder / "images"
    img_dir.mkdir(parents=True)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    files: List[str] = []
    kinds: Counter = Counter()

    def name(i: int, ext: str) -> str:
        rel = f"images/{i // 1000:03d}/img_{i:06d}{ext}"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        return rel

    n_faulty = 7 * FAULTS_PER_KIND  # empty, trunc jpg, trunc png, random bytes, cmyk, 16-bit, tiny
    n_dup = max(1, int(n * DUPLICATE_FRACTION))
    n_good = n - n_faulty - n_dup
    if n_good < 10:
        raise SystemExit(f"--images {n} is too small")
    i = 0
    good: List[str] = []
    for _ in range(n_good):
        w, h = rng.randint(64, 512), rng.randint(64, 512)
        im = _smooth_image(rng, np, w, h)
        if rng.random() < 0.6:
            rel = name(i, ".jpg")
            im.save(folder / rel, "JPEG", quality=rng.choice((75, 85, 92)))
            kinds["jpeg"] += 1
        else:
            rel = name(i, ".png")
            im.save(folder / rel, "PNG", compress_level=rng.choice((1, 6)))
            kinds["png"] += 1
        good.append(rel)
        i += 1
    for _ in range(n_dup):  # exact byte-for-byte copies of random good files
        src = rng.choice(good)
        rel = name(i, os.path.splitext(src)[1])
        shutil.copyfile(folder / src, folder / rel)
        kinds["exact_duplicate"] += 1
        good.append(rel)
        i += 1
    faulty: List[str] = []
    for _ in range(FAULTS_PER_KIND):
        rel = name(i, ".jpg"); (folder / rel).write_bytes(b""); kinds["empty"] += 1; faulty.append(rel); i += 1
        data = (folder / rng.choice([g for g in good[:200] if g.endswith(".jpg")])).read_bytes()
        rel = name(i, ".jpg"); (folder / rel).write_bytes(data[: len(data) // 2]); kinds["truncated_jpeg"] += 1
        faulty.append(rel); i += 1
        data = (folder / rng.choice([g for g in good[:200] if g.endswith(".png")])).read_bytes()
        rel = name(i, ".png"); (folder / rel).write_bytes(data[: len(data) // 2]); kinds["truncated_png"] += 1
        faulty.append(rel); i += 1
        rel = name(i, ".jpg"); (folder / rel).write_bytes(rng.randbytes(rng.randint(100, 20000)))
        kinds["random_bytes"] += 1; faulty.append(rel); i += 1
        rel = name(i, ".jpg")
        _smooth_image(rng, np, rng.randint(64, 512), rng.randint(64, 512)).convert("CMYK").save(folder / rel, "JPEG")
        kinds["cmyk_jpeg"] += 1; faulty.append(rel); i += 1
        rel = name(i, ".png")
        w, h = rng.randint(64, 512), rng.randint(64, 512)
        arr16 = (np.asarray(_smooth_image(rng, np, w, h).convert("L"), dtype=np.uint16) * 257)
        Image.fromarray(arr16.astype("<u2")).save(folder / rel, "PNG")
        kinds["png_16bit"] += 1; faulty.append(rel); i += 1
        rel = name(i, ".png")
        _smooth_image(rng, np, rng.randint(2, 6), rng.randint(2, 6)).save(folder / rel, "PNG")
        kinds["tiny_png"] += 1; faulty.append(rel); i += 1
    files = good + faulty
    rng.shuffle(files)  # mixed order: faults and duplicates are spread through the list
    manifest = {"version": GEN_VERSION, "images": n, "seed": seed, "kinds": dict(kinds),
                "bytes": sum((folder / f).stat().st_size for f in files),
                "generate_seconds": round(time.perf_counter() - t0, 2), "files": files, "faulty": faulty}
    manifest_path.write_text(json.dumps(manifest))
    manifest["reused"] = False
    return manifest


# ----------------------------------------------------------------------------------------------
# Contenders
# ----------------------------------------------------------------------------------------------


def run_aether(paths: List[str], workers: Optional[int], cache_path: Path) -> Dict[str, Any]:
    from aether.doctor.checks import CheckStats, check_files

    stats = CheckStats()
    issues: Counter = Counter()
    t0 = time.perf_counter()
    n = 0
    for rep in check_files(paths, workers=workers, cache_path=cache_path, stats=stats):
        n += 1
        issues.update(rep.issues)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "files": n, "images_per_s": n / dt, "cache_hits": stats.cache_hits,
            "checked": stats.checked, "worker_crashes": stats.worker_crashes,
            "issues": dict(sorted(issues.items()))}


def run_pillow(paths: List[str], full: bool) -> Dict[str, Any]:
    import warnings

    from PIL import Image

    bad = 0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            try:
                with Image.open(p) as im:
                    if full:
                        im.load()
                    else:
                        im.verify()
            except Exception:
                bad += 1
    dt = time.perf_counter() - t0
    return {"seconds": dt, "files": len(paths), "images_per_s": len(paths) / dt, "failed": bad}


def run_cleanvision(paths: List[str], faulty: List[str]) -> Dict[str, Any]:
    """Time find_issues on all files; if cleanvision raises on a faulty file, record that and
    time it again on the folder without the generated faulty files."""
    first = _cleanvision_once(paths)
    if not first.get("failed"):
        return first
    bad = set(faulty)
    clean = [p for p in paths if p not in bad]
    second = _cleanvision_once(clean)
    if second.get("failed"):
        return {"skipped": True, "reason": f"{first['reason']}; also without faulty files: {second['reason']}",
                "traceback": second.get("traceback")}
    second["full_folder_error"] = first["reason"]
    second["full_folder_seconds_until_error"] = first["seconds_until_error"]
    second["excluded_faulty_files"] = len(paths) - len(clean)
    return second


def _cleanvision_once(paths: List[str]) -> Dict[str, Any]:
    try:
        import cleanvision
        from cleanvision import Imagelab
        from cleanvision.utils.utils import get_max_n_jobs
    except Exception as exc:
        return {"skipped": True, "reason": f"cleanvision not importable: {type(exc).__name__}: {exc} "
                                           "(pip install cleanvision)"}
    buf = io.StringIO()
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):  # its progress text; tqdm bars go to stderr
            lab = Imagelab(filepaths=paths)
            lab.find_issues(issue_types=dict(CLEANVISION_ISSUES))
        dt = time.perf_counter() - t0
    except Exception as exc:
        return {"failed": True, "reason": f"cleanvision raised {type(exc).__name__}: {exc}",
                "seconds_until_error": round(time.perf_counter() - t0, 3),
                "traceback": traceback.format_exc()[-2000:]}
    summary = {str(r["issue_type"]): int(r["num_images"]) for _, r in lab.issue_summary.iterrows()}
    return {"seconds": dt, "files": len(paths), "images_per_s": len(paths) / dt,
            "version": cleanvision.__version__, "n_jobs": get_max_n_jobs(),
            "issue_types": sorted(CLEANVISION_ISSUES), "issue_summary": summary}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def machine_info() -> Dict[str, Any]:
    import PIL

    info: Dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "pillow": PIL.__version__}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    return info


def write_md(path: Path, res: Dict[str, Any]) -> None:
    r = res["results"]
    cv = r.get("cleanvision", {})
    L = ["# Dataset doctor throughput: Aether vs Pillow vs cleanvision", "",
         f"Generated {res['timestamp']} - `{res['command']}`", "",
         f"Folder: {res['dataset']['images']} files ({res['dataset']['bytes'] / 2**20:.1f} MiB) in "
         f"`{res['dataset']['folder']}`; mix: " + ", ".join(f"{k} {v}" for k, v in res['dataset']['kinds'].items()) + ".",
         "Files were read once before timing (warm OS page cache for every contender).", "",
         "| contender | seconds | images/s | notes |", "|---|---:|---:|---|"]
    rows = [("Aether cold (`check_files`, fresh SQLite cache)", "aether_cold",
             lambda d: f"workers={res['aether_workers']}, checked={d['checked']}, cache hits={d['cache_hits']}"),
            ("Aether warm (same cache)", "aether_warm",
             lambda d: f"cache hits={d['cache_hits']}, checked={d['checked']}"),
            ("Pillow `open().verify()` loop", "pillow_verify", lambda d: f"1 process, {d['failed']} raised"),
            ("Pillow `open().load()` loop", "pillow_load", lambda d: f"1 process, {d['failed']} raised"),
            ("cleanvision `find_issues`", "cleanvision",
             lambda d: f"v{d['version']}, n_jobs={d['n_jobs']}, issue types: {', '.join(d['issue_types'])}"
                       + (f"; {d['files']} files: crashed on the full folder ({d['full_folder_error']}), "
                          f"timed without the {d['excluded_faulty_files']} faulty files" if d.get('full_folder_error') else ""))]
    for label, key, note in rows:
        d = r.get(key)
        if not d:
            continue
        if d.get("skipped"):
            L.append(f"| {label} | - | - | skipped: {d['reason']} |")
        else:
            L.append(f"| {label} | {d['seconds']:.2f} | {d['images_per_s']:,.0f} | {note(d)} |")
    L.append("")
    ratios = res.get("ratios", {})
    if ratios:
        L += [f"**Target: Aether >= {TARGET:g}x cleanvision's throughput.**", "",
              f"- Aether cold / cleanvision: **{ratios['cold_vs_cleanvision']:.2f}x** "
              f"({'met' if ratios['cold_vs_cleanvision'] >= TARGET else 'NOT met'})",
              f"- Aether warm / cleanvision: **{ratios['warm_vs_cleanvision']:.2f}x** "
              f"({'met' if ratios['warm_vs_cleanvision'] >= TARGET else 'NOT met'})", ""]
    else:
        L += [f"Target (Aether >= {TARGET:g}x cleanvision) not evaluated: cleanvision "
              f"{'skipped' if cv.get('skipped') or not cv else 'missing'}.", ""]
    L += ["## What each side does per image", "",
          "- **Aether** (`aether.doctor.checks.check_file`) does more than cleanvision's overlapping checks: "
          "stat, read the whole file and SHA-256 it (exact duplicates), identify the header, classify "
          "format/extension/mode/EXIF/frames/size limits, **fully decode** the first frame (JPEGs via DCT "
          "draft scaling, which still entropy-decodes every byte so truncation is caught; PNGs at full size) "
          "and compute a 64-bit dHash (near duplicates). Results stream back in order from a spawn process "
          "pool and are written to SQLite; the warm run answers from that cache by (path, size, mtime_ns).",
          "- **cleanvision** with only the overlapping issue types "
          f"({', '.join(sorted(CLEANVISION_ISSUES))}): per image an MD5 and a perceptual hash "
          "(exact/near duplicates) and the image size (odd_size), in a multiprocessing pool "
          "(its default n_jobs = physical cores). Its light/dark/blurry/grayscale/low_information/"
          "odd_aspect_ratio checks are excluded (Aether has no equivalent per-image check).",
          "- **Pillow loops** are lower bounds for a single process: `verify()` parses without decoding "
          "pixels; `load()` decodes them fully (JPEGs at full size, unlike Aether).", "",
          "## Issues found (sanity)", "",
          f"- Aether cold: {json.dumps(r['aether_cold']['issues'])}"]
    if cv and not cv.get("skipped"):
        L.append(f"- cleanvision: {json.dumps(cv['issue_summary'])}")
    L += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in res["machine"].items()]
    if res.get("caveats"):
        L += ["", "## Caveats", ""] + [f"- {c}" for c in res["caveats"]]
    path.write_text("\n".join(L) + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    folder = Path(args.cache_dir) / f"n{args.images}-s{args.seed}"
    print(f"[inspect] dataset: {folder}", flush=True)
    manifest = generate(folder, args.images, args.seed)
    print(f"[inspect] {'reused' if manifest['reused'] else 'generated'} {manifest['images']} files "
          f"({manifest['bytes'] / 2**20:.1f} MiB){'' if manifest['reused'] else ' in %.1fs' % manifest['generate_seconds']}",
          flush=True)
    paths = [str(folder / f) for f in manifest["files"]]
    for p in paths:  # warm the page cache for everyone (untimed)
        with open(p, "rb") as fh:
            fh.read()

    workers = args.workers
    aether_workers = (os.cpu_count() or 1) if workers is None else workers
    results: Dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="aether-inspect-cache-"))
    try:
        cache = tmp / "doctor-cache.sqlite"
        results["aether_cold"] = run_aether(paths, workers, cache)
        print(f"[inspect] aether cold : {results['aether_cold']['images_per_s']:8.0f} img/s "
              f"({results['aether_cold']['seconds']:.2f}s)", flush=True)
        results["aether_warm"] = run_aether(paths, workers, cache)
        print(f"[inspect] aether warm : {results['aether_warm']['images_per_s']:8.0f} img/s "
              f"({results['aether_warm']['seconds']:.2f}s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["pillow_verify"] = run_pillow(paths, full=False)
    print(f"[inspect] pillow verify: {results['pillow_verify']['images_per_s']:8.0f} img/s", flush=True)
    if not args.skip_pillow_load:
        results["pillow_load"] = run_pillow(paths, full=True)
        print(f"[inspect] pillow load : {results['pillow_load']['images_per_s']:8.0f} img/s", flush=True)
    if args.skip_cleanvision:
        results["cleanvision"] = {"skipped": True, "reason": "--skip-cleanvision"}
    else:
        faulty = {str(folder / f) for f in manifest["faulty"]}
        results["cleanvision"] = run_cleanvision(paths, sorted(faulty))
        cv = results["cleanvision"]
        if cv.get("skipped"):
            print(f"[inspect] cleanvision skipped: {cv['reason']}", flush=True)
        else:
            print(f"[inspect] cleanvision : {cv['images_per_s']:8.0f} img/s ({cv['seconds']:.2f}s)", flush=True)

    ratios: Dict[str, float] = {}
    cv = results["cleanvision"]
    if not cv.get("skipped"):
        ratios = {"cold_vs_cleanvision": results["aether_cold"]["images_per_s"] / cv["images_per_s"],
                  "warm_vs_cleanvision": results["aether_warm"]["images_per_s"] / cv["images_per_s"]}
    caveats = [
        "Aether's checker does more per image than cleanvision's overlapping checks (full decode, "
        "SHA-256 of the whole file, dHash, format/mode/EXIF classification, SQLite cache writes), so the "
        "comparison is conservative for Aether on work done but the ratio is a throughput ratio only.",
        "Single run, no repetitions; numbers on a small shared machine can vary by 10-20%.",
        "Files are small and in the OS page cache: this measures CPU-bound checking, not disk I/O.",
    ]
    if cv.get("full_folder_error"):
        caveats.append(f"cleanvision could not process the full folder: {cv['full_folder_error']} (after "
                       f"{cv['full_folder_seconds_until_error']}s). It was then timed on the folder without the "
                       f"{cv['excluded_faulty_files']} generated faulty files ({cv['files']} files); its images/s is "
                       "over those files, Aether's over all files including the faulty ones.")
    if not cv.get("skipped") and cv.get("n_jobs") != aether_workers:
        caveats.append(f"cleanvision ran with n_jobs={cv.get('n_jobs')} (its default), Aether with "
                       f"{aether_workers} workers.")
    res = {"benchmark": "inspect", "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
           "command": "python benchmarks/doctor.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "target": f"Aether images/s >= {TARGET:g}x cleanvision images/s", "target_ratio": TARGET,
           "target_met": ({k: v >= TARGET for k, v in ratios.items()} if ratios else None),
           "ratios": {k: round(v, 3) for k, v in ratios.items()},
           "aether_workers": aether_workers, "machine": machine_info(),
           "dataset": {k: v for k, v in manifest.items() if k != "files"} | {"folder": str(folder)},
           "results": results, "caveats": caveats}
    for d in results.values():
        for k in ("seconds", "images_per_s"):
            if k in d:
                d[k] = round(d[k], 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "doctor.json").write_text(json.dumps(res, indent=2) + "\n")
    write_md(out / "doctor.md", res)
    if ratios:
        print(f"[doctor] Aether cold/cleanvision = {ratios['cold_vs_cleanvision']:.2f}x, "
              f"warm/cleanvision = {ratios['warm_vs_cleanvision']:.2f}x (target >= {TARGET:g}x)")
    print(f"[doctor] wrote {out / 'doctor.json'} and {out / 'doctor.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
