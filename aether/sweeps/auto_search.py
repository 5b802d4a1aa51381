"""`+recipe=auto`'s budgeted search: measure the planned candidates, keep the best, finish it.

The command line planned the candidates (aether.sweeps.candidates, `auto.plan.NAME`). Here,
inside the run, each one trains in RUN/auto/NAME/ on the same seeded split, on a short schedule
of its own (SEARCH_EPOCHS, warm-up and decay included) and at most its share of the budget
(`trainer.max_minutes`: Lightning's Timer, checked at epoch ends), and is scored on the
validation split only: the test split stays unseen until the end. The leaderboard (candidate,
val metric, seconds, epochs, status, reason) is logged and saved in RUN/auto.json, metrics.json
and report.md; the winner becomes RUN/best_recipe.yaml and trains its full schedule in RUN
itself, with as many epochs as the rest of the budget holds at the epoch time it showed (a
winner that already ran all of its schedule is kept as trained), and is tested once.

Why candidates run in this process, one after another, and not as Optuna trials: they differ
in strategy and model rather than in numbers on one space, and on 2 CPU cores parallel trials
only share the same cores. Learning rates are the strategies' rules of thumb, not an LR range
test: on a CPU budget of minutes the test would cost as much as a candidate.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from aether.errors import AetherError
from aether.sweeps.candidates import SEARCH_EPOCHS, Candidate, default_budget, keys_of

log = logging.getLogger("aether")

SEARCH_SHARE = 0.6  # of the budget for measuring candidates; the rest finishes the winner
MIN_SHARE_S = 5.0  # a candidate given less than this is not started (it could not finish one epoch)
# Kept back from the final training: a share of the budget, a few seconds (building the final run,
# exporting, writing, exiting) and half an epoch's time for the test pass. Measured on the digits
# (5-minute budget): the test and the outputs took 3 s after the last epoch; a 0.1 share + 15 s
# left 80 s of the budget unused.
SETUP_MARGIN = 0.03
FINAL_RESERVE_S = 10.0
# ... and, when the run analyses its test predictions (analysis.enabled), this many of the winner's
# epochs for it: it embeds every image once and fits cleanlab's cross-validated probe (fashion,
# 3,000 images, 10 s epochs: 16 s; the run ended 10 s over its 5 minutes before this was kept back)
ANALYSIS_EPOCHS = 1.5
EPOCH_SLACK = 1.15  # a longer run's epochs ran up to 1.13x the search's (ocvdigits: 15 s -> 17 s)
# The winner's schedule may grow to this many times its planned epochs when the budget holds them:
# the doctor's epoch count is a rule of thumb for an unknown budget, and a longer cosine schedule
# on small data still gains (digits from transferred weights: 15 epochs test 0.985, a plain loop's
# 64 epochs 0.993); early stopping ends it when validation stops improving.
FINAL_EPOCHS_GROWTH = 4
# (rc._explicit cannot make a user's trainer.max_epochs a ceiling here: recipe=auto passes the
# doctor's recommended epochs as command-line overrides too; a ceiling read from it stopped every
# final training at the planned epochs, digits seed 0: 15 instead of 39)


def _no_early_stop(raw: Dict[str, Any], rc: Any) -> None:
    """A final training runs a schedule fitted to the budget: early stopping (patience in epochs)
    would cut it during its high-LR phase, where validation loss rises before it falls (digits
    from scratch, one-cycle over 25 epochs: stopped after 8 at val acc 0.80; the 3-epoch search
    run of the same candidate had 0.996). The best checkpoint by the monitor is kept anyway.
    A user's own trainer.early_stopping.enabled stands."""
    if "trainer.early_stopping.enabled" not in rc._explicit:
        raw["trainer"]["early_stopping"]["enabled"] = False


def wanted(rc: Any, raw: Dict[str, Any]) -> bool:
    """Does this run do the search (and not a plain run, a resumed one or a sweep trial)?"""
    return bool(rc.auto and rc.auto.search and rc.auto.plan and not raw.get("resume") and rc.sweep is None)


def _compose(base: Sequence[str], cand: Candidate, minutes: Optional[float]) -> Dict[str, Any]:
    """The candidate's config: the run's overrides with the candidate's in place of the same keys."""
    import hydra
    from omegaconf import OmegaConf

    mine = keys_of(cand.overrides)
    kept = [o for o in base if o.lstrip("+~").split("=", 1)[0] not in mine]
    extra = [f"trainer.max_minutes={minutes:.3g}"] if minutes else []
    cfg = hydra.compose("config", overrides=[*kept, *cand.overrides, *extra])
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    from aether.config.validate import drop_foreign_options, typed_keys

    drop_foreign_options(raw, typed_keys(kept))  # e.g. a recipe's gradual_unfreeze options under strategy=lora
    return raw


