"""Hydra finds Sweeper plugins only inside the `hydra_plugins` namespace package: this is the
thin, importable face of Aether's Optuna sweeper (the logic lives in aether.sweeps.sweeper)."""

from aether.sweeps.sweeper import OptunaSweeper


class AetherOptunaSweeper(OptunaSweeper):
    """`hydra/sweeper=aether_optuna` (selected by every conf/sweep/*.yaml)."""


__all__ = ["AetherOptunaSweeper"]
