"""`task_options` of task=segmentation, checked before torch is imported."""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field

from aether.config.schema import Strict

# light_fpn: Aether's own light FPN (aether.models.segmentation); the rest are
# segmentation-models-pytorch's decoders over the provider's encoder (aether.models.smp_decoders)
Decoder = Literal["light_fpn", "unet", "unetplusplus", "manet", "linknet", "fpn", "pspnet", "upernet", "segformer",
                  "deeplabv3plus"]


class SegmentationTaskCfg(Strict):
    decoder: Decoder = Field("light_fpn", description=(
        "the decoder over the encoder's feature maps: light_fpn (Aether's light FPN) or a segmentation-models-"
        "pytorch decoder (unet, unetplusplus, manet, linknet, fpn, pspnet, upernet, segformer, deeplabv3plus)"))
    decoder_channels: int = Field(64, ge=8, le=1024, description=(
        "the decoder's width: light_fpn's channels; smp decoders scale their widths with it (64 = smp's defaults)"))
    ignore_index: Optional[int] = Field(255, ge=0, le=255, description="mask value that is neither scored nor trained")
    classes: Optional[List[str]] = Field(None, description=(
        "names of mask values 0..K-1 (default: class_0 ... class_K-1)"))
