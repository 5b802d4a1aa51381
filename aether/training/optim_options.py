"""The options of the built-in optimizers and LR schedulers (`optimizer.*`, `scheduler.*`; `aether list
optimizer NAME`), registered with them in aether.catalog."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, Tuple, Union

from pydantic import BeforeValidator, Field

from aether.config.schema import Strict


# lr=auto: Lightning's LR range test before training (aether.training.tuning); the rate found is
# what RUN/config.yaml records, with the request in a comment
LR_HELP = "; auto = Lightning's LR range test picks it before training (this default if it finds none)"


def _positive_or_auto(v: Any) -> Union[float, str]:
    """One check before the union's own (which would report one error per member: `lr=inf` would
    be two problems, `optimizer.lr.float` and `optimizer.lr`): 'auto' or a finite number > 0."""
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    try:
        number = float(v) if not isinstance(v, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected 'auto' or a finite number greater than 0, got {v!r}")
    return number


Lr = Annotated[Union[float, Literal["auto"]], BeforeValidator(_positive_or_auto)]


class AdamWCfg(Strict):
    lr: Lr = Field(1e-3, description="peak learning rate (the scheduler scales it)" + LR_HELP)
    weight_decay: float = Field(0.05, ge=0, description="decoupled weight decay; norms and biases get none")
    betas: Tuple[float, float] = Field((0.9, 0.999), description="[beta1, beta2]: decay rates of the "
                                       "gradient's running mean and of its square's")
    eps: float = Field(1e-8, gt=0, description="added to the denominator for numerical stability")


class AdamCfg(AdamWCfg):
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty added to the gradients (classic Adam); "
                                "norms and biases get none")


class SGDCfg(Strict):
    lr: Lr = Field(0.01, description="peak learning rate (the scheduler scales it)" + LR_HELP)
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum factor; 0 = plain SGD")
    nesterov: bool = Field(True, description="Nesterov momentum (only when momentum > 0)")
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty added to the gradients; norms and "
                                "biases get none")


class CosineCfg(Strict):
    warmup_epochs: float = Field(0.0, ge=0, description="epochs (fractions allowed) of linear warm-up "
                                 "from near zero to the optimizer's lr")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final learning rate, as a fraction of the "
                                "optimizer's lr")


class StepCfg(Strict):
    step_size: int = Field(10, ge=1, description="epochs between two reductions of the learning rate")
    gamma: float = Field(0.1, gt=0, le=1, description="factor the learning rate is multiplied by at each step")


class PlateauCfg(Strict):
    monitor: str = Field("val/loss", description="the validation metric watched")
    mode: Literal["min", "max"] = Field("min", description="whether lower (min) or higher (max) values of "
                                        "the monitored metric are better")
    factor: float = Field(0.1, gt=0, lt=1, description="factor the learning rate is multiplied by at each "
                          "reduction")
    patience: int = Field(2, ge=0, description="epochs without improvement before the learning rate is reduced")


class OneCycleCfg(Strict):
    pct_start: float = Field(0.25, gt=0, lt=1, description="share of the training steps spent rising to "
                             "the peak (the optimizer's lr)")
    div_factor: float = Field(25.0, gt=1, description="the starting learning rate is the peak divided by this")
    final_div_factor: float = Field(1e4, gt=1, description="the final learning rate is the starting one "
                                    "divided by this")
