"""task=classification: one label per image (class folders or a path,label manifest).

The package registers itself; the Task (aether.tasks.classification.task) and its
LightningModule (.module) are imported only when a run needs them.
"""

from aether import registry
from aether.tasks.classification.options import ClassificationTaskCfg

registry.tasks.register("classification", "aether.tasks.classification.task:Classification",
                        config=ClassificationTaskCfg, traits={"auto": "classification"},
                        help="one label per image: class folders or a path,label manifest (default)")
