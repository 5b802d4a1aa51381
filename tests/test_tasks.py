"""Tasks beyond classification on generated shapes: each trains on CPU with a tiny backbone and
scores clearly above the same network untrained; the task axis validates like the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import pytest

from tests.conftest import SHRINK, compose_raw, run_in_process
from tests.tasks_data import write_multilabel


def untrained_test_results(overrides: List[str]) -> Any:
    """The test metrics of the run's network before any training (the baseline to beat)."""
    import lightning as L

    from aether.config.validate import validate
    from aether.run import prepare

    L.seed_everything(42, verbose=False)
    job = prepare(validate(compose_raw([*SHRINK, *overrides])))
    L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).test(job.module, datamodule=job.datamodule, verbose=False)
    return job.module.test_results


def test_task_axis_validates_with_did_you_mean() -> None:
    from aether.config.validate import ConfigError, validate

    with pytest.raises(ConfigError) as err:
        validate(compose_raw(["task=segmentaton", "+task_options.decoder_channels=8"]))
    assert "task = 'segmentaton': unknown task" in str(err.value) and "did you mean 'segmentation'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate(compose_raw(["task=segmentation", "+task_options.decoder_chanels=8"]))
    assert "task_options.decoder_chanels" in str(err.value) and "did you mean 'decoder_channels'" in str(err.value)
    assert validate(compose_raw(["task=detection", "+task_options.head=retinanet"])).task_options == {"head": "retinanet"}


def test_multilabel_trains_tunes_thresholds_and_beats_untrained(tmp_path: Path) -> None:
    manifest = write_multilabel(tmp_path / "ml")
    ov = [f"data={manifest}", "model.pretrained=false", "data.batch_size=8", "optimizer.lr=3e-3"]
    before = untrained_test_results(ov)
    run = tmp_path / "run"
    rc = run_in_process(run, [*ov, "trainer.max_epochs=4"])
    assert rc.task == "multilabel"  # detected from the manifest's `labels` column
    m = json.loads((run / "metrics.json").read_text())
    t = m["test"]
    assert set(t["per_class"]) == {"circle", "square"} and m["data"]["task"] == "multilabel"
    assert t["map"] > before["map"] + 0.15 and t["map"] > 0.85, (before["map"], t["map"])
    assert t["f1_macro"] > 0.7
    thresholds = json.loads((run / "model" / "thresholds.json").read_text())
    assert all(0 < v < 1 for v in thresholds.values())
    for f in ("report.md", "curves.png", "confusion_matrix.png", "model/model.safetensors"):
        assert (run / f).exists(), f
    assert "mAP (macro)" in (run / "report.md").read_text()

