#!/usr/bin/env python
"""Fine-tune strategies side by side: trainable parameters, adapter size, peak memory, step time.

For each model (default: ViT-B/16 and ConvNeXt-T, random init - shapes are what matter) and each
strategy (full, linear_probe, lora, gradual_unfreeze; qlora only with CUDA), a FRESH subprocess:

  1. composes and validates Aether's real config (`model=... model.pretrained=false strategy=...`),
     builds the backbone through the timm provider and applies the strategy (`strategy.apply`);
  2. counts parameters (`aether.strategies.base.count_params`);
  3. trains a few real steps at the same batch size for every strategy: random images
     (batch, 3, H, W) and labels, cross-entropy, the strategy's own parameter groups through
     Aether's optimizer builder (AdamW from the config), `model.train(); strategy.on_train_mode(model)`;
     memory: CPU - peak RSS (getrusage ru_maxrss, cross-checked with /proc VmHWM) and its
     increase over the RSS right after the model was built; CUDA - torch.cuda.max_memory_allocated;
  4. only then (so it does not count toward the peak) exports through `strategy.export` +
     `save_model_dir`: LoRA's PEFT adapter (`model/adapter/adapter_model.safetensors`), the full
     exported model, and a safetensors file of the trainable parameters alone.

On CPU a second, memory-only subprocess per row repeats steps 1-3 (warm-up + 1 step: the peak
comes in the first step that has optimizer state) with glibc's mmap threshold pinned
(MALLOC_MMAP_THRESHOLD_): glibc otherwise raises the threshold each time a large block is freed,
later activation-sized tensors come from the heap, and freed heap space mostly stays resident -
peak RSS then measures heap retention as much as tensors. With the threshold pinned every large
tensor is its own mapping, returned when freed, so that peak RSS tracks live tensor memory.
Both are reported; --no-allocator-check skips the second run.

gradual_unfreeze is measured in its epoch-0 state (head group only trains; each later epoch
unfreezes one more block group until it trains like `full`).

Results: benchmarks/results/strategies.json and strategies.md.
Targets (issue): LoRA on ViT-B/16 <= 0.8 % trainable and adapter <= 3 MB; LoRA peak training
memory <= 0.7x full at the same batch size.

    python benchmarks/strategies.py                                  # defaults: batch 8, 224 px, 1+3 steps
    python benchmarks/strategies.py --models vit_base --strategies full lora --batch-size 16
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("full", "linear_probe", "lora", "gradual_unfreeze", "qlora")
MB = 1_000_000  # sizes are reported in MB (10^6 bytes), as PEFT's "2.6 MB"; MiB alongside
TARGETS = {"lora_trainable_pct_max": 0.8, "lora_adapter_mb_max": 3.0, "lora_memory_ratio_max": 0.7}
TARGET_MODEL = "vit_base_patch16_224"  # the trainable / adapter targets are about ViT-B/16
# glibc raises its mmap threshold (up to 32 MiB) each time an mmapped block is freed, so later
# activation-sized tensors come from the heap, whose freed space mostly stays resident: peak RSS
# then over-states what the tensors needed. Setting the threshold fixes it (and turns the dynamic
# adjustment off): every large tensor is its own mapping, returned to the OS when freed.
PINNED_MMAP_THRESHOLD = 128 * 1024


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vit_base", "convnext_tiny"],
                   help="Aether model configs (conf/model/NAME.yaml) or timm model names")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES, metavar="NAME",
                   help=f"fine-tune strategies, from {', '.join(STRATEGIES)} (qlora runs only with CUDA)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[8],
                   help="training batch size, the same for every strategy (several: one set of rows per size)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps first (optimizer state is created here)")
    p.add_argument("--image-size", type=int, default=224, help="input size in pixels")
    p.add_argument("--num-classes", type=int, default=10, help="classes of the (random) classification head")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: usable CPU cores)")
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed per (model, strategy) subprocess")
    p.add_argument("--no-allocator-check", dest="allocator_check", action="store_false",
                   help="CPU: skip the second, memory-only subprocess per row run with glibc's mmap threshold pinned "
                        f"(MALLOC_MMAP_THRESHOLD_={PINNED_MMAP_THRESHOLD}), whose peak RSS tracks live tensor memory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="model.grad_checkpointing=true for every row (activations recomputed in backward)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    # internal: one (model, strategy) measurement in this process / the environment probe
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "STRATEGY"), help=argparse.SUPPRESS)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


from machine import cpu_model, usable_cpus  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)


def mem_total_gib() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def proc_status_kib(field: str) -> Optional[int]:
    """VmRSS (current) / VmHWM (peak of this process image) from /proc/self/status, in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def maxrss_kib() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r // 1024) if sys.platform == "darwin" else int(r)  # Linux: KiB; macOS: bytes


