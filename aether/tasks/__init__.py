"""The tasks: one package per task (classification, multilabel, segmentation, detection).

Each package registers its Task in `aether.registry.tasks` with its typed options
(`<task>/options.py`, pydantic only) when imported (aether.catalog imports them); the Task
(`<task>/task.py`) and its LightningModule are imported only when a run needs them. The road
every run takes through a task is in aether.run; the interface is aether.tasks.base.Task.
"""
