"""Machine facts the benchmark result files record (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]  # the checkout the benchmarks measure (on PYTHONPATH of their runs)


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pin(cpus: int):  # type: ignore[no-untyped-def]
    """preexec_fn: the subprocess (and its data-loader workers) on the first `cpus` usable cores."""
    def pin() -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])
    return pin


def _env(cpus: int) -> Dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=str(cpus),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    return env


def spawn(cmd: List[str], log: Path, cpus: int, kill_after: float) -> Dict[str, Any]:
    """Run cmd, stdout+stderr to log; kill its whole process group after kill_after seconds."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(cpus), cwd=str(ROOT),
                                preexec_fn=_pin(cpus), start_new_session=True)
        try:
            rc = proc.wait(timeout=kill_after)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            killed = True
    return {"rc": rc, "killed": killed, "seconds": round(time.perf_counter() - t0, 1)}


def tail(log: Path, n: int = 12) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
