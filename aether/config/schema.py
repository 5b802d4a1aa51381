"""Typed schema of a run's config.

Each section is a pydantic model with ``extra="forbid"``, so an unknown key is an error that
names the valid keys. Sections that select a registered part (strategy, optimizer, scheduler,
logger, data adapter, backbone provider) carry a ``name`` and are checked against the options
model that the part registered with (see aether.registry / aether.catalog).
Those options models live beside their part: aether/strategies/options.py,
aether/training/optim_options.py and logger_options.py, aether/data/formats/options.py, each
task's aether/tasks/<task>/options.py; this module holds the run's own sections.

Every field carries a ``description=`` (what it holds, its units, what null or ``auto`` means):
`aether list data`, `aether list strategy lora` ... print them (aether.listing), and a test fails
when a new option comes without one. Comments next to a field keep the *why* of a choice.
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


# the first dash-separated part of a timm auto-augment string: timm.data.create_transform's
# RandAugment (rand), AugMix (augmix) and AutoAugment policies (timm.data.auto_augment)
AUTO_AUGMENT_KINDS = ("rand", "augmix", "original", "originalr", "v0", "v0r", "3a")


class AugmentCfg(Strict):
    """Training-time augmentation, handed to timm's transform factory.

    The defaults are deliberately light: small datasets are hurt by heavy augmentation.
    """

    scale: Tuple[float, float] = Field(
        (0.8, 1.0), description="[min, max] area of the random resized crop, as a fraction of the image")
    ratio: Tuple[float, float] = Field(
        (3 / 4, 4 / 3), description="[min, max] aspect ratio (width / height) of the random resized crop")
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    color_jitter: float = Field(0.0, ge=0, description="strength of brightness/contrast/saturation jitter; 0 = none")
    auto_augment: Optional[str] = Field(
        None, description="timm auto-augment policy string: rand-... (RandAugment, e.g. rand-m9-mstd0.5; "
        "TrivialAugment as rand-n1-m10-mstd101-inc1-p1), augmix-... (e.g. augmix-m3-w3) or an AutoAugment "
        "policy (original, originalr, v0, v0r, 3a); null = none")
    re_prob: float = Field(0.0, ge=0, le=1, description="probability of random erasing (a random box blanked out)")
    # Mixup / CutMix (timm.data.Mixup) mix two training images and their labels into soft targets
    # (single-label classification only: other tasks refuse them, aether.tasks.base.Task.check_augment).
    # Validation and test see clean images and score plain cross-entropy.
    mixup: float = Field(0.0, ge=0, description="Mixup's Beta(alpha, alpha): blends two training images and "
                         "their labels (0.2-0.8 usual); 0 = off. Classification only")
    cutmix: float = Field(0.0, ge=0, description="CutMix's Beta(alpha, alpha): pastes a box of one training image "
                          "into another, labels weighted by area (1.0 usual); 0 = off. Classification only")
    mixup_prob: float = Field(1.0, ge=0, le=1, description="probability that a batch (or pair/element, "
                              "see mixup_mode) is mixed at all when mixup or cutmix is on")
    mixup_switch_prob: float = Field(0.5, ge=0, le=1, description="with both mixup and cutmix on: the "
                                     "probability of CutMix instead of Mixup for a mixed batch")
    mixup_mode: Literal["batch", "pair", "elem"] = Field(
        "batch", description="what one mixing draw covers: batch (one lambda per batch), pair (per pair of "
        "images) or elem (per image)")
    mixup_off_epoch: Optional[int] = Field(
        None, ge=1, description="epoch (counted from 0) from which mixing stops, so the last epochs train on "
        "clean images; null = mix in every epoch")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: Tuple[float, float]) -> Tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("expected 0 < min <= max <= 1")
        return v

    @field_validator("auto_augment")
    @classmethod
    def _auto_augment(cls, v: Optional[str]) -> Optional[str]:
        # timm reads the rest of the string when the transform is built (aether.data.transforms)
        if v is not None and v.split("-")[0] not in AUTO_AUGMENT_KINDS:
            raise ValueError(f"'{v}' is no timm policy: it starts with one of {', '.join(AUTO_AUGMENT_KINDS)} "
                             "(e.g. rand-m9-mstd0.5-inc1, augmix-m3-w3, original; TrivialAugment: data/augment=trivialaugment); "
                             "null = none")
        return v


class DataCfg(Strict):
    """Where the images come from, how they are split, loaded and augmented, and the dataset doctor's limits."""

    path: Optional[str] = Field(
        None, description="the dataset: a folder, a CSV/JSONL manifest, an annotation file or a zip/tar "
        "archive (`data=PATH` sets it); null = the embedded digits sample")
    format: str = Field("auto", description="dataset format: auto (detected by the dataset doctor), a "
                        "registered adapter (aether list adapters) or an annotation format (coco, yolo, voc, masks)")
    options: Dict[str, Any] = Field(default_factory=dict, description="the adapter's own options "
                                    "(aether list adapter NAME), e.g. a manifest's column names")
    val_fraction: float = Field(0.15, ge=0, lt=1, description="share of the images held out for validation "
                                "(seeded, stratified split; ignored when the data comes pre-split)")
    test_fraction: float = Field(0.15, ge=0, lt=1, description="share of the images held out for the final "
                                 "test (seeded, stratified split; ignored when the data comes pre-split)")
    image_size: Optional[int] = Field(None, ge=8, le=4096, description="side of the square network input, "
                                      "in pixels; null = the backbone's pretrained input size")
    crop_pct: Optional[float] = Field(None, gt=0, le=1, description="evaluation centre crop: resize to "
                                      "image_size / crop_pct, then crop; null = the backbone's pretrained crop_pct")
    # auto: Lightning's batch-size scaler on CUDA, a fixed rule on CPU (aether.training.tuning);
    # the number found is what RUN/config.yaml records, with the request in a comment
    batch_size: Union[int, Literal["auto"]] = Field(
        32, description="training images per batch (per device); auto = the largest that fits on a CUDA "
        "device (Lightning's batch-size scaler, binsearch), on CPU 64 for inputs up to 64 px, else 32")
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle", description="order of the training images: shuffle (each image once per epoch) | balanced "
        "(draws with replacement, weight 1/count of its class: every class equally often; "
        "classification only)")
    eval_batch_size: Optional[int] = Field(None, ge=1, description="images per validation/test batch; "
                                           "null = 2 x batch_size")
    num_workers: Union[int, Literal["auto"]] = Field(
        "auto", description="data-loader worker processes; auto = none for small datasets (under 2,000 "
        "images), else up to 8")
    cache: Literal["auto", "memory", "disk", "off"] = Field(
        "auto", description="decode and resize each image once into a uint8 cache (aether.data.cache): "
        "auto (= disk) | memory | disk | off")
    augment: AugmentCfg = Field(default_factory=AugmentCfg, description="training-time augmentation "
                                "(preset with data/augment=light|none|strong|randaugment|trivialaugment|augmix)")
    # dataset doctor limits
    max_image_pixels: int = Field(89_478_485, ge=1, description="images with more pixels are refused as "
                                  "decompression bombs (Pillow's default limit)")
    min_image_side: int = Field(8, ge=1, description="images with a shorter side, in pixels, are refused")
    max_archive_bytes: int = Field(20 * 2**30, ge=1, description="zip/tar datasets: the most uncompressed "
                                   "bytes allowed in total (default 20 GiB)")
    max_archive_members: int = Field(1_000_000, ge=1, description="zip/tar datasets: the most files allowed")
    # uncompressed / archive size above which an archive (expanding past 64 MiB) is a decompression
    # bomb: images barely compress (JPEG/PNG ~1x), bombs expand ~1000x
    max_archive_ratio: float = Field(100.0, gt=1, description="zip/tar datasets: an archive that expands "
                                     "more than this many times its size (once past 64 MiB) is refused as a bomb")
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

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: Union[int, str]) -> Union[int, str]:
        if isinstance(v, int) and v < 1:
            raise ValueError("expected 'auto' or an integer >= 1")
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
    """The backbone network, built by a registered provider (`model=PRESET` picks one of conf/model/)."""

    provider: str = Field("timm", description="the backbone provider that builds the network "
                          "(aether list backbones)")
    name: str = Field(..., description="the provider's model name, e.g. a timm name such as resnet18 "
                      "(`model=PRESET` sets it; aether list models)")
    pretrained: bool = Field(False, description="start from the provider's pretrained weights "
                             "(downloaded once into the Hugging Face cache)")
    weights: Optional[str] = Field(None, description="a local .safetensors or state-dict file to start "
                                   "from (loaded without pickle); null = none")
    drop_rate: float = Field(0.0, ge=0, lt=1, description="dropout probability before the classifier head")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="stochastic depth: probability of skipping "
                                  "a residual block in training (backbones that support it)")
    # recompute each block's activations in the backward pass instead of keeping them: ~30% more
    # compute for a fraction of the activation memory (bigger batches / backbones on one GPU)
    grad_checkpointing: bool = Field(False, description="recompute block activations in the backward pass: "
                                     "less activation memory for about 30% more compute")
    kwargs: Dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments passed to "
                                   "the provider's create call (timm.create_model)")


