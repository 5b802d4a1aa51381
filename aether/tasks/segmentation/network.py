"""task=segmentation's head over a provider's encoder: the light FPN (aether.tasks.segmentation.light_fpn)
or one of segmentation-models-pytorch's decoders (aether.tasks.segmentation.smp_decoders), as
`task_options.decoder` says; registered in aether.models.heads."""

from __future__ import annotations

from typing import Any, Dict

from torch import nn

from aether.models.backbone import Encoder

LEGACY_DECODER = "light_fpn"  # model.json of runs from before `decoder` existed: the only decoder then


def build_head(options: Dict[str, Any], encoder: Encoder, num_classes: int, pre: Dict[str, Any]) -> nn.Module:
    decoder = options.get("decoder", LEGACY_DECODER)
    if decoder == "light_fpn":
        from aether.tasks.segmentation.light_fpn import FPNDecoder

        return FPNDecoder(encoder.channels, encoder.reductions, num_classes, options["decoder_channels"])
    from aether.tasks.segmentation.smp_decoders import SmpHead

    return SmpHead(decoder, encoder.channels, encoder.reductions, num_classes, options["decoder_channels"])
