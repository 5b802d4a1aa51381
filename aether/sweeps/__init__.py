"""Sweeps and auto-configuration.

- ``spec``     the typed ``sweep:`` section (`+sweep=NAME` selects one from conf/sweep/)
- ``space``    search-space entries in Hydra's override syntax -> Optuna suggestions
- ``sweeper``  the Optuna sweeper (a Hydra Sweeper plugin, see hydra_plugins/aether_sweeper)
- ``trial``    the in-training side of a trial: report validation metrics, prune, W&B grouping
- ``summary``  summary.csv/json, best_recipe.yaml and plots for any multirun (grid or Optuna)
- ``auto``     `+recipe=auto` (doctor + hardware probe) and `+sweep=auto`

Everything here imports Optuna, torch and Lightning lazily: the CLI stays fast.
"""
