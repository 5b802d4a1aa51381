"""`task_options` of task=multilabel and the `data.options` of its manifest, checked before torch is imported."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator

from aether.config.schema import Strict


class MultilabelTaskCfg(Strict):
    threshold: Union[Literal["tune"], float] = Field(
        "tune", description="probability above which a label is predicted: tune (one per label, the best "
        "F1 on the validation split) or one fixed probability in (0, 1) for every label")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: Union[str, float]) -> Union[str, float]:
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError("expected 'tune' or a probability between 0 and 1")
        return v


class MultilabelManifestCfg(Strict):
    """data.options of a multilabel manifest (data.format=multilabel, or detected by its column)."""

    path_column: str = Field("path", description="the column holding each image's path")
    labels_column: str = Field("labels", description="the column holding each image's labels")
    separator: str = Field("|", description="between labels in one CSV cell (JSONL may give a list instead)")
    root: Optional[str] = Field(None, description="folder the image paths are relative to; null = the "
                                "manifest's folder")