# ---------------------------------------------------------------- training


class EarlyStoppingCfg(Strict):
    """Stop training when a validation metric stops improving (Lightning's EarlyStopping)."""

    enabled: bool = Field(True, description="stop training when the monitored metric stops improving")
    monitor: str = Field("val/loss", description="the validation metric watched (a task may substitute its "
                         "own while this is the default)")
    mode: Literal["min", "max"] = Field("min", description="whether lower (min) or higher (max) values of "
                                        "the monitored metric are better")
    patience: int = Field(5, ge=1, description="epochs without improvement before training stops")
    min_delta: float = Field(0.0, ge=0, description="smallest change of the metric that counts as an improvement")


class CheckpointCfg(Strict):
    """Which epoch's weights are kept as checkpoints/best.ckpt (checkpoints/last.ckpt is always the last)."""

    monitor: str = Field("val/acc", description="the validation metric that picks the best checkpoint "
                         "(a task may substitute its own while this is the default)")
    mode: Literal["min", "max"] = Field("max", description="whether lower (min) or higher (max) values of "
                                        "the monitored metric are better")


PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "64-true")


class TrainerCfg(Strict):
    """The Lightning Trainer: epochs, devices, precision, early stopping and checkpoints."""

    max_epochs: int = Field(10, ge=1, description="passes over the training split")
    # stop at the end of the first epoch that ends past this many minutes of training (Lightning's
    # Timer); `+recipe=auto` gives each candidate its share of the budget this way
    max_minutes: Optional[float] = Field(None, gt=0, description="stop at the end of the first epoch that "
                                         "ends past this many minutes of training; null = no time limit")
    # `+recipe=auto`'s final training: its epoch count was fitted to the time left at the search's
    # epoch time, which drifts (a slower minute during the search left 84 s of 5 minutes unused)
    fit_epochs_to_time: Optional[int] = Field(
        None, ge=1, description="with max_minutes: at each epoch end, max_epochs (and the LR schedule with it) "
        "becomes what the minutes left hold at the epochs' measured time, growing up to this many epochs while "
        "the schedule is in its first half, shrinking at any time; null = max_epochs stays")
    precision: str = Field("32", description="Lightning precision: " + " | ".join(PRECISIONS))
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="the kind of device that trains: auto | cpu | gpu | cuda | mps")
    devices: Union[int, str, List[int]] = Field(
        "auto", description="how many devices (an integer), which ones (a list of indices) or auto (all visible)")
    strategy: str = Field("auto", description="Lightning's distribution strategy: auto | ddp | ddp_spawn | "
                          "fsdp ... (not the fine-tune strategy, which is the top-level `strategy`)")
    num_nodes: int = Field(1, ge=1, description="machines taking part in distributed training")
    gradient_clip_val: Optional[float] = Field(None, ge=0, description="clip the gradient norm to this "
                                               "value; null = no clipping")
    accumulate_grad_batches: int = Field(1, ge=1, description="batches whose gradients add up before each "
                                         "optimizer step (effective batch = batch_size x this)")
    limit_train_batches: Union[int, float] = Field(
        1.0, description="training batches per epoch: a count (int >= 1) or a fraction of the split in (0, 1]")
    limit_val_batches: Union[int, float] = Field(
        1.0, description="validation batches per epoch: a count (int >= 1) or a fraction of the split in (0, 1]")
    limit_test_batches: Union[int, float] = Field(
        1.0, description="test batches: a count (int >= 1) or a fraction of the split in (0, 1]")
    log_every_n_steps: int = Field(10, ge=1, description="training steps between two logged metric rows")
    deterministic: bool = Field(False, description="use deterministic algorithms only (reproducible, "
                                "often slower; some operations then fail)")
    progress: Literal["auto", "rich", "plain", "none"] = Field(
        "auto", description="progress display: auto (rich on a terminal, one line per epoch otherwise) | "
        "rich | plain | none")
    compile: bool = Field(False, description="torch.compile the model; falls back to eager, with a message, "
                          "if compiling fails")
    early_stopping: EarlyStoppingCfg = Field(default_factory=EarlyStoppingCfg,
                                             description="stop when a validation metric stops improving")
    checkpoint: CheckpointCfg = Field(default_factory=CheckpointCfg,
                                      description="which checkpoint is kept as the best one")

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
    """Settings of the training loss (cross-entropy or focal, label smoothing, class weights)."""

    # focal (Lin et al. 2017, multi-class softmax form): each class term of the cross-entropy is
    # scaled by (1 - p_class)^gamma, so confident (easy) images count less; class_weights are its
    # alpha and label_smoothing smooths its target as for ce (aether.tasks.classification.losses)
    name: Literal["ce", "focal"] = Field("ce", description="the classification loss: ce (cross-entropy) | "
                                         "focal (cross-entropy scaled by (1 - p)^focal_gamma: easy images "
                                         "count less; class_weights act as its alpha)")
    focal_gamma: float = Field(2.0, ge=0, description="focal loss's focusing exponent; 0 = cross-entropy, "
                               "2 = the usual choice (loss.name=focal only)")

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="share of each target's probability "
                                   "spread evenly over the other classes (cross-entropy label smoothing)")
    class_weights: Union[None, Literal["balanced"], List[float]] = Field(
        None, description="per-class loss weights: null (all equal), balanced (inverse frequency in the "
        "training split) or one number per class")


