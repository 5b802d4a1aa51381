"""`task_options` of the plugin's task=regression (pydantic only: validated before torch loads)."""

from __future__ import annotations

from aether.config.schema import Strict


class RegressionCfg(Strict):
    path_column: str = "path"  # the manifest column naming each image (relative to the manifest's folder)
    value_column: str = "value"  # the column holding each image's number
