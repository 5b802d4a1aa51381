"""The options of the built-in fine-tune strategies (`strategy.NAME` keys; `aether list strategy NAME`),
registered with their strategy in aether.catalog."""

from __future__ import annotations

from typing import List, Literal, Optional, Union

from pydantic import Field, field_validator

from aether.config.schema import Strict


class FullCfg(Strict):
    layer_decay: Optional[float] = Field(
        None, gt=0, le=1, description="layer-wise LR decay (LLRD): the head trains at the full LR, each "
        "layer below at this factor times the one above (e.g. 0.75); null = one LR for all")


class GradualUnfreezeCfg(Strict):
    every_n_epochs: int = Field(1, ge=1, description="unfreeze the next block group every this many "
                                "epochs (unless milestones are given)")
    milestones: Optional[List[int]] = Field(None, description="epochs at which the next block group is "
                                            "unfrozen, e.g. [2, 4, 6]; null = every_n_epochs")
    groups_per_step: int = Field(1, ge=1, description="backbone block groups unfrozen at each step, top-down")
    lr_scale: float = Field(0.1, gt=0, le=1, description="learning rate of newly unfrozen groups, "
                            "relative to the head's")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: Optional[List[int]]) -> Optional[List[int]]:
        if v is not None and (any(m < 1 for m in v) or sorted(set(v)) != list(v)):
            raise ValueError("expected strictly increasing epochs >= 1")
        return v


class LinearProbeCfg(Strict):
    # logreg: the head starts as a logistic regression solved on the frozen training features
    # (aether.strategies.head_init); random: as the backbone provider initialises it
    head_init: Literal["logreg", "random"] = Field(
        "logreg", description="how the head starts: logreg (a logistic regression solved on the frozen "
        "training features) | random (the provider's initialisation)")
    logreg_c: Optional[float] = Field(1.0, gt=0, description="head_init=logreg: inverse L2 strength of "
                                      "the logistic regression (sklearn C); null = chosen on the val split")


class LoraCfg(Strict):
    r: int = Field(4, ge=1, le=1024, description="rank of each low-rank adapter (trainable parameters "
                   "grow linearly with it)")
    alpha: float = Field(8.0, gt=0, description="LoRA scaling: each adapter's update is multiplied by "
                         "alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: Union[str, List[str]] = Field(
        "auto", description="layers that get adapters: auto (chosen per backbone family; aether list "
        "lora-targets), a list of module-name suffixes, or a regex over module names")
    merge: bool = Field(True, description="merge the adapters into the weights of the exported model "
                        "(serving then pays nothing for LoRA)")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: Union[str, List[str]]) -> Union[str, List[str]]:
        if isinstance(v, str) and v != "auto":
            import re

            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regex ({exc}); expected auto, a list of names or a regex") from None
        return v


class QLoraCfg(LoraCfg):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base "
                                              "weights (bitsandbytes): nf4 | fp4")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype the 4-bit weights are dequantised to for each matrix multiply")
