"""Typed options of each task (`task_options.*`), checked before torch is imported."""

from __future__ import annotations

from typing import List, Literal, Optional, Union

from pydantic import Field, field_validator

from aether.config.schema import Strict


class ClassificationTaskCfg(Strict):
    pass


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


class SegmentationTaskCfg(Strict):
    decoder_channels: int = Field(64, ge=8, le=1024)  # width of the light FPN decoder
    ignore_index: Optional[int] = Field(255, ge=0, le=255)  # mask value that is not scored nor trained
    classes: Optional[List[str]] = None  # names of mask values 0..K-1 (default: class_0 ... class_K-1)


class DetectionTaskCfg(Strict):
    head: Literal["fcos", "retinanet", "faster_rcnn"] = "fcos"  # the torchvision detector on the FPN
    fpn_channels: int = Field(64, ge=8, le=1024)
    score_threshold: float = Field(0.05, ge=0, lt=1)  # detections kept for evaluation
    detections_per_image: int = Field(100, ge=1)
    draw_threshold: float = Field(0.3, ge=0, lt=1)  # predictions drawn in the report


class MultilabelManifestCfg(Strict):
    """data.options of a multilabel manifest (data.format=multilabel, or detected by its column)."""

    path_column: str = "path"
    labels_column: str = "labels"
    separator: str = "|"  # between labels in one CSV cell (JSONL may give a list instead)
    root: Optional[str] = None  # image paths are relative to this (default: the manifest's folder)
