"""The Python API, for notebooks and scripts: the command line's road, called as functions.

    run = aether.train(recipe="quickstart", data="./imgs", overrides=["trainer.max_epochs=5"])
    run.metrics["test"]["accuracy"]          # metrics.json of the run folder
    model = aether.load(run.dir)             # or aether.load("outputs/2026-11-26/12-00-00")
    model.predict(["a.png", "new_imgs/"])    # the records `aether predict` writes
    run.export(format="onnx")                # `aether export run=RUN format=onnx`

`train` goes through the same steps as `aether train`: the CLI's pre-flight (aether.cli.prepare_train:
every override checked against the schema with did-you-mean, the trust checks, recipe=auto's
plan, the run-folder checks), then Hydra's compose API with the CLI's search path (user
./conf and ./recipes first, Aether's built-in ones after), then Hydra's own job runner
(`run_job`, as `hydra.main` uses it: the run folder, `.hydra/`, the run's log file) around
`aether.launch.train`, the function the CLI's Hydra task calls. A problem the CLI prints as
`aether: error: ...` is raised here as that AetherError, with the same message.

Nothing heavy is imported until a function is called: `import aether` stays as fast as `aether --help`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from aether.errors import AetherError

PathLike = Union[str, "os.PathLike[str]"]

# The job name hydra.main gives the CLI's task (it is defined in the module aether.cli), so a run
# folder written from Python holds the same `cli.log` as one written by `aether train`.
CLI_JOB_NAME = "cli"


def _quoted(value: str) -> str:
    """A value as one Hydra override token: a path with spaces, commas or brackets in it would
    otherwise be parsed as a sweep or a list."""
    if re.fullmatch(r"[\w./~-]+", value):
        return value
    # Hydra's quoted strings: a backslash is an escape only before a quote (or a run of them
    # before one), so only those runs are doubled - the closing quote counts as one
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


def _train_args(recipe: Optional[str], data: Optional[PathLike], overrides: Sequence[str],
                run_dir: Optional[PathLike]) -> List[str]:
    """The command line `aether train` would get for these arguments (without the verb)."""
    if not isinstance(overrides, (str, bytes)):
        overrides = list(overrides)
    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in overrides):
        raise AetherError(f"overrides={overrides!r}: expected a list of 'key=value' strings, "
                          "e.g. overrides=['trainer.max_epochs=5', 'model=convnext_atto']")
    for o in overrides:
        if o.startswith("-"):
            raise AetherError(f"overrides: '{o}' is a command-line flag; aether.train runs one training from "
                              "key=value overrides (sweeps, --cfg, -cd: use the `aether` command)")
        if "=" not in o and not o.startswith("~"):
            raise AetherError(f"overrides: '{o}' is not key=value")
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    for key, value in (("recipe", recipe), ("data", data), ("hydra.run.dir", run_dir)):
        if value is not None and (key in given or (key == "data" and "data.path" in given)):
            raise AetherError(f"{key} is given twice: as an argument and in overrides; keep one")
    if any(o.lstrip("+").startswith("sweep=") for o in overrides):
        raise AetherError("overrides: a +sweep= search runs many trainings; start it with the `aether` command "
                          "(aether -m ... +sweep=NAME)")
    args = [f"+recipe={recipe}"] if recipe is not None else []
    if data is not None:
        args.append(f"data={_quoted(os.fspath(data))}")
    args += overrides
    if run_dir is not None:
        args.append(f"hydra.run.dir={_quoted(os.fspath(run_dir))}")
    return args


def _refuse_sweep_values(args: Sequence[str]) -> None:
    """`key=a,b` is a sweep on the command line (with -m); here it would fail inside Hydra with
    advice about -m, which a notebook cannot give it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(args))
    except HydraException:
        return  # a syntax error: the pre-flight reports it with the others
    for o in parsed:
        if o.is_sweep_override():
            raise AetherError(f"overrides: '{o.input_line}' sweeps over several values; aether.train runs one "
                              f"training: call it once per value (or sweep with `aether -m ... {o.input_line}`)")


@contextlib.contextmanager
def _caller_logging() -> Iterator[None]:
    """Hydra configures the root logger for the job as it does for the CLI (console, and the
    run's log file); afterwards the caller's own handlers and level come back and the run's file
    is closed, so a notebook's logging is not left pointing at an old run."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def _run_job(args: List[str]) -> Path:
    """Compose the config as `aether train` does and run aether.launch.train in Hydra's job runner,
    as hydra.main's Hydra.run does (callbacks, run_job); returns the run folder."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.callbacks import Callbacks  # what Hydra.run builds: the config's hydra.callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job
    from hydra.errors import HydraException
    from hydra.types import HydraContext, RunMode
    from omegaconf import open_dict

    from aether.paths import builtin_conf_dir
    from aether.launch import train as train_task

    with initialize_config_dir(config_dir=str(builtin_conf_dir()), job_name=CLI_JOB_NAME, version_base=None):
        try:
            cfg = compose("config", overrides=args, return_hydra_config=True)
        except HydraException as err:  # what the pre-flight left to Hydra (hydra.* settings)
            raise AetherError(str(err).strip()) from None
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.RUN
        callbacks = Callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name="config")
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=callbacks)
        failed: List[Exception] = []

        def task(task_cfg: Any) -> Any:  # run_job keeps a task's exception; this one is raised to the caller
            try:
                return train_task(task_cfg)
            except Exception as err:
                failed.append(err)
                raise

        with _caller_logging():
            ret = run_job(task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None,
                          hydra_context=context, configure_logging=True)
        callbacks.on_run_end(config=cfg, config_name="config", job_return=ret)
    if failed:
        raise failed[0]  # an AetherError says what to fix, as `aether: error:` does
    return Path(str(ret.hydra_cfg.hydra.runtime.output_dir))


