"""`aether list WHAT`: what can be chosen, straight from the registries and config groups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

from aether import registry
from aether.suggest import did_you_mean

GROUP_LISTS = {"recipes": "recipe", "models": "model"}
WHATS = sorted(list(GROUP_LISTS) + list(registry.REGISTRIES) + ["groups"])


def _describe(path: Path) -> str:
    """First comment line of a YAML file that is not a Hydra header."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if text.startswith("#") and "@package" not in text:
                return text.lstrip("# ").strip()
            if text and not text.startswith("#"):
                break
    except OSError:
        pass
    return ""


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


def show(args: List[str]) -> int:
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
