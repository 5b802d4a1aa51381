"""`task_options` of task=segmentation, checked before torch is imported."""

from __future__ import annotations

from typing import List, Optional

from pydantic import Field

from aether.config.schema import Strict


class SegmentationTaskCfg(Strict):
    decoder_channels: int = Field(64, ge=8, le=1024, description="channels (width) of the decoder")
    ignore_index: Optional[int] = Field(255, ge=0, le=255, description="mask value that is neither trained "
                                        "on nor scored (e.g. object borders); null = every value is a class")
    classes: Optional[List[str]] = Field(None, description="names of the mask values 0 ... K-1; null = "
                                         "class_0 ... class_K-1")
