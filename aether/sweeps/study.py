"""The Optuna study of a sweep, shared by the sweeper (which asks it for trials), each trial's
training process (which reports to it and may be pruned: aether.sweeps.trial) and the sweep's
summary: where it is stored, how its pruner and sampler are made, what a trial's score is.

The storage is SQLite in the sweep folder unless `sweep.storage` names another SQLite file or a
PostgreSQL server (psycopg 3, the `postgres` extra), where sweeps on several machines can fill one
study (`sweep.study`): each sweep then tells its own trials by the `sweeper` user attribute."""

from __future__ import annotations

import os
import socket
import time
import zlib
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from aether.errors import AetherError
from aether.sweeps.spec import POSTGRES, SweepCfg, mask_url

DB_NAME = "optuna.db"
CONNECT_TIMEOUT_S = 5  # a PostgreSQL server that does not answer fails the sweep in seconds
SWEEPER_ATTR = "sweeper"  # user attribute: which sweep (host:folder) asked the trial


def storage_url(spec: SweepCfg, sweep_dir: Path) -> str:
    """The study's storage: `sweep.storage`, or SQLite in the sweep folder."""
    return spec.storage or f"sqlite:///{(sweep_dir / DB_NAME).resolve()}"


def study_name(spec: SweepCfg) -> str:
    return spec.study or spec.name


def is_shared(spec: SweepCfg, sweep_dir: Path) -> bool:
    """Whether the study may hold other sweeps' trials (a storage outside this sweep's folder)."""
    return storage_url(spec, sweep_dir) != f"sqlite:///{(sweep_dir / DB_NAME).resolve()}"


def sweeper_id(sweep_dir: Path) -> str:
    return f"{socket.gethostname()}:{sweep_dir.resolve()}"


def sqlalchemy_url(url: str) -> str:
    """postgresql:// means psycopg 3 (SQLAlchemy alone would pick psycopg2)."""
    if url.lower().startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def rdb_storage(url: str) -> Any:
    """Optuna's SQL storage. SQLite: parallel trials write to one file, so wait for its lock (up to
    a minute) rather than fail with `database is locked`. PostgreSQL: psycopg 3, a connect timeout of
    a few seconds, and a clear error when the server cannot be reached."""
    import optuna

    given, url = url, sqlalchemy_url(url)
    if not url.lower().startswith(POSTGRES):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise AetherError(f"sweep.storage={mask_url(given)} needs the PostgreSQL driver psycopg 3, which is not "
                          "installed: pip install 'aether[postgres]'") from None
    import sqlalchemy.exc

    kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except sqlalchemy.exc.OperationalError as err:
            reason = " ".join(str(getattr(err, "orig", None) or err).split())
            hint = "" if os.environ.get("PGPASSWORD") or "password" not in reason else \
                " (give the password as PGPASSWORD, in ~/.pgpass or in the URL)"
            raise AetherError(f"sweep.storage={mask_url(given)}: cannot open the study's PostgreSQL database: "
                              f"{mask_url(reason)}{hint}") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # sweeps starting together on an empty database race to create Optuna's tables: retry
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


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
    kwargs = dict(study_name=study_name(spec), storage=rdb_storage(storage_url(spec, sweep_dir)),
                  pruner=make_pruner(spec, max_epochs))
    if not create:
        return optuna.load_study(**kwargs)
    if is_shared(spec, sweep_dir):  # sweeps on several machines: each its own proposals, not the same ones
        seed = (spec.seed if spec.seed is not None else seed) + zlib.crc32(sweeper_id(sweep_dir).encode()) % 100_000
        spec = spec.model_copy(update={"seed": seed})
    study = optuna.create_study(**kwargs, sampler=make_sampler(spec, seed), direction=spec.direction,
                                load_if_exists=True)
    if study.direction.name.lower() != spec.direction:
        raise AetherError(f"study '{study_name(spec)}' in sweep.storage={mask_url(storage_url(spec, sweep_dir))} "
                          f"{study.direction.name.lower()}s; this sweep's sweep.direction is {spec.direction}: "
                          "give another sweep.study")
    return study


def is_own(trial: Any, spec: SweepCfg, sweep_dir: Path) -> bool:
    """Whether this sweep asked `trial` (trials of a study in the sweep folder that predate the
    attribute are its own too)."""
    who = trial.user_attrs.get(SWEEPER_ATTR)
    if who is None:
        return not is_shared(spec, sweep_dir)
    return who == sweeper_id(sweep_dir)


def objective(metrics: dict, metric: str, direction: str) -> Optional[float]:
    """The best value of `metric` over the run's epochs (metrics.json `history`)."""
    values = [row[metric] for row in metrics.get("history", []) if row.get(metric) is not None]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)
