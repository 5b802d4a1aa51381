"""Launchers a sweep can run on, and what to install for those that are not installed."""

from __future__ import annotations

import importlib.util
import shutil
from typing import List

from aether.errors import AetherError

# launcher options that submit to a SLURM cluster: they need its `sbatch` on PATH
SLURM = ("submitit_slurm", "aether_slurm")
# launcher option -> (the Hydra plugin module it needs, what to install)
NEEDS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher==1.2.0 (an Aether dependency)"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "pip install 'aether[slurm]'"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "pip install 'aether[slurm]'"),
    "aether_slurm": ("hydra_plugins.hydra_submitit_launcher", "pip install 'aether[slurm]'"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "pip install 'aether[ray]'"),
    "aether_ray": ("hydra_plugins.hydra_ray_launcher", "pip install 'aether[ray]'"),
}


def check_launcher(args: List[str]) -> None:
    """A clear error, before anything runs, when `hydra/launcher=NAME` needs a plugin that is missing."""
    for a in args:
        if a.startswith("hydra/launcher="):
            name = a.split("=", 1)[1]
            module, install = NEEDS.get(name, (None, ""))
            if module and importlib.util.find_spec(module) is None:
                raise AetherError(f"hydra/launcher={name} needs the Hydra plugin {module.split('.')[-1]}, which is "
                                  f"not installed: {install}")
            printing = any(x in ("--cfg", "-c", "--info", "-i") for x in args)  # shows the config, submits nothing
            if name in SLURM and not printing and shutil.which("sbatch") is None:
                raise AetherError(f"hydra/launcher={name} submits each trial as a SLURM job, but this machine has no "
                                  "`sbatch` on PATH (not a SLURM login node?); run the sweep where SLURM is, or use "
                                  "hydra/launcher=submitit_local (the same launcher, local processes) or joblib")
