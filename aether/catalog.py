"""The built-in parts, registered by lazy "module:attr" targets (nothing heavy imported here)."""

from aether import registry as r
from aether.config.schema import NoOptions
from aether.data.formats.options import ManifestCfg
from aether.strategies import options as so
from aether.training import logger_options as lo
from aether.training import optim_options as oo

# dataset formats (aether.data.formats): detect(path) -> Match with evidence, load(path, options)
# -> index; each declares its task and detection priority. coco/voc/yolo/masks read no
# data.options: one given with them is refused by the validator rather than silently ignored
r.adapters.register("folder", "aether.data.formats.folder:Folder", config=NoOptions,
                    help="class sub-folders (nested trees, pre-split train/val/test respected)")
r.adapters.register("manifest", "aether.data.formats.manifest:Manifest", config=ManifestCfg,
                    help="CSV or JSONL manifest with path,label columns")
r.adapters.register("digits", "aether.data.formats.digits:Digits", config=NoOptions,
                    help="embedded sample: scikit-learn's 1,797 real 8x8 handwritten digits")
r.adapters.register("coco", "aether.data.formats.coco:Coco", config=NoOptions,
                    help="COCO .json (images/annotations/categories): task=detection")
r.adapters.register("voc", "aether.data.formats.voc:Voc", config=NoOptions, help="Pascal VOC Annotations/*.xml: task=detection")
r.adapters.register("yolo", "aether.data.formats.yolo:Yolo", config=NoOptions,
                    help="YOLO data.yaml + labels/*.txt (cls cx cy w h): task=detection")
r.adapters.register("masks", "aether.data.formats.masks:Masks", config=NoOptions,
                    help="images/ + masks/ folders paired by file stem: task=segmentation")

r.backbones.register("timm", "aether.models.timm_provider:TimmProvider", config=NoOptions,
                     help="any timm model name; local weights via model.weights=FILE")

r.strategies.register("full", "aether.strategies.basic:Full", config=so.FullCfg,
                      help="every parameter trains; layer_decay enables layer-wise LR decay (LLRD)")
r.strategies.register("linear_probe", "aether.strategies.basic:LinearProbe", config=so.LinearProbeCfg,
                      help="backbone frozen (BatchNorm statistics too), only the head trains")

r.strategies.register("lora", "aether.strategies.lora:Lora", config=so.LoraCfg,
                      help="PEFT LoRA adapters on attention/MLP/pointwise layers; head trains; merge for export")

r.strategies.register("qlora", "aether.strategies.lora:QLora", config=so.QLoraCfg,
                      help="LoRA over a 4-bit (bitsandbytes NF4) base: CUDA only")
r.strategies.register("gradual_unfreeze", "aether.strategies.gradual:GradualUnfreeze", config=so.GradualUnfreezeCfg,
                      help="head first, then backbone block groups unfrozen top-down on a schedule")

r.optimizers.register("adamw", "aether.training.optim:build_adamw", config=oo.AdamWCfg,
                      help="AdamW, decoupled weight decay (no decay on norms and biases)")
r.optimizers.register("adam", "aether.training.optim:build_adam", config=oo.AdamCfg, help="Adam")
r.optimizers.register("sgd", "aether.training.optim:build_sgd", config=oo.SGDCfg,
                      help="SGD with (Nesterov) momentum")

r.schedulers.register("cosine", "aether.training.optim:build_cosine", config=oo.CosineCfg,
                      help="linear warm-up then cosine decay, stepped per batch")
r.schedulers.register("step", "aether.training.optim:build_step", config=oo.StepCfg,
                      help="multiply the LR by gamma every step_size epochs")
r.schedulers.register("plateau", "aether.training.optim:build_plateau", config=oo.PlateauCfg,
                      help="reduce the LR when a validation metric stops improving")
r.schedulers.register("onecycle", "aether.training.optim:build_onecycle", config=oo.OneCycleCfg,
                      help="one-cycle policy (peak = optimizer.lr), stepped per batch")
r.schedulers.register("none", "aether.training.optim:build_constant", config=NoOptions,
                      help="constant learning rate")

r.loggers.register("csv", "aether.training.loggers:build_csv", config=NoOptions,
                   help="metrics.csv in the run directory (default)")
r.loggers.register("wandb", "aether.training.loggers:build_wandb", config=lo.WandbCfg,
                   help="Weights & Biases; offline automatically without an API key")
r.loggers.register("tensorboard", "aether.training.loggers:build_tensorboard", config=NoOptions,
                   help="TensorBoard event files in the run directory")

# tasks: `task=NAME` (or `auto`, from the dataset doctor's detection); options under task_options.
# Each task is a package under aether/tasks/ that registers itself (and any format it brings).
import aether.tasks.classification  # noqa: E402,F401
import aether.tasks.multilabel  # noqa: E402,F401
import aether.tasks.segmentation  # noqa: E402,F401
import aether.tasks.detection  # noqa: E402,F401
