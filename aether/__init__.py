"""Aether: declarative fine-tuning of computer-vision models.

This module stays import-light on purpose: the CLI answers `--help`, `list` and config
errors without importing torch, Lightning or timm.
"""

__version__ = "0.1.0"

command_started = None  # time.monotonic() when the `aether` command started (set by aether.cli.main)
