"""The ``sweep:`` section of a run's config (present when `+sweep=NAME` is given)."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SweepCfg(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    n_trials: Optional[int] = Field(20, ge=1)  # completed + pruned trials to reach; null = until the budget
    budget_minutes: Optional[float] = Field(None, gt=0)  # stop starting trials after this much wall time
    metric: str = "val/acc"  # a validation metric logged every epoch (val/acc, val/loss)
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Literal["tpe", "random", "cmaes", "qmc"] = "tpe"
    pruner: Literal["median", "hyperband", "percentile", "none"] = "median"
    pruner_warmup_epochs: int = Field(1, ge=0)  # epochs reported before a trial may be pruned
    pruner_startup_trials: int = Field(2, ge=0)  # finished trials before pruning starts
    seed: Optional[int] = None  # sampler seed; null = the run's seed
    params: Dict[str, str] = Field(default_factory=dict)  # key -> choice(...)|range(...)|interval(...)
    start_from_config: bool = True  # the first trial tries the run's own values (the recipe's, recipe=auto's)
    enqueue: List[Dict[str, Any]] = Field(default_factory=list)  # further trials to try first: {key: value}
    # Set by the sweeper for each trial (so a trial's own config says which trial it was):
    trial: Optional[int] = None
    storage: Optional[str] = None
    study: Optional[str] = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"expected a logged metric such as 'val/acc' or 'val/loss', got '{v}'")
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
