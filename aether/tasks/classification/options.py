"""`task_options` of task=classification (none yet), checked before torch is imported."""

from __future__ import annotations

from aether.config.schema import Strict


class ClassificationTaskCfg(Strict):
    pass
