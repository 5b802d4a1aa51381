"""`aether list WHAT`: what can be chosen, straight from the registries and config groups.

`aether list strategies` lists the registered strategies; `aether list strategy lora` (or
`strategies lora`) lists the options of one part; `aether list data` (trainer, model, loss,
ema, cost, sweep, auto, config, or any dotted section such as trainer.early_stopping) lists a
section of the run's config. Options come from the pydantic models themselves: name, type (with its
bounds), default and the field's `description=`. Nothing here imports torch.
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type, Union, get_args, get_origin

from aether import registry
from aether.suggest import did_you_mean

GROUP_LISTS = {"recipes": "recipe", "models": "model"}
WHATS = sorted(list(GROUP_LISTS) + list(registry.REGISTRIES) + ["groups", "lora-targets"])

# `aether list KIND NAME`: the singular of each registry, and where its options go in a config
KINDS: Dict[str, registry.Registry] = {
    "adapter": registry.adapters, "backbone": registry.backbones, "strategy": registry.strategies,
    "optimizer": registry.optimizers, "scheduler": registry.schedulers, "logger": registry.loggers,
    "task": registry.tasks,
}
KIND_OF = {**KINDS, **{r.plural: r for r in KINDS.values()}}
OPTION_PREFIX = {"adapters": "data.options.", "backbones": "", "tasks": "task_options."}
# the config groups whose files preset a part's options (conf/<group>/<name>.yaml)
PART_GROUP = {"strategies": "strategy", "optimizers": "optimizer", "schedulers": "scheduler", "loggers": "logger"}
SECTIONS = ["config", "data", "model", "trainer", "loss", "ema", "test", "calibration", "analysis", "cost", "sweep",
            "auto"]  # the top of the tree


# ---------------------------------------------------------------- options of a pydantic model

OptionRow = Tuple[str, str, str, str]  # key, type, default, description


def _model_in(annotation: Any) -> Optional[type]:
    """The pydantic model an annotation holds (`DataCfg`, `Optional[SweepCfg]`), else None."""
    from pydantic import BaseModel

    for a in (annotation, *get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _num(v: Any) -> str:
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return f"{v:.1f}"
        return repr(v) if len(repr(v)) <= 8 else f"{v:.6g}"
    return str(v)


def value_text(v: Any) -> str:
    """A value as it would be written in YAML or on the command line."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _num(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value_text(x)}" for k, x in v.items()) + "}"
    return str(v) if v != "" else "''"


def _bounds(metadata: List[Any]) -> str:
    lo = hi = ""
    for m in metadata:
        for attr, side in (("ge", "["), ("gt", "("), ("le", "]"), ("lt", ")")):
            if getattr(m, attr, None) is not None:
                text = f"{side}{_num(getattr(m, attr))}" if side in "[(" else f"{_num(getattr(m, attr))}{side}"
                if side in "[(":
                    lo = text
                else:
                    hi = text
    if lo and hi:
        return f" in {lo}, {hi}"
    if lo:
        return f" {'>=' if lo[0] == '[' else '>'} {lo[1:]}"
    if hi:
        return f" {'<=' if hi[-1] == ']' else '<'} {hi[:-1]}"
    return ""