def train(recipe: Optional[str] = None, data: Optional[PathLike] = None, overrides: Sequence[str] = (),
          run_dir: Optional[PathLike] = None) -> Optional["Run"]:
    """Train, evaluate and report one run, as `aether train +recipe=RECIPE data=DATA OVERRIDES...`.

    recipe     a recipe name (`aether list recipes`; ./recipes/NAME.yaml first), `auto` for
               recipe=auto, or None for the base config
    data       a folder of class folders, a manifest, or a detection/segmentation dataset;
               None: the embedded digits
    overrides  the command line's `key=value` items, e.g. ["model=convnext_atto", "optimizer.lr=3e-4"]
    run_dir    the run folder (as hydra.run.dir=DIR); default outputs/<date>/<time>/ under the
               current folder, like the CLI

    Returns the finished Run; raises AetherError (with the CLI's message) when the config, the
    data or the run folder is wrong. On a secondary rank of a multi-process run it trains its
    share and returns None: rank 0's Run has the results."""
    args = _train_args(recipe, data, overrides, run_dir)
    from aether.cli import prepare_train, start_command

    start_command(args)
    from aether.launch import run_secondary_rank
    from aether.ranks import is_secondary_rank

    if is_secondary_rank():  # started again by Lightning's DDP launcher: rank 0's config and folder
        run_secondary_rank(args)
        return None
    _refuse_sweep_values(args)
    args, _ = prepare_train(args)  # its notes: aether.launch.train logs them and writes them into config.yaml
    return Run(_run_job(args))


class Run:
    """A run folder (README, "The run directory"): what aether.train returns, or open one the
    CLI wrote with `aether.Run(DIR)`."""

    def __init__(self, run_dir: PathLike) -> None:
        self.dir = Path(run_dir).expanduser().absolute()
        if not (self.dir / "config.yaml").is_file():
            raise AetherError(f"{run_dir}: not a run folder (expected config.yaml in it)")

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    @property
    def paths(self) -> Dict[str, Path]:
        """The run's files by name (some appear only later: bento/ after export, model/ once finished)."""
        d = self.dir
        return {"config": d / "config.yaml", "metrics": d / "metrics.json", "report": d / "report.md",
                "model": d / "model", "checkpoints": d / "checkpoints",
                "best_checkpoint": d / "checkpoints" / "best.ckpt", "last_checkpoint": d / "checkpoints" / "last.ckpt",
                "bento": d / "bento", "logs": d / "logs"}

    @property
    def metrics(self) -> Dict[str, Any]:
        """metrics.json: `test`, `history`, `params`, `data`, `time`, ... (README, "The run directory")."""
        path = self.dir / "metrics.json"
        if not path.is_file():
            raise AetherError(f"{self.dir}: no metrics.json - the run did not finish; continue it with "
                              f"aether.train(overrides=['resume={self.dir}', 'trainer.max_epochs=N'])")
        return json.loads(path.read_text(encoding="utf-8"))

    @property
    def config(self) -> Dict[str, Any]:
        """The resolved config the run used (config.yaml)."""
        from omegaconf import OmegaConf

        out = OmegaConf.to_container(OmegaConf.load(self.dir / "config.yaml"), resolve=False)
        assert isinstance(out, dict)
        return out  # type: ignore[return-value]

    def export(self, format: str = "bento", **options: Any) -> Dict[str, Any]:  # noqa: A002 - the CLI's name
        """`aether export run=RUN format=FORMAT key=value...`, same code and checks: format
        "bento" (options name, max_upload_mb, batching, backend, score_threshold), or "onnx",
        "torchscript", "openvino", "tensorrt" (options quantize, min_agreement, on_mismatch, agreement).
        Returns what the export did (bento: tag, bento_dir, ...; the others: path, json, top1_agreement, ...)."""
        from aether.cli import export_run

        args = [f"run={self.dir}", f"format={format}"]
        args += [f"{key}={_cli_value(value)}" for key, value in options.items() if value is not None]
        return export_run(args)[1]

    def load(self, device: Optional[str] = None, top_k: int = 5, score_threshold: Optional[float] = None,
             tta: Optional[str] = None, reject_below: Optional[float] = None) -> "Model":
        """This run's model in memory (see aether.load)."""
        return Model(self.dir, device=device, top_k=top_k, score_threshold=score_threshold, tta=tta,
                     reject_below=reject_below)

    def predict(self, images: Any, batch_size: int = 32, **load_options: Any) -> List[Dict[str, Any]]:
        """`self.load(**load_options).predict(images, batch_size)`; to predict often, load once."""
        return self.load(**load_options).predict(images, batch_size=batch_size)


