"""task=segmentation: semantic segmentation from images/ + masks/ folders; mIoU and Dice."""

from aether import registry
from aether.tasks.segmentation.options import SegmentationTaskCfg

registry.tasks.register("segmentation", "aether.tasks.segmentation.task:Segmentation", config=SegmentationTaskCfg,
                        traits={"auto": "dense"},
                        help="semantic segmentation: images/ + masks/ folders; light FPN decoder; mIoU, Dice")
