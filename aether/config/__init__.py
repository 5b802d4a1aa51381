"""Config schema and validation (pure Python: no torch import)."""
