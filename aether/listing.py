"""`aether list WHAT`: what can be chosen, straight from the registries and config groups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

from aether import registry
from aether.suggest import did_you_mean

GROUP_LISTS = {"recipes": "recipe", "models": "model"}
WHATS = sorted(list(GROUP_LISTS) + list(registry.REGISTRIES) + ["groups", "lora-targets"])


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


def show(args: List[str]) -> int:
    if args and args[0] == "lora-targets":
        return lora_targets(args[1:])
    if len(args) != 1 or args[0] not in WHATS:
        got = args[0] if args else ""
        print(f"aether: error: usage: aether list {{{'|'.join(WHATS)}}}"
              + (f"; unknown '{got}'{did_you_mean(got, WHATS)}" if got else ""), file=sys.stderr)
        return 2
    what = args[0]
    rows = rows_for(what)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"aether {what}", title_justify="left")
    for col in ("name", "from", "description"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(width=max(100, Console().width)).print(table)
    if what == "models":
        print("Any timm model name also works: model.name=<timm name> (e.g. model.name=efficientnet_b2).")
    for e in registry.plugin_errors:
        print(f"warning: {e}", file=sys.stderr)
    return 0
