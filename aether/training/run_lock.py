"""One run per run folder (stdlib only: the CLI checks before Hydra writes into the folder).

Two runs started into the same `hydra.run.dir` used to both succeed and leave a folder that
mixed them (one tested the other's best.ckpt). Now the run holds an exclusive `flock` on
`RUN_DIR/.aether-run.lock` for as long as it trains; the kernel drops the lock when the process
ends, however it ends, so a crash never leaves a stale lock. The file's content says who holds
it (pid, host, start time) and, once released, how the run ended (finished / failed).

A second run into the folder is refused with one line when
  * another process holds the lock (a live run), resume= or not;
  * the folder already holds a run - metrics.json (finished) or checkpoints (interrupted) -
    and this run is not `resume=` of that same folder.
A folder whose earlier run failed before writing a checkpoint holds nothing worth keeping and
may be reused. Only global rank 0 takes the lock: the other ranks of a DDP run share rank 0's
folder and write nothing (aether.training.distributed); each Hydra multirun trial has its own
folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from aether.errors import AetherError

log = logging.getLogger("aether")

LOCK_NAME = ".aether-run.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return ""
    return f" (pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')})"


def previous_run(run_dir: Path) -> Optional[str]:
    """What an earlier run left in `run_dir` that a new run would mix with, or None."""
    if (run_dir / "metrics.json").is_file():
        return "a finished run (metrics.json)"
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir() and any(ckpts.glob("*.ckpt")):
        return "an interrupted run (checkpoints/ without metrics.json)"
    return None


def _same(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def _refuse_previous(run_dir: Path, resume: Optional[str]) -> None:
    if resume and _same(Path(resume), run_dir):
        return  # continuing this folder's own run
    found = previous_run(run_dir)
    if found:
        how = "train it further with" if found.startswith("a finished") else "continue it with"
        raise AetherError(f"hydra.run.dir={run_dir} already holds {found}; {how} resume={run_dir} "
                          "trainer.max_epochs=N, or start this run in another folder (hydra.run.dir=NEW_DIR)")


def _busy(run_dir: Path, path: Path) -> AetherError:
    return AetherError(f"hydra.run.dir={run_dir} is in use by another run{_holder(path)}; wait for it to finish, "
                       "or start this run in another folder (hydra.run.dir=NEW_DIR)")


class RunLock:
    """`with RunLock(run_dir, resume):` around everything a run writes into its folder."""

    def __init__(self, run_dir: Path, resume: Optional[str] = None) -> None:
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.path = self.run_dir / LOCK_NAME
        self._fd: Optional[int] = None
        self._info: Dict[str, Any] = {}

    def __enter__(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(self.run_dir, self.path) from None
        self._fd = fd
        try:
            _refuse_previous(self.run_dir, self.resume)
        except BaseException:
            self._release()
            raise
        remove_stale_temporaries(self.run_dir)
        self._info = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "state": "running"}
        self._write(self._info)
        return self

    def _write(self, info: Dict[str, Any]) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)

    def _release(self) -> None:
        if self._fd is not None:
            # LOCK_UN, not just close: a dataloader worker forked meanwhile shares this open file
            # and would otherwise keep the lock until it exits
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._fd is None:
            return
        ended = {"state": "finished"} if exc_type is None else {"state": "failed", "error": str(exc).splitlines()[0]
                                                                 if str(exc) else exc_type.__name__}
        try:
            self._write({**self._info, **ended, "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
        finally:
            self._release()


def remove_stale_temporaries(run_dir: Path) -> List[str]:
    """Delete the `.NAME.tmp-PID` files (aether.training.checkpoint_io) that a save killed midway
    left in checkpoints/. Only the holder of the run lock calls this, so no save of a live run
    can be under way; each removal is logged."""
    ckpts = run_dir / "checkpoints"
    removed = sorted(p.name for p in ckpts.glob(".*.tmp-*") if p.is_file()) if ckpts.is_dir() else []
    for name in removed:
        (ckpts / name).unlink(missing_ok=True)
    if removed:
        log.info("removed %d temporary checkpoint file(s) left by an interrupted save: %s", len(removed),
                 ", ".join(f"checkpoints/{n}" for n in removed))
    return removed


def check_run_folder(args: List[str]) -> None:
    """The CLI's check before Hydra starts. Hydra writes .hydra/ and its log into the run folder
    before any Aether code runs, so a folder another run owns, and a resume whose last.ckpt is
    damaged, are refused here already, leaving the folder untouched (the run itself takes the
    lock later, in RunLock). Multirun trials and folders named with interpolations
    (`${now:...}`, decided by Hydra) are left to RunLock."""
    if any(a in ("-m", "--multirun") for a in args):
        return
    values = {a.split("=", 1)[0]: a.split("=", 1)[1].strip("\"'") for a in args if "=" in a and not a.startswith("-")}
    folder = values.get("hydra.run.dir")
    resume = values.get("resume")
    if resume in ("", "null", "None"):
        resume = None
    if not folder or "${" in folder:
        return
    run_dir = Path(folder)
    path = run_dir / LOCK_NAME
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy(run_dir, path) from None
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    _refuse_previous(run_dir, resume)
    if resume and (Path(resume).expanduser() / "checkpoints" / "last.ckpt").is_file():
        from aether.training.resume_check import check_resumable  # (a missing one: run.resume_config says so)

        check_resumable(Path(resume).expanduser())


def claim(run_dir: Path, resume: Optional[str]) -> Any:
    """The run's hold on its folder: a RunLock on global rank 0, nothing on the other ranks
    (they share rank 0's folder and write nothing into it)."""
    import contextlib

    from aether.ranks import is_secondary_rank

    return contextlib.nullcontext() if is_secondary_rank() else RunLock(run_dir, resume)
