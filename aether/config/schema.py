"""Typed schema of a run's config.

Each section is a pydantic model with ``extra="forbid"``, so an unknown key is an error that
names the valid keys. Sections that select a registered part (strategy, optimizer, scheduler,
logger, data adapter, backbone provider) carry a ``name`` and are checked against the options
model that the part registered with (see aether.registry / aether.catalog).
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Set, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from aether.sweeps.spec import SweepCfg


class Strict(BaseModel):
    # allow_inf_nan=False: `optimizer.lr=inf` (YAML and Hydra both parse inf/nan as floats) would
    # pass `gt=0` and train to NaN weights; no Aether setting means anything as inf or nan
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class NoOptions(Strict):
    """A part without options of its own."""


# ---------------------------------------------------------------- data


class AugmentCfg(Strict):
    """Training-time augmentation, handed to timm's transform factory.

    The defaults are deliberately light: small datasets are hurt by heavy augmentation.
    """

    scale: Tuple[float, float] = (0.8, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    color_jitter: float = Field(0.0, ge=0)
    auto_augment: Optional[str] = None  # timm string, e.g. "rand-m9-mstd0.5"
    re_prob: float = Field(0.0, ge=0, le=1)  # random erasing

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: Tuple[float, float]) -> Tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("expected 0 < min <= max <= 1")
        return v


class DataCfg(Strict):
    path: Optional[str] = None  # folder, manifest file; null = the embedded digits sample
    format: str = "auto"  # a registered adapter, or auto-detect
    options: Dict[str, Any] = Field(default_factory=dict)  # the adapter's own options
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    image_size: Optional[int] = Field(None, ge=8, le=4096)  # null = the backbone's pretrained_cfg
    crop_pct: Optional[float] = Field(None, gt=0, le=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: Optional[int] = Field(None, ge=1)
    num_workers: Union[int, Literal["auto"]] = "auto"
    cache: Literal["auto", "memory", "disk", "off"] = "auto"  # decoded uint8 image cache (aether.data.cache)
    augment: AugmentCfg = Field(default_factory=AugmentCfg)
    # dataset doctor limits
    max_image_pixels: int = Field(89_478_485, ge=1)  # larger images are refused as decompression bombs
    min_image_side: int = Field(8, ge=1)  # smaller images are refused
    max_archive_bytes: int = Field(20 * 2**30, ge=1)  # zip/tar: total uncompressed size allowed
    max_archive_members: int = Field(1_000_000, ge=1)
    # uncompressed / archive size above which an archive (expanding past 64 MiB) is a decompression
    # bomb: images barely compress (JPEG/PNG ~1x), bombs expand ~1000x
    max_archive_ratio: float = Field(100.0, gt=1)
    # a manifest path or a symlink leading out of the dataset folder is refused (reason outside_root)
    allow_outside_root: bool = Field(False, description="read images outside the dataset folder "
                                     "(manifest paths with .. or elsewhere, symlinks out of the folder)")

    def adapter_options(self) -> Dict[str, Any]:
        """What an adapter's load(path, options) receives: data.options plus allow_outside_root."""
        return {**self.options, "allow_outside_root": self.allow_outside_root}

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v: Union[int, str]) -> Union[int, str]:
        if isinstance(v, int) and v < 0:
            raise ValueError("expected 'auto' or an integer >= 0")
        return v

    @model_validator(mode="after")
    def _fractions(self) -> "DataCfg":
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves too "
                "little to train on; expected a sum below 0.9"
            )
        return self


# ---------------------------------------------------------------- model


class ModelCfg(Strict):
    provider: str = "timm"  # a registered backbone provider
    name: str
    pretrained: bool = False
    weights: Optional[str] = None  # local .safetensors / state-dict file (loaded without pickle)
    drop_rate: float = Field(0.0, ge=0, lt=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    # recompute each block's activations in the backward pass instead of keeping them: ~30% more
    # compute for a fraction of the activation memory (bigger batches / backbones on one GPU)
    grad_checkpointing: bool = False
    kwargs: Dict[str, Any] = Field(default_factory=dict)  # passed to the provider's create call


# ---------------------------------------------------------------- training


class EarlyStoppingCfg(Strict):
    enabled: bool = True
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)


