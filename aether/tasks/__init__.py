"""Tasks beyond single-label classification (multilabel, segmentation, detection).

Each task is registered in `aether.registry.tasks` (see aether.catalog) with its typed options
(aether.tasks.options); nothing here is imported until a run needs it.
"""
