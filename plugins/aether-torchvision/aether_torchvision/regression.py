"""task=regression (the example plugin's task): one number per image, from a CSV manifest of
`path,value` rows. It uses only Aether's public parts - the Task interface, the item bundle and
split, the shared DataModule, the run-directory writer - to show that a task is a plugin like
any other part: registered in aether_torchvision/__init__.py, selected with `task=regression`.

The network is the usual classifier backbone with one output; the loss is the mean squared
error on targets standardised by the training split's mean and spread (so any unit trains at
the same learning rate); predictions are turned back into the data's units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from aether.config.schema import RunCfg
from aether.errors import AetherError
from aether.tasks.base import Task, build_backbone
from aether.training.module import StrategyModule


def read_manifest(path: Path, options: Any, allow_outside_root: bool) -> Any:
    """The manifest's rows as items (image path, float target); a bad value names its line."""
    from aether.data.items import ItemIndex, Item
    from aether.data.index import Skipped
    from aether.data.manifests import read_rows
    from aether.data.roots import RootGuard

    root = path.parent
    guard = RootGuard(str(root), allow_outside_root)
    items: List[Any] = []
    skipped: List[Any] = []
    for line, row in read_rows(path):
        cell, raw = row.get(options.path_column), row.get(options.value_column)
        if cell is None or raw is None:
            raise AetherError(f"{path}:{line}: expected the columns '{options.path_column}' and "
                              f"'{options.value_column}' (task_options.path_column / value_column)")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise AetherError(f"{path}:{line}: {options.value_column}={raw!r} is not a number") from None
        if not math.isfinite(value):
            raise AetherError(f"{path}:{line}: {options.value_column}={raw!r} is not a finite number")
        image = str((root / str(cell)).resolve()) if not Path(str(cell)).is_absolute() else str(cell)
        refusal = guard.refusal(image)
        if refusal:  # outside the dataset folder: listed, never read
            skipped.append(Skipped(image, refusal))
            continue
        items.append(Item(image, value, row.get("split") or None))
    return ItemIndex(str(path), "regression-manifest", ["value"], items, skipped)


class RegressionModule(StrategyModule):
    def __init__(self, model: nn.Module, strategy: Any, mean: float, std: float, optimizer_cfg: Dict[str, Any],
                 scheduler_cfg: Dict[str, Any]) -> None:
        super().__init__(model, ["value"], strategy, optimizer_cfg, scheduler_cfg)
        self.register_buffer("target_mean", torch.tensor(float(mean)))  # saved with the weights
        self.register_buffer("target_std", torch.tensor(float(std)))
        self._test: List[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).squeeze(-1) * self.target_std + self.target_mean  # in the data's units

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        z = self.model(x).squeeze(-1)
        loss = nn.functional.mse_loss(z, (y - self.target_mean) / self.target_std)
        return loss, z * self.target_std + self.target_mean

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, _ = self._loss(x, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        loss, pred = self._loss(x, y)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("val/mae", (pred - y).abs().mean(), on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self._test.append(torch.stack([self(x), y], 1).detach().cpu())

    def on_test_epoch_end(self) -> None:
        both = torch.cat(self._test)
        self._test.clear()
        pred, y = both[:, 0], both[:, 1]
        err = pred - y
        spread = ((y - y.mean()) ** 2).sum()
        self.test_results = {"mae": float(err.abs().mean()), "rmse": float(err.pow(2).mean().sqrt()),
                             "r2": float(1 - err.pow(2).sum() / spread) if spread > 0 else None,
                             "count": int(len(y))}


class ImageValues(torch.utils.data.Dataset):
    def __init__(self, items: List[Any], transform: Any) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        from aether.data.images import load_rgb

        it = self.items[i]
        return self.transform(load_rgb(it.path)), torch.tensor(it.target, dtype=torch.float32)


class Regression(Task):
    name = "regression"
    monitor = ("val/mae", "min")

    def build_data(self, rc: RunCfg) -> Any:
        from aether.tasks.common import build_bundle

        if rc.data.path is None or not Path(rc.data.path).expanduser().is_file():
            raise AetherError(f"task=regression needs data=FILE, a CSV/JSONL manifest with "
                              f"{self.options.path_column},{self.options.value_column} columns (got {rc.data.path})")
        index = read_manifest(Path(rc.data.path).expanduser(), self.options, rc.data.allow_outside_root)
        bundle = build_bundle(self.name, index, rc.data, rc.seed, {"value": len(index.items)})
        values = [it.target for it in bundle.splits["train"]]
        self.mean = sum(values) / len(values)
        self.std = max(1e-6, math.sqrt(sum((v - self.mean) ** 2 for v in values) / max(1, len(values) - 1)))
        return bundle

    def build_network(self, rc: RunCfg, bundle: Any) -> Tuple[Any, Dict[str, Any]]:
        return build_backbone(rc, 1)

    def build_module(self, rc: RunCfg, bundle: Any, model: Any, strategy: Any) -> Any:
        return RegressionModule(model, strategy, self.mean, self.std, rc.optimizer.model_dump(), rc.scheduler.model_dump())

    def build_datamodule(self, rc: RunCfg, bundle: Any, preprocessing: Dict[str, Any]) -> Any:
        from aether.data.transforms import eval_transform, train_transform
        from aether.tasks.common import ItemData

        train_tf, eval_tf = train_transform(preprocessing, rc.data.augment), eval_transform(preprocessing)
        return ItemData(bundle, rc.data, lambda items, train: ImageValues(items, train_tf if train else eval_tf))

    def model_info(self) -> Dict[str, Any]:
        return {**super().model_info(), "target_mean": self.mean, "target_std": self.std}

    def write_outputs(self, run_dir: Path, metrics: Dict[str, Any], job: Any, raw: Dict[str, Any]) -> str:
        from aether.tasks.common import save_run

        t = metrics["test"]
        r2 = "-" if t["r2"] is None else f"{t['r2']:.4f}"
        lines = ["## Test results (best checkpoint)", "", "| metric | value |", "|---|---|",
                 f"| MAE | {t['mae']:.4f} |", f"| RMSE | {t['rmse']:.4f} |", f"| R² | {r2} |", ""]
        save_run(run_dir, metrics, job, raw, self, lines)
        return f"test MAE {t['mae']:.4f}, RMSE {t['rmse']:.4f}, R² {r2}"
