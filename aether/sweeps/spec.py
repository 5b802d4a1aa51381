"""The ``sweep:`` section of a run's config (present when `+sweep=NAME` is given)."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SweepCfg(BaseModel):
    """`+sweep=NAME` (conf/sweep/): an Optuna search around the run, resumable from its storage."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("sweep", description="the sweep's name (set by each conf/sweep/ file), shown in its summary")
    n_trials: Optional[int] = Field(20, ge=1, description="completed + pruned trials to reach; null = "
                                    "until the budget runs out")
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
    storage: Optional[str] = Field(None, description="the Optuna storage URL of the study (set by the sweeper)")
    study: Optional[str] = Field(None, description="the Optuna study name (set by the sweeper)")

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
