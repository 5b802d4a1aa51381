"""Check command-line overrides before Hydra runs anything (and before torch is imported).

Hydra alone stops at the first unknown key or group option; this pass reports all of them
at once, with did-you-mean suggestions, then validates the composed config against the
schema for every value a sweep will try.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Sequence, Tuple

from omegaconf import OmegaConf

from aether.config import hydra_setup, trust
from aether.config.validate import PART_SECTIONS, ConfigError, Problem, drop_foreign_options, validate
from aether.suggest import did_you_mean


def rewrite_data_shorthand(overrides: Sequence[str]) -> List[str]:
    """`data=PATH` is a plain value for users; in the config it is `data.path`."""
    out = []
    for o in overrides:
        for prefix in ("data=", "+data=", "++data="):
            if o.startswith(prefix):
                o = "data.path=" + o[len(prefix):]
                break
        out.append(o)
    return out


def _values(o: Any) -> List[Any]:
    if o.is_choice_sweep() or o.is_range_sweep():
        return list(o.sweep_iterator())
    if o.is_interval_sweep():
        return []  # a continuous search space (Optuna): nothing concrete to check
    return [o.value()]


def _set(cfg: Dict[str, Any], dotted: str, value: Any) -> None:
    node = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _lookup(cfg: Dict[str, Any], dotted: str) -> tuple[bool, List[str], str]:
    """(exists, sibling keys at the deepest existing level, the first missing key)."""
    node: Any = cfg
    for p in dotted.split("."):
        if not isinstance(node, dict):
            return False, [], p
        if p not in node:
            return False, list(node), p
        node = node[p]
    return True, [], ""


def _unknown_key(base: Dict[str, Any], key: str, siblings: List[str], missing: str) -> str:
    parts = key.split(".")
    # the section holding the first missing key (`ema.enabled` with no `ema`: the top level)
    depth = parts.index(missing) if missing in parts else len(parts) - 1
    parent = ".".join(parts[:depth]) or "(top level)"
    reg, name = PART_SECTIONS.get(parent), (base.get(parent) or {}).get("name")
    entry = reg.get(name) if reg is not None and isinstance(name, str) and name in reg else None
    if entry is not None and entry.config is not None and not entry.config.model_fields:
        return f"unknown key '{missing}'; {reg.kind} '{name}' takes no options"  # not "valid keys: name"
    if entry is not None and entry.config is not None:  # the chosen part's options, not what the config holds
        return f"unknown key '{missing}' for {parent} '{name}'; valid keys: {', '.join(entry.config.model_fields)}"
    where = "at the top level" if depth == 0 else f"under {parent}"
    return f"unknown key '{missing}' {where}; valid keys: {', '.join(siblings)}"


def check(overrides: Sequence[str]) -> List[str]:
    """Raise ConfigError listing every problem with these overrides; when fine, return the notes
    on what the config files set that the chosen parts do not take and was dropped
    (validate.drop_foreign_options), for the caller to show once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError([Problem("command line", " ".join(overrides), str(err).strip())]) from None
    trust.check_overrides(parsed)  # no `_target_`, only plain hydra settings (aether.config.trust)

    groups = set(hydra_setup.groups())
    group_ovs, value_ovs = [], []
    for o in parsed:
        key = o.key_or_group
        if key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/"):
            continue  # Hydra's own settings: trust.check_overrides refused the unsafe ones, Hydra checks the rest
        (group_ovs if key in groups else value_ovs).append(o)

    problems: List[Problem] = []
    first_choices: List[str] = []
    for o in group_ovs:
        if o.is_delete():
            first_choices.append(o.input_line)
            continue
        options = hydra_setup.group_options(o.key_or_group)
        values = [str(v) for v in _values(o)]
        for v in values:
            if v not in options:
                problems.append(Problem(o.key_or_group, v,
                                        f"no such {o.key_or_group}; choose one of: {', '.join(options)}",
                                        did_you_mean(v, options)))
        valid = [v for v in values if v in options]
        if valid:  # keep checking the rest against a config composed from the valid choices
            prefix = "+" if o.is_add() else ""
            first_choices.append(f"{prefix}{o.key_or_group}={valid[0]}")

    cfg = hydra_setup.compose(first_choices)
    base = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(base, dict)

    candidates: List[Tuple[str, Any]] = []  # (key, value) of every further sweep value to check
    for o in value_ovs:
        key = o.key_or_group
        if o.is_delete():
            continue
        if not (o.is_add() or o.is_force_add()):
            exists, siblings, missing = _lookup(base, key)
            if not exists:
                problems.append(Problem(key, o.input_line.split("=", 1)[-1], _unknown_key(base, key, siblings, missing),
                                        did_you_mean(missing, siblings)))
                continue
        values = _values(o)
        if values:
            _set(base, key, values[0])
            for v in values[1:]:
                candidates.append((key, v))
    if problems:
        raise ConfigError(problems)
    notes = drop_foreign_options(base, {o.key_or_group for o in value_ovs})  # a recipe's options of a switched part

    found: Dict[str, Problem] = {}
    for variant in [None] + candidates:
        cfg_i = base
        if variant is not None:
            cfg_i = copy.deepcopy(base)
            _set(cfg_i, variant[0], variant[1])
        try:
            validate(cfg_i)
        except ConfigError as err:
            for p in err.problems:
                found.setdefault(str(p), p)
    if found:
        raise ConfigError(list(found.values()))
    return notes
