"""Teach Hydra where Aether's configs live.

Search path, highest priority first:
  1. the user's ``./conf``      (override or add any config group option)
  2. Aether's built-in ``conf/``
  3. the user's ``./recipes``   (``+recipe=NAME`` looks here first ...)
  4. Aether's built-in ``recipes/`` (... then here)

Recipes live in folders called ``recipes/`` but form the Hydra config group ``recipe``; the
small config source below presents a plain folder of recipe files as that group, so neither
the user nor the package needs a ``recipe/`` sub-folder.

Every file Hydra loads from the user's folders passes `aether.config.trust.check_file` as it is
loaded (no `_target_`, only plain `hydra:` settings); the built-in folders are trusted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from aether.config import trust
from aether.paths import builtin_conf_dir, builtin_recipes_dir

RECIPE_GROUP = "recipe"


def _check_user_file(path: str, result: ConfigResult, group: str) -> None:
    trust.check_file(path, OmegaConf.to_container(result.config, resolve=False), group, result.header.get("package"))


class RecipeConfigSource(ConfigSource):
    """Presents the YAML files of one folder as the config group ``recipe``."""

    @staticmethod
    def scheme() -> str:
        return "aether-recipes"

    def _file(self, config_path: str) -> Optional[str]:
        group, _, name = config_path.partition("/")
        if group != RECIPE_GROUP or not name or "/" in name:
            return None
        return os.path.join(self.path, self._normalize_file_name(name))

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(config_path)
        if path is None or not os.path.isfile(path):
            raise ConfigLoadError(f"Recipe not found: {config_path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        result = ConfigResult(
            config=OmegaConf.create(OmegaConf.load(path) if text.strip() else {}),
            path=self.full_path(),
            provider=self.provider,
            header=ConfigSource._get_header_dict(text[:512]),
        )
        if Path(self.path).resolve() != builtin_recipes_dir().resolve():  # a user's recipe
            _check_user_file(path, result, RECIPE_GROUP)
        return result

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        return config_path in ("", RECIPE_GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        path = self._file(config_path)
        return path is not None and os.path.isfile(path)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        if config_path == "":
            return [RECIPE_GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if config_path != RECIPE_GROUP or results_filter == ObjectType.GROUP:
            return []
        return sorted(f[:-5] for f in os.listdir(self.path) if f.endswith(".yaml") and not f.startswith("."))


class UserConfConfigSource(FileConfigSource):
    """The user's ``./conf``: Hydra's file source, each file checked as it is loaded."""

    @staticmethod
    def scheme() -> str:
        return "aether-user-conf"

    def load_config(self, config_path: str) -> ConfigResult:
        result = super().load_config(config_path)
        _check_user_file(os.path.join(self.path, self._normalize_file_name(config_path)), result,
                         os.path.dirname(config_path))
        return result


def check_config_dirs(args: List[str]) -> None:
    """Hydra's `-cd/--config-dir DIR` (and `-cp/--config-path`) add folders Hydra reads with its
    own, unchecked file source: check every config file in them before Hydra starts."""
    dirs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-cd", "--config-dir", "-cp", "--config-path")]
    dirs += [a.split("=", 1)[1] for a in args if a.startswith(("--config-dir=", "--config-path="))]
    for folder in map(Path, dirs):
        for f in sorted(folder.rglob("*.yaml")) if folder.is_dir() else []:
            text = f.read_text(encoding="utf-8")
            group = f.parent.relative_to(folder).as_posix().strip(".")
            trust.check_file(str(f), OmegaConf.to_container(OmegaConf.create(text or "{}"), resolve=False),
                             group, ConfigSource._get_header_dict(text[:512]).get("package"))


def shadowed_choices(choices: Dict[str, Optional[str]]) -> List[str]:
    """The chosen options (`recipe=quickstart`, `model=resnet18`) that a user file replaces
    although Aether has a built-in one of that name: each as a sentence for the log and config.yaml."""
    cwd, out = Path.cwd(), []
    for group, option in sorted(choices.items()):
        if not option or group.startswith("hydra"):
            continue
        if group == RECIPE_GROUP:
            user, builtin = cwd / "recipes" / f"{option}.yaml", builtin_recipes_dir() / f"{option}.yaml"
        else:
            user, builtin = cwd / "conf" / group / f"{option}.yaml", builtin_conf_dir() / group / f"{option}.yaml"
        if user.is_file() and builtin.is_file() and user.resolve() != builtin.resolve():
            out.append(f"{group}={option} is {user}, which shadows Aether's built-in {group} '{option}'")
    return out


class AetherSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path) -> None:  # type: ignore[no-untyped-def]
        cwd = Path.cwd()
        if (cwd / "conf").is_dir() and (cwd / "conf").resolve() != builtin_conf_dir().resolve():
            search_path.prepend("aether-user-conf", f"aether-user-conf://{cwd / 'conf'}")
        if (cwd / "recipes").is_dir() and (cwd / "recipes").resolve() != builtin_recipes_dir().resolve():
            search_path.append("aether-user-recipes", f"aether-recipes://{cwd / 'recipes'}")
        search_path.append("aether-recipes", f"aether-recipes://{builtin_recipes_dir()}")


_installed = False


def install() -> None:
    """Register Aether's config source and search path with Hydra (idempotent)."""
    global _installed
    if not _installed:
        Plugins.instance().register(RecipeConfigSource)
        Plugins.instance().register(UserConfConfigSource)
        Plugins.instance().register(AetherSearchPath)
        _installed = True


def compose(overrides: List[str] = (), return_hydra_config: bool = False):  # type: ignore[assignment]
    """Compose the config as the CLI would (for tests, the CLI's pre-flight and tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    install()
    with initialize_config_dir(config_dir=str(builtin_conf_dir()), version_base=None):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def group_options(group: str) -> List[str]:
    """Options of a config group across the whole search path (user folders included)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    install()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(builtin_conf_dir())))
    return loader.get_group_options(group, results_filter=ObjectType.CONFIG)


def groups() -> List[str]:
    """All config groups (nested ones as 'data/augment'), except Hydra's own."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    install()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(builtin_conf_dir())))
    found: List[str] = []

    def walk(prefix: str) -> None:
        for g in loader.list_groups(prefix):
            full = f"{prefix}/{g}" if prefix else g
            if full == "hydra":
                continue
            found.append(full)
            walk(full)

    walk("")
    return found


def compose_run(overrides: List[str], user_keys: Optional[Iterable[str]] = None):  # type: ignore[no-untyped-def]
    """Compose and validate a run's config outside a Hydra run: (plain dict without `hydra`, RunCfg).

    Options a recipe sets for another part than the chosen one are dropped as at the CLI's
    pre-flight (validate.drop_foreign_options), which has shown the notes already; `user_keys`
    (default: the keys these overrides set) are the ones typed, which are never dropped."""
    from aether.config.validate import drop_foreign_options, typed_keys, validate

    overrides = [o for o in overrides if not o.startswith("hydra.")]
    raw = OmegaConf.to_container(compose(overrides), resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    drop_foreign_options(raw, typed_keys(overrides) if user_keys is None else user_keys)
    return raw, validate(raw)
