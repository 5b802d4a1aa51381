"""Experiment loggers (registered by name). Each writes inside the run directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from aether.training import logger_options as s

log = logging.getLogger("aether")


def build_csv(run_dir: Path, options: Any, run_name: str) -> Any:
    from aether.training.csv_resume import ResumableCSVLogger

    return ResumableCSVLogger(save_dir=str(run_dir), name="logs", version="")


def build_tensorboard(run_dir: Path, options: Any, run_name: str) -> Any:
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")


def wandb_mode(options: s.WandbCfg) -> str:
    """The configured mode, else WANDB_MODE, else online only when an API key is configured."""
    if options.mode:
        return options.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    netrc = Path(os.path.expanduser("~/.netrc"))
    if not has_key and netrc.is_file():
        try:
            has_key = "api.wandb.ai" in netrc.read_text()
        except OSError:
            pass
    return "online" if has_key else "offline"


def build_wandb(run_dir: Path, options: s.WandbCfg, run_name: str) -> Any:
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode(options)
    if mode == "offline":
        log.info("W&B: offline run in %s/wandb (sync later with `wandb sync`)", run_dir)
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(project=options.project, entity=options.entity, group=options.group, tags=options.tags,
                         name=run_name, save_dir=str(run_dir), mode=mode)
    logger.aether_log_model = options.log_model  # read by aether.reporting.dashboards at the end of the run
    return logger


def close_loggers(trainer: Any) -> None:
    """W&B keeps one global run per process and Lightning's WandbLogger never finishes it, so
    the next run in the same process (a multirun trial, a notebook) would log into this one."""
    for lg in getattr(trainer, "loggers", []):
        if type(lg).__name__ == "WandbLogger" and getattr(lg, "_experiment", None) is not None:
            import wandb

            wandb.finish()