def _cli_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AetherError(f"{name}={value!r}: expected an integer greater than 0")
    return value


class Model:
    """A finished run's model/ in memory, predicting with the code `aether predict` uses (the
    dataset doctor's file check, the run's evaluation transform, the task's decoding): the same
    records for the same files. `top_k`, `tta` and `reject_below` (classification) and
    `score_threshold` (detection) are `aether predict`'s options; device defaults to CUDA when
    available."""

    def __init__(self, run: PathLike, device: Optional[str] = None, top_k: int = 5,
                 score_threshold: Optional[float] = None, tta: Optional[str] = None,
                 reject_below: Optional[float] = None) -> None:
        from aether.deploy.model_dir import check_run
        from aether.deploy.predictor import ImageLimits
        from aether.deploy.tasks import TaskPredictor

        self.run_dir = check_run(os.fspath(run))  # an interrupted run: model/ from its best checkpoint, as the CLI
        self._predictor = TaskPredictor(self.run_dir / "model", device=device,
                                        limits=ImageLimits.from_run(self.run_dir), score_threshold=score_threshold,
                                        top_k=_positive_int("top_k", top_k), tta=tta, reject_below=reject_below)

    def __repr__(self) -> str:
        return f"Model({str(self.run_dir)!r}, task={self.task!r}, classes={len(self.classes)})"

    @property
    def task(self) -> str:
        return self._predictor.task

    @property
    def classes(self) -> List[str]:
        return self._predictor.classes

    @property
    def device(self) -> str:
        return str(self._predictor.device)

    def predict(self, images: Any, batch_size: int = 32) -> List[Dict[str, Any]]:
        """One record per image, in input order. `images`: a path (file, folder - walked as
        `aether predict` walks it -, or a .txt list), a PIL image, an HxW(xC) uint8 array, or a
        list of these. Each record is what `aether predict` writes into predictions.json: under
        `predictions` ({path, label, score, top_k} for classification; the task's answer for the
        others), or under `failed` ({path, reason, detail}) for a file that cannot be used; an
        in-memory image has path None. Segmentation records carry the mask as `mask_png`
        (base64 PNG, as the served answer) since nothing is written to disk."""
        from aether.deploy.predict import collect, raw_name, shown

        batch_size = _positive_int("batch_size", batch_size)
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        with tempfile.TemporaryDirectory(prefix="aether-predict-") as tmp:
            paths: List[str] = []
            names: List[Optional[str]] = []  # None: an in-memory image, saved to `tmp` for the file road
            for i, item in enumerate(items):
                if isinstance(item, (str, os.PathLike)):
                    found = collect([os.fspath(item)])
                    paths += found
                    names += found
                else:
                    paths.append(_save_image(item, Path(tmp) / f"{i:06d}.png"))
                    names.append(None)
            results, failed = self._predictor.predict_task_paths(paths, batch_size=batch_size)
        by_path = {r["path"]: r for r in [*results, *failed]}
        records = []
        for path, name in zip(paths, names):
            record = dict(by_path[path])
            if name is None:
                record["path"] = None
            else:  # named as predictions.json names it (UTF-8 text, the raw bytes when not UTF-8)
                record.update(raw_name(name))
                record["path"] = shown(name)
            records.append(record)
        return records


def _save_image(image: Any, target: Path) -> str:
    """An in-memory image as a lossless PNG, so it takes exactly the road a file takes."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        import numpy as np

        if not isinstance(image, np.ndarray):
            raise AetherError(f"predict: cannot read a {type(image).__name__}; expected image paths, folders, "
                              "a .txt list, PIL images or uint8 arrays (HxW or HxWxC)")
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise AetherError(f"predict: an array of shape {image.shape} and dtype {image.dtype}; expected uint8, "
                              "HxW or HxWxC with C in 1, 3, 4 (an image as PIL's numpy.asarray(image) gives it)")
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    image.save(target, format="PNG")
    return str(target)


def load(run: PathLike, device: Optional[str] = None, top_k: int = 5,
         score_threshold: Optional[float] = None, tta: Optional[str] = None,
         reject_below: Optional[float] = None) -> Model:
    """A finished run's model, ready to predict: `aether.load(RUN).predict(images)` gives the
    records `aether predict run=RUN images=...` writes (see Model.predict)."""
    return Model(run, device=device, top_k=top_k, score_threshold=score_threshold, tta=tta,
                 reject_below=reject_below)
