"""task=multilabel: several labels per image, BCE, per-label thresholds tuned on validation."""

from aether import registry
from aether.tasks.multilabel.options import MultilabelManifestCfg, MultilabelTaskCfg

registry.tasks.register("multilabel", "aether.tasks.multilabel.task:Multilabel", config=MultilabelTaskCfg,
                        traits={"auto": "encoder_only"},
                        help="several labels per image: manifest with a `labels` column; BCE, tuned thresholds, mAP/F1")
registry.adapters.register("multilabel", "aether.data.formats.multilabel:MultilabelManifest",
                           config=MultilabelManifestCfg,
                           help="CSV/JSONL manifest with path,labels columns ('a|b' or a JSON list): task=multilabel")
