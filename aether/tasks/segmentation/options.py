"""`task_options` of task=segmentation, checked before torch is imported."""

from __future__ import annotations

from typing import List, Optional

from pydantic import Field

from aether.config.schema import Strict


class SegmentationTaskCfg(Strict):
    decoder_channels: int = Field(64, ge=8, le=1024)  # width of the light FPN decoder
    ignore_index: Optional[int] = Field(255, ge=0, le=255)  # mask value that is not scored nor trained
    classes: Optional[List[str]] = None  # names of mask values 0..K-1 (default: class_0 ... class_K-1)