def type_text(annotation: Any, bounds: str = "") -> str:
    """`Optional[float]` with ge=0 -> 'float >= 0 | null'; Literal members joined by ' | '."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is Literal:
        return " | ".join(value_text(a) for a in args)
    if origin is Union or origin is getattr(types, "UnionType", None):
        members = [type_text(a, bounds) for a in args if a is not type(None)]
        return " | ".join(dict.fromkeys(members + (["null"] if type(None) in args else [])))
    if origin in (list, List):
        return f"list[{type_text(args[0]) if args else 'any'}]"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin is dict:
        return f"mapping[{type_text(args[0])}, {type_text(args[1])}]" if args else "mapping"
    if _model_in(annotation) is not None:
        return "section"
    name = getattr(annotation, "__name__", str(annotation))
    return name + bounds if annotation in (int, float) else name


def _default(field: Any) -> Any:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return field.default_factory()
    return field.default if field.default is not PydanticUndefined else PydanticUndefined


def option_rows(model: Type[Any], prefix: str = "", flatten: bool = True) -> List[OptionRow]:
    """One row per field of `model` (a pydantic model): nested sections that are always present
    (`data.augment`, `trainer.early_stopping`) are flattened into dotted keys when `flatten`."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    rows: List[OptionRow] = []
    for name, field in getattr(model, "model_fields", {}).items():
        key = prefix + name
        default = _default(field)
        nested = _model_in(field.annotation)
        if flatten and nested is not None and isinstance(default, BaseModel):
            rows += option_rows(nested, key + ".", flatten)
            continue
        if isinstance(default, BaseModel) or (nested is not None and default is PydanticUndefined):
            shown = ""
        else:
            shown = "required" if default is PydanticUndefined else value_text(default)
        rows.append((key, type_text(field.annotation, _bounds(field.metadata)), shown, field.description or ""))
    return rows


def undescribed(model: Type[Any], where: str = "") -> List[str]:
    """Dotted names of the fields of `model` and of its nested models that lack a description."""
    missing: List[str] = []
    for name, field in getattr(model, "model_fields", {}).items():
        key = f"{where}{name}"
        if not (field.description or "").strip():
            missing.append(key)
        nested = _model_in(field.annotation)
        if nested is not None:
            missing += undescribed(nested, key + ".")
    return missing


# ---------------------------------------------------------------- presets in conf/


