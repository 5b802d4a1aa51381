"""The process entry points of training, above the road (aether.run) and the searches that
drive it (aether.sweeps): Hydra's task function `train`, and the entry of ranks > 0 of a
multi-process run. They live here, not in aether.run or aether.training.distributed, so that
nothing below them imports them back (no import cycles; see ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("aether")


def train(cfg: DictConfig) -> float:
    """Run one training job described by a composed Hydra config; return the best val accuracy."""
    from hydra.core.hydra_config import HydraConfig

    from aether.config.validate import drop_foreign_options, typed_keys, validate
    from aether.run import fit_and_report, resume_config
    from aether.sweeps import auto_search

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    if raw.get("resume"):
        raw = resume_config(str(raw["resume"]), list(hc.overrides.task))

    # a recipe's options of a part the command line switched away from; a resumed run's
    # config.yaml had them dropped when it was written, and is taken as it is
    switched = [] if raw.get("resume") else drop_foreign_options(raw, typed_keys(hc.overrides.task))
    from aether.sweeps.trial import multirun_context

    run_name = multirun_context(raw, hc, run_dir)  # sweeps: W&B group per sweep, a name per trial
    rc = validate(raw)
    rc._explicit = {o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task}
    from aether.config.hydra_setup import shadowed_choices

    notes = [] if raw.get("resume") else shadowed_choices(dict(hc.runtime.choices))
    for note in notes:  # a user file under a built-in name is used, never silently
        log.warning("%s (rename it to use both)", note)
    for note in switched:  # and so is a dropped option: config.yaml says so too
        log.warning("%s", note)
    notes += switched

    if auto_search.wanted(rc, raw):  # recipe=auto: measure the planned candidates, finish the best
        return auto_search.search(rc, raw, run_dir, list(hc.overrides.task), run_name, notes)
    return fit_and_report(rc, raw, run_dir, run_name=run_name, notes=notes)


def run_secondary_rank(args: List[str]) -> int:
    """Train as rank > 0: rank 0's config and folder, no Hydra, no files written."""
    from omegaconf import OmegaConf

    from aether.config.validate import validate
    from aether.run import fit_and_report
    from aether.ranks import RUN_DIR_ENV, _external_launcher

    # torchrun / srun never pass rank 0's folder (their ranks start together, not from rank 0): a
    # value seen there was left in the environment by something else and must not be trusted
    shared = None if _external_launcher() else os.environ.get(RUN_DIR_ENV)
    if shared:
        run_dir = Path(shared)
        loaded = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        assert isinstance(loaded, dict)
        raw: Dict[str, Any] = loaded
    else:  # started by torchrun / srun: same command line as rank 0
        from aether.config import hydra_setup, preflight
        from aether.run import resume_config

        args = preflight.rewrite_data_shorthand(args)
        overrides = [a for a in args if not a.startswith("-") and "=" in a]
        dirs = [o.split("=", 1)[1].strip("\"'") for o in overrides if o.startswith("hydra.run.dir=")]
        raw, _ = hydra_setup.compose_run([o for o in overrides if not o.startswith("hydra.")])
        if raw.get("resume"):
            raw = resume_config(str(raw["resume"]), [o for o in overrides if not o.startswith("hydra.")])
        # checkpoints go where rank 0 says (ModelCheckpoint broadcasts its folder); this path
        # only names the run, nothing is created here
        run_dir = Path(dirs[0] if dirs else (raw.get("resume") or "outputs/rank-0-decides"))
    rc = validate(raw)
    fit_and_report(rc, raw, run_dir, run_name=f"{rc.recipe}-{run_dir.name}")
    return 0