class DistillCfg(Strict):
    """Knowledge distillation: a finished run's model teaches this run's student through its
    softened class probabilities (classification)."""

    teacher: Optional[str] = Field(None, description="a finished classification run folder (RUN, with RUN/model/) "
                                   "whose model teaches this run; null = no distillation")
    # T=4 and an even mix are the usual starting points (Hinton et al.; timm's and torchdistill's
    # KD recipes use T in 1-4): a higher T shows more of the teacher's ranking of the wrong classes
    temperature: float = Field(4.0, gt=0, description="softening temperature of both models' logits in the "
                               "distillation loss (higher: softer targets)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation loss; 1 - alpha weights the "
                         "cross-entropy on the true labels")


class EmaCfg(Strict):
    """Weight averaging: an average of the weights along training (EMA or SWA) is what is validated,
    kept as best.ckpt, tested and exported; training itself goes on from the raw weights
    (aether.training.averaging). Only what trains is averaged (LoRA: the adapters and the head)."""

    enabled: bool = Field(False, description="validate, checkpoint, test and export an average of the weights "
                          "instead of the last ones")
    mode: Literal["ema", "swa"] = Field("ema", description="ema: exponential moving average, updated after "
                                        "every optimizer step | swa: the plain mean of the weights at the end "
                                        "of each epoch from start_epoch on (stochastic weight averaging)")
    # 0.999 averages over the last ~1,000 steps; short fine-tunes want 0.99-0.998 (or warmup)
    decay: float = Field(0.999, gt=0, lt=1, description="ema: the share of the average kept at each update "
                         "(0.999: about the last 1,000 steps count); unused by swa")
    warmup: bool = Field(True, description="ema: ramp the decay up as min(decay, (1 + n) / (10 + n)) after n "
                         "updates, so a short run is not an average of its starting weights; unused by swa")
    start_epoch: int = Field(1, ge=1, description="the first epoch (1 = the first) whose weights enter the "
                             "average; before it the raw weights are validated (swa: often the last quarter "
                             "of trainer.max_epochs)")


