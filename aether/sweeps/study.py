"""The Optuna study of a sweep, shared by the sweeper (which asks it for trials), each trial's
training process (which reports to it and may be pruned: aether.sweeps.trial) and the sweep's
summary: where it is stored, how its pruner and sampler are made, what a trial's score is."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from aether.sweeps.spec import SweepCfg

DB_NAME = "optuna.db"


def storage_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / DB_NAME).resolve()}"


def rdb_storage(url: str) -> Any:
    """Optuna's SQL storage; parallel trials write to one SQLite file, so wait for its lock
    (up to a minute) rather than fail with `database is locked`."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def load_spec(config: DictConfig) -> SweepCfg:
    raw = OmegaConf.to_container(config.sweep, resolve=True) if "sweep" in config else {}
    assert isinstance(raw, dict)
    return SweepCfg(**raw)


def make_pruner(spec: SweepCfg, max_epochs: int) -> Any:
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                           n_warmup_steps=spec.pruner_warmup_epochs)
    if spec.pruner == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=spec.pruner_startup_trials,
                                               n_warmup_steps=spec.pruner_warmup_epochs)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, spec.pruner_warmup_epochs), max_resource=max_epochs)
    return optuna.pruners.NopPruner()


def make_sampler(spec: SweepCfg, seed: int) -> Any:
    import optuna

    seed = spec.seed if spec.seed is not None else seed
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if spec.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(spec: SweepCfg, sweep_dir: Path, max_epochs: int, seed: int, create: bool = True) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = dict(study_name=spec.name, storage=rdb_storage(storage_url(sweep_dir)), pruner=make_pruner(spec, max_epochs))
    if not create:
        return optuna.load_study(**kwargs)
    return optuna.create_study(**kwargs, sampler=make_sampler(spec, seed), direction=spec.direction,
                               load_if_exists=True)


def objective(metrics: dict, metric: str, direction: str) -> Optional[float]:
    """The best value of `metric` over the run's epochs (metrics.json `history`)."""
    values = [row[metric] for row in metrics.get("history", []) if row.get(metric) is not None]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)