def _yaml(path: Path) -> Dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _dig(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _preset_files(section: str, part: Optional[Tuple[str, str]]) -> List[Tuple[str, Path]]:
    """(key prefix inside the section, file) pairs whose values a run gets by default: the part's
    own file (`conf/strategy/lora.yaml`), or the defaults list of conf/config.yaml for a section."""
    from aether.paths import builtin_conf_dir

    conf = builtin_conf_dir()
    if part is not None:
        group, name = part
        return [("", conf / group / f"{name}.yaml")]
    chosen: Dict[str, str] = {}
    for item in _yaml(conf / "config.yaml").get("defaults") or []:
        if isinstance(item, dict):
            chosen.update({str(k): str(v) for k, v in item.items()})
    files = []
    for group, name in chosen.items():  # data/augment -> key prefix augment. inside `data`
        dotted = group.replace("/", ".")
        if dotted == section or dotted.startswith(section + "."):
            files.append((dotted[len(section) + 1:] + "." if dotted != section else "", conf / group / f"{name}.yaml"))
    if section == "config":
        files.append(("", conf / "config.yaml"))
    return files


def with_presets(rows: List[OptionRow], strip: str, files: List[Tuple[str, Path]]) -> List[OptionRow]:
    """Where a built-in config file sets a key to another value than the schema's default, the
    default cell says so: `0.0 (conf: 1)` - what `scheduler=cosine` (or the default run) gets."""
    loaded = [(inner, _yaml(f)) for inner, f in files]
    out = []
    for key, typ, default, desc in rows:
        rel = key[len(strip):]
        for inner, values in loaded:
            if inner and not rel.startswith(inner):
                continue
            value = _dig(values, rel[len(inner):])
            if value is not _MISSING and not isinstance(value, dict):
                if value_text(value) != default and not _same_number(value, default):
                    default = f"{default} (conf: {value_text(value)})"
                break
        out.append((key, typ, default, desc))
    return out


def _same_number(value: Any, text: str) -> bool:
    try:
        return not isinstance(value, bool) and math.isclose(float(value), float(text))
    except (TypeError, ValueError):
        return False


def section_model(path: str) -> Optional[Type[Any]]:
    """The model at a dotted path of the run's config (`data`, `trainer.early_stopping`), or None."""
    from aether.config.schema import RunCfg

    if path == "config":
        return RunCfg
    model: Any = RunCfg
    for part in path.split("."):
        field = getattr(model, "model_fields", {}).get(part)
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return None
    return model


def _describe(path: Path) -> str:
    """The leading comment of a YAML file (Hydra header skipped), up to its 'Shines on' line."""
    words: List[str] = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if not text.startswith("#"):
                break
            text = text.lstrip("# ").strip()
            if text.startswith("Shines on"):
                break
            if "@package" not in text:
                words.append(text)
    except OSError:
        pass
    return " ".join(words)


def _group_rows(group: str) -> List[Tuple[str, str, str]]:
    from aether.config import hydra_setup
    from aether.paths import builtin_conf_dir, builtin_recipes_dir

    cwd = Path.cwd()
    if group == "recipe":
        builtin, user = builtin_recipes_dir(), cwd / "recipes"
    else:
        builtin, user = builtin_conf_dir() / group, cwd / "conf" / group
    places = [(builtin, "built-in")]
    if user.is_dir() and user.resolve() != builtin.resolve():
        places.insert(0, (user, "./" + str(user.relative_to(cwd))))
    rows = []
    for name in hydra_setup.group_options(group):
        for folder, origin in places:
            f = folder / f"{name}.yaml"
            if f.is_file():
                rows.append((name, origin, _describe(f)))
                break
    return rows


def rows_for(what: str) -> List[Tuple[str, str, str]]:
    if what in GROUP_LISTS:
        return _group_rows(GROUP_LISTS[what])
    if what == "groups":
        from aether.config import hydra_setup

        return [(g, "config group", ", ".join(hydra_setup.group_options(g))) for g in hydra_setup.groups()]
    return [(e.name, e.origin, e.help) for e in registry.REGISTRIES[what]]


def lora_targets(args: List[str]) -> int:
    """`aether list lora-targets model=NAME [strategy.target_modules=SPEC] [strategy.r=R]`."""
    opts = dict(a.split("=", 1) for a in args if "=" in a)
    if "model" not in opts:
        print("aether: error: usage: aether list lora-targets model=<preset or timm name> "
              "[strategy.target_modules=auto|regex] [strategy.r=4]", file=sys.stderr)
        return 2
    from aether.config import hydra_setup
    from aether.config.schema import ModelCfg
    from aether.models.timm_provider import TimmProvider
    from aether.strategies.lora import family_of, resolve_targets

    name = opts["model"]
    if name in hydra_setup.group_options("model"):
        name = hydra_setup.compose([f"model={name}"]).model.name
    spec = opts.get("strategy.target_modules", "auto")
    if spec.startswith("["):
        spec = [t.strip() for t in spec.strip("[]").split(",") if t.strip()]
    r = int(opts.get("strategy.r", 4))
    bb = TimmProvider().create(ModelCfg(name=name), num_classes=10)
    targets = resolve_targets(bb.model, bb.head, spec)
    modules = dict(bb.model.named_modules())
    lora_params = 0
    for t in targets:
        m = modules[t]
        fan_in = getattr(m, "in_features", None) or getattr(m, "in_channels", 0)
        fan_out = getattr(m, "out_features", None) or getattr(m, "out_channels", 0)
        k = m.kernel_size[0] * m.kernel_size[1] if hasattr(m, "kernel_size") else 1
        lora_params += r * (fan_in * k + fan_out)  # A: in x k x k -> r, B: r -> out
        print(f"  {t:<40} {type(m).__name__}({fan_in} -> {fan_out})")
    total = sum(p.numel() for p in bb.model.parameters())
    print(f"{name} ({family_of(bb.model)} family): target_modules={spec!r} picks {len(targets)} layers; "
          f"LoRA r={r} adds {lora_params:,} parameters ({100 * lora_params / total:.2f}% of {total:,})")
    return 0


def _usage(got: str) -> int:
    forms = "|".join(WHATS)
    print(f"aether: error: usage: aether list {{{forms}}}, aether list KIND NAME (the options of one part, "
          f"e.g. aether list strategy lora), aether list SECTION ({', '.join(SECTIONS)}, or a dotted one "
          "such as trainer.early_stopping)"
          + (f"; unknown '{got}'{did_you_mean(got, WHATS) or did_you_mean(got, [*KINDS, *SECTIONS])}" if got else ""),
          file=sys.stderr)
    return 2


def _table(title: str, columns: Tuple[str, ...], rows: List[Tuple[str, ...]], width: int = 100) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0)  # a name or key is never cut: it is what one types
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))  # `list[str]`, `[0.8, 1.0]` are text, not markup
    Console(width=max(width, Console().width)).print(table)


