"""The `aether` command: `aether [VERB] overrides...` (VERB defaults to `train`).

Only light modules are imported here; torch, Lightning and timm are imported once a run
really starts, so `--help`, `list` and config errors answer fast.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Optional

from aether import __version__
from aether.errors import AetherError

HELP = f"""aether {__version__} - declarative fine-tuning of vision models

usage:
  aether [train] [+recipe=NAME] [data=PATH] [key=value ...]   train, evaluate, report
  aether -m [+recipe=NAME] key=a,b ...                         sweep (Hydra multirun)
  aether inspect data=PATH [--strict]                         the dataset doctor: check, describe, recommend
  aether list recipes|models|strategies|optimizers|schedulers|loggers|adapters|backbones|groups
  aether --help | --version

examples:
  aether +recipe=quickstart                      # embedded real digits sample, CPU, about a minute
  aether +recipe=resnet_full data=./imgs model=convnext_atto optimizer.lr=3e-4 trainer.max_epochs=5
  aether +recipe=resnet_full data=./imgs model.name=efficientnet_b2 model.weights=./b2.safetensors
  aether resume=outputs/2026-11-26/12-00-00 trainer.max_epochs=20     # continue a run
  aether +recipe=quickstart --cfg job            # print the composed config and exit

config:  groups data, data/augment, model, strategy, optimizer, scheduler, trainer, logger select
         options (`model=vit_small`); `+recipe=NAME` overlays a recipe from ./recipes or the
         built-in ones; `key=value` sets any value; `hydra.run.dir=DIR` chooses the run folder.
         Hydra's flags (-m, --cfg, --info, -cd, --hydra-help) work as usual.
"""

VERBS: Dict[str, Callable[[List[str]], int]] = {}


def verb(name: str) -> Callable[[Callable[[List[str]], int]], Callable[[List[str]], int]]:
    def deco(fn: Callable[[List[str]], int]) -> Callable[[List[str]], int]:
        VERBS[name] = fn
        return fn

    return deco


def _err(msg: str) -> None:
    print(f"aether: error: {msg}", file=sys.stderr)


@verb("list")
def cmd_list(args: List[str]) -> int:
    from aether.listing import show

    return show(args)


@verb("inspect")
def cmd_inspect(args: List[str]) -> int:
    """The dataset doctor: `aether inspect data=PATH [--strict] [hydra.run.dir=DIR]`."""
    import time
    from pathlib import Path

    from aether.config import hydra_setup, preflight

    strict = "--strict" in args
    args = preflight.rewrite_data_shorthand([a for a in args if a != "--strict"])
    out = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
    overrides = [a for a in args if not a.startswith("hydra.")]
    preflight.check(overrides)
    _, rc = hydra_setup.compose_run(overrides)
    out_dir = Path(out[0]) if out else Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S-inspect")

    from aether.doctor.inspect import build_report, examine, inspect_structured, print_summary

    report = inspect_structured(rc.data, out_dir) or build_report(examine(rc.data), out_dir)
    print_summary(report, out_dir)
    if report["errors"]:
        return 2
    return 1 if strict and report["warnings"] else 0


def _auto_recipe(args: List[str], overrides: List[str]) -> List[str]:
    """`recipe=auto`: the doctor's recommendations become overrides placed before the user's own
    (so the user's win), and are printed with their reasons."""
    from aether.config import hydra_setup
    from aether.doctor.inspect import examine
    from aether.doctor.recommend import as_overrides, hardware, recommend
    from aether.doctor.stats import size_stats

    _, rc = hydra_setup.compose_run(overrides)
    ex = examine(rc.data)
    counts = {c: n for c, n in ex.index.class_counts().items() if n}
    rec = recommend(len(ex.index.samples), counts, size_stats(ex.records), hardware())
    user_keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    chosen = []
    for o in as_overrides(rec):
        key = o.split("=", 1)[0]
        if key in user_keys or (key == "model" and "model.name" in user_keys):
            continue
        chosen.append(o)
    print("recipe=auto - the dataset doctor chose:", file=sys.stderr)
    for key, r in rec.items():
        print(f"  {key} = {r['value']}: {r['reason']}", file=sys.stderr)
    rest = [a for a in args if a not in ("+recipe=auto", "recipe=auto")]
    return ["+recipe=auto", *chosen, *rest]


@verb("train")
def cmd_train(args: List[str]) -> int:
    from aether.config import hydra_setup, preflight
    from aether.training.distributed import is_secondary_rank, run_secondary_rank

    if is_secondary_rank():  # a DDP rank > 0: rank 0's config and run folder, no Hydra
        return run_secondary_rank(args)

    args = preflight.rewrite_data_shorthand(args)
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    preflight.check(overrides)
    if any(o in ("+recipe=auto", "recipe=auto") for o in overrides):
        args = _auto_recipe(args, overrides)
        overrides = [a for a in args if not a.startswith("-") and "=" in a]
        preflight.check(overrides)
    resume = [o.split("=", 1)[1] for o in overrides if o.startswith("resume=")]
    if resume and resume[0] not in ("", "null") and not any(o.startswith("hydra.run.dir=") for o in overrides):
        args.append(f"hydra.run.dir={resume[0]}")  # a resumed run keeps writing into its own folder
    hydra_setup.install()

    import hydra

    from aether.paths import builtin_conf_dir

    def task(cfg):  # type: ignore[no-untyped-def]
        from aether.run import train  # the heavy imports start here

        try:
            return train(cfg)
        except AetherError as err:
            _err(str(err))
            sys.exit(2)

    # Hydra reads sys.argv: hand it the arguments without the verb, data= rewritten.
    sys.argv = [sys.argv[0]] + args
    hydra.main(config_path=str(builtin_conf_dir()), config_name="config", version_base=None)(task)()
    return 0


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network for weights
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)  # a bare `aether` explains itself rather than starting a long run
        sys.exit(0)
    if argv[0] == "--version":
        print(f"aether {__version__}")
        sys.exit(0)
    name = "train"
    if argv[0] in VERBS:
        name, argv = argv[0], argv[1:]
    elif not argv[0].startswith(("-", "+", "~")) and "=" not in argv[0]:
        from aether.suggest import did_you_mean

        _err(f"unknown command '{argv[0]}'{did_you_mean(argv[0], VERBS)}; "
             f"commands: {', '.join(sorted(VERBS))} (or key=value overrides to train)")
        sys.exit(2)
    try:
        code = VERBS[name](argv)
    except AetherError as err:
        _err(str(err))
        sys.exit(2)
    sys.exit(code)