class EvaluationCfg(Strict):
    """How the test split is scored: test-time augmentation (classification)."""

    # views of the evaluation input, made on the tensor so that training's test, `aether predict`,
    # the ONNX runner and the BentoML service all see the same views (aether.tasks.classification.tta)
    tta: Literal["none", "flip", "multi_crop"] = Field(
        "none", description="test-time augmentation, the softmax averaged over the views: none | flip (the "
        "image and its mirror) | multi_crop (the image and its 4 corner crops of 90% of the side, each resized "
        "back); test metrics are with it, metrics.json `tta` holds plain and TTA side by side (classification)")


class CalibrationCfg(Strict):
    """Confidence calibration of the class probabilities (`calibration=none|temperature`)."""

    method: Literal["none", "temperature"] = Field(
        "temperature", description="none | temperature: one scalar T > 0 fitted on the validation split's logits "
        "(LBFGS on the negative log-likelihood); probabilities are softmax(logits / T) in the test metrics and in "
        "every exported model (predictor, ONNX runner, BentoML service) (classification)")
    reject_below: Optional[float] = Field(
        None, gt=0, le=1, description="answer the label `unknown` when the top (calibrated) probability is below "
        "this, in `aether predict` and the served model (a predict/export option overrides it); null = never")


class CostCfg(Strict):
    """Price of one device-hour, for the run's transparent cost estimate (edit to your cloud's)."""

    cpu_per_hour: float = Field(0.10, ge=0, description="price of one device-hour of a run without a GPU "
                                "(each process counts under DDP)")
    gpu_per_hour: float = Field(2.50, ge=0, description="price of one GPU-hour")
    currency: str = Field("USD", description="currency of the two prices, shown with the estimate")


