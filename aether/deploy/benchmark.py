"""`aether benchmark run=RUN`: which format to serve on this machine, measured.

For each format x precision this machine can run (PyTorch itself, ONNX Runtime float32 and INT8,
TorchScript, OpenVINO float32 and INT8, TensorRT on CUDA): the file's size, the time to load it,
latency at batch 1 (median and 99th percentile), throughput at the best of a few batch sizes, and
the task's test metric on the run's own test split (classification: accuracy; the metric the
task's codec names, `Codec.agreement`: multilabel map, segmentation miou, detection map_50) - each
export made (and checked for agreement) by `aether.deploy.export_formats`, so a format that
disagrees with PyTorch shows it here too. What is timed is what serving runs: the network and the
codec's finishing of its output (softmax, sigmoid, argmax; detection's NMS).

Writes RUN/benchmark.json and RUN/benchmark.png and recommends the fastest format (batch-1
median) whose test metric is within RECOMMEND_TOLERANCE of PyTorch's.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from aether.errors import AetherError

log = logging.getLogger("aether")

CANDIDATES: Tuple[Tuple[str, Optional[str]], ...] = (
    ("pytorch", None), ("onnx", None), ("onnx", "int8"), ("torchscript", None), ("openvino", None),
    ("openvino", "int8"), ("tensorrt", None), ("tensorrt", "fp16"))
RECOMMEND_TOLERANCE = 0.005  # test metric a faster format may lose against PyTorch and still be recommended
BATCH_SIZES = (1, 8, 32)


def _name(fmt: str, quantize: Optional[str]) -> str:
    return fmt + (f"-{quantize}" if quantize else "")


def unavailable(fmt: str, quantize: Optional[str]) -> str:
    """Why `fmt` cannot run here ('' when it can)."""
    import importlib.util

    if fmt == "tensorrt":
        from aether.deploy.export_formats import tensorrt_ready

        try:
            tensorrt_ready()
        except AetherError as e:
            return str(e)
    if fmt == "openvino" and importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'aether[openvino]')"
    if fmt == "openvino" and quantize == "int8" and importlib.util.find_spec("nncf") is None:
        return "nncf is not installed (pip install 'aether[openvino]')"
    return ""


def load_runner(fmt: str, path: Path) -> Callable[[Any], Any]:
    """A (N, 3, H, W) float32 numpy -> the graph's output ("logits") callable for the exported file,
    loaded fresh."""
    import torch

    if fmt == "onnx":
        from aether.deploy.export_formats import _ort_runner

        return _ort_runner(path)
    if fmt == "torchscript":
        from aether.deploy.export_formats import load_torchscript

        loaded = load_torchscript(path)

        def run_script(x: Any) -> Any:
            with torch.inference_mode():
                return loaded(torch.from_numpy(x)).float().numpy()
        return run_script
    if fmt == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        out = compiled.output(0)
        return lambda x: compiled(x)[out]
    raise AetherError(f"benchmark: no runner for format={fmt} on this machine")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if path.suffix == ".xml":  # OpenVINO: the graph and its weights
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    return path.stat().st_size


def _latency(runner: Callable[[Any], Any], x: Any, iters: int) -> Tuple[float, float]:
    import numpy as np

    for _ in range(3):  # warm-up: first calls allocate and pick kernels
        runner(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _throughput(runner: Callable[[Any], Any], images: Any, batch_sizes: Sequence[int], seconds: float
                ) -> Tuple[float, int]:
    """(best images/s, at which batch size): each batch size runs for about `seconds`."""
    import numpy as np

    best = (0.0, batch_sizes[0])
    for b in batch_sizes:
        x = np.ascontiguousarray(np.resize(images, (b, *images.shape[1:])))
        runner(x)
        n, t0 = 0, time.perf_counter()
        while True:
            runner(x)
            n += b
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        if n / elapsed > best[0]:
            best = (n / elapsed, b)
    return best


def served(codec: Any, fmt: str, runner: Optional[Callable[[Any], Any]], model: Any) -> Callable[[Any], Any]:
    """(N, 3, H, W) float32 numpy -> what the model worker returns (`forward`'s output): PyTorch
    through the codec's `forward`, an exported file through its `onnx_outputs`."""
    import torch

    if fmt == "pytorch":
        def run_torch(x: Any) -> Any:
            with torch.inference_mode():
                return codec.forward(model, torch.from_numpy(x))
        return run_torch
    assert runner is not None
    return lambda x: codec.onnx_outputs(runner, x, codec.options)


def metric_of(codec: Any, serve: Callable[[Any], Any], test: List[Any], saved: Dict[str, Any]) -> Tuple[str, float]:
    """(the task's test metric, its value) for `serve`'s outputs over the test batches."""
    meter = codec.agreement(saved)
    for x, ys in test:
        out = serve(x.numpy())
        meter.update(out, out, ys)
    r = meter.result()
    return r["metric"], float(r["metric_exported"])


def benchmark_run(run: str, formats: Optional[Sequence[str]] = None, batch_sizes: Sequence[int] = BATCH_SIZES,
                  iters: int = 30, seconds: float = 1.0) -> Dict[str, Any]:
    import numpy as np

    from aether.deploy.export_formats import _batches, export_package, run_splits
    from aether.deploy.model_dir import check_run
    from aether.deploy.predictor import Predictor
    from aether.deploy.tasks import make_codec, serve_options
    from aether.tasks.codec import codec_class, model_task

    run_dir = check_run(run)
    model_dir = run_dir / "model"
    task = model_task(json.loads((model_dir / "model.json").read_text()))
    if not codec_class(task).packages:
        raise AetherError(f"benchmark: not available for task={task} runs (run={run}): its codec has no "
                          "agreement check on the test split (Codec.packages)")
    names = [_name(f, q) for f, q in CANDIDATES]
    wanted = list(formats) if formats else names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise AetherError(f"benchmark: formats={','.join(unknown)}: expected some of {', '.join(names)}")
    pred = Predictor(model_dir, device="cpu")
    model = pred.model.merge_and_unload() if hasattr(pred.model, "merge_and_unload") else pred.model
    model.eval()
    codec = make_codec(pred.pre, serve_options(model_dir))
    saved = pred.info.get("task_options") or {}
    test = list(_batches(codec, run_splits(run_dir, pred.classes)["test"]))
    if not test:
        raise AetherError(f"benchmark: run={run}: no usable image in its test split")
    sample = test[0][0][:1].numpy()
    images = np.concatenate([x.numpy() for x, _ in test])[:max(batch_sizes)]
    rows: List[Dict[str, Any]] = []
    for fmt, quantize in CANDIDATES:
        name = _name(fmt, quantize)
        if name not in wanted:
            continue
        why = unavailable(fmt, quantize)
        if why:
            rows.append({"format": name, "available": False, "reason": why})
            continue
        try:
            if fmt == "pytorch":
                path, agreement = model_dir / "model.safetensors", 1.0
            else:
                res = export_package(run, fmt, quantize, on_mismatch="warn")
                path, agreement = Path(res["path"]), res.get("top1_agreement")
            t0 = time.perf_counter()
            serve = served(codec, fmt, None if fmt == "pytorch" else load_runner(fmt, path), model)
            serve(sample)  # loading includes the first call: some runtimes compile lazily
            load_s = time.perf_counter() - t0
            metric, value = metric_of(codec, serve, test, saved)
            p50, p99 = _latency(serve, sample, iters)
            ips, best_b = _throughput(serve, images, batch_sizes, seconds)
        except AetherError as e:
            rows.append({"format": name, "available": False, "reason": str(e)})
            continue
        rows.append({"format": name, "available": True, "path": str(path), "bytes": _size(path),
                     "load_s": round(load_s, 4), "latency_ms_p50": round(p50, 3), "latency_ms_p99": round(p99, 3),
                     "throughput_ips": round(ips, 1), "best_batch": best_b, "metric": metric,
                     metric: round(value, 6), "top1_agreement": agreement})
        log.info("benchmark: %s p50 %.2f ms, %.0f images/s", name, p50, ips)
    result = {"run": str(run_dir), "split": "test", "images": sum(len(ys) for _, ys in test),
              "machine": _machine(), "batch_sizes": list(batch_sizes), "iters": iters, "rows": rows,
              "recommendation": recommend(rows)}
    (run_dir / "benchmark.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    plot(rows, run_dir / "benchmark.png")
    return result


def _metric(row: Dict[str, Any]) -> float:
    """A row's test metric (rows written before rows named it: accuracy)."""
    return float(row[row.get("metric", "accuracy")])


def recommend(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    ok = [r for r in rows if r.get("available")]
    if not ok:
        return {"format": None, "reason": "no format could run here"}
    base = next((_metric(r) for r in ok if r["format"] == "pytorch"), max(_metric(r) for r in ok))
    fit = [r for r in ok if _metric(r) >= base - RECOMMEND_TOLERANCE]
    best = min(fit or ok, key=lambda r: r["latency_ms_p50"])
    return {"format": best["format"], "reason": (
        f"fastest at batch 1 ({best['latency_ms_p50']:.2f} ms median, {best['throughput_ips']:.0f} images/s at batch "
        f"{best['best_batch']}) with test {best.get('metric', 'accuracy')} {_metric(best):.4f}, within "
        f"{RECOMMEND_TOLERANCE:g} of PyTorch's {base:.4f}")}


def _machine() -> Dict[str, Any]:
    import os
    import platform

    import torch

    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def plot(rows: List[Dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("available")]
    if not ok:
        return
    names = [r["format"] for r in ok]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 0.5 * len(ok) + 1.8))
    a.barh(names, [r["latency_ms_p50"] for r in ok], color="#4c72b0")
    a.errorbar([r["latency_ms_p50"] for r in ok], names,
               xerr=[[0] * len(ok), [r["latency_ms_p99"] - r["latency_ms_p50"] for r in ok]], fmt="none", ecolor="k")
    a.set_xlabel("latency at batch 1, ms (bar: median, whisker: p99)")
    b.barh(names, [r["throughput_ips"] for r in ok], color="#55a868")
    b.set_xlabel("throughput, images/s (best batch)")
    for y, r in enumerate(ok):
        b.text(r["throughput_ips"], y, f" {r.get('metric', 'accuracy')} {_metric(r):.3f}", va="center", fontsize=8)
    for ax in (a, b):
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
