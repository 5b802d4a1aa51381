"""From `data.*` config to checked, split samples: format -> image checks -> split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from aether.data.index import DatasetIndex, IndexView, Sample



@dataclass
class DataBundle(IndexView):
    index: DatasetIndex
    splits: Dict[str, List[Sample]]
    notes: List[str] = field(default_factory=list)
    # the used images as a file count and content hash (aether.tasks.classification.data.fingerprint)
    fingerprint: Optional[Dict[str, Any]] = None

    def summary(self) -> Dict[str, object]:
        return {
            "task": "classification",
            "source": self.index.source,
            "format": self.index.format,
            "classes": list(self.classes),
            "class_counts": self.index.class_counts(),
            "num_train": len(self.splits["train"]),
            "num_val": len(self.splits["val"]),
            "num_test": len(self.splits["test"]),
            "presplit": self.index.presplit,
            "skipped": [s.as_dict() for s in self.skipped],
            "ignored": dict(self.index.ignored),
            "notes": list(self.notes),
            "warnings": list(self.index.warnings),
            **({"fingerprint": self.fingerprint} if self.fingerprint else {}),
        }
