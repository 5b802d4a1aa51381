"""Class imbalance (data.sampler=balanced, loss.name=focal, the doctor's advice) and the values
found before training (data.batch_size=auto, optimizer.lr=auto), on a tiny 10:1 folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import SHRINK, compose_raw, make_folder, run_in_process


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 red images, 5 blue: a 10:1 imbalance."""
    root = tmp_path_factory.mktemp("skewed") / "imgs"
    make_folder(root, per_class=50, classes=["red"])
    make_folder(root, per_class=5, classes=["blue"])
    return root


def _datamodule(data: Path, *overrides: str):  # type: ignore[no-untyped-def]
    from aether.config.validate import validate
    from aether.tasks.classification.task import Classification

    rc = validate(compose_raw([*SHRINK, f"data={data}", "task=classification", *overrides]))
    task = Classification(None)
    bundle = task.build_data(rc)
    _, pre = task.build_network(rc, bundle)
    return task.build_datamodule(rc, bundle, pre), bundle


def _epoch_labels(loader) -> Counter:  # type: ignore[no-untyped-def]
    return Counter(int(y) for _, ys in loader for y in ys)


def test_balanced_sampler_balances_the_batches_of_a_10_to_1_set(skewed: Path) -> None:
    import torch

    torch.manual_seed(0)
    dm, bundle = _datamodule(skewed, "data.sampler=balanced", "data.cache=off", "data.batch_size=4")
    n = len(bundle.splits["train"])
    blue = bundle.classes.index("blue")
    assert Counter(dm.class_labels("train"))[blue] / n < 0.15  # the split itself: about 1 in 11
    loader = dm.train_dataloader()
    counts = _epoch_labels(loader)
    # an epoch is still len(train) draws (as whole batches: drop_last), now about half of them blue
    assert n - loader.batch_size < sum(counts.values()) <= n
    assert 0.35 < counts[blue] / sum(counts.values()) < 0.65, counts
    # several processes: each draws its own half of the same weighted sequence
    shards = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        shards.append(list(dm.train_dataloader().sampler))
    dm.trainer = None
    whole = list(dm.train_dataloader().sampler)
    assert len(shards[0]) == len(shards[1]) == (n + 1) // 2
    assert shards[0] == whole[0::2] and shards[1][:n // 2] == whole[1::2]


def test_balanced_sampler_refuses_tasks_without_one_class_per_image() -> None:
    from aether.config.schema import DataCfg
    from aether.errors import AetherError
    from aether.tasks.common import ItemData

    with pytest.raises(AetherError, match="data.sampler=balanced.*no single class"):
        ItemData(SimpleNamespace(splits={"train": []}), DataCfg(sampler="balanced"), make_dataset=lambda i, t: i)


def test_focal_loss_is_refused_by_tasks_that_keep_their_own_loss() -> None:
    from aether.config.validate import validate
    from aether.errors import AetherError
    from aether.run import prepare

    rc = validate(compose_raw([*SHRINK, "task=segmentation", "loss.name=focal"]))
    with pytest.raises(AetherError, match="loss.name=focal: task=segmentation trains with its own loss"):
        prepare(rc)  # before any data is read


def test_focal_loss_is_cross_entropy_at_gamma_0_and_down_weights_easy_images() -> None:
    import torch
    from torch import nn

    from aether.tasks.classification.losses import focal_loss

    torch.manual_seed(0)
    logits, y = torch.randn(12, 4) * 3, torch.randint(0, 4, (12,))
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    for weight, eps in ((None, 0.0), (w, 0.0), (w, 0.1)):
        ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=eps)(logits, y)
        assert torch.allclose(focal_loss(logits, y, 0.0, weight, eps), ce, atol=1e-6)
    easy = torch.tensor([[6.0, 0.0, 0.0]])  # p(true) ~ 0.995
    hard = torch.tensor([[0.0, 0.5, 0.0]])  # p(true) ~ 0.27
    t = torch.tensor([0])

    def ratio(x: torch.Tensor) -> float:
        return float(focal_loss(x, t, 2.0) / nn.functional.cross_entropy(x, t))

    assert ratio(easy) < 1e-3 and 0.4 < ratio(hard) < 0.6  # (1 - p)^2: 0.005^2 vs 0.73^2
    assert float(focal_loss(hard, t, 2.0)) < float(focal_loss(hard, t, 1.0)) < float(focal_loss(hard, t, 0.0))


def test_auto_lr_and_batch_size_are_found_recorded_and_trained_with(skewed: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_in_process(run, [f"data={skewed}", "optimizer.lr=auto", "data.batch_size=auto", "loss.name=focal",
                         "data.sampler=balanced", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"])
    text = (run / "config.yaml").read_text()
    cfg = yaml.safe_load(text)
    lr, batch = cfg["optimizer"]["lr"], cfg["data"]["batch_size"]
    assert isinstance(lr, float) and 0 < lr < 1 and isinstance(batch, int) and batch >= 1
    assert f"# TUNED: optimizer.lr=auto -> {lr:g}" in text and f"# TUNED: data.batch_size=auto -> {batch}" in text
    import json

    m = json.loads((run / "metrics.json").read_text())
    assert m["history"] and m["history"][0]["lr"] <= lr * 1.0001  # the schedule starts from the rate found


def test_the_doctor_recommends_the_balanced_sampler_for_a_10_to_1_folder(skewed: Path, tmp_path: Path) -> None:
    from aether.config.schema import DataCfg
    from aether.doctor.inspect import build_report, examine
    from aether.doctor.recommend import as_overrides

    rep = build_report(examine(DataCfg(path=str(skewed))), tmp_path / "doctor")
    assert rep["imbalance_ratio"] == 10.0
    rec = rep["recommendations"]
    assert rec["sampler"]["value"] == "balanced" and "class_weights" not in rec  # never both: that corrects twice
    assert "imbalance ratio 10" in rec["sampler"]["reason"] and "loss.name=focal" in rec["sampler"]["reason"]
    assert "data.sampler=balanced" in as_overrides(rec)
    assert any("data.sampler=balanced or loss.name=focal" in w for w in rep["warnings"])
