"""A run that never wrote `model/` (interrupted, or its last.ckpt damaged) can still be exported
from `checkpoints/best.ckpt`: the network is rebuilt from the run's config.yaml (validated and
checked like any config from others), the checkpoint's weights are read weights-only, and model/
is written as a finished run would have written it."""

from __future__ import annotations

import logging
from pathlib import Path

from aether.errors import AetherError

log = logging.getLogger("aether")


def model_dir_from_best(run_dir: Path) -> Path:
    import torch
    from omegaconf import OmegaConf

    from aether.config.trust import check_resumed
    from aether.config.validate import validate
    from aether.models.saved import save_model_dir
    from aether.run import prepare

    best = run_dir / "checkpoints" / "best.ckpt"
    raw = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    assert isinstance(raw, dict)
    check_resumed(str(run_dir / "config.yaml"), raw)
    raw.pop("resume", None)
    log.info("%s has no model/: rebuilding it from %s", run_dir, best)
    job = prepare(validate(raw))  # the same network, classes and preprocessing as the run
    try:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        job.module.load_state_dict(state)
    except Exception as exc:  # truncated, pickled code, another network's weights
        raise AetherError(f"{best} cannot be read as this run's weights ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    exported, extra = job.strategy.export(job.module.model, run_dir / "model")
    info = {**job.backbone.info, **extra, **job.task.model_info()}
    save_model_dir(run_dir / "model", exported, info, job.bundle.classes, job.preprocessing)
    return run_dir / "model"
