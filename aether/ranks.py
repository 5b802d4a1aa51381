"""Which process of a multi-process run this is, from the launchers' environment variables
(Lightning's DDP launcher, torchrun, SLURM). Plain os.environ reads, no torch: the CLI, the
data cache and the run lock ask before anything heavy is imported (aether.training.distributed
has the rest of the multi-process machinery)."""

from __future__ import annotations

import os

RUN_DIR_ENV = "AETHER_RUN_DIR"  # rank 0's run folder, for the ranks Lightning starts


def rank_from_env() -> int:
    """This process's global rank as the launchers announce it (0 when not distributed)."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            if var == "SLURM_PROCID" and int(os.environ.get("SLURM_NTASKS", "1") or 1) <= 1:
                continue
            return int(os.environ[var])
    local, node = os.environ.get("LOCAL_RANK", "0"), os.environ.get("NODE_RANK", "0")
    if local.isdigit() and node.isdigit() and (int(local) or int(node)):
        return int(node) * 1000 + int(local)  # only "non-zero" matters here
    return 0


def _external_launcher() -> bool:
    """Whether torchrun or srun started this process (rather than Lightning's own launcher)."""
    slurm_tasks = os.environ.get("SLURM_NTASKS", "1")
    return bool(os.environ.get("TORCHELASTIC_RUN_ID")) or (slurm_tasks.isdigit() and int(slurm_tasks) > 1
                                                           and "SLURM_PROCID" in os.environ)


def is_secondary_rank() -> bool:
    return rank_from_env() > 0
