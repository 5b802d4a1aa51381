"""A sweep's two plots: the optimisation history and the parameters' importance (PNG)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List

log = logging.getLogger("aether.sweep")


def _figure():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def history_png(trials: List[Dict[str, Any]], metric: str, direction: str, out: Path) -> None:
    """Each trial's objective in trial order (pruned trials at their last reported value) and the best so far."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    rows = sorted((r for r in trials if r.get("value") is not None), key=lambda r: r["trial"])
    for state, style in (("COMPLETE", dict(c="tab:blue", marker="o")), ("PRUNED", dict(c="tab:gray", marker="x"))):
        pts = [(r["trial"], r["value"]) for r in rows if r["state"] == state]
        if pts:
            ax.scatter(*zip(*pts), label=state.lower(), **style)
    best, xs, ys = None, [], []
    pick = max if direction == "maximize" else min
    for r in rows:
        if r["state"] == "COMPLETE":
            best = r["value"] if best is None else pick(best, r["value"])
        if best is not None:
            xs.append(r["trial"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", c="tab:red", label="best so far")
    ax.set_xlabel("trial")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(f"optimisation history ({direction} {metric})")
    if rows:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def importances(study: Any, trials: List[Dict[str, Any]], direction: str) -> Dict[str, float]:
    """Optuna's fANOVA importances of the completed trials; a grid gets an in-memory study for it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if study is None:
        done = [r for r in trials if r["state"] == "COMPLETE" and r.get("value") is not None]
        keys = sorted({k for r in done for k in r["params"]})
        dists = {k: optuna.distributions.CategoricalDistribution(sorted({_plain(r["params"].get(k)) for r in done},
                                                                         key=str)) for k in keys}
        study = optuna.create_study(direction=direction)
        for r in done:
            study.add_trial(optuna.trial.create_trial(params={k: _plain(r["params"].get(k)) for k in keys},
                                                      distributions=dists, value=float(r["value"])))
    return optuna.importance.get_param_importances(study)


def _plain(v: Any) -> Any:
    return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)


def importance_png(study: Any, trials: List[Dict[str, Any]], metric: str, direction: str, out: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    try:
        imp = importances(study, trials, direction)
    except Exception as err:  # noqa: BLE001 - too few or identical trials: say so in the plot itself
        imp = {}
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.info("parameter importance not computed: %s", reason)
        ax.text(0.5, 0.5, f"parameter importance needs at least two completed\ntrials that differ ({reason[:60]})",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    if imp:
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="tab:blue")
        ax.set_xlabel(f"importance for {metric} (fANOVA)")
    ax.set_title("parameter importance")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