class CheckpointCfg(Strict):
    monitor: str = "val/acc"
    mode: Literal["min", "max"] = "max"


PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "64-true")


class TrainerCfg(Strict):
    max_epochs: int = Field(10, ge=1)
    # stop at the end of the first epoch that ends past this many minutes of training (Lightning's
    # Timer); `+recipe=auto` gives each candidate its share of the budget this way
    max_minutes: Optional[float] = Field(None, gt=0)
    precision: str = "32"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: Union[int, str, List[int]] = "auto"
    strategy: str = "auto"  # Lightning's: auto | ddp | ddp_spawn | fsdp ...
    num_nodes: int = Field(1, ge=1)
    gradient_clip_val: Optional[float] = Field(None, ge=0)
    accumulate_grad_batches: int = Field(1, ge=1)
    limit_train_batches: Union[int, float] = 1.0
    limit_val_batches: Union[int, float] = 1.0
    limit_test_batches: Union[int, float] = 1.0
    log_every_n_steps: int = Field(10, ge=1)
    deterministic: bool = False
    progress: Literal["auto", "rich", "plain", "none"] = "auto"
    compile: bool = False  # torch.compile the model; falls back to eager with a message on failure
    early_stopping: EarlyStoppingCfg = Field(default_factory=EarlyStoppingCfg)
    checkpoint: CheckpointCfg = Field(default_factory=CheckpointCfg)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Union[int, str, List[int]]) -> Union[int, str, List[int]]:
        from aether.config.resources import devices_shape_problem

        problem = devices_shape_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("limit_train_batches", "limit_val_batches", "limit_test_batches")
    @classmethod
    def _limit(cls, v: Union[int, float]) -> Union[int, float]:
        # Lightning reads 0 as "skip this loop" (a run that trains or tests nothing) and a float as
        # a fraction; neither a skipped loop nor a fraction above 1 is a run Aether can report on
        if isinstance(v, bool) or (isinstance(v, int) and v < 1) or (isinstance(v, float) and not 0 < v <= 1):
            raise ValueError("expected a number of batches >= 1 or a fraction in (0, 1]")
        return v

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, v: Any) -> str:
        v = str(v)
        if v not in PRECISIONS:
            raise ValueError(f"expected one of {', '.join(PRECISIONS)}")
        return v


class LossCfg(Strict):
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Union[None, Literal["balanced"], List[float]] = None


class CostCfg(Strict):
    """Price of one device-hour, for the run's transparent cost estimate (edit to your cloud's)."""

    cpu_per_hour: float = Field(0.10, ge=0)
    gpu_per_hour: float = Field(2.50, ge=0)
    currency: str = "USD"


class AutoCfg(Strict):
    """`+recipe=auto`: the budgeted search (aether.sweeps.auto_search), plus one `KEY: reason`
    entry per value it chose (strings, written by the command line)."""

    model_config = ConfigDict(extra="allow")
    search: bool = True  # false: only the doctor's rules of thumb, one run, no candidates
    budget_minutes: Optional[float] = Field(None, gt=0)  # null: from the data size and the hardware
    plan: Dict[str, str] = Field(default_factory=dict)  # candidate -> its overrides (set by the command line)

    @model_validator(mode="after")
    def _reasons_are_text(self) -> "AutoCfg":
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, str):
                raise ValueError(f"auto.{key}: unknown key (auto takes search, budget_minutes, plan)")
        return self


class PartCfg(Strict):
    """A section that selects a registered part; its other keys are the part's options."""

    model_config = ConfigDict(extra="allow")
    name: str


