"""What a finished run hands to the experiment dashboards (W&B, TensorBoard) besides the scalars
Lightning logs each epoch: the resolved config (so runs can be filtered and compared, and a sweep's
parallel-coordinates view has its axes), the test metrics as the run's summary, the confusion
matrix, the report's pictures, the per-image tables the run wrote (errors.csv, label_issues.csv)
and the exported model.

Everything here reads the run directory after it is written; a dashboard that fails (a full disk
in W&B's staging area, a closed run) costs a warning, never the run: the run directory is the record.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List

log = logging.getLogger("aether")

TABLES = ("errors.csv", "label_issues.csv")  # per-image tables a run may write (issue 17)
TABLE_ROWS = 200  # rows sent per table; the CSV in the run directory keeps them all
TABLE_IMAGES = 32  # rows of a table that carry their image (the first ones: worst first)


def flat(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{"optimizer": {"lr": 1e-3}} -> {"optimizer.lr": 1e-3}: the dotted keys users type on the
    command line, which is also how W&B and TensorBoard's hparams show them. Lists become strings
    (TensorBoard's hparams accept scalars and strings only)."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def test_scalars(metrics: Dict[str, Any]) -> Dict[str, float]:
    """metrics.json's test section as test/NAME scalars (per-class lists left to the tables)."""
    return {f"test/{k}": float(v) for k, v in metrics.get("test", {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_params(raw: Dict[str, Any]) -> Dict[str, Any]:
    """The run's config as dotted keys, without Hydra's own settings."""
    return flat({k: v for k, v in raw.items() if k != "hydra"})


def log_config(loggers: Iterable[Any], raw: Dict[str, Any]) -> None:
    """The resolved config, at the start of the run: a run cut short still says what it was."""
    params = run_params(raw)
    for lg in loggers:
        if type(lg).__name__ in ("WandbLogger", "TensorBoardLogger"):
            _guard(lg, "config", lambda: lg.log_hyperparams(params))


def publish(loggers: Iterable[Any], run_dir: Path, raw: Dict[str, Any], metrics: Dict[str, Any],
            classes: List[str]) -> None:
    for lg in loggers:
        kind = type(lg).__name__
        if kind == "WandbLogger":
            _guard(lg, "results", lambda: _to_wandb(lg.experiment, run_dir, metrics, classes,
                                                                getattr(lg, "aether_log_model", True)))
        elif kind == "TensorBoardLogger":
            _guard(lg, "results", lambda: _to_tensorboard(lg, run_dir, raw, metrics))


def _guard(lg: Any, what: str, fn: Any) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the run directory is the record, the dashboard a copy
        log.warning("%s: could not log the run's %s (%s: %s); the run directory has them",
                    type(lg).__name__, what, type(e).__name__, e)


def _pictures(run_dir: Path) -> List[Path]:
    return sorted(p for p in run_dir.glob("*.png") if p.is_file())


def _read_table(path: Path) -> List[Dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row for _, row in zip(range(TABLE_ROWS), csv.DictReader(f))]


def _to_wandb(run: Any, run_dir: Path, metrics: Dict[str, Any], classes: List[str], log_model: bool) -> None:
    import wandb

    run.summary.update(test_scalars(metrics))
    matrix = metrics.get("confusion_matrix")
    if matrix and classes and len(matrix) == len(classes):
        # wandb.plot.confusion_matrix takes labels, not a matrix: expand each cell into its count
        truth = [i for i, row in enumerate(matrix) for j, n in enumerate(row) for _ in range(int(n))]
        preds = [j for i, row in enumerate(matrix) for j, n in enumerate(row) for _ in range(int(n))]
        run.log({"test/confusion_matrix": wandb.plot.confusion_matrix(y_true=truth, preds=preds,
                                                                      class_names=list(classes))})
    pictures = {f"report/{p.stem}": wandb.Image(str(p)) for p in _pictures(run_dir)}
    if pictures:
        run.log(pictures)
    for name in TABLES:
        path = run_dir / name
        if not path.is_file():
            continue
        rows = _read_table(path)
        if not rows:
            continue
        columns = list(rows[0])
        table = wandb.Table(columns=["image", *columns])
        for n, row in enumerate(rows):
            image = _image_cell(wandb, row.get("path"), run_dir) if n < TABLE_IMAGES else None
            table.add_data(image, *(row[c] for c in columns))
        run.log({f"tables/{Path(name).stem}": table})
    model = run_dir / "model"
    if log_model and model.is_dir() and any(model.iterdir()):
        art = wandb.Artifact(f"model-{run.id}", type="model", metadata=test_scalars(metrics))
        art.add_dir(str(model))
        run.log_artifact(art)


def _image_cell(wandb: Any, path: Any, run_dir: Path) -> Any:
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute():
        p = run_dir / p
    return wandb.Image(str(p)) if p.is_file() else None


def _to_tensorboard(lg: Any, run_dir: Path, raw: Dict[str, Any], metrics: Dict[str, Any]) -> None:
    import numpy as np
    from PIL import Image

    writer = lg.experiment
    params = run_params(raw)
    # hparams with their results: TensorBoard's HPARAMS tab compares runs on these
    lg.log_hyperparams(params, metrics=test_scalars(metrics))
    for p in _pictures(run_dir):
        with Image.open(p) as im:
            writer.add_image(f"report/{p.stem}", np.asarray(im.convert("RGB")), dataformats="HWC")
    writer.flush()
