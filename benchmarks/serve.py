#!/usr/bin/env python
"""Serving throughput: `bentoml serve` of an exported Aether model vs the in-process batched model.

One model folder (timm `--model`, random weights - throughput does not depend on what was
learned) is exported with `aether export` into a temporary BentoML store. Then, on the same
generated JPEG photos, in one run:

  in-process  `Predictor.predict_paths` (the code `aether predict` runs): the doctor's check,
              decode, the evaluation transform, forward passes in batches of the service's
              max batch size - everything the server does except HTTP.
  served      `bentoml serve RUN/bento` on 127.0.0.1, `--requests` single-image POSTs to
              /predict with at most `--concurrency` in flight (asyncio + aiohttp), after
              `--warmup` requests; once with adaptive batching on, once off
              (AETHER_SERVE_BATCHING=0). Latency is per request, client side.

The client, the HTTP front end and the model worker share this machine's cores with nothing
else of ours running. Results: benchmarks/results/serve.json and serve.md.
Target: served throughput (batching on) >= 0.7x in-process.

    python benchmarks/serve.py                          # resnet18, 224 px, 384 requests, 16 in flight
    python benchmarks/serve.py --model test_vit --image-size 64 --requests 200
    python benchmarks/serve.py --memory                 # peak worker RSS under 8 concurrent 9000x9000 PNGs

`--backends torch onnx openvino`: the serving backends compared instead - the same model exported
once per backend (`aether export backend=...`; the ONNX and OpenVINO files without the agreement
check, which needs a run's data: random weights), every server up at once, rounds alternating
between them under the same load (batching on). Results: serve-backends.json/.md.

`--memory`: the hostile-upload load instead - `--big-count` valid `--big-side` px PNGs (a few
hundred kB each, under the pixel limit, 243 MB each decoded) POSTed at once, twice; reports the
peak RSS (VmHWM) of each serving process and their RSS afterwards. Results: serve-memory.json/.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = 0.7
BIN = Path(sys.executable).parent


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet18", help="timm model name")
    p.add_argument("--image-size", type=int, default=224, help="model input size (data.image_size)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--images", type=int, default=64, help="distinct generated photos (cycled)")
    p.add_argument("--photo-size", type=int, default=320, help="side of the generated JPEG photos")
    p.add_argument("--requests", type=int, default=384, help="measured images per setting, over all rounds")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    p.add_argument("--warmup", type=int, default=32, help="requests sent first and not measured")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds (in-process, on, off), medians reported")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMP threads per process, in-process and in the server's workers alike "
                        "(1: on a shared 2-core machine, 2 threads per process oversubscribe the cores and "
                        "slow torch down by 10x and more)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="serve", help="results file stem")
    p.add_argument("--memory", action="store_true", help="measure peak worker RSS under large uploads instead")
    p.add_argument("--backends", nargs="+", choices=("torch", "onnx", "openvino"),
                   help="compare these serving backends instead (results: serve-backends)")
    p.add_argument("--big-side", type=int, default=9000, help="--memory: side of the uploaded PNGs")
    p.add_argument("--big-count", type=int, default=8, help="--memory: uploads in flight at once")
    args = p.parse_args(argv)
    if args.memory and args.name == "serve":
        args.name = "serve-memory"
    if args.backends and args.name == "serve":
        args.name = "serve-backends"
    return args


MEMORY_BOUND_GB = 2.0  # the README's stated bound for one serving worker under the --memory load


def server_processes(pid: int) -> Dict[int, str]:
    """{pid: command line} of the `bentoml serve` process and all its descendants."""
    children: Dict[int, List[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            out[p] = (Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160])
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return out


def rss_kb(pid: int, key: str) -> int:
    """VmHWM (peak resident set) or VmRSS of a process, in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def big_png(side: int) -> bytes:
    """A valid side x side RGB PNG that compresses to a few hundred kB (flat colour + a square)."""
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), (200, 60, 40))
    ImageDraw.Draw(img).rectangle([side // 4, side // 4, side // 2, side // 2], fill=(20, 200, 90))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def measure_memory(run: Path, env: Dict[str, str], args: argparse.Namespace, root: Path) -> Dict[str, Any]:
    from aether.deploy.server import BentoServer

    blob = big_png(args.big_side)
    print(f"[serve] {args.big_count} x {args.big_side}x{args.big_side} PNG, {len(blob)} bytes each", flush=True)
    env = {**env, "AETHER_MAX_UPLOAD_MB": str(max(8, 2 * len(blob) // (1 << 20) + 1))}
    with BentoServer(run / "bento", root / "memory.log", env=env) as server:
        assert server.proc is not None
        procs = server_processes(server.proc.pid)
        before = {p: rss_kb(p, "VmRSS") for p in procs}
        rounds = []
        for _ in range(2):
            res = asyncio.run(load(server.url, [blob], args.big_count, args.big_count))
            rounds.append({k: v for k, v in res.items() if k != "latencies"})
        time.sleep(2)
        rows = [{"pid": p, "cmd": cmd, "rss_before_mb": round(before[p] / 1024, 1),
                 "peak_rss_mb": round(rss_kb(p, "VmHWM") / 1024, 1), "rss_after_mb": round(rss_kb(p, "VmRSS") / 1024, 1)}
                for p, cmd in procs.items()]
    peak = max(r["peak_rss_mb"] for r in rows)
    return {"upload_bytes": len(blob), "rounds": rounds, "processes": rows, "peak_worker_rss_mb": peak,
            "bound_mb": MEMORY_BOUND_GB * 1024, "met": peak <= MEMORY_BOUND_GB * 1024}


def write_memory_md(path: Path, res: Dict[str, Any]) -> None:
    m, a = res["results"], res["args"]
    rows = "\n".join(f"| {r['pid']} | `{r['cmd'][:90]}` | {r['rss_before_mb']:.0f} | **{r['peak_rss_mb']:.0f}** "
                     f"| {r['rss_after_mb']:.0f} |" for r in m["processes"])
    path.write_text(f"""# Aether serving memory under large uploads

Generated by `python benchmarks/serve.py --memory` on {res['when']} ({res['total_s']:.0f} s); {res['machine']}; {res['software']}.
Model {a['model']} ({a['image_size']} px input). Load: {a['big_count']} valid {a['big_side']}x{a['big_side']} PNGs
({m['upload_bytes']:,} bytes each, {a['big_side'] ** 2 / 1e6:.0f} Mpx, under the default pixel limit) POSTed to /predict at once, twice.
Statuses per round: {[r['statuses'] for r in m['rounds']]}; seconds per round: {[r['seconds'] for r in m['rounds']]}.

| pid | process | RSS before MB | peak RSS (VmHWM) MB | RSS after MB |
|---|---|---:|---:|---:|
{rows}

**Peak RSS of any serving process: {m['peak_worker_rss_mb']:.0f} MB** (bound {m['bound_mb']:.0f} MB: {'met' if m['met'] else 'NOT met'}).
""")


def make_model_run(root: Path, args: argparse.Namespace) -> Path:
    """A run folder holding only `model/` (what `aether export` needs), written by Aether's own
    save_model_dir from a freshly built backbone."""
    from aether import registry
    from aether.config.schema import ModelCfg
    from aether.data.transforms import resolve_preprocessing
    from aether.models.saved import save_model_dir

    cfg = ModelCfg(name=args.model, pretrained=False)
    backbone = registry.backbones.get(cfg.provider).load()().create(cfg, args.classes)
    pre = resolve_preprocessing(backbone.data_config, args.image_size, None)
    run = root / "run"
    save_model_dir(run / "model", backbone.model, backbone.info, [f"class_{i}" for i in range(args.classes)], pre)
    return run


def make_photos(folder: Path, n: int, side: int) -> List[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)  # smooth colour fields + noise:
        img = Image.fromarray(base).resize((side, side), Image.Resampling.BICUBIC)  # JPEG sizes like photos
        noise = rng.integers(-20, 20, size=(side, side, 3))
        arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:03d}.jpg"
        Image.fromarray(arr).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def in_process(pred: Any, paths: List[Path], requests: int, batch: int) -> Dict[str, Any]:
    """One round in process: `predict_paths` end to end, then forward passes alone on the same
    images preprocessed beforehand."""
    import torch

    seq = [str(paths[i % len(paths)]) for i in range(requests)]
    t0 = time.perf_counter()
    results, failed = pred.predict_paths(seq, batch_size=batch)
    seconds = time.perf_counter() - t0
    assert not failed and len(results) == requests
    tensors = torch.stack([pred.pre.load(p) for p in seq])
    t0 = time.perf_counter()
    for i in range(0, requests, batch):
        pred.probabilities(tensors[i:i + batch])
    forward_s = time.perf_counter() - t0
    return {"images_per_s": requests / seconds, "forward_only_images_per_s": requests / forward_s}


async def load(url: str, blobs: List[bytes], n: int, concurrency: int) -> Dict[str, Any]:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    latencies: List[float] = []
    statuses: Dict[int, int] = {}

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with sem:
            form = aiohttp.FormData()
            form.add_field("image", blobs[i % len(blobs)], filename=f"p{i}.jpg", content_type="image/jpeg")
            t0 = time.perf_counter()
            async with session.post(f"{url}/predict", data=form) as resp:
                await resp.read()
                latencies.append(time.perf_counter() - t0)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(session, i) for i in range(n)))
        seconds = time.perf_counter() - t0
    pct = lambda q: sorted(latencies)[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"requests": n, "seconds": round(seconds, 3), "req_per_s": round(n / seconds, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1), "p99_ms": round(1000 * pct(0.99), 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "latencies": latencies}


def measure(run: Path, env: Dict[str, str], photos: List[Path], batch: int, args: argparse.Namespace,
            root: Path) -> Dict[str, Any]:
    """Both servers up at once (batching on and off); rounds alternate in-process, on, off, so
    that other load on the machine hits all three alike. Medians over rounds."""
    from aether.deploy.predictor import Predictor
    from aether.deploy.server import BentoServer

    pred = Predictor(run / "model")
    blobs = [p.read_bytes() for p in photos]
    per_round = max(1, args.requests // args.rounds)
    pred.predict_paths([str(p) for p in photos[:batch]], batch_size=batch)  # warm-up
    rows: Dict[str, List[Dict[str, Any]]] = {"in_process": [], "batching_on": [], "batching_off": []}
    with BentoServer(run / "bento", root / "on.log", env={**env, "AETHER_SERVE_BATCHING": "1"}) as on, \
            BentoServer(run / "bento", root / "off.log", env={**env, "AETHER_SERVE_BATCHING": "0"}) as off:
        servers = {"batching_on": on, "batching_off": off}
        for server in servers.values():
            asyncio.run(load(server.url, blobs, args.warmup, args.concurrency))
        for r in range(args.rounds):
            rows["in_process"].append(in_process(pred, photos, per_round, batch))
            for key, server in servers.items():
                rows[key].append(asyncio.run(load(server.url, blobs, per_round, args.concurrency)))
            print(f"[serve] round {r + 1}/{args.rounds}: in-process {rows['in_process'][-1]['images_per_s']:.1f} img/s, "
                  f"on {rows['batching_on'][-1]['req_per_s']:.1f} req/s, off {rows['batching_off'][-1]['req_per_s']:.1f} req/s",
                  flush=True)
    import torch

    med = statistics.median
    out: Dict[str, Any] = {"in_process": {
        "images_per_s": round(med(x["images_per_s"] for x in rows["in_process"]), 2),
        "forward_only_images_per_s": round(med(x["forward_only_images_per_s"] for x in rows["in_process"]), 2),
        "rounds_images_per_s": [round(x["images_per_s"], 2) for x in rows["in_process"]],
        "batch_size": batch, "torch_threads": torch.get_num_threads(), "device": str(pred.device),
        "params": sum(p.numel() for p in pred.model.parameters())}}
    for key in servers:
        lat = sorted(x for row in rows[key] for x in row["latencies"])
        statuses: Dict[str, int] = {}
        for row in rows[key]:
            for k, v in row["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        out[key] = {"req_per_s": round(med(x["req_per_s"] for x in rows[key]), 2),
                    "rounds_req_per_s": [x["req_per_s"] for x in rows[key]],
                    "p50_ms": round(1000 * med(lat), 1), "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
                    "statuses": statuses, "requests": len(lat), "ready_s": round(servers[key].ready_s, 1)}
    out["round_ratios_on"] = [round(a["req_per_s"] / b["images_per_s"], 3)
                              for a, b in zip(rows["batching_on"], rows["in_process"])]
    return out


def export_backends(run: Path, env: Dict[str, str], backends: List[str], root: Path) -> Dict[str, Path]:
    """{backend: a bento folder serving it}: one `aether export backend=B` each, its RUN/bento copied
    aside (each export rewrites RUN/bento; the copies point at their own store versions)."""
    import shutil

    aether = str(BIN / "aether")
    pre = {"onnx": ["format=onnx", "agreement=false"], "openvino": ["format=openvino", "agreement=false"]}
    out: Dict[str, Path] = {}
    for backend in backends:
        for args in ([pre[backend]] if backend in pre else []) + [[f"backend={backend}"]]:
            res = subprocess.run([aether, "export", f"run={run}", *args], env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"aether export {' '.join(args)} failed:\n{res.stdout}{res.stderr}")
        out[backend] = root / f"bento-{backend}"
        shutil.copytree(run / "bento", out[backend])
    return out


def measure_backends(bentos: Dict[str, Path], env: Dict[str, str], photos: List[Path], args: argparse.Namespace,
                     root: Path) -> Dict[str, Any]:
    """Every backend's server up at once; rounds alternate between them under the same load."""
    from contextlib import ExitStack

    from aether.deploy.server import BentoServer

    blobs = [p.read_bytes() for p in photos]
    per_round = max(1, args.requests // args.rounds)
    rows: Dict[str, List[Dict[str, Any]]] = {b: [] for b in bentos}
    with ExitStack() as stack:
        servers = {b: stack.enter_context(BentoServer(d, root / f"{b}.log", env={**env, "AETHER_SERVE_BATCHING": "1"}))
                   for b, d in bentos.items()}
        for server in servers.values():
            asyncio.run(load(server.url, blobs, args.warmup, args.concurrency))
        for r in range(args.rounds):
            for b, server in servers.items():
                rows[b].append(asyncio.run(load(server.url, blobs, per_round, args.concurrency)))
            print(f"[serve] round {r + 1}/{args.rounds}: " + ", ".join(f"{b} {rows[b][-1]['req_per_s']:.1f} req/s"
                                                                  for b in servers), flush=True)
    med = statistics.median
    out: Dict[str, Any] = {}
    for b in bentos:
        lat = sorted(x for row in rows[b] for x in row["latencies"])
        out[b] = {"req_per_s": round(med(x["req_per_s"] for x in rows[b]), 2),
                  "rounds_req_per_s": [x["req_per_s"] for x in rows[b]],
                  "p50_ms": round(1000 * med(lat), 1), "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
                  "non_200": sum(v for row in rows[b] for k, v in row["statuses"].items() if k != "200"),
                  "requests": len(lat)}
    return out


def write_backends_md(path: Path, res: Dict[str, Any]) -> None:
    a, r = res["args"], res["results"]
    base = r.get("torch", next(iter(r.values())))["req_per_s"]
    rows = "\n".join(f"| {b} | **{s['req_per_s']:.1f}** | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} | "
                     f"{s['req_per_s'] / base:.2f}x | {s['non_200']} |" for b, s in r.items())
    path.write_text(f"""# Aether serving backends

`bentoml serve` of one model exported once per backend (`aether export backend=...`), all servers up
at once, {a['requests']} single-image POST /predict per backend in {a['rounds']} alternating rounds, at most
{a['concurrency']} in flight, adaptive batching on, after {a['warmup']} warm-up requests; medians over rounds.
Generated by `python benchmarks/serve.py --backends {' '.join(a['backends'])} --requests {a['requests']} --rounds {a['rounds']}` on {res['when']} ({res['total_s']:.0f} s);
{res['machine']}; {res['software']}. Model {a['model']} ({a['image_size']} px input, random weights), {a['threads']} thread(s)
per serving process.

| backend | req/s | p50 ms | p99 ms | vs torch | non-200 answers |
|---|---:|---:|---:|---:|---:|
{rows}

Per round (req/s): {', '.join(f"{b} {s['rounds_req_per_s']}" for b, s in r.items())}.
""")


def write_md(path: Path, res: Dict[str, Any]) -> None:
    r, a = res["results"], res["args"]
    ip = r["in_process"]
    rows = [f"| in-process batched (`Predictor.predict_paths`, batch {ip['batch_size']}) | **{ip['images_per_s']:.1f}** "
            "| - | - | 1.00x |",
            f"| in-process forward passes only (same images preprocessed beforehand) | {ip['forward_only_images_per_s']:.1f} "
            f"| - | - | {ip['forward_only_images_per_s'] / ip['images_per_s']:.2f}x |"]
    for key, label in (("batching_on", "served, adaptive batching on"), ("batching_off", "served, adaptive batching off")):
        s = r[key]
        rows.append(f"| {label} | **{s['req_per_s']:.1f}** | {s['p50_ms']:.0f} | {s['p99_ms']:.0f} "
                    f"| {s['req_per_s'] / ip['images_per_s']:.2f}x |")
    ratio = res["ratio_batching_on"]
    text = f"""# Aether serving throughput

`bentoml serve` of an `aether export`-ed model vs the in-process batched model on the same images.
Generated by `python benchmarks/serve.py` on {res['when']} ({res['total_s']:.0f} s).

| | |
|---|---|
| machine | {res['machine']} |
| software | {res['software']} |
| model | {a['model']} ({res['params']:,} params, random weights), {a['image_size']} px input, {a['classes']} classes |
| images | {a['images']} generated {a['photo_size']} px JPEG photos, cycled |
| load | {a['requests']} single-image POST /predict per setting in {a['rounds']} rounds that alternate in-process, batching on, batching off (both servers up throughout); at most {a['concurrency']} in flight (asyncio + aiohttp on the same machine), after {a['warmup']} warm-up requests; medians over rounds |
| adaptive batching | max batch {res['batching']['max_batch_size']} (sized at export from {res['batching']['measured_ms_per_image']} ms/image), max latency {res['batching']['max_latency_ms']} ms |
| in-process | doctor check + decode + eval transform + forward in one process, {ip['torch_threads']} torch thread(s), {ip['device']} |
| served | `bentoml serve`: HTTP front end (check, decode, transform) and model worker are two processes, {a['threads']} torch/OpenMP thread(s) each |

| setting | images/s (req/s) | p50 ms | p99 ms | vs in-process |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

Statuses: batching on {r['batching_on']['statuses']}, off {r['batching_off']['statuses']}.
Per round: in-process {ip['rounds_images_per_s']} img/s; batching on {r['batching_on']['rounds_req_per_s']}, off {r['batching_off']['rounds_req_per_s']} req/s; on / in-process {r['round_ratios_on']}.
**Served with adaptive batching / in-process = {ratio:.2f}x** (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'}).
"""
    path.write_text(text)


def describe_machine() -> Dict[str, str]:
    import bentoml
    import timm
    import torch

    from benchmarks.machine import cpu_model, usable_cpus

    return {"machine": f"{cpu_model()}, {usable_cpus()} usable CPU cores, "
                       f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}",
            "software": f"Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
                        f"bentoml {bentoml.__version__}"}


def finish_memory(args: argparse.Namespace, results: Dict[str, Any], t_start: float) -> int:
    res = {"when": _dt.datetime.now().isoformat(timespec="seconds"), "total_s": round(time.perf_counter() - t_start, 1),
           **describe_machine(), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "results": results}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(res, indent=2))
    write_memory_md(args.out_dir / f"{args.name}.md", res)
    print(f"[serve] peak serving-process RSS {results['peak_worker_rss_mb']:.0f} MB "
          f"(bound {results['bound_mb']:.0f} MB) -> {args.out_dir / (args.name + '.md')}", flush=True)
    return 0 if results["met"] else 1


def finish_backends(args: argparse.Namespace, results: Dict[str, Any], t_start: float) -> int:
    res = {"when": _dt.datetime.now().isoformat(timespec="seconds"), "total_s": round(time.perf_counter() - t_start, 1),
           **describe_machine(), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "results": results}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(res, indent=2))
    write_backends_md(args.out_dir / f"{args.name}.md", res)
    print(f"[serve] " + ", ".join(f"{b} {s['req_per_s']:.1f} req/s" for b, s in results.items())
          + f" -> {args.out_dir / (args.name + '.md')}", flush=True)
    return 0 if all(s["non_200"] == 0 for s in results.values()) else 1


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    with tempfile.TemporaryDirectory(prefix="aether-serve-bench-") as tmp:
        root = Path(tmp)
        torch.set_num_threads(args.threads)
        threads = {k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        env = {**os.environ, **threads, "BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        run = make_model_run(root, args)
        photos = make_photos(root / "photos", args.images, args.photo_size)
        if args.backends:
            results = measure_backends(export_backends(run, env, args.backends, root), env, photos, args, root)
            return finish_backends(args, results, t_start)
        out = subprocess.run([str(BIN / "aether"), "export", f"run={run}"], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stdout, out.stderr, file=sys.stderr)
            return 1
        settings = json.loads((run / "bento" / "aether_serve.json").read_text())
        if args.memory:
            return finish_memory(args, measure_memory(run, env, args, root), t_start)
        batch = settings["batching"]["max_batch_size"]
        print(f"[serve] exported {settings['tag']}, max batch {batch}", flush=True)
        results = measure(run, env, photos, batch, args, root)
    ratio = results["batching_on"]["req_per_s"] / results["in_process"]["images_per_s"]
    res = {
        "when": _dt.datetime.now().isoformat(timespec="seconds"),
        "total_s": round(time.perf_counter() - t_start, 1),
        **describe_machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "params": results["in_process"].pop("params"),
        "batching": settings["batching"],
        "results": results,
        "ratio_batching_on": round(ratio, 3),
        "ratio_batching_off": round(results["batching_off"]["req_per_s"] / results["in_process"]["images_per_s"], 3),
        "ratio_forward_only": round(results["batching_on"]["req_per_s"]
                                    / results["in_process"]["forward_only_images_per_s"], 3),
        "target": TARGET,
        "met": ratio >= TARGET,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(res, indent=2))
    write_md(args.out_dir / f"{args.name}.md", res)
    print(f"[serve] served (batching on) / in-process = {ratio:.2f}x (target >= {TARGET}x) -> "
          f"{args.out_dir / (args.name + '.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
