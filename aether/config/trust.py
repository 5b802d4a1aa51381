"""Config from users (and from others) never names code to run.

Aether selects every part by registered name (`strategy=lora`, `logger=wandb`), never by import
path; third-party code comes in only as an installed plugin. Hydra, however, instantiates any
`_target_` it finds under `hydra.callbacks`, `hydra.launcher` and `hydra.sweeper`, and hands
`hydra.job_logging` to `logging.config.dictConfig` (whose `()` and `class` keys call any
importable callable). A recipe passed around, a `./conf` folder or a copied command line could
therefore run code. So user-supplied config - files from `./recipes` and `./conf`, command-line
overrides, a resumed run's `config.yaml` - is checked here:

* no `_target_` key anywhere;
* under `hydra:` only plain settings: where runs go (`run.dir`, `sweep.dir`/`subdir`), the job's
  name and folder (`job.*`), verbosity and mode, and the options of the launcher or sweeper
  chosen by name (`hydra/launcher=joblib`), minus the few options that run shell commands.

Aether's built-in `conf/` and `recipes/` and installed plugins' configs are trusted (they hold
the `_target_`s of Aether's own sweeper and sweep-summary callback).
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional

from aether.errors import AetherError

TARGET = "_target_"
# settings under `hydra:` a user may write (a key equal to one, or inside one)
HYDRA_ALLOWED = ("run.dir", "sweep.dir", "sweep.subdir", "job.name", "job.chdir", "job.env_copy", "job.config",
                 "job.override_dirname", "verbose", "mode", "output_subdir", "launcher", "sweeper")
# launcher options that run commands or install code on the workers (submitit's shell `setup`
# lines and srun arguments, Ray's runtime environment): not from config, whoever wrote it
RUNS_COMMANDS = ("setup", "srun_args", "runtime_env")
# groups whose defaults-list package may point into `hydra:` (their files land at hydra.launcher/sweeper)
HYDRA_GROUPS = ("hydra/launcher", "hydra/sweeper")

WHY = ("Aether selects parts by registered name, never code by import path (third-party code comes in as an "
       "installed plugin); under hydra: only run.dir, sweep.dir, job.*, verbose and launcher/sweeper options")


def _hydra_key_allowed(key: str, container: bool) -> bool:
    """Whether the dotted `key` (starting with `hydra`) may be set by a user."""
    if key == "hydra":
        return True
    rel = key[len("hydra."):]
    parts = rel.split(".")
    if parts[0] in ("launcher", "sweeper") and any(p in RUNS_COMMANDS for p in parts[1:]):
        return False
    if any(rel == a or rel.startswith(a + ".") for a in HYDRA_ALLOWED):
        return True
    return container and any(a.startswith(rel + ".") for a in HYDRA_ALLOWED)  # `job:` holding `job.name`


def refused_keys(node: Any, prefix: str = "") -> List[str]:
    """Dotted keys in `node` that user config may not set (a `_target_`, or `hydra` beyond the plain settings)."""
    out: List[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if str(k) == TARGET:
                out.append(key)
                continue
            if (key == "hydra" or key.startswith("hydra.")) and not _hydra_key_allowed(key, isinstance(v, (dict, list))):
                out.append(key)
                continue
            out += refused_keys(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += refused_keys(v, f"{prefix}[{i}]")
    return out


def _raise(where: str, keys: Iterable[str], what: str = "sets") -> None:
    keys = list(keys)
    if keys:
        raise AetherError(f"{where} {what} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}, which user config "
                          f"may not: {WHY}. Remove it")


def _package(group: str, header_package: Optional[str]) -> str:
    """Where a file's content lands in the composed config (Hydra's package rules)."""
    if header_package in (None, "", "_group_"):
        return group.replace("/", ".")
    if header_package == "_global_":
        return ""
    return header_package.replace("_group_", group.replace("/", "."))


def _defaults_problems(defaults: Any) -> List[str]:
    """Defaults-list entries that would place a config into `hydra:` beyond the launcher/sweeper."""
    out: List[str] = []
    for entry in defaults if isinstance(defaults, list) else []:
        names = [entry] if isinstance(entry, str) else list(entry) if isinstance(entry, dict) else []
        for name in names:
            group, _, package = str(name).removeprefix("override ").strip().lstrip("/").partition("@")
            if package.startswith("hydra") and group not in HYDRA_GROUPS:
                out.append(f"defaults: {name}")
    return out


def check_file(where: str, content: Any, group: str, header_package: Optional[str]) -> None:
    """A config file from a user folder: refuse `_target_` and non-plain `hydra` settings."""
    if not isinstance(content, dict):
        return
    body = {k: v for k, v in content.items() if k != "defaults"}
    package = _package(group, header_package)
    node: Any = body
    for part in reversed([p for p in package.split(".") if p]):
        node = {part: node}
    _raise(where, _defaults_problems(content.get("defaults")) + refused_keys(node))


def check_overrides(parsed: Iterable[Any]) -> None:
    """Command-line overrides (Hydra's parsed Override objects)."""
    bad: List[str] = []
    for o in parsed:
        key = o.key_or_group
        if "/" in key or o.package:  # a group choice (`hydra/launcher=joblib`): options come from checked sources
            if o.package and o.package.startswith("hydra") and key not in HYDRA_GROUPS:
                bad.append(o.input_line)
            continue
        if o.is_delete():
            continue  # removing a setting runs nothing
        if refused_keys(_nest(key, o.value())):
            bad.append(o.input_line)
    if bad:
        raise AetherError(f"command line: {', '.join(bad)}: refused - {WHY}. Remove it")


def _nest(dotted: str, value: Any) -> dict:
    node: Any = value
    for part in reversed(dotted.split(".")):
        node = {part: node}
    return node


def check_resumed(where: str, config: Any) -> None:
    """A run folder's config.yaml about to be resumed (Aether writes it without `hydra` or `_target_`)."""
    _raise(where, refused_keys(config), "contains")
