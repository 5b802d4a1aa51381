"""Facts about this Aether process that every layer may read: the version and when the running
command started. They live here, not in `aether/__init__.py`, because the package's root
re-exports the Python API (aether.api, which sits above the CLI): a module importing the root
package would import its way back up (tests/test_architecture.py counts that as a cycle)."""

from __future__ import annotations

from typing import Optional

__version__ = "0.1.0"

# time.monotonic() when the `aether` command (or aether.train) started, set by
# aether.cli.start_command: `+recipe=auto`'s budget counts from it
command_started: Optional[float] = None
