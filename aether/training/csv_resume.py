"""logs/metrics.csv that survives resume=.

Lightning's CSV writer deletes an existing metrics.csv when it starts, so a resumed run kept
only the epochs it trained itself. This writer keeps the earlier rows: on its first save it
reads the old file, drops the rows of epochs this run trains again (those logged after the
checkpoint it resumed from - the new rows start at that epoch) and writes old and new rows
under one header, through a temporary file so an interruption never loses the old ones.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Optional

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def _epoch(row: Dict[str, object]) -> Optional[float]:
    try:
        return float(row.get("epoch"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        self._first_save = True
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Lightning's version warns and deletes metrics.csv; the rows are merged on first save instead."""

    def save(self) -> None:
        path = Path(self.metrics_file_path)
        if not (self._first_save and self.metrics and path.is_file()):
            self._first_save = self._first_save and not self.metrics  # a fresh file: Lightning's way from now on
            return super().save()
        self._first_save = False
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            old_keys, old_rows = list(reader.fieldnames or []), list(reader)
        starts = [e for e in map(_epoch, self.metrics) if e is not None]
        first = min(starts) if starts else float("inf")
        kept = [r for r in old_rows if (_epoch(r) if _epoch(r) is not None else -1.0) < first]
        self._record_new_keys()
        self.metrics_keys = sorted(set(self.metrics_keys) | set(old_keys))
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows([*kept, *self.metrics])
        os.replace(tmp, path)
        self.metrics = []


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger with KeepingWriter (its `experiment`, with the writer class swapped)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeepingWriter(log_dir=self.log_dir)
        return self._experiment
