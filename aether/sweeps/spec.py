"""The ``sweep:`` section of a run's config (present when `+sweep=NAME` is given)."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Literal, Optional, Tuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# sweep.storage: the Optuna storages a sweep can use (SQLAlchemy URLs)
SQLITE = "sqlite:///"
POSTGRES = ("postgresql://", "postgresql+psycopg://")
STORAGE_HELP = ("use sqlite:///PATH (a file) or postgresql://USER@HOST:PORT/DB (a PostgreSQL server; "
                "postgresql+psycopg:// is the same)")
_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@]*):[^\s]*@", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Any `scheme://user:password@` in `text` as `scheme://user:***@` (for logs and errors)."""
    return _PASSWORD.sub(r"\1:***@", str(text))


def check_storage_url(url: str) -> None:
    """Raises ValueError (the URL's password masked) unless `url` is a storage a sweep can use."""
    low = url.lower()
    if low.startswith(SQLITE):
        path = url[len(SQLITE):]
        if not path or path == ":memory:":
            raise ValueError(f"'{url}' names no database file; {STORAGE_HELP}")
        return
    if low.startswith(POSTGRES):
        return
    raise ValueError(f"unsupported storage '{mask_url(url)}'; {STORAGE_HELP}")


def take_password(url: str) -> Tuple[str, Optional[str]]:
    """A PostgreSQL URL without its password (in `user:password@` or `?password=`), and that password."""
    if not url.lower().startswith(POSTGRES):
        return url, None
    parts = urlsplit(url)
    password = None
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        user, _, password = user.partition(":")
        password = unquote(password)
        netloc = f"{user}@{host}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "password" for k, _ in query):
        password = next(unquote(v) for k, v in query if k == "password")
        query = [(k, v) for k, v in query if k != "password"]
    if password is None:
        return url, None
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment)), password


def secure_storage_arg(arg: str) -> str:
    """`sweep.storage=postgresql://user:pw@...` -> the URL without its password, which goes to the
    PGPASSWORD environment variable instead (libpq reads it; the trials inherit it), so the
    password is written into no config, override list or log."""
    key, eq, url = arg.partition("=")
    quote = url[0] if len(url) > 1 and url[0] in "'\"" and url[-1] == url[0] else ""
    clean, password = take_password(url[1:-1] if quote else url)
    if password is None:
        return arg
    clean = f"{quote}{clean}{quote}"
    os.environ["PGPASSWORD"] = password
    import sys

    print(f"sweep.storage: the password is taken out of the URL ({mask_url(url)}) and passed to the study's "
          "trials as PGPASSWORD; it is saved in no config (set PGPASSWORD or ~/.pgpass yourself to keep it "
          "off the command line)", file=sys.stderr)
    return f"{key}{eq}{clean}"


class SweepCfg(BaseModel):
    """`+sweep=NAME` (conf/sweep/): an Optuna search around the run, resumable from its storage."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("sweep", description="the sweep's name (set by each conf/sweep/ file), shown in its summary")
    n_trials: Optional[int] = Field(20, ge=1, description="completed + pruned trials this sweep (its folder) "
                                    "reaches; null = until the budget runs out")
    budget_minutes: Optional[float] = Field(None, gt=0, description="stop starting trials after this much "
                                            "wall time, in minutes; null = no time limit")
    metric: str = Field("val/acc", description="the validation metric optimised, logged every epoch "
                        "(val/acc, val/loss, ...)")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="whether the metric is "
                                                       "maximised or minimised")
    sampler: Literal["tpe", "random", "cmaes", "qmc"] = Field("tpe", description="Optuna sampler that "
                                                              "proposes trials: tpe | random | cmaes | qmc")
    pruner: Literal["median", "hyperband", "percentile", "none"] = Field(
        "median", description="Optuna pruner that stops unpromising trials early: median | hyperband | "
        "percentile | none")
    pruner_warmup_epochs: int = Field(1, ge=0, description="epochs a trial reports before it may be pruned")
    pruner_startup_trials: int = Field(2, ge=0, description="trials that finish before pruning starts")
    seed: Optional[int] = Field(None, description="the sampler's seed; null = the run's seed")
    params: Dict[str, str] = Field(default_factory=dict, description="the search space: config key -> "
                                   "choice(...) | range(...) | interval(...)")
    start_from_config: bool = Field(True, description="the first trial tries the run's own values (the "
                                    "recipe's, or recipe=auto's)")
    enqueue: List[Dict[str, Any]] = Field(default_factory=list, description="further trials to try first, "
                                          "each a {key: value} mapping")
    # Set by the sweeper for each trial (so a trial's own config says which trial it was):
    trial: Optional[int] = Field(None, description="this trial's number (set by the sweeper)")
    storage: Optional[str] = Field(
        None, description="where the Optuna study is stored: null = SQLite in the sweep folder (optuna.db); "
        "sqlite:///PATH = that SQLite file; postgresql://USER@HOST:PORT/DB = a PostgreSQL server (`pip install "
        "'aether[postgres]'`; the password from PGPASSWORD or ~/.pgpass, or in the URL, which Aether then moves "
        "to PGPASSWORD and never saves), so sweeps on several machines can share one study (see sweep.study)")
    study: Optional[str] = Field(None, description="the Optuna study's name in sweep.storage; null = sweep.name. "
                                 "Sweeps on several machines that give the same storage and study fill one study, "
                                 "each running its own sweep.n_trials")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"expected a logged metric such as 'val/acc' or 'val/loss', got '{v}'")
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            check_storage_url(v)
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: Dict[str, str]) -> Dict[str, str]:
        from aether.sweeps.space import parse_space

        parse_space(v)  # raises ValueError naming the bad entry
        return v

    @model_validator(mode="after")
    def _bounded(self) -> "SweepCfg":
        if self.n_trials is None and self.budget_minutes is None:
            raise ValueError("a sweep needs an end: set sweep.n_trials or sweep.budget_minutes")
        return self