def part_options(plural: str, name: str) -> int:
    """`aether list strategy lora`: the options of one registered part."""
    reg = registry.REGISTRIES[plural]
    kind = next(k for k, r in KINDS.items() if r is reg)
    if name not in reg:
        print(f"aether: error: unknown {reg.kind} '{name}'{did_you_mean(name, reg.names())}; "
              f"choose one of: {', '.join(reg.names())}", file=sys.stderr)
        return 2
    entry = reg.get(name)
    prefix = OPTION_PREFIX.get(plural, f"{kind}.")
    select = {"adapters": f"data.format={name}", "tasks": f"task={name}", "backbones": f"model.provider={name}"}
    print(f"{reg.kind} '{name}' ({entry.origin}): {entry.help}".rstrip(": "))
    print(f"select it with {select.get(plural, f'{kind}={name}')}"
          + (f"; set an option with {prefix}OPTION=VALUE" if prefix else ""))
    model = entry.config
    if model is None:
        print("its options are not declared (config=None): any keys are passed on unchecked")
        return 0
    if not hasattr(model, "model_fields"):
        print(f"its options model ({getattr(model, '__name__', model)}) is not a pydantic model: nothing to list")
        return 0
    if not model.model_fields:
        print("it takes no options")
        return 0
    rows = option_rows(model, prefix)
    if plural in PART_GROUP and entry.origin == "aether":
        rows = with_presets(rows, prefix, _preset_files(kind, (PART_GROUP[plural], name)))
    _table(f"aether {kind} {name}", ("option", "type", "default", "description"), rows, width=120)
    if any("(conf: " in r[2] for r in rows):
        print(f"(conf: X): the value conf/{PART_GROUP[plural]}/{name}.yaml sets, which {kind}={name} loads; "
              "the schema's default applies where a config leaves the key out")
    return 0


def section_options(path: str) -> int:
    """`aether list data`, `aether list trainer.early_stopping`, `aether list config`: a section of the run's config."""
    model = section_model(path)
    assert model is not None
    top = path == "config"
    prefix = "" if top else path + "."
    rows = with_presets(option_rows(model, prefix, flatten=not top), prefix, _preset_files(path, None))
    doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    print(f"{'the run config' if top else path}: {doc}" if doc else
          ("the run config: its top-level keys; each section: aether list SECTION" if top else path))
    _table(f"aether {path}", ("option", "type", "default", "description"), rows, width=120)
    if any("(conf: " in r[2] for r in rows):
        print("(conf: X): the value the built-in conf/ files give a run by default (conf/config.yaml's defaults)")
    return 0


def show(args: List[str]) -> int:
    if args and args[0] == "lora-targets":
        return lora_targets(args[1:])
    got = args[0] if args else ""
    if len(args) == 2 and got in KIND_OF:
        return part_options(KIND_OF[got].plural, args[1])
    if len(args) == 1 and got not in WHATS:
        if got in KINDS:
            got = KINDS[got].plural  # `aether list strategy`: the strategies
        elif section_model(got) is not None:
            return section_options(got)
    if len(args) != 1 or got not in WHATS:
        return _usage(got)
    what = got
    rows = rows_for(what)
    _table(f"aether {what}", ("name", "from", "description"), rows)
    if what == "models":
        print("Any timm model name also works: model.name=<timm name> (e.g. model.name=efficientnet_b2).")
    if what in registry.REGISTRIES:
        kind = next(k for k, r in KINDS.items() if r.plural == what)
        print(f"The options of one: aether list {kind} NAME (e.g. aether list {kind} {rows[0][0] if rows else 'NAME'}).")
    for e in registry.plugin_errors:
        print(f"warning: {e}", file=sys.stderr)
    return 0