class AnalysisCfg(Strict):
    """What a run works out about its own predictions after testing (aether.reporting.analysis):
    the worst test failures, the most confused classes, precision-recall curves, suspected label
    errors and the model card's confidence intervals (classification; the other tasks write the
    model card)."""

    enabled: bool = Field(True, description="analyse the test predictions after testing (errors.csv, the "
                          "galleries, label_issues.csv, the intervals in model/MODEL_CARD.md); false = none of "
                          "it (the model card then carries the metrics without intervals)")
    worst_n: int = Field(16, ge=0, le=256, description="test images with the highest loss shown in "
                         "worst_errors.png and report.md (errors.csv lists every test image); 0 = no gallery")
    confused_pairs: int = Field(5, ge=0, le=50, description="most confused (true, predicted) class pairs shown "
                                "with example images in confused_pairs.png; 0 = none")
    examples_per_pair: int = Field(4, ge=1, le=16, description="example images per confused class pair")
    # holdout: the model never trained on val or test, so their probabilities are out-of-sample
    # as cleanlab's find_label_issues needs them; kfold adds the training split without k more
    # trainings: a logistic regression on the trained backbone's frozen features, cross-validated
    label_issues: Literal["holdout", "kfold", "off"] = Field(
        "holdout", description="suspected label errors (cleanlab's find_label_issues) from out-of-sample "
        "predicted probabilities: holdout = the validation and test splits (the model's probabilities); "
        "kfold = those plus the training split (3-fold cross-validated logistic regression on the trained "
        "backbone's frozen pre-logits features; single-label classification, multilabel runs use holdout); "
        "off = none")
    near_duplicates: bool = Field(True, description="search the train/val/test images for near duplicates "
                                  "across the splits (leakage) in the trained backbone's feature space, which "
                                  "finds crops and recolours a perceptual hash misses: near_duplicates.csv, a "
                                  "side-by-side gallery in the report and a warning in the run summary "
                                  "(classification)")
    near_duplicate_margin: float = Field(1.0, gt=0, description="how clearly a pair must stand out to count "
                                         "as near duplicates: each image's match must be this many robust "
                                         "standard deviations (1.4826 x MAD of its similarities) closer than "
                                         "its second-closest image; lower finds more, with more false pairs")
    bootstrap_resamples: int = Field(1000, ge=0, le=100000, description="bootstrap resamples of the test "
                                     "split behind the model card's confidence intervals (seeded by `seed`); "
                                     "0 = no intervals")
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of the bootstrap confidence intervals "
                              "(0.95: the 2.5th and 97.5th percentiles)")
    intended_use: Optional[str] = Field(None, description="the model card's 'Intended use' text; null = a "
                                        "generic one naming the task, the classes and the training data")
    heatmaps: int = Field(8, ge=0, le=64, description="class-activation heatmaps (Grad-CAM) in explanations.png: "
                          "this many of the highest-loss test images plus one correctly classified image per class "
                          "(at most 16 classes); 0 = none")
    heatmap_method: Literal["gradcam", "layercam", "gradcam++"] = Field(
        "gradcam", description="the heatmaps' method (pytorch-grad-cam): gradcam | layercam | gradcam++")


