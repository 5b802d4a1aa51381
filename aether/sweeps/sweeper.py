"""Aether's Optuna sweeper: a thin Hydra Sweeper around current Optuna.

Why not hydra-optuna-sweeper: its 1.3.0 pins optuna<3 (2.10.1) and SQLAlchemy 1.4, it has no
pruning (hydra#1710, hydra#1954: the trial object never reaches the training code), and a
re-run starts `n_trials` new trials in a new, timestamped folder rather than finishing the
study. Here the study lives in SQLite inside the sweep folder (or in `sweep.storage`: a PostgreSQL
server that sweeps on several machines share), each trial is an ordinary Hydra job (any launcher),
and the training process reaches its trial through that storage (aether.sweeps.trial), so pruning
works in-process and in joblib/SLURM workers alike.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from aether.errors import AetherError
from aether.sweeps.spec import SweepCfg
from aether.sweeps.spec import mask_url
from aether.sweeps.study import (SWEEPER_ATTR, is_own, is_shared, load_spec, objective, open_study,
                                   storage_url, study_name, sweeper_id)

log = logging.getLogger("aether.sweep")

LOCK_NAME = ".sweeper.pid"


class _Lock:
    """One sweeper per study: a second one would take the first one's running trials for dead ones."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / LOCK_NAME

    def __enter__(self) -> "_Lock":
        if self.path.exists():
            try:
                pid = int(self.path.read_text().strip() or 0)
            except ValueError:
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise AetherError(f"another sweep (pid {pid}) is running in {self.path.parent}; "
                                  "wait for it or stop it before continuing this study")
        self.path.write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OptunaSweeper(Sweeper):
    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def _batch_size(self) -> int:
        """Trials asked for at once: the launcher's parallelism (joblib n_jobs, submitit array_parallelism)."""
        n = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
        if n is None:
            n = OmegaConf.select(self.config, "hydra.launcher.array_parallelism", default=1)
        n = int(n or 1)
        return n if n > 0 else max(1, (os.cpu_count() or 1) + 1 + n)  # joblib: -1 = all cores

    def sweep(self, arguments: List[str]) -> List[Sequence[JobReturn]]:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from optuna.trial import TrialState

        from aether.sweeps.space import format_value, params_from_arguments, parse_space

        assert self.config is not None and self.hydra_context is not None
        cfg = self.config
        spec = load_spec(cfg)
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(arguments)
        cmd_space = params_from_arguments(parsed)  # `key=a,b` / `key=interval(...)` on the command line
        cmd_keys = {p.key.lstrip("+~") for p in cmd_space}
        # a value set on the command line wins over the sweep file's range for that key; a command-line
        # range wins over a value (recipe=auto's choice is then where the search starts)
        fixed = [o for o in parsed if not o.is_sweep_override() and o.get_key_element().lstrip("+~") not in cmd_keys]
        fixed_keys = {o.get_key_element().lstrip("+~") for o in fixed}
        space = [p for p in parse_space(spec.params) if p.key not in fixed_keys] + cmd_space
        fixed = [f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in fixed]
        if not space:
            raise AetherError(f"sweep '{spec.name}' has nothing to search: give sweep.params in its file or "
                              "sweeps on the command line (e.g. optimizer.lr='tag(log,interval(1e-4,1e-2))')")

        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        max_epochs = int(OmegaConf.select(cfg, "trainer.max_epochs", default=1))
        returns: List[Sequence[JobReturn]] = []
        shared, me = is_shared(spec, sweep_dir), sweeper_id(sweep_dir)
        url, name = storage_url(spec, sweep_dir), study_name(spec)
        with _Lock(sweep_dir):
            study = open_study(spec, sweep_dir, max_epochs, int(cfg.get("seed", 0)))
            if shared:
                log.info("sweep: study '%s' in %s, shared with other sweeps (%d trials so far)", name,
                         mask_url(url), len(study.get_trials(deepcopy=False)))
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if not is_own(t, spec, sweep_dir):
                    continue  # another machine's sweep is running it
                # left RUNNING by this sweep when it was killed: mark it failed and try its parameters again
                study.tell(t.number, state=TrialState.FAIL)
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
                log.info("sweep: trial %d was interrupted; retrying it with the same parameters", t.number)
            if not study.get_trials(deepcopy=False):
                self._enqueue_start(study, spec, space)
            target = spec.n_trials
            finished = (TrialState.COMPLETE, TrialState.PRUNED)

            def own_done() -> int:
                return sum(is_own(t, spec, sweep_dir) for t in study.get_trials(deepcopy=False, states=finished))

            done = own_done()
            log.info("sweep '%s' in %s: %d of %s trials already finished; %s %s", spec.name, sweep_dir, done,
                     target if target is not None else f"(up to {spec.budget_minutes:g} min of)", spec.direction,
                     spec.metric)
            t0, durations, failures = time.monotonic(), [], 0
            while True:
                done = own_done()
                left = None if target is None else target - done
                if left is not None and left <= 0:
                    break
                if spec.budget_minutes is not None:
                    elapsed = time.monotonic() - t0
                    expected = sum(durations) / len(durations) if durations else 0.0
                    if elapsed + expected > spec.budget_minutes * 60:
                        log.info("sweep: budget of %g min reached after %.1f min", spec.budget_minutes, elapsed / 60)
                        break
                n = self._batch_size() if left is None else min(self._batch_size(), left)
                trials = [study.ask() for _ in range(n)]
                batch = []
                for trial in trials:
                    trial.set_user_attr(SWEEPER_ATTR, me)
                    values = [f"{p.key}={format_value(p.suggest(trial))}" for p in space]
                    # other sweeps' trials leave gaps in the numbers: each run folder is named after its trial
                    folder = [f"hydra.sweep.subdir={trial.number}"] if shared else []
                    batch.append([*fixed, *values, f"++sweep.trial={trial.number}",
                                  f"++sweep.storage={format_value(url)}", f"++sweep.study={format_value(name)}",
                                  *folder])
                    log.info("sweep: trial %d: %s", trial.number, " ".join(values))
                tic = time.monotonic()
                results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
                durations.append((time.monotonic() - tic) / max(1, len(trials)))
                for trial, ret in zip(trials, results):
                    failures += self._tell(study, trial, ret, spec)
                returns.append(results)
                if failures >= max(3, target or 3):  # failed trials do not count: never ask forever
                    log.error("sweep '%s': stopping after %d failed trials; see their logs in %s", spec.name,
                              failures, sweep_dir)
                    break
        return returns

    def _enqueue_start(self, study: Any, spec: SweepCfg, space: List[Any]) -> None:
        """A new study first tries the run's own values (when they lie in the space), then `sweep.enqueue`."""
        starts = []
        if spec.start_from_config:
            choices = OmegaConf.select(self.config, "hydra.runtime.choices", default={}) or {}
            own = {p.key: choices.get(p.key) if p.key in choices else OmegaConf.select(self.config, p.key)
                   for p in space}
            start = {p.key: own[p.key] for p in space if p.contains(own[p.key])}
            if start:
                starts.append(start)
        for entry in spec.enqueue:
            unknown = sorted(set(entry) - {p.key for p in space})
            if unknown:
                raise AetherError(f"sweep.enqueue: {', '.join(unknown)} not in the search space "
                                  f"({', '.join(p.key for p in space)})")
            starts.append(dict(entry))
        for params in starts:
            study.enqueue_trial(params)
            log.info("sweep: queued first: %s", " ".join(f"{k}={v}" for k, v in params.items()))

    def _tell(self, study: Any, trial: Any, ret: JobReturn, spec: SweepCfg) -> int:
        """Record one finished job in the study; returns 1 when it failed."""
        import json

        from optuna.trial import TrialState

        run_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg is not None else None
        if run_dir is not None:
            trial.set_user_attr("run_dir", str(run_dir))
        if ret.status != JobStatus.COMPLETED:
            log.error("sweep: trial %d failed: %s", trial.number, ret._return_value)
            study.tell(trial, state=TrialState.FAIL)
            return 1
        metrics_file = run_dir / "metrics.json" if run_dir else None
        metrics = json.loads(metrics_file.read_text()) if metrics_file and metrics_file.is_file() else {}
        if metrics.get("sweep", {}).get("state") == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
            log.info("sweep: trial %d pruned after epoch %s", trial.number, metrics["sweep"]["pruned_at_epoch"] + 1)
            return 0
        value = objective(metrics, spec.metric, spec.direction)
        if value is None:
            keys = sorted({k for row in metrics.get("history", []) for k in row})
            log.error("sweep: trial %d logged no '%s' (sweep.metric); logged: %s", trial.number, spec.metric,
                      ", ".join(keys) or "nothing")
            study.tell(trial, state=TrialState.FAIL)
            return 1
        study.tell(trial, value)
        log.info("sweep: trial %d finished: %s = %.4f (best so far %.4f)", trial.number, spec.metric, value,
                 study.best_value)
        return 0
