"""Validate a composed config once, reporting every problem at once.

Each problem names the dotted key, the value found, what was expected and, for unknown keys
and names, the closest valid spelling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Type, get_args

from pydantic import BaseModel, ValidationError

from aether import registry
from aether.errors import AetherError
from aether.config.schema import RunCfg
from aether.config.resources import devices_count_problem
from aether.suggest import did_you_mean
from aether.sweeps.spec import mask_url

# Sections that select a registered part by `name`.
PART_SECTIONS = {
    "strategy": registry.strategies,
    "optimizer": registry.optimizers,
    "scheduler": registry.schedulers,
    "logger": registry.loggers,
}


@dataclass
class Problem:
    key: str
    value: Any
    expected: str
    hint: str = ""

    def __str__(self) -> str:
        shown = mask_url(repr(self.value)) if self.value is not None else "(missing)"  # no URL's password
        if isinstance(self.value, (dict, list)) and len(shown) > 60:
            shown = shown[:57] + "..."
        return f"{self.key} = {shown}: {self.expected}{self.hint}"


class ConfigError(AetherError):
    """Every problem found in a config, in one exception."""

    def __init__(self, problems: Sequence[Problem], header: str = "invalid config") -> None:
        self.problems = list(problems)
        lines = [f"{header} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def _fields_at(model: Type[BaseModel], loc: Tuple[Any, ...]) -> List[str]:
    """Field names of the (nested) model that `loc` points into."""
    cls: Any = model
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            break
        # Optional[Model] (e.g. `sweep`) is a Union: look into its members, or the keys go unlisted
        members = [field.annotation, *get_args(field.annotation)]
        cls = next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}) or [])


def _unknown_key(loc: Tuple[Any, ...], model: Type[BaseModel], owner: str) -> str:
    """What an unknown key should have been; `owner` ("strategy 'linear_probe'") names the part
    whose options `model` are, so a part without options says so instead of listing nothing."""
    siblings = _fields_at(model, tuple(loc[:-1]))
    top = len(loc) == 1 and owner
    if siblings:
        return f"unknown key{f' for {owner}' if top else ''}; valid keys: {', '.join(siblings)}"
    return f"unknown key; {owner} takes no options" if top else "unknown key"


def _problems_from(err: ValidationError, model: Type[BaseModel], prefix: str, owner: str = "") -> List[Problem]:
    out: List[Problem] = []
    for e in err.errors():
        loc = tuple(e["loc"])
        # pydantic appends the union member / function name to loc for unions; keep real keys
        keys = [str(x) for x in loc if not (isinstance(x, str) and ("[" in x or x in ("literal", "function-after")))]
        dotted = ".".join(filter(None, [prefix] + keys))
        if e["type"] == "extra_forbidden":
            out.append(Problem(dotted, e.get("input"), _unknown_key(loc, model, owner),
                               did_you_mean(str(loc[-1]), _fields_at(model, tuple(loc[:-1])))))
        elif e["type"] == "missing":
            out.append(Problem(dotted, None, "required key is missing"))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            out.append(Problem(dotted, e.get("input"), msg))
    # one union failure yields one error per member; keep the first per key
    seen, unique = set(), []
    for p in out:
        if p.key not in seen:
            seen.add(p.key)
            unique.append(p)
    return unique


def validate(cfg: Dict[str, Any]) -> RunCfg:
    """Validate a plain-dict config (the `hydra` node removed); raise ConfigError listing everything."""
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    problems: List[Problem] = []
    parsed: Optional[RunCfg] = None
    try:
        parsed = RunCfg.model_validate(cfg)
    except ValidationError as err:
        problems += _problems_from(err, RunCfg, "")

    for section, reg in PART_SECTIONS.items():
        node = cfg.get(section)
        if not isinstance(node, dict) or "name" not in node:
            continue  # already reported above
        problems += _check_part(section, node, reg)

    data = cfg.get("data") or {}
    if isinstance(data, dict):
        fmt = data.get("format", "auto")
        known = registry.adapters.names()  # every dataset format is a registered adapter
        if fmt != "auto" and fmt not in known:
            problems.append(Problem("data.format", fmt, f"unknown data format; choose auto or one of: {', '.join(known)}",
                                    did_you_mean(str(fmt), known)))
        elif fmt in registry.adapters:
            problems += _check_part("data", {"name": fmt, **(data.get("options") or {})},
                                    registry.adapters, name_key="format", options_key="options")
    task = cfg.get("task", "auto")
    if isinstance(task, str) and task != "auto":  # `auto`: the options are checked once the data says which task
        problems += _check_part("task", {"name": task, **(cfg.get("task_options") or {})}, registry.tasks,
                                name_key="", options_key="task_options")
    model = cfg.get("model") or {}
    if isinstance(model, dict) and "provider" in model:
        if model["provider"] not in registry.backbones:
            problems.append(Problem("model.provider", model["provider"],
                                    f"unknown backbone provider; choose one of: {', '.join(registry.backbones.names())}",
                                    did_you_mean(model["provider"], registry.backbones.names())))
    if parsed is not None:  # CPUs are known without torch; GPUs are counted before the Trainer (training.guards)
        too_many = devices_count_problem(parsed.trainer.accelerator, parsed.trainer.devices, gpus=None)
        if too_many:
            problems.append(Problem("trainer.devices", parsed.trainer.devices, too_many))
        if parsed.ema.enabled and parsed.trainer.strategy.startswith("fsdp"):
            problems.append(Problem("ema.enabled", True, f"weight averaging does not work with trainer.strategy="
                                    f"{parsed.trainer.strategy} (its parameters are flat shards); use "
                                    "trainer.strategy=ddp or set ema.enabled=false"))
    if problems:
        raise ConfigError(problems)
    assert parsed is not None
    return parsed


def _check_part(section: str, node: Dict[str, Any], reg: registry.Registry,
                name_key: str = "name", options_key: Optional[str] = None) -> List[Problem]:
    name = node["name"]
    if name not in reg:
        return [Problem(f"{section}.{name_key}".rstrip("."), name,
                        f"unknown {reg.kind}; choose one of: {', '.join(reg.names())}",
                        did_you_mean(name, reg.names()))]
    entry = reg.get(name)
    if entry.config is None:
        return []
    options = {k: v for k, v in node.items() if k != "name"}
    try:
        entry.config.model_validate(options)
    except ValidationError as err:
        prefix = (f"{section}.{options_key}" if name_key else options_key) if options_key else section
        return _problems_from(err, entry.config, prefix, owner=f"{reg.kind} '{name}'")
    return []


def typed_keys(overrides: Iterable[str]) -> Set[str]:
    """The dotted keys a command line sets (`+strategy.lr_scale=0.5` -> 'strategy.lr_scale')."""
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def _owners(reg: registry.Registry, name: str) -> Dict[str, List[str]]:
    """Each option of the parts other than `name` in `reg` -> the parts that take it."""
    owners: Dict[str, List[str]] = {}
    for other in reg:
        if other.name != name and other.config is not None:
            for key in other.config.model_fields:
                owners.setdefault(key, []).append(other.name)
    return owners


def drop_foreign_options(cfg: Dict[str, Any], user_keys: Iterable[str]) -> List[str]:
    """Remove from each part section the options that belong to another part of that section
    (`strategy=linear_probe` over a recipe written for gradual_unfreeze); one note per section.

    Only what the config files set is dropped: a key the user typed stays and is reported by
    `validate`, and so does one no registered part takes (a typo, not a switch). A part without
    a schema (a plugin's, `config=None`) accepts anything, so its section is left alone."""
    typed = set(user_keys)
    recipe = cfg.get("recipe")
    source = f"the recipe {recipe}" if isinstance(recipe, str) and recipe != "default" else "the config files"
    notes: List[str] = []
    for section, reg in PART_SECTIONS.items():
        node = cfg.get(section)
        name = node.get("name") if isinstance(node, dict) else None
        if not isinstance(name, str) or name not in reg or reg.get(name).config is None:
            continue  # an unknown or missing name is validate's to report
        accepted, owners = reg.get(name).config.model_fields, _owners(reg, name)
        dropped = sorted(k for k in node if k != "name" and k not in accepted and k in owners
                         and not any(t == f"{section}.{k}" or t.startswith(f"{section}.{k}.") for t in typed))
        for k in dropped:
            del node[k]
        if dropped:
            by = sorted({o for k in dropped for o in owners[k]})
            notes.append(f"{section}={name}: dropped {', '.join(f'{section}.{k}' for k in dropped)} "
                         f"(options of {', '.join(by)} set by {source})")
    return notes


def part_options(section_cfg: Dict[str, Any], reg: registry.Registry) -> BaseModel:
    """The typed options of the part a section selects (defaults filled in)."""
    entry = reg.get(section_cfg["name"])
    options = {k: v for k, v in section_cfg.items() if k != "name"}
    return entry.config.model_validate(options) if entry.config else options  # type: ignore[return-value]