class AutoCfg(Strict):
    """`+recipe=auto`: the budgeted search (aether.sweeps.auto_search), plus one `KEY: reason`
    entry per value it chose (strings, written by the command line)."""

    model_config = ConfigDict(extra="allow")
    search: bool = Field(True, description="try several candidates within the budget; false = only the "
                         "dataset doctor's rules of thumb, one run")
    budget_minutes: Optional[float] = Field(None, gt=0, description="wall-clock budget of the whole search, "
                                            "in minutes; null = chosen from the data size and the hardware")
    plan: Dict[str, str] = Field(default_factory=dict, description="candidate name -> its overrides (written "
                                 "by the command line, not meant to be set by hand)")

    @model_validator(mode="after")
    def _reasons_are_text(self) -> "AutoCfg":
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, str):
                raise ValueError(f"auto.{key}: unknown key (auto takes search, budget_minutes, plan)")
        return self


class PartCfg(Strict):
    """A section that selects a registered part; its other keys are the part's options."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(..., description="the registered part to use (aether list KIND); its options sit "
                      "beside this key (aether list KIND NAME)")


class RunCfg(Strict):
    """A run's whole config: its top-level keys; each section is listed by `aether list SECTION`."""

    recipe: str = Field("default", description="the recipe's name (set by each recipe), shown in reports")
    task: str = Field("auto", description="what is learned: auto (from the dataset doctor's detection) or "
                      "a registered task (aether list tasks)")
    task_options: Dict[str, Any] = Field(default_factory=dict, description="the task's own options "
                                         "(aether list task NAME)")
    # numpy's range (Lightning raises a ValueError traceback outside it)
    seed: int = Field(42, ge=0, le=2**32 - 1, description="random seed of the split, the initialisation "
                      "and the data order")
    resume: Optional[str] = Field(None, description="a run directory to continue from its last checkpoint; "
                                  "null = a new run")
    offline: bool = Field(False, description="true: pretrained weights come from the Hugging Face cache "
                          "only, never the network")
    data: DataCfg = Field(default_factory=DataCfg, description="where the images come from and how they "
                          "are split, loaded, augmented and checked (aether list data)")
    model: ModelCfg = Field(..., description="the backbone network (aether list model; presets: aether "
                            "list models)")
    strategy: PartCfg = Field(..., description="the fine-tune strategy: what trains (aether list strategies)")
    optimizer: PartCfg = Field(..., description="the optimizer (aether list optimizers)")
    scheduler: PartCfg = Field(..., description="the learning-rate schedule (aether list schedulers)")
    trainer: TrainerCfg = Field(default_factory=TrainerCfg, description="epochs, devices, precision, "
                                "early stopping, checkpoints (aether list trainer)")
    logger: PartCfg = Field(..., description="where metrics are logged (aether list loggers)")
    loss: LossCfg = Field(default_factory=LossCfg, description="loss settings (aether list loss)")
    distill: DistillCfg = Field(default_factory=DistillCfg, description="knowledge distillation from a "
                                "finished run (aether list distill)")
    ema: EmaCfg = Field(default_factory=EmaCfg, description="weight averaging (EMA or SWA): the averaged "
                        "weights are validated, tested and exported (aether list ema)")
    test: EvaluationCfg = Field(default_factory=EvaluationCfg, description="how the test split is scored: test-time "
                          "augmentation (aether list test)")
    calibration: CalibrationCfg = Field(default_factory=CalibrationCfg, description="confidence calibration "
                                        "(`calibration=none|temperature`; aether list calibration)")
    cost: CostCfg = Field(default_factory=CostCfg, description="device-hour prices for the run's cost "
                          "estimate (aether list cost)")
    analysis: AnalysisCfg = Field(default_factory=AnalysisCfg, description="error analysis, suspected "
                                  "label errors and the model card after testing (aether list analysis)")
    sweep: Optional[SweepCfg] = Field(None, description="`+sweep=NAME` (conf/sweep/): an Optuna search "
                                      "around this run (aether list sweep); null = one run")
    auto: Optional[AutoCfg] = Field(None, description="`+recipe=auto`: its search settings, and each chosen "
                                    "value with its reason (aether list auto); null = not an auto run")
    # keys named on the command line (`trainer.max_epochs=10`): defaults fitted to the data
    # (detection, segmentation) leave them alone even when they equal the default
    _explicit: Set[str] = PrivateAttr(default_factory=set)

    def set_by_user(self, key: str, default: Any) -> bool:
        """True when `key` (dotted) was named on the command line or differs from `default`."""
        node: Any = self
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        return key in self._explicit or node != default