def model_overrides(model: str) -> List[str]:
    """A conf/model option by name, else a timm model name over the default model config."""
    if (ROOT / "aether").is_dir():
        from aether.paths import builtin_conf_dir

        if (builtin_conf_dir() / "model" / f"{model}.yaml").is_file():
            return [f"model={model}"]
    return [f"model.name={model}"]


# --------------------------------------------------------------------------------------------
# worker: one (model, strategy) in a fresh process


def probe() -> Dict[str, Any]:
    import lightning
    import peft
    import timm
    import torch

    out: Dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "peft": peft.__version__, "lightning": lightning.__version__, "cuda": torch.cuda.is_available(),
    }
    try:
        import bitsandbytes

        out["bitsandbytes"] = bitsandbytes.__version__
    except Exception:  # not installed, or no usable CUDA build
        out["bitsandbytes"] = None
    if out["cuda"]:
        out["device_name"] = torch.cuda.get_device_name(0)
        out["device_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    return out


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def worker(args: argparse.Namespace, model_arg: str, strategy_name: str, device: str) -> Dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import torch.nn.functional as F

    # every worker imports the same modules before its baseline, whatever its strategy
    import lightning  # noqa: F401  (gradual_unfreeze's callback)
    import peft  # noqa: F401
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from aether import registry
    from aether.config.hydra_setup import compose
    from aether.config.validate import part_options, validate
    from aether.models.saved import save_model_dir
    from aether.strategies.base import count_params

    threads = args.threads or usable_cpus()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    batch_size = args.batch_size[0]
    # memory-only: the peak is reached in the first step that has optimizer state and the previous
    # step's gradients (step 2); no timing, no export
    n_steps = args.warmup + (min(1, args.steps) if args.memory_only else args.steps)
    cuda = device == "cuda"
    dev = torch.device(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rss_after_imports = proc_status_kib("VmRSS")
    overrides = model_overrides(model_arg) + ["model.pretrained=false", "model.weights=null",
                                               f"model.grad_checkpointing={str(args.grad_checkpointing).lower()}",
                                               f"strategy={strategy_name}"]
    cfg = compose(overrides)
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    rc = validate(raw)

    t0 = time.perf_counter()
    backbone = registry.backbones.get(rc.model.provider).load()().create(rc.model, num_classes=args.num_classes)
    info = dict(backbone.info)
    arch = type(backbone.model).__name__
    strategy = registry.strategies.get(rc.strategy.name).load()(part_options(rc.strategy.model_dump(), registry.strategies))
    model = strategy.apply(backbone)
    del backbone
    if cuda:
        model.to(dev)  # (qlora moved itself and quantised on the way)
    build_s = time.perf_counter() - t0
    params = count_params(model)
    extra: Dict[str, Any] = {}
    if strategy_name == "gradual_unfreeze":
        extra["block_groups"] = len(strategy.groups)
        extra["trainable_when_fully_unfrozen"] = int(sum(p.numel() for p in model.parameters()))
    if strategy_name in ("lora", "qlora"):
        extra["lora_target_layers"] = len(strategy.targets)

    opt_entry = registry.optimizers.get(rc.optimizer.name)
    opt_cfg = rc.optimizer.model_dump()
    opt_options = opt_entry.config.model_validate({k: v for k, v in opt_cfg.items() if k != "name"})
    groups = strategy.param_groups(model, getattr(opt_options, "weight_decay", 0.0))

    # baseline: the model that trains exists, nothing of training has been allocated yet
    rss_after_model = proc_status_kib("VmRSS")
    maxrss_after_model = maxrss_kib()
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
        cuda_after_model = torch.cuda.memory_allocated()

    optimizer = opt_entry.load()(groups, opt_options)
    model.train()
    strategy.on_train_mode(model)
    gen = torch.Generator().manual_seed(args.seed)
    step_s: List[float] = []
    losses: List[float] = []
    for i in range(max(2, n_steps) if args.memory_only else n_steps):
        x = torch.randn(batch_size, 3, args.image_size, args.image_size, generator=gen)
        y = torch.randint(0, args.num_classes, (batch_size,), generator=gen)
        sync()
        s0 = time.perf_counter()
        x, y = x.to(dev), y.to(dev)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))  # syncs
        sync()
        step_s.append(time.perf_counter() - s0)
    timed = step_s[args.warmup:] or step_s

    mem: Dict[str, Any] = {
        "rss_after_imports_mib": (rss_after_imports or 0) / 1024,
        "rss_after_model_mib": (rss_after_model or 0) / 1024,
        "peak_rss_mib": maxrss_kib() / 1024,  # getrusage(RUSAGE_SELF).ru_maxrss
        "peak_vmhwm_mib": (proc_status_kib("VmHWM") or 0) / 1024,  # cross-check (this process image only)
        "maxrss_before_training_mib": maxrss_after_model / 1024,
    }
    mem["rss_increase_mib"] = mem["peak_rss_mib"] - mem["rss_after_model_mib"]
    if cuda:
        mem["cuda_after_model_mib"] = cuda_after_model / 2 ** 20
        mem["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
        mem["cuda_increase_mib"] = mem["cuda_peak_mib"] - mem["cuda_after_model_mib"]
        mem["cuda_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2 ** 20
    if args.memory_only:
        return {"status": "ok", "memory": mem, "steps_run": len(step_s), "losses": losses,
                "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}

    # export - after the peak was read, so its copies (LoRA's merge) do not count
    with tempfile.TemporaryDirectory(prefix="aether-strategies-") as tmp:
        out_dir = Path(tmp) / "model"
        out_dir.mkdir()
        e0 = time.perf_counter()
        exported, exp_info = strategy.export(model, out_dir)
        save_model_dir(out_dir, exported, {**info, **exp_info}, classes=[str(i) for i in range(args.num_classes)],
                       preprocessing={})
        export_s = time.perf_counter() - e0
        trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, str(Path(tmp) / "trainable.safetensors"), metadata={"format": "pt"})
        sizes: Dict[str, Any] = {
            "model_safetensors_bytes": (out_dir / "model.safetensors").stat().st_size,
            "trainable_safetensors_bytes": (Path(tmp) / "trainable.safetensors").stat().st_size,
        }
        adapter = out_dir / "adapter"
        if adapter.is_dir():
            sizes["adapter_safetensors_bytes"] = (adapter / "adapter_model.safetensors").stat().st_size
            sizes["adapter_dir_bytes"] = _dir_bytes(adapter)
            sizes["adapter_files"] = sorted(str(f.relative_to(adapter)) for f in adapter.rglob("*") if f.is_file())
        # the number the table shows: the PEFT adapter for LoRA, the trainable weights otherwise
        sizes["adapter_or_trainable_bytes"] = sizes.get("adapter_safetensors_bytes", sizes["trainable_safetensors_bytes"])

    return {
        "model": model_arg, "model_name": rc.model.name, "arch": arch, "strategy": strategy_name,
        "strategy_desc": strategy.describe(), "device": device, "threads": threads, "status": "ok",
        "batch_size": batch_size, "image_size": args.image_size,
        "params": {**params, "trainable_pct": 100 * params["trainable"] / max(1, params["total"]), **extra},
        "memory": mem, "sizes": sizes,
        "time": {"build_s": build_s, "warmup_step_s": step_s[:args.warmup], "step_s": timed,
                 "step_mean_s": statistics.fmean(timed), "step_median_s": statistics.median(timed),
                 "export_s": export_s},
        "losses": losses,
    }


# --------------------------------------------------------------------------------------------
# parent: one subprocess per (model, strategy); it stays free of torch so that the children's
# ru_maxrss is their own (Linux carries the parent's high-water mark into a vfork+exec'd child)


def run_child(extra: List[str], args: argparse.Namespace, timeout: int, batch_size: Optional[int] = None,
              env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aether-strategies-res-") as tmp:
        res = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *extra, "--result", str(res),
               "--batch-size", str(batch_size or args.batch_size[0]), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--image-size", str(args.image_size),
               "--num-classes", str(args.num_classes), "--device", args.device, "--threads", str(args.threads),
               "--seed", str(args.seed)] + (["--grad-checkpointing"] if args.grad_checkpointing else [])
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"status": f"error: timed out after {timeout} s", "wall_s": time.perf_counter() - t0}
        wall = time.perf_counter() - t0
        if p.returncode != 0 or not res.is_file():
            tail = (p.stderr or p.stdout).strip().splitlines()[-15:]
            return {"status": f"error: exit {p.returncode}", "stderr_tail": tail, "wall_s": wall}
        out = json.loads(res.read_text())
        out["wall_s"] = wall
        return out


def fmt_count(n: Optional[int]) -> str:
    return f"{n:,}" if n is not None else "-"


def fmt_bytes(b: Optional[int]) -> str:
    if b is None:
        return "-"
    return f"{b / MB:.2f} MB" if b >= 10 * 1000 else f"{b / 1000:.1f} kB"


def short(r: Dict[str, Any]) -> str:
    return str(r.get("model_name", r["model"])).split(".")[0]


def memory_key(device: str) -> Dict[str, str]:
    if device == "cuda":
        return {"peak": "cuda_peak_mib", "increase": "cuda_increase_mib"}
    return {"peak": "peak_rss_mib", "increase": "rss_increase_mib"}


def full_row(rows: List[Dict[str, Any]], r: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    return next((f for f in rows if f.get("strategy") == "full" and f["status"] == "ok" and f["model"] == r["model"]
                 and f["batch_size"] == r["batch_size"]), None)


def add_ratios(rows: List[Dict[str, Any]], device: str) -> None:
    keys = memory_key(device)
    for r in rows:
        f = full_row(rows, r)
        if r["status"] != "ok" or f is None:
            continue
        r["vs_full"] = {
            "peak": r["memory"][keys["peak"]] / f["memory"][keys["peak"]],
            "increase": r["memory"][keys["increase"]] / max(1e-9, f["memory"][keys["increase"]]),
            "step_time": r["time"]["step_mean_s"] / f["time"]["step_mean_s"],
        }
        if "peak_rss_mib" in r.get("memory_pinned", {}) and "peak_rss_mib" in f.get("memory_pinned", {}):
            r["vs_full"]["pinned_peak"] = r["memory_pinned"]["peak_rss_mib"] / f["memory_pinned"]["peak_rss_mib"]
            r["vs_full"]["pinned_increase"] = (r["memory_pinned"]["rss_increase_mib"]
                                               / max(1e-9, f["memory_pinned"]["rss_increase_mib"]))


def evaluate_targets(rows: List[Dict[str, Any]], device: str) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    ok = [r for r in rows if r["status"] == "ok"]
    vit_lora = [r for r in ok if r["strategy"] == "lora" and short(r) == TARGET_MODEL]
    if vit_lora:
        r = vit_lora[0]
        pct = r["params"]["trainable_pct"]
        out.append({"target": f"LoRA on ViT-B/16: trainable <= {TARGETS['lora_trainable_pct_max']}%",
                    "value": f"{pct:.3f}% ({r['params']['trainable']:,} of {r['params']['total']:,})",
                    "met": pct <= TARGETS["lora_trainable_pct_max"]})
        size = r["sizes"]["adapter_safetensors_bytes"]
        out.append({"target": f"LoRA on ViT-B/16: adapter (adapter_model.safetensors) <= {TARGETS['lora_adapter_mb_max']} MB",
                    "value": f"{size / MB:.2f} MB ({size / 2 ** 20:.2f} MiB; whole adapter dir "
                             f"{r['sizes']['adapter_dir_bytes'] / MB:.2f} MB)",
                    "met": size <= TARGETS["lora_adapter_mb_max"] * MB})
    else:
        out.append({"target": "LoRA on ViT-B/16 (trainable %, adapter size)", "value": "not measured in this run",
                    "met": None})
    keys = memory_key(device)
    limit = TARGETS["lora_memory_ratio_max"]
    for r in ok:
        if r["strategy"] != "lora" or "vs_full" not in r:
            continue
        f = full_row(rows, r)
        assert f is not None
        vf = r["vs_full"]
        what = ("torch.cuda.max_memory_allocated" if device == "cuda" else
                "peak RSS, ru_maxrss, default glibc allocator")
        out.append({"target": f"LoRA peak training memory <= {limit}x full: {short(r)}, batch {r['batch_size']} ({what})",
                    "value": f"{vf['peak']:.3f}x ({r['memory'][keys['peak']]:,.0f} vs {f['memory'][keys['peak']]:,.0f} "
                             f"MiB); increase over the built model {vf['increase']:.3f}x "
                             f"({r['memory'][keys['increase']]:,.0f} vs {f['memory'][keys['increase']]:,.0f} MiB)",
                    "met": vf["peak"] <= limit})
        if "pinned_peak" in vf:
            out.append({"target": f"LoRA peak training memory <= {limit}x full: {short(r)}, batch {r['batch_size']} "
                                  f"(peak RSS, ru_maxrss, MALLOC_MMAP_THRESHOLD_={PINNED_MMAP_THRESHOLD})",
                        "value": f"{vf['pinned_peak']:.3f}x ({r['memory_pinned']['peak_rss_mib']:,.0f} vs "
                                 f"{f['memory_pinned']['peak_rss_mib']:,.0f} MiB); increase over the built model "
                                 f"{vf['pinned_increase']:.3f}x ({r['memory_pinned']['rss_increase_mib']:,.0f} vs "
                                 f"{f['memory_pinned']['rss_increase_mib']:,.0f} MiB)",
                        "met": vf["pinned_peak"] <= limit})
    return out


def write_markdown(path: Path, res: Dict[str, Any]) -> None:
    m, s = res["machine"], res["settings"]
    dev = s["device"]
    keys = memory_key(dev)
    pinned = any("memory_pinned" in r for r in res["rows"])
    peak_label = "peak CUDA alloc" if dev == "cuda" else "peak RSS"
    inc_label = "CUDA alloc increase" if dev == "cuda" else "RSS increase"
    sizes = ", ".join(str(b) for b in s["batch_sizes"])
    lines = [
        "# Fine-tune strategies side by side",
        "",
        f"Generated by `{res['command']}` on {res['timestamp']} ({res['wall_s']:.0f} s). One fresh subprocess per "
        "(model, strategy): Aether's real config (composed + validated), timm backbone (random init, "
        "`model.pretrained=false`), `strategy.apply`, the strategy's own parameter groups with Aether's optimizer "
        "builder (AdamW, config defaults), training steps on random images/labels (cross-entropy; forward, "
        "zero_grad, backward, step), then `strategy.export` + `save_model_dir`.",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {m['cpu_model']}, {m['usable_cpus']} usable CPU cores, {m['mem_total_gib']} GiB RAM"
        + (f"; GPU {m['device_name']} ({m['device_memory_gib']} GiB)" if m.get("device_name") else "; no GPU") + " |",
        f"| software | Python {m['python']}, torch {m['torch']}, timm {m['timm']}, peft {m['peft']}, "
        f"lightning {m['lightning']}, bitsandbytes {m['bitsandbytes'] or 'not installed'} |",
        f"| device | {dev}" + (f", torch threads {s['threads']}; load average {s['load_average_at_start']:.2f} at the "
                              f"start, {s['load_average_at_end']:.2f} at the end (other processes on the machine make "
                              "step times noisy; memory is unaffected)" if dev == "cpu" else "") + " |",
        f"| batch | {sizes} images of {s['image_size']} px, {s['num_classes']} classes; the same batch size for every "
        "strategy |",
        f"| activations | {'recomputed in the backward pass (`model.grad_checkpointing=true`, timm)' if s.get('grad_checkpointing') else 'kept for the backward pass (no gradient checkpointing)'} |",
        f"| steps | {s['warmup']} warm-up + {s['steps']} timed (time per step: mean of the timed steps) |",
        "| memory | " + ("`torch.cuda.max_memory_allocated` over the steps (peak), and its increase over the "
                         "allocation right after the model was built" if dev == "cuda" else
                         "peak RSS of the subprocess, `resource.getrusage(RUSAGE_SELF).ru_maxrss` (includes the "
                         "interpreter, torch/Lightning/PEFT and the model), and its increase over the RSS right after "
                         "the model was built (what training adds: gradients, optimizer state, activations, "
                         "allocator slack)") + " |",
    ]
    if pinned:
        lines.append(f"| pinned | a second, memory-only subprocess per row ({s['warmup']} warm-up + 1 step: the peak "
                     f"comes in the first step with optimizer state) under `MALLOC_MMAP_THRESHOLD_="
                     f"{PINNED_MMAP_THRESHOLD}`: every large tensor is its own mapping, returned to the OS when freed, "
                     "so this peak RSS tracks the peak of live tensor memory instead of glibc's heap retention |")
    head = (f"| model | strategy | batch | trainable | total | trainable % | adapter / trainable weights | "
            f"exported model | {peak_label} | {inc_label} | vs full (peak / increase) | ")
    align = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if pinned:
        head += "peak RSS, pinned | increase, pinned | vs full, pinned (peak / increase) | "
        align += "---:|---:|---:|"
    head += "step time | vs full |"
    align += "---:|---:|"
    lines += ["", head, align]
    ncols = head.count("|") - 1
    for r in res["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {short(r)} | {r['strategy']} | {r['batch_size']} | {r['status']} |" + " |" * (ncols - 4))
            continue
        p, sz, mem, t = r["params"], r["sizes"], r["memory"], r["time"]
        vf = r.get("vs_full", {})
        adapter = fmt_bytes(sz["adapter_or_trainable_bytes"])
        adapter += " (PEFT adapter)" if "adapter_safetensors_bytes" in sz else ""
        cells = [short(r), r["strategy"], str(r["batch_size"]), fmt_count(p["trainable"]), fmt_count(p["total"]),
                 f"{p['trainable_pct']:.3f}%", adapter, fmt_bytes(sz["model_safetensors_bytes"]),
                 f"{mem[keys['peak']]:,.0f} MiB", f"{mem[keys['increase']]:,.0f} MiB",
                 f"{vf['peak']:.2f}x / {vf['increase']:.2f}x" if vf else "-"]
        if pinned:
            mp = r.get("memory_pinned", {})
            if "peak_rss_mib" in mp:
                cells += [f"{mp['peak_rss_mib']:,.0f} MiB", f"{mp['rss_increase_mib']:,.0f} MiB",
                          f"{vf['pinned_peak']:.2f}x / {vf['pinned_increase']:.2f}x" if "pinned_peak" in vf else "-"]
            else:
                cells += [mp.get("status", "-"), "-", "-"]
        cells += [f"{t['step_mean_s']:.2f} s", f"{vf['step_time']:.2f}x" if vf else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in res["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['value']} | {met} |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    path.write_text("\n".join(lines) + "\n")


def notes_for(rows: List[Dict[str, Any]], device: str) -> List[str]:
    ok = [r for r in rows if r["status"] == "ok"]
    notes = [
        "Sizes in MB = 10^6 bytes. 'adapter / trainable weights': LoRA - `model/adapter/adapter_model.safetensors` "
        "written by the strategy's export (LoRA A/B matrices + the classifier head, a PEFT `modules_to_save` "
        "copy); other strategies - a safetensors file of the trainable parameters only. 'exported model': "
        "`model/model.safetensors` (LoRA: merged into the base, so the same size as full).",
        "trainable / total are Aether's `count_params` of the module that trains; for LoRA the total includes "
        "the adapters and PEFT's copy of the head (the frozen original head stays in the model).",
    ]
    gu = [r for r in ok if r["strategy"] == "gradual_unfreeze"]
    if gu:
        seen = {}
        for r in gu:
            seen.setdefault(short(r), r["params"]["block_groups"])
        notes.append("gradual_unfreeze is measured in its epoch-0 state (head group only trains); every later epoch "
                     "unfreezes one more block group, so from then on trainable parameters, memory and step time "
                     "move toward `full` (" + ", ".join(f"{k}: {v} block groups" for k, v in seen.items()) + ").")
    if device == "cpu" and ok:
        imp = [r["memory"]["rss_after_imports_mib"] for r in ok]
        span = f"{min(imp):,.0f}" + (f"-{max(imp):,.0f}" if max(imp) - min(imp) >= 1 else "")
        notes.append(f"Every subprocess imports torch, timm, Lightning, PEFT and Hydra before building the model "
                     f"(RSS {span} MiB after the imports); that is part of every peak RSS, which is why the "
                     "'increase' columns are shown too.")
        for r in ok:
            mem = r["memory"]
            if mem["peak_vmhwm_mib"] and abs(mem["peak_vmhwm_mib"] - mem["peak_rss_mib"]) > 16:
                notes.append(f"{short(r)}/{r['strategy']}: ru_maxrss {mem['peak_rss_mib']:.0f} MiB differs from "
                             f"/proc VmHWM {mem['peak_vmhwm_mib']:.0f} MiB.")
            if mem["peak_rss_mib"] <= mem["maxrss_before_training_mib"] + 1:
                notes.append(f"{short(r)}/{r['strategy']}: the RSS peak was reached while building the model, "
                             "not in training (the training steps fit under it).")
    return notes


def explain_memory(rows: List[Dict[str, Any]], device: str) -> List[str]:
    """Where LoRA's saving comes from, and what eats it, from the measured numbers."""
    out = []
    keys = memory_key(device)
    for r in rows:
        if r.get("strategy") != "lora" or r["status"] != "ok":
            continue
        f = full_row(rows, r)
        if f is None:
            continue
        weights = f["params"]["total"] * 4 / 2 ** 20
        states = 3 * weights  # fp32 gradients + AdamW exp_avg + exp_avg_sq
        name = f"{short(r)}, batch {r['batch_size']}"
        mp, fp = r.get("memory_pinned", {}), f.get("memory_pinned", {})
        text = (f"{name}: the fp32 weights are {weights:,.0f} MiB; full fine-tuning adds their gradients and AdamW's "
                f"two moments, {states:,.0f} MiB, which LoRA does not need. ")
        if "rss_increase_mib" in mp and "rss_increase_mib" in fp:
            saved = fp["rss_increase_mib"] - mp["rss_increase_mib"]
            text += (f"With the mmap threshold pinned (RSS ~ live tensors) training added {fp['rss_increase_mib']:,.0f} "
                     f"MiB for full and {mp['rss_increase_mib']:,.0f} MiB for LoRA (saved {saved:,.0f} MiB). What "
                     "LoRA keeps is the activations saved for the backward pass through every adapted block: they "
                     "grow with the batch size and do not shrink with the number of trainable parameters. ")
            d_full = f["memory"]["peak_rss_mib"] - fp["peak_rss_mib"]
            d_lora = r["memory"]["peak_rss_mib"] - mp["peak_rss_mib"]
            eaten = d_lora - d_full
            text += (f"With glibc's default (dynamic) mmap threshold the peaks were {d_full:+,.0f} MiB (full) and "
                     f"{d_lora:+,.0f} MiB (LoRA) higher (freed blocks kept resident in the heap)")
            if eaten > 32 and eaten > 0.1 * max(1.0, saved):
                text += (": LoRA's forward frees more activation-sized temporaries (per adapted layer the base "
                         "output and the LoRA-B output, added into a new tensor), so heap retention takes "
                         + (f"{eaten:,.0f} MiB of the {saved:,.0f} MiB saving" if eaten < saved else
                            f"{eaten:,.0f} MiB, more than the whole {saved:,.0f} MiB saving")
                         + " in that column.")
            else:
                text += "."
        else:
            text += (f"Training added {f['memory'][keys['increase']]:,.0f} MiB for full and "
                     f"{r['memory'][keys['increase']]:,.0f} MiB for LoRA; LoRA keeps the activations saved for the "
                     "backward pass through every adapted block, which grow with the batch size.")
        out.append(text)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))

    if args.probe or args.worker:
        if args.probe:
            out = probe()
        else:
            import torch

            device = args.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            out = worker(args, args.worker[0], args.worker[1], device)
        args.result.write_text(json.dumps(out, indent=2))
        return 0

    t_start = time.perf_counter()
    env = run_child(["--probe"], args, timeout=300)
    if env.get("status", "").startswith("error"):
        print("environment probe failed:\n" + "\n".join(env.get("stderr_tail", [])), file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if env["cuda"] else "cpu")
    if device == "cuda" and not env["cuda"]:
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    threads = args.threads or usable_cpus()
    pinned = device == "cpu" and args.allocator_check
    pinned_env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(PINNED_MMAP_THRESHOLD)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"strategies benchmark: {', '.join(args.models)} x {', '.join(args.strategies)} on {device}"
          + (f" ({threads} torch threads)" if device == "cpu" else f" ({env.get('device_name')})")
          + f"; batch {', '.join(map(str, args.batch_size))} at {args.image_size} px, {args.warmup} warm-up + "
          f"{args.steps} timed steps" + ("; + a memory-only run with the mmap threshold pinned" if pinned else ""))
    if device == "cpu" and load > 0.5:
        print(f"WARNING: load average {load:.2f} at the start - other processes compete for the CPUs; step times "
              "will be noisy (memory is unaffected)")

    rows: List[Dict[str, Any]] = []
    k = memory_key(device)
    for bs in args.batch_size:
        for model in args.models:
            for strat in args.strategies:
                base = {"model": model, "model_name": model, "strategy": strat, "batch_size": bs}
                label = f"  {model:>14} {strat:<17} b{bs:<3}"
                skip = ("skipped: needs CUDA" if strat == "qlora" and device != "cuda" else
                        "skipped: needs bitsandbytes" if strat == "qlora" and not env.get("bitsandbytes") else None)
                if skip:
                    rows.append({**base, "status": skip})
                    print(f"{label} {skip}", flush=True)
                    continue
                r = {**base, **run_child(["--worker", model, strat], args, args.timeout, bs)}
                rows.append(r)
                if r["status"] != "ok":
                    print(f"{label} {r['status']}\n    " + "\n    ".join(r.get("stderr_tail", [])), flush=True)
                    continue
                line = (f"{label} trainable {r['params']['trainable']:>11,} ({r['params']['trainable_pct']:7.3f}%)  "
                        f"weights {fmt_bytes(r['sizes']['adapter_or_trainable_bytes']):>9}  "
                        f"peak {r['memory'][k['peak']]:6,.0f} MiB (+{r['memory'][k['increase']]:,.0f})  "
                        f"step {r['time']['step_mean_s']:.2f} s")
                if pinned:
                    m = run_child(["--worker", model, strat, "--memory-only"], args, args.timeout, bs, env=pinned_env)
                    r["memory_pinned"] = m["memory"] if m["status"] == "ok" else {"status": m["status"]}
                    r["wall_s"] += m["wall_s"]
                    if m["status"] == "ok":
                        line += f"  pinned peak {m['memory']['peak_rss_mib']:,.0f} (+{m['memory']['rss_increase_mib']:,.0f})"
                    else:
                        line += f"  pinned: {m['status']}"
                print(f"{line}  [{r['wall_s']:.0f} s]", flush=True)

    names = {r["model"]: r["model_name"] for r in rows if r["status"] == "ok"}
    for r in rows:  # skipped / failed rows: the resolved model name from a measured row
        r["model_name"] = names.get(r["model"], r["model_name"])
    add_ratios(rows, device)
    targets = evaluate_targets(rows, device)
    notes = notes_for(rows, device) + explain_memory(rows, device)
    machine = {"cpu_model": cpu_model(), "usable_cpus": usable_cpus(), "cpu_count": os.cpu_count(),
               "mem_total_gib": mem_total_gib(), "platform": platform.platform(),
               "malloc_env": {k2: v for k2, v in os.environ.items() if k2.startswith("MALLOC_")},
               **{k2: v for k2, v in env.items() if k2 not in ("status", "wall_s")}}
    cli = list(sys.argv[1:] if argv is None else argv)
    res = {
        "command": "python benchmarks/strategies.py" + "".join(" " + shlex.quote(a) for a in cli),
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t_start,
        "machine": machine,
        "settings": {"device": device, "threads": threads, "batch_sizes": args.batch_size,
                     "image_size": args.image_size, "num_classes": args.num_classes, "warmup": args.warmup,
                     "grad_checkpointing": args.grad_checkpointing,
                     "steps": args.steps, "seed": args.seed, "models": args.models, "strategies": args.strategies,
                     "allocator_check": pinned, "pinned_mmap_threshold": PINNED_MMAP_THRESHOLD if pinned else None,
                     "load_average_at_start": load,
                     "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0},
        "targets_spec": TARGETS,
        "targets": targets,
        "notes": notes,
        "rows": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "strategies.json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(args.out_dir / "strategies.md", res)
    print("targets:")
    for t in targets:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        print(f"  {t['target']}: {t['value']} - {met}")
    print(f"wrote {args.out_dir / 'strategies.json'} and strategies.md ({res['wall_s']:.0f} s)")
    failed = [r for r in rows if r["status"].startswith("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
