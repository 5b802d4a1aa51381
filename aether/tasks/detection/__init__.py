"""task=detection: object detection from COCO, YOLO or VOC; torchvision heads on the backbone
provider's encoder; mAP."""

from aether import registry
from aether.models.heads import register_head
from aether.tasks.detection.options import DetectionTaskCfg

registry.tasks.register("detection", "aether.tasks.detection.task:Detection", config=DetectionTaskCfg,
                        traits={"auto": "encoder_only"},
                        help="object detection: COCO, YOLO or VOC; FPN + FCOS/RetinaNet/Faster R-CNN; mAP")
register_head("detection", "aether.tasks.detection.network:build_head")
