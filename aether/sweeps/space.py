"""Search spaces in Hydra's own override syntax, turned into Optuna suggestions.

A sweep file lists ``key: choice(4, 8, 16)``, ``key: range(1, 5)`` or
``key: tag(log, interval(1e-5, 1e-2))`` - the syntax users already know from `aether -m` -
and command-line sweeps (``optimizer.lr=interval(1e-4,1e-2)``) add dimensions the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List

_PLAIN = re.compile(r"^[A-Za-z0-9_.\-/]+$")


@dataclass
class Param:
    key: str  # a config key or a group (`model` picks a preset)
    override: Any  # hydra.core.override_parser.types.Override (a sweep)

    def suggest(self, trial: Any) -> Any:
        """Ask the Optuna trial for this parameter's value."""
        o = self.override
        sweep = o.value()
        if o.is_choice_sweep():
            return trial.suggest_categorical(self.key, list(sweep.list))
        if o.is_range_sweep():
            start, stop, step = sweep.start, sweep.stop, sweep.step
            if all(float(x).is_integer() for x in (start, stop, step)):
                last = int(start + (int((stop - start - 1) // step)) * step)  # range() excludes stop
                return trial.suggest_int(self.key, int(start), last, step=int(step))
            n = int((stop - start) / step - 1e-9)
            return trial.suggest_float(self.key, start, start + n * step, step=step)
        # interval: continuous, log-scaled with tag(log, ...); integer when both ends are ints
        log = "log" in sweep.tags
        if isinstance(sweep.start, int) and isinstance(sweep.end, int) and "float" not in sweep.tags:
            return trial.suggest_int(self.key, sweep.start, sweep.end, log=log)
        return trial.suggest_float(self.key, float(sweep.start), float(sweep.end), log=log)

    def contains(self, value: Any) -> bool:
        """Whether `value` lies in this dimension (so a trial can be started from it)."""
        o, sweep = self.override, self.override.value()
        if o.is_choice_sweep():
            return value in list(sweep.list)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        if o.is_range_sweep():
            return sweep.start <= value < sweep.stop
        return sweep.start <= value <= sweep.end

    def choice_override(self) -> str:
        """The values to check before anything runs (an interval has no finite list: its ends)."""
        o = self.override
        if o.is_interval_sweep():
            sweep = o.value()
            return f"{self.key}=choice({format_value(sweep.start)},{format_value(sweep.end)})"
        return o.input_line


def format_value(value: Any) -> str:
    """A Python value as a Hydra override value (quoted when it needs to be)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_space(params: Dict[str, str]) -> List[Param]:
    """Parse a sweep file's `params:`; ValueError names the entry and the expected forms."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for key, spec in params.items():
        line = f"{key}={spec}"
        try:
            o = parser.parse_override(line)
        except HydraException as err:
            raise ValueError(f"params.{key}: cannot parse '{spec}' ({str(err).splitlines()[0]})") from None
        if not o.is_sweep_override():
            raise ValueError(f"params.{key} = '{spec}': expected choice(a, b, ...), range(start, stop[, step]) "
                             "or [tag(log, ...)]interval(low, high)")
        out.append(Param(key, o))
    return out


def params_from_arguments(overrides: List[Any]) -> List[Param]:
    """Command-line sweeps (`key=a,b`, `key=interval(...)`) become dimensions of the search space."""
    out = []
    for o in overrides:
        if o.is_sweep_override():
            out.append(Param(o.get_key_element(), o))
    return out
