"""Dataset format + task detection with evidence, for the dataset doctor (`aether inspect`).

The formats own their detection (aether.data.formats: one module per format, each with its
`detect()`, evidence and annotation checks); the doctor asks them through
`aether.data.formats.auto.detect`, re-exported here.
"""

from __future__ import annotations

from aether.data.formats.auto import Detection, detect

# The built-in detection and segmentation formats. Every format is a registered adapter now, so
# this only keeps the name that aether.config.validate imports (`data.format=` accepts any
# registered format).
STRUCTURED_FORMATS = ("coco", "voc", "yolo", "masks")

__all__ = ["Detection", "detect", "STRUCTURED_FORMATS"]
