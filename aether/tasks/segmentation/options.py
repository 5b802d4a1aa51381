"""`task_options` of task=segmentation, checked before torch is imported."""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field

from aether.config.schema import Strict

# light_fpn: Aether's own light FPN (aether.tasks.segmentation.light_fpn); the rest are
# segmentation-models-pytorch's decoders over the provider's encoder (aether.tasks.segmentation.smp_decoders)
Decoder = Literal["light_fpn", "unet", "unetplusplus", "manet", "linknet", "fpn", "pspnet", "upernet", "segformer",
                  "deeplabv3plus"]


class SegmentationTaskCfg(Strict):
    # default deeplabv3plus: it trained best on small data on the CPU. Generated shapes (48 images of
    # 64 px, tests/tasks_data.write_masks), random-init test_convnext, 6 epochs, lr 5e-3, three
    # seeds: test mIoU 0.907/0.903/0.925 (mean 0.912) against the light FPN's 0.874/0.843/0.888
    # (0.868), in the same time per run (24.6 s vs 24.8 s); smp's U-Net 0.784 and FPN 0.844 (seed 0)
    decoder: Decoder = Field("deeplabv3plus", description=(
        "the decoder over the encoder's feature maps: light_fpn (Aether's light FPN) or a segmentation-models-"
        "pytorch decoder (unet, unetplusplus, manet, linknet, fpn, pspnet, upernet, segformer, deeplabv3plus)"))
    decoder_channels: int = Field(64, ge=8, le=1024, description=(
        "the decoder's width: light_fpn's channels; smp decoders scale their widths with it (64 = smp's defaults)"))
    ignore_index: Optional[int] = Field(255, ge=0, le=255, description="mask value that is neither trained "
                                        "on nor scored (e.g. object borders); null = every value is a class")
    classes: Optional[List[str]] = Field(None, description=(
        "names of mask values 0..K-1 (default: class_0 ... class_K-1)"))
