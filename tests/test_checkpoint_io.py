"""Checkpoints are written straight to their file, atomically."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from aether.training.checkpoint_io import DirectCheckpointIO


def test_save_replaces_the_file_whole_and_a_failed_save_keeps_the_old_one(tmp_path: Path) -> None:
    io = DirectCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.arange(4.0)}, path)  # creates the folder
    assert io.load_checkpoint(path)["epoch"] == 1
    io.save_checkpoint({"epoch": 2, "w": torch.arange(4.0)}, path)
    assert io.load_checkpoint(path)["epoch"] == 2

    with pytest.raises((AttributeError, pickle.PicklingError)):  # torch.save cannot pickle a local lambda: fails midway
        io.save_checkpoint({"epoch": 3, "bad": lambda: None}, path)
    assert io.load_checkpoint(path)["epoch"] == 2  # the previous checkpoint, intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