def _check_plan(plan: Sequence[Candidate]) -> None:
    """`auto.plan` may come from someone else's recipe or a resumed config.yaml: its overrides get
    the command line's trust check (no `_target_`), and none may reach Hydra's own settings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from aether.config import trust

    for cand in plan:
        try:
            parsed = OverridesParser.create().parse_overrides(cand.overrides)
        except HydraException as err:
            raise AetherError(f"auto.plan.{cand.name}: {str(err).strip()}") from None
        hydra_keys = [o.input_line for o in parsed if o.key_or_group.split(".")[0].split("/")[0] == "hydra"]
        if hydra_keys:
            raise AetherError(f"auto.plan.{cand.name}: refused {', '.join(hydra_keys)}: a candidate sets run "
                              "options, not Hydra's")
        trust.check_overrides(parsed)


def _best(board: List[Dict[str, Any]], mode: str) -> Optional[Dict[str, Any]]:
    scored = [r for r in board if r["val_metric"] is not None and math.isfinite(r["val_metric"])]
    if not scored:
        return None
    sign = 1 if mode == "max" else -1
    return max(scored, key=lambda r: (sign * r["val_metric"], -r["seconds"]))  # ties: the faster


def _relocate(src: Path, dst: Path) -> None:
    """The winner's checkpoints and logs into the run folder, with the folder names inside
    last.ckpt rewritten, so the resumed training keeps its best score and best checkpoint."""
    import torch

    from aether.training.checkpoint_io import load_checkpoint_safely

    (dst / "checkpoints").mkdir(parents=True, exist_ok=True)
    old, new = str(src / "checkpoints"), str(dst / "checkpoints")

    def moved(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(old):
            return new + value[len(old):]
        if isinstance(value, dict):
            return {moved(k): moved(v) for k, v in value.items()}
        return value

    ckpt = load_checkpoint_safely(src / "checkpoints" / "last.ckpt")
    ckpt["callbacks"] = moved(ckpt.get("callbacks", {}))
    torch.save(ckpt, dst / "checkpoints" / "last.ckpt")
    if (src / "checkpoints" / "best.ckpt").is_file():
        shutil.copy2(src / "checkpoints" / "best.ckpt", dst / "checkpoints" / "best.ckpt")
    if (src / "logs").is_dir():
        shutil.copytree(src / "logs", dst / "logs", dirs_exist_ok=True)


def _row(cand: Candidate, info: Dict[str, Any], seconds: float, monitor: str) -> Dict[str, Any]:
    score = info.get("score")
    return {"candidate": cand.name, "val_metric": None if score is None else round(float(score), 6),
            "monitor": monitor, "seconds": round(seconds, 1), "epochs": info.get("epochs"),
            "planned_epochs": info.get("planned_epochs"),
            "status": info.get("status", "failed"), "train_minutes": info.get("train_minutes"),
            "epoch_seconds": info.get("epoch_seconds"),
            **({"strategy": info["strategy"]} if info.get("strategy") else {}),
            "reason": cand.reason, "overrides": cand.overrides,
            **({"error": info["error"]} if "error" in info else {})}


def leaderboard_lines(board: List[Dict[str, Any]], monitor: str, budget_min: float) -> List[str]:
    lines = [f"auto leaderboard ({monitor} on the validation split, budget {budget_min:g} min):",
             f"  {'#':>2} {'candidate':<12} {monitor:>9} {'seconds':>8} {'epochs':>6}  {'status':<14} reason"]
    for i, r in enumerate(board, 1):
        v = "-" if r["val_metric"] is None else f"{r['val_metric']:.4f}"
        lines.append(f"  {i:>2} {r['candidate']:<12} {v:>9} {r['seconds']:>8.1f} {str(r['epochs'] or '-'):>6}  "
                     f"{r['status']:<14} {r.get('error') or r['reason']}")
    return lines


def search(rc: Any, raw: Dict[str, Any], run_dir: Path, base_overrides: Sequence[str], run_name: str,
           notes: Sequence[str]) -> float:
    from aether.config.validate import validate
    from aether.run import _fit_and_report
    from aether.training.run_lock import claim

    from aether import about

    # the budget counts from the command's start (imports, data checks), not only from here
    t0 = min(time.monotonic(), about.command_started or time.monotonic())
    plan = [Candidate.decode(n, t) for n, t in rc.auto.plan.items()]
    _check_plan(plan)
    budget_min = rc.auto.budget_minutes or default_budget(1000, {"cpus": 2})["value"]
    budget_s = budget_min * 60
    base = [o for o in base_overrides if not o.startswith("++auto.plan.") and not o.startswith("hydra.")]
    monitor, mode = rc.trainer.checkpoint.monitor, rc.trainer.checkpoint.mode
    board: List[Dict[str, Any]] = []
    with claim(run_dir, str(run_dir)):  # the folder is this run's for the whole search (resume: its own folder)
        for i, cand in enumerate(plan):
            left = budget_s * SEARCH_SHARE - (time.monotonic() - t0)
            share = left / (len(plan) - i)
            alone = len(plan) == 1  # nothing to compare: the one candidate is the final run, whole budget
            if alone:
                share = budget_s * (1 - SETUP_MARGIN)
            if not any(r["val_metric"] is not None for r in board):
                share = max(share, MIN_SHARE_S)  # a run always ends with a model, however small the budget
            if share < MIN_SHARE_S:
                board.append(_row(cand, {"status": "not started", "error": f"budget spent ({share:.0f} s left for it)"},
                                  0.0, monitor))
                continue
            measured = [r["epoch_seconds"] for r in board if r.get("epoch_seconds")]
            if measured and not alone and share < 0.8 * SEARCH_EPOCHS * measured[-1]:
                # epochs this slow: a cut-short candidate would prove nothing; the time goes to the winner
                board.append(_row(cand, {"status": "not started", "error": (
                    f"an epoch took {measured[-1]:.0f} s here: {SEARCH_EPOCHS} epochs do not fit the {share:.0f} s "
                    "left for it; the time goes to the winner's training")}, 0.0, monitor))
                continue
            log.info("auto: candidate %d/%d '%s' (up to %.1f min): %s", i + 1, len(plan), cand.name, share / 60,
                     cand.reason)
            info: Dict[str, Any] = {}
            start = time.monotonic()
            try:
                raw_c = _compose(base, cand, share / 60)
                info["planned_epochs"] = raw_c["trainer"]["max_epochs"]
                # a short schedule of its own (LR warm-up and decay included), so that candidates are
                # compared finished, not cut in the middle of a long schedule's high learning rate
                if not alone:
                    raw_c["trainer"]["max_epochs"] = min(info["planned_epochs"], SEARCH_EPOCHS)
                rc_c = validate(raw_c)
                rc_c._explicit = set(rc._explicit) | keys_of(cand.overrides)  # what the command line and plan set
                _fit_and_report(rc_c, raw_c, run_dir / "auto" / cand.name, f"{run_name}-{cand.name}", (),
                                search=info)
                monitor, mode = rc_c.trainer.checkpoint.monitor, rc_c.trainer.checkpoint.mode  # as the task resolved them
            except Exception as exc:  # one candidate that cannot run (e.g. LoRA finds no layer) is a row, not the end
                info = {**info, "status": "failed", "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
                log.warning("auto: candidate '%s' failed: %s", cand.name, info["error"])
            board.append(_row(cand, info, time.monotonic() - start, monitor))
        winner = _best(board, mode)
        for line in leaderboard_lines(board, monitor, budget_min):
            log.info(line)
        summary = {"budget_minutes": budget_min, "monitor": monitor, "mode": mode,
                   "winner": winner["candidate"] if winner else None, "leaderboard": board,
                   "search_seconds": round(time.monotonic() - t0, 1)}
        (run_dir / "auto.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        if winner is None:
            raise AetherError("recipe=auto: no candidate finished: " + "; ".join(
                f"{r['candidate']}: {r.get('error') or r['status']}" for r in board)
                + f" (see {run_dir / 'auto'}; a larger auto.budget_minutes gives each more time)")
        return _finish(rc, raw, run_dir, base, plan, winner, summary, budget_s - (time.monotonic() - t0), run_name,
                       notes, budget_s)


def _epoch_s(row: Dict[str, Any]) -> float:
    """A candidate's measured seconds per epoch, with the slack a longer run needs."""
    done = int(row["epochs"] or 0)
    return EPOCH_SLACK * float(row.get("epoch_seconds") or float(row.get("train_minutes") or 0.0) * 60 / max(1, done))


