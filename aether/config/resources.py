"""`trainer.devices` against what Lightning accepts and what this machine has (stdlib only).

Lightning turns `devices=N` on CPU into N processes without asking whether there are N CPUs
(`devices=64` on 2 cores starts 63 extra processes and the run hangs) and reports a bad shape
(`devices=0`) as a traceback from deep inside the Trainer. The shape is checked with the rest
of the schema; the count is checked against the CPUs this process may use (the validator,
before anything heavy is imported) and against the visible GPUs (just before the Trainer is
built, when torch is loaded anyway: `aether.training.guards.check_devices`).
"""

from __future__ import annotations

import os
from typing import Any, List, Optional

SHAPE = "expected 'auto', a number of devices >= 1, -1 (every GPU) or a list of GPU indices such as [0, 1]"


def _indices(value: Any) -> Optional[List[int]]:
    """GPU indices of a list or a "0,1" string; None when `value` is neither."""
    if isinstance(value, str) and "," in value:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            return None
        return [int(p) for p in parts]
    if isinstance(value, list):
        return list(value)
    return None


def _count(value: Any) -> Optional[int]:
    """The number in `devices=N` / `devices="N"`; None for "auto", lists and anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def devices_shape_problem(value: Any) -> Optional[str]:
    """Why Lightning would refuse `trainer.devices=value` on any machine, or None."""
    if value == "auto":
        return None
    n = _count(value)
    if n is not None:
        return None if n >= 1 or n == -1 else SHAPE
    idx = _indices(value)
    if idx is None or not idx:
        return SHAPE
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in idx) or len(set(idx)) != len(idx):
        return f"{SHAPE} (each index once, >= 0)"
    return None


def usable_cpus() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def devices_count_problem(accelerator: str, devices: Any, gpus: Optional[int]) -> Optional[str]:
    """Why `trainer.devices` does not fit this machine, or None. `gpus` is the number of visible
    GPUs, or None when unknown (then only an explicit CPU run is checked)."""
    if accelerator == "mps" or devices_shape_problem(devices):
        return None  # MPS is one device Lightning checks itself; a bad shape is reported already
    if accelerator == "auto":
        if gpus is None:
            return None
        accelerator = "gpu" if gpus > 0 else "cpu"
    n, idx = _count(devices), _indices(devices)
    if accelerator == "cpu":
        if devices == "auto":
            return None
        cpus = usable_cpus()
        if n is None or n < 1:
            return ("on CPU each device is one process: expected 'auto' or a number of processes >= 1 "
                    f"(at most {cpus}, the CPUs usable here)")
        if n > cpus:
            return (f"on CPU each device is one process, and {n} processes on the {cpus} CPU(s) usable here would "
                    f"crawl or hang; expected at most {cpus} (or 'auto')")
        return None
    if gpus is None:
        return None
    if gpus == 0:
        return (f"trainer.accelerator={accelerator} but no GPU is visible to this process "
                "(CUDA_VISIBLE_DEVICES, drivers); use trainer.accelerator=cpu or auto")
    if n is not None and n > gpus:
        return f"only {gpus} GPU(s) visible here; expected at most {gpus} (or -1 / 'auto' for all)"
    if idx is not None and max(idx) >= gpus:
        return f"only {gpus} GPU(s) visible here (indices 0..{gpus - 1})"
    return None