class RunCfg(Strict):
    recipe: str = "default"  # set by each recipe, shown in reports
    # auto (from the dataset doctor's detection) | a registered task (aether list tasks)
    task: str = "auto"
    task_options: Dict[str, Any] = Field(default_factory=dict)  # the task's own options
    seed: int = Field(42, ge=0, le=2**32 - 1)  # numpy's range (Lightning raises a ValueError traceback outside it)
    resume: Optional[str] = None  # a run directory to continue
    offline: bool = False  # true: pretrained weights from the HF cache only, never the network
    data: DataCfg = Field(default_factory=DataCfg)
    model: ModelCfg
    strategy: PartCfg
    optimizer: PartCfg
    scheduler: PartCfg
    trainer: TrainerCfg = Field(default_factory=TrainerCfg)
    logger: PartCfg
    loss: LossCfg = Field(default_factory=LossCfg)
    cost: CostCfg = Field(default_factory=CostCfg)
    sweep: Optional[SweepCfg] = None  # `+sweep=NAME` (conf/sweep/): an Optuna search around this run
    auto: Optional[AutoCfg] = None  # `+recipe=auto`: its search settings, and each chosen value with its reason
    # keys named on the command line (`trainer.max_epochs=10`): defaults fitted to the data
    # (detection, segmentation) leave them alone even when they equal the default
    _explicit: Set[str] = PrivateAttr(default_factory=set)

    def set_by_user(self, key: str, default: Any) -> bool:
        """True when `key` (dotted) was named on the command line or differs from `default`."""
        node: Any = self
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        return key in self._explicit or node != default


# ---------------------------------------------------------------- options of the built-in parts


class FullCfg(Strict):
    layer_decay: Optional[float] = Field(None, gt=0, le=1)  # LLRD: e.g. 0.75; null = one LR for all


class GradualUnfreezeCfg(Strict):
    every_n_epochs: int = Field(1, ge=1)  # unfreeze the next block group every N epochs ...
    milestones: Optional[List[int]] = None  # ... or at these epochs (e.g. [2, 4, 6])
    groups_per_step: int = Field(1, ge=1)  # block groups unfrozen at each step, top-down
    lr_scale: float = Field(0.1, gt=0, le=1)  # LR of newly unfrozen groups, relative to the head's

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: Optional[List[int]]) -> Optional[List[int]]:
        if v is not None and (any(m < 1 for m in v) or sorted(set(v)) != list(v)):
            raise ValueError("expected strictly increasing epochs >= 1")
        return v


class LinearProbeCfg(Strict):
    # logreg: the head starts as a logistic regression solved on the frozen training features
    # (aether.strategies.head_init); random: as the backbone provider initialises it
    head_init: Literal["logreg", "random"] = "logreg"
    logreg_c: Optional[float] = Field(1.0, gt=0)  # its inverse L2 strength (sklearn C); null = chosen on the val split


class LoraCfg(Strict):
    r: int = Field(4, ge=1, le=1024)
    alpha: float = Field(8.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Union[str, List[str]] = "auto"  # auto | [name suffixes] | "regex over module names"
    merge: bool = True  # merge adapters into the weights of the exported model

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
    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class AdamWCfg(Strict):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)


class AdamCfg(AdamWCfg):
    weight_decay: float = Field(0.0, ge=0)


class SGDCfg(Strict):
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)


class CosineCfg(Strict):
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)


class StepCfg(Strict):
    step_size: int = Field(10, ge=1)  # epochs
    gamma: float = Field(0.1, gt=0, le=1)


class PlateauCfg(Strict):
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(2, ge=0)


class OneCycleCfg(Strict):
    pct_start: float = Field(0.25, gt=0, lt=1)
    div_factor: float = Field(25.0, gt=1)
    final_div_factor: float = Field(1e4, gt=1)


class WandbCfg(Strict):
    project: str = "aether"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = Field(default_factory=list)
    mode: Optional[Literal["online", "offline", "disabled"]] = None  # null = offline without API key


class ManifestCfg(Strict):
    path_column: str = "path"
    label_column: str = "label"
    root: Optional[str] = None  # image paths are relative to this (default: the manifest's folder)