def _final_epochs(row: Dict[str, Any], seconds: float) -> int:
    """Epochs of its schedule a candidate trains in `seconds`: its planned epochs, growing up to
    FINAL_EPOCHS_GROWTH times when the time holds them."""
    planned, per = int(row["planned_epochs"]), _epoch_s(row)
    if planned <= SEARCH_EPOCHS:  # its whole schedule ran in the search (a solved probe): nothing to grow
        return planned
    return min(planned * FINAL_EPOCHS_GROWTH, int(seconds // per)) if per > 0 else planned


def _challenger(board: List[Dict[str, Any]], winner: Dict[str, Any], mode: str,
                allowed_s: float) -> Optional[Dict[str, Any]]:
    """The runner-up that the short search may have underrated: cut short (its schedule is longer
    than the search's epochs), and affordable with the time the winner's final training leaves
    for at least twice the search's epochs. A few epochs favour what converges fast (a solved
    linear probe) over what converges further (a full fine-tune: digits from transferred
    weights, val 0.963 vs 0.959 after 3 epochs, test 0.955 vs 0.985 after 15)."""
    winner_s = _final_epochs(winner, allowed_s) * _epoch_s(winner)
    rest = [r for r in board if r is not winner and r["val_metric"] is not None and math.isfinite(r["val_metric"])
            and r["status"] == "complete" and int(r["planned_epochs"] or 0) > int(r["epochs"] or 0)]
    best = _best(rest, mode)
    if best is None or _final_epochs(best, allowed_s - winner_s) < 2 * SEARCH_EPOCHS:
        return None
    return best


def _finish(rc: Any, raw: Dict[str, Any], run_dir: Path, base: Sequence[str], plan: List[Candidate],
            winner: Dict[str, Any], summary: Dict[str, Any], left_s: float, run_name: str,
            notes: Sequence[str], budget_s: float) -> float:
    """Train the winner's full schedule in the run folder (as many epochs of it as the rest of the
    budget holds, measured from its candidate's epochs), test it once, write it out. A candidate
    that already ran its whole schedule (or stopped early) is kept as it is, not trained again.
    When the time holds it, the runner-up the short search may have underrated gets its full
    schedule too (aether.sweeps.auto_search._challenger) and the better of the two on
    validation is the one tested."""
    from aether.config.validate import validate
    from aether.run import _fit_and_report
    from aether.sweeps.summary import write_recipe

    after_test = (0.5 + (ANALYSIS_EPOCHS if rc.analysis.enabled else 0.0)) * _epoch_s(winner)
    allowed_s = max(6.0, left_s - SETUP_MARGIN * budget_s - FINAL_RESERVE_S - after_test)
    challenger = _challenger(summary["leaderboard"], winner, summary["mode"], allowed_s)
    if challenger is not None:
        winner, allowed_s = _final_round(rc, run_dir, base, plan, [winner, challenger], summary, allowed_s, run_name)
    cand = next(c for c in plan if c.name == winner["candidate"])
    done, planned = int(winner["epochs"] or 0), int(winner["planned_epochs"])
    epoch_s = _epoch_s(winner)
    epochs = done if challenger is not None else _final_epochs(winner, allowed_s)  # the final round trained it
    keep = winner["status"] == "early_stopped" or epochs <= done
    raw_w = _compose(base, cand, None if keep else allowed_s / 60)
    raw_w["trainer"]["max_epochs"] = done if keep else epochs
    if not keep:
        _fit_to_time(raw_w, planned * FINAL_EPOCHS_GROWTH)
    _no_early_stop(raw_w, rc)
    raw_w["auto"] = {**(raw_w.get("auto") or {}), "winner": cand.name}
    choices = _choices(base, cand)

    def write_best(final_epochs: int) -> Path:
        recipe_cfg = {**raw_w, "trainer": {**raw_w["trainer"], "max_minutes": None, "fit_epochs_to_time": None,
                                           "max_epochs": final_epochs}}
        return write_recipe(run_dir / "best_recipe.yaml", recipe_cfg, choices,
                            [f"The winner of recipe=auto in {run_dir}: candidate '{cand.name}' "
                             f"({winner['monitor']} = {winner['val_metric']:.4f} on validation)."])

    recipe = write_best(max(epochs, done))
    how = (f"kept as trained ({done} epochs)" if keep else
           f"trained again in full: {epochs} epochs ({planned} planned, up to {FINAL_EPOCHS_GROWTH}x) fit the "
           f"{allowed_s / 60:.1f} min left ({epoch_s:.1f} s an epoch; re-fitted at epoch ends to the epochs' "
           "own time)")
    log.info("auto: winner '%s' (%s %.4f) -> %s; %s", cand.name, winner["monitor"], winner["val_metric"], recipe, how)
    summary["winner"] = cand.name
    summary["final"] = {"candidate": cand.name, "kept": keep, "epochs": raw_w["trainer"]["max_epochs"],
                        "planned_epochs": planned, "minutes_allowed": None if keep else round(allowed_s / 60, 2)}
    (run_dir / "auto.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    explicit = set(rc._explicit) | keys_of(cand.overrides) | {"trainer.max_epochs"}  # the epochs fitted above
    if keep:  # its checkpoints become the run's; the resume road tests and writes them out
        _relocate(Path(winner.get("folder") or run_dir / "auto" / cand.name), run_dir)
        rc_w = validate({**raw_w, "resume": str(run_dir)})
    else:
        rc_w = validate(raw_w)
    rc_w._explicit = explicit
    score = _fit_and_report(rc_w, raw_w, run_dir, run_name, list(notes))
    fitted = int(raw_w["trainer"]["max_epochs"])  # EpochsFitToTime re-fitted it (and config.yaml) as it ran
    if not keep and fitted != epochs:
        write_best(fitted)
        summary["final"]["epochs"] = fitted
        (run_dir / "auto.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return score


def _fit_to_time(raw: Dict[str, Any], cap: int) -> None:
    """A final training's epoch count follows the time it has left, measured on its own epochs
    (trainer.fit_epochs_to_time, up to `cap` epochs): the count fitted from the search's epoch
    time is a first guess. A user's own value stands."""
    if raw["trainer"].get("fit_epochs_to_time") is None:
        raw["trainer"]["fit_epochs_to_time"] = cap


def _final_round(rc: Any, run_dir: Path, base: Sequence[str], plan: List[Candidate], finalists: List[Dict[str, Any]],
                 summary: Dict[str, Any], allowed_s: float, run_name: str) -> Tuple[Dict[str, Any], float]:
    """Each finalist trains its full schedule in RUN/auto/NAME-final (validation only), the
    winner first; the better on validation is returned as a finished row (kept as trained)."""
    from aether.config.validate import validate
    from aether.run import _fit_and_report

    start = time.monotonic()
    rows: List[Dict[str, Any]] = []
    for row in finalists:
        cand = next(c for c in plan if c.name == row["candidate"])
        left = allowed_s - (time.monotonic() - start)
        epochs = _final_epochs(row, left)
        if row["status"] == "early_stopped" or epochs <= int(row["epochs"] or 0):
            rows.append({**row, "folder": str(run_dir / "auto" / cand.name)})  # already as far as it goes
            continue
        log.info("auto: final round, '%s' trains %d epochs (up to %.1f min)", cand.name, epochs, left / 60)
        info: Dict[str, Any] = {}
        t = time.monotonic()
        raw_f = _compose(base, cand, left / 60)
        raw_f["trainer"]["max_epochs"] = epochs
        _fit_to_time(raw_f, int(row["planned_epochs"]) * FINAL_EPOCHS_GROWTH)
        _no_early_stop(raw_f, rc)
        rc_f = validate(raw_f)
        rc_f._explicit = set(rc._explicit) | keys_of(cand.overrides) | {"trainer.max_epochs"}
        folder = run_dir / "auto" / f"{cand.name}-final"
        try:
            _fit_and_report(rc_f, raw_f, folder, f"{run_name}-{cand.name}-final", (), search=info)
        except Exception as exc:  # the search's run of it stands
            log.warning("auto: final round of '%s' failed: %s", cand.name, str(exc).splitlines()[0] if str(exc) else exc)
            rows.append({**row, "folder": str(run_dir / "auto" / cand.name)})
            continue
        final = _row(cand, {**info, "planned_epochs": row["planned_epochs"]}, time.monotonic() - t, row["monitor"])
        rows.append({**final, "status": "complete", "folder": str(folder)})
    summary["final_round"] = [{k: r[k] for k in ("candidate", "val_metric", "seconds", "epochs", "folder")} for r in rows]
    best = _best(rows, summary["mode"]) or rows[0]
    log.info("auto: final round: %s", ", ".join(f"{r['candidate']} {r['val_metric']:.4f}" for r in rows
                                                 if r["val_metric"] is not None))
    return best, allowed_s - (time.monotonic() - start)


def _choices(base: Sequence[str], cand: Candidate) -> Dict[str, str]:
    """Config-group choices of the winner (for best_recipe.yaml's defaults list)."""
    from hydra.core.hydra_config import HydraConfig

    choices = {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None}
    for o in [*base, *cand.overrides]:
        key, _, value = o.lstrip("+~").partition("=")
        if key in choices:
            choices[key] = value
    return choices
