"""The options of the built-in manifest format (`data.options.*`; `aether list adapter manifest`)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from aether.config.schema import Strict


class ManifestCfg(Strict):
    path_column: str = Field("path", description="the column holding each image's path")
    label_column: str = Field("label", description="the column holding each image's class")
    root: Optional[str] = Field(None, description="folder the image paths are relative to; null = the "
                                "manifest's folder")
