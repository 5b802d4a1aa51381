"""`task_options` of task=multilabel and the `data.options` of its manifest, checked before torch is imported."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import field_validator

from aether.config.schema import Strict


class MultilabelTaskCfg(Strict):
    # "tune": one threshold per label, chosen on the validation split to maximise its F1;
    # a number: the same fixed threshold for every label
    threshold: Union[Literal["tune"], float] = "tune"

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: Union[str, float]) -> Union[str, float]:
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError("expected 'tune' or a probability between 0 and 1")
        return v


class MultilabelManifestCfg(Strict):
    """data.options of a multilabel manifest (data.format=multilabel, or detected by its column)."""

    path_column: str = "path"
    labels_column: str = "labels"
    separator: str = "|"  # between labels in one CSV cell (JSONL may give a list instead)
    root: Optional[str] = None  # image paths are relative to this (default: the manifest's folder)
