"""What a sweep found: summary.csv/json, best_recipe.yaml and plots in the sweep folder.

Written at the end of every multirun - a grid (`aether -m key=a,b`) or an Optuna sweep - by a
Hydra callback (conf/config.yaml, `hydra.callbacks`), from what the trials left on disk (their
run folders and, for Optuna, the study in the sweep folder), so it also works after a sweep was
interrupted and continued, and with launchers that run trials in other processes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("aether.sweep")

STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}
SKIP_GROUPS = ("recipe", "sweep")  # not re-selected by the best recipe (it is the recipe itself)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            write_summary(Path(str(config.hydra.sweep.dir)), config)
        except Exception:  # noqa: BLE001 - the trials are done and on disk; say what failed, keep the exit clean
            log.exception("sweep summary failed (the trials' run folders are complete)")


def _objective(config: DictConfig) -> Tuple[str, str]:
    if OmegaConf.select(config, "sweep.metric"):
        return str(config.sweep.metric), str(config.sweep.direction)
    ck = OmegaConf.select(config, "trainer.checkpoint", default=None) or {}
    return str(ck.get("monitor", "val/acc")), "maximize" if ck.get("mode", "max") == "max" else "minimize"


def _grid_trials(sweep_dir: Path, config: DictConfig) -> List[Dict[str, Any]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    swept = {o.get_key_element().lstrip("+~") for o in parser.parse_overrides(list(config.hydra.overrides.task))
             if o.is_sweep_override()}
    trials = []
    for ov_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        run_dir = ov_file.parent.parent
        params = {}
        for o in parser.parse_overrides(yaml.safe_load(ov_file.read_text()) or []):
            if o.get_key_element().lstrip("+~") in swept:
                params[o.get_key_element().lstrip("+~")] = o.value()
        state = "COMPLETE" if (run_dir / "metrics.json").is_file() else "FAIL"
        number = int(run_dir.name) if run_dir.name.isdigit() else len(trials)
        trials.append({"trial": number, "state": state, "params": params, "run_dir": str(run_dir)})
    return trials


def _study_trials(sweep_dir: Path, config: DictConfig) -> Tuple[List[Dict[str, Any]], Any]:
    from aether.sweeps.study import load_spec, open_study

    study = open_study(load_spec(config), sweep_dir, int(OmegaConf.select(config, "trainer.max_epochs", default=1)),
                       0, create=False)
    trials = []
    for t in study.get_trials(deepcopy=False):
        run_dir = t.user_attrs.get("run_dir") or str(sweep_dir / str(t.number))
        trials.append({"trial": t.number, "state": t.state.name, "params": dict(t.params), "run_dir": run_dir,
                       "value": t.value if t.value is not None else
                       (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)})
    return trials, study


def _fill_metrics(row: Dict[str, Any], metric: str, direction: str) -> None:
    from aether.sweeps.study import objective

    f = Path(row["run_dir"]) / "metrics.json"
    m = json.loads(f.read_text()) if f.is_file() else {}
    if row.get("value") is None and m:
        row["value"] = objective(m, metric, direction)
    test = m.get("test", {})
    row["test_accuracy"] = test.get("accuracy")
    row["test_f1_macro"] = test.get("f1_macro")
    row["epochs"] = len(m.get("history", [])) or None
    row["train_s"] = m.get("time", {}).get("train_s")
    if m.get("sweep", {}).get("state") == "pruned":
        row["state"] = "PRUNED"


def _sort_key(direction: str) -> Any:
    def key(row: Dict[str, Any]) -> Tuple[int, float]:
        v = row.get("value")
        v = float("inf") if v is None or (isinstance(v, float) and math.isnan(v)) else (-v if direction == "maximize" else v)
        return STATE_ORDER.get(row["state"], 4), v

    return key


def write_summary(sweep_dir: Path, config: DictConfig) -> Optional[Path]:
    """Write summary.csv/json, best_recipe.yaml and the plots; returns best_recipe.yaml (or None)."""
    metric, direction = _objective(config)
    study = None
    optuna_sweep = OmegaConf.select(config, "sweep.name") and (
        (sweep_dir / "optuna.db").is_file() or OmegaConf.select(config, "sweep.storage"))
    if optuna_sweep:  # a shared study (sweep.storage) lists every machine's trials
        trials, study = _study_trials(sweep_dir, config)
    else:
        trials = _grid_trials(sweep_dir, config)
    for row in trials:
        row["value"] = row.get("value")
        _fill_metrics(row, metric, direction)
    trials.sort(key=_sort_key(direction))
    for rank, row in enumerate(trials, 1):
        row["rank"] = rank
        try:
            row["run_dir"] = str(Path(row["run_dir"]).resolve().relative_to(sweep_dir.resolve()))
        except ValueError:
            pass

    param_keys = sorted({k for row in trials for k in row["params"]})
    summary = {"sweep_dir": str(sweep_dir), "metric": metric, "direction": direction,
               "counts": {s: sum(r["state"] == s for r in trials) for s in STATE_ORDER},
               "best": trials[0] if trials and trials[0]["state"] == "COMPLETE" else None, "trials": trials}
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    columns = ["rank", "trial", "state", "value", *param_keys, "test_accuracy", "test_f1_macro", "epochs",
               "train_s", "run_dir"]
    with open(sweep_dir / "summary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([c if c != "value" else metric for c in columns])
        for row in trials:
            w.writerow([row["params"].get(c) if c in param_keys else row.get(c) for c in columns])

    from aether.sweeps.plots import history_png, importance_png

    history_png(trials, metric, direction, sweep_dir / "optimization_history.png")
    importance_png(study, trials, metric, direction, sweep_dir / "param_importance.png")
    best = summary["best"]
    out = None
    if best and (sweep_dir / best["run_dir"] / "config.yaml").is_file():
        out = write_best_recipe(sweep_dir, best, metric, direction)
    elif best:  # a shared study's best trial ran in another machine's sweep: its recipe is written there
        log.info("sweep summary: the best trial (%d) ran in another sweep (%s); no best_recipe.yaml here",
                 best["trial"], best["run_dir"])
    log.info("sweep summary: %s (%d trials: %s)%s", sweep_dir / "summary.csv", len(trials),
             ", ".join(f"{n} {s.lower()}" for s, n in summary["counts"].items() if n),
             f"; best trial {best['trial']} {metric}={best['value']:.4f}{f' -> {out}' if out else ''}" if best else "")
    return out


def write_best_recipe(sweep_dir: Path, best: Dict[str, Any], metric: str, direction: str) -> Path:
    """The best trial as a recipe (see write_recipe)."""
    run_dir = sweep_dir / best["run_dir"]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    choices = yaml.safe_load(hydra_yaml.read_text())["hydra"]["runtime"]["choices"] if hydra_yaml.is_file() else {}
    return write_recipe(sweep_dir / "best_recipe.yaml", cfg, choices,
                        [f"Best trial {best['trial']} of the sweep in {sweep_dir} ({metric} = {best['value']:.4f}, "
                         f"{direction})."])


def write_recipe(out: Path, cfg: Dict[str, Any], choices: Dict[str, Any], about: List[str]) -> Path:
    """A run's config as a recipe: its group choices as `override /group: option`, then its resolved
    config, so `+recipe=best_recipe` composes exactly what that run trained."""
    cfg = {k: v for k, v in cfg.items() if k not in ("sweep", "resume", "auto")}
    cfg["recipe"] = "best_recipe"
    defaults = [f"  - override /{g}: {o}" for g, o in sorted(choices.items())
                if o is not None and not g.startswith("hydra") and g not in SKIP_GROUPS]
    header = [
        "# @package _global_",
        *[f"# {line}" for line in about],
        "# Re-run it as a recipe:",
        f"#   mkdir -p recipes && cp {out} recipes/ && aether +recipe=best_recipe",
        "defaults:", *defaults, "",
    ]
    out.write_text("\n".join(header) + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return out
