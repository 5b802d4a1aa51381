"""`task_options` of task=detection, checked before torch is imported."""

from __future__ import annotations

from typing import List, Literal, Union

from pydantic import Field, field_validator

from aether.config.schema import Strict


class DetectionTaskCfg(Strict):
    head: Literal["fcos", "retinanet", "faster_rcnn"] = Field(
        "fcos", description="the torchvision detector on the FPN: fcos | retinanet | faster_rcnn")
    fpn_channels: int = Field(64, ge=8, le=1024, description="channels of each FPN level (its width)")
    score_threshold: float = Field(0.05, ge=0, lt=1, description="lowest score of the detections kept for "
                                   "evaluation (mAP); not the threshold of drawn or served boxes")
    detections_per_image: int = Field(100, ge=1, description="the most detections kept per image, "
                                      "highest scores first")
    # a tuned threshold is chosen after training on the validation split, never on the test split
    draw_threshold: Union[Literal["tune"], float] = Field(
        "tune", description="score threshold of drawn, predicted and served boxes: tune (the best F1 at "
        "IoU 0.5 on the validation split) or a fixed score in [0, 1)")
    nms_threshold: Union[Literal["tune"], float] = Field(
        "tune", description="NMS IoU above which boxes of one class are suppressed: tune (the best "
        "validation mAP@.5 of 0.3 ... 0.7) or a fixed IoU in (0, 1]")
    strides: Union[Literal["auto"], List[int]] = Field(
        "auto", description="strides of the FPN levels the head predicts from, e.g. [8, 16, 32, 64, 128] "
        "(torchvision's FCOS); auto = the levels that cover the training boxes' sizes at the input size")

    @field_validator("draw_threshold")
    @classmethod
    def _draw(cls, v: Union[str, float]) -> Union[str, float]:
        if not isinstance(v, str) and not 0 <= v < 1:
            raise ValueError("expected 'tune' or a score in [0, 1)")
        return v

    @field_validator("nms_threshold")
    @classmethod
    def _nms(cls, v: Union[str, float]) -> Union[str, float]:
        if not isinstance(v, str) and not 0 < v <= 1:
            raise ValueError("expected 'tune' or an IoU in (0, 1] (1: no suppression)")
        return v

    @field_validator("strides")
    @classmethod
    def _strides(cls, v: Union[str, List[int]]) -> Union[str, List[int]]:
        if not isinstance(v, str):
            if not v or any(s < 2 or s & (s - 1) for s in v) or sorted(set(v)) != list(v):
                raise ValueError("expected 'auto' or increasing powers of two, e.g. [8, 16, 32]")
            if any(b != 2 * a for a, b in zip(v, v[1:])):
                raise ValueError("expected consecutive levels (each stride twice the one before), e.g. [8, 16, 32]")
        return v
