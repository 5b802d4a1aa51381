"""task=segmentation: semantic segmentation from images/ + masks/ folders; mIoU and Dice."""

from aether import registry
from aether.models.heads import register_head
from aether.tasks.segmentation.options import SegmentationTaskCfg

registry.tasks.register("segmentation", "aether.tasks.segmentation.task:Segmentation", config=SegmentationTaskCfg,
                        traits={"auto": "encoder_only"},
                        help="semantic segmentation: images/ + masks/ folders; smp DeepLabV3+ (or other) decoder; mIoU, Dice")
register_head("segmentation", "aether.tasks.segmentation.network:build_head")
