"""The options of the built-in W&B logger (`logger.*`; `aether list logger wandb`)."""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field

from aether.config.schema import Strict


class WandbCfg(Strict):
    project: str = Field("aether", description="the W&B project the run is logged to")
    entity: Optional[str] = Field(None, description="the W&B user or team; null = your default entity")
    group: Optional[str] = Field(None, description="W&B run group (e.g. one per sweep); null = none")
    tags: List[str] = Field(default_factory=list, description="tags attached to the W&B run")
    mode: Optional[Literal["online", "offline", "disabled"]] = Field(
        None, description="online | offline | disabled; null = WANDB_MODE if set, else online with an API "
        "key and offline without one")
    log_model: bool = Field(True, description="upload the exported model (RUN/model) as a W&B artifact at the "
                            "end of the run (W&B stages a copy of the files)")
