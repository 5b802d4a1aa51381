"""Augmentation presets (data/augment=...), Mixup / CutMix (data.augment.mixup, .cutmix) and the
dataset doctor's choice of preset."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from aether.errors import AetherError
from tests.conftest import SHRINK, compose_raw, make_folder, run_in_process

PRE = {"input_size": [3, 32, 32], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3,
       "crop_pct": 1.0, "crop_mode": "center"}


def _augment(preset: str):  # type: ignore[no-untyped-def]
    from aether.config.validate import validate

    return validate(compose_raw([*SHRINK, f"data/augment={preset}"])).data.augment


def _names(tf) -> list:  # type: ignore[no-untyped-def]
    return [type(t).__name__ for t in tf.transforms]


@pytest.mark.parametrize("preset, policy, ops, prob", [
    ("randaugment", "RandAugment", 2, 0.5),  # two ops per image, each applied half the time
    ("trivialaugment", "RandAugment", 1, 1.0),  # one op, always, magnitude uniform over its range
    ("augmix", "AugMixAugment", 3, 1.0),  # three chains blended
])
def test_presets_compose_and_build_their_timm_transforms(preset: str, policy: str, ops: int, prob: float) -> None:
    from PIL import Image

    from aether.data.fastpath import FastPath
    from aether.data.transforms import train_transform

    aug = _augment(preset)
    assert aug.mixup == aug.cutmix == 0.0 and aug.mixup_off_epoch is None  # mixing is its own switch
    tf = train_transform(PRE, aug)
    names = _names(tf)
    assert names[:2] == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip"] and names[2] == policy
    step = tf.transforms[2]
    if policy == "RandAugment":
        assert step.num_layers == ops and {o.prob for o in step.ops} == {prob}
        assert {o.magnitude_std for o in step.ops} == ({float("inf")} if preset == "trivialaugment" else {0.5})
    else:
        assert step.width == ops and step.depth == -1
    assert ("RandomErasing" in names) == (aug.re_prob > 0) and (preset != "randaugment" or aug.re_prob == 0.25)
    assert tuple(tf.transforms[0].scale) == (0.25, 1.0)
    x = tf(Image.new("RGB", (40, 36), (200, 30, 30)))
    assert tuple(x.shape) == (3, 32, 32)
    fast = FastPath(PRE, compose_raw_data(preset))  # the cached path: the policy runs after the cache
    assert policy in repr(fast.train_pil)


def compose_raw_data(preset: str):  # type: ignore[no-untyped-def]
    from aether.config.validate import validate

    return validate(compose_raw([*SHRINK, f"data/augment={preset}"])).data


def test_the_old_presets_take_the_mixing_keys_and_a_bad_policy_names_itself() -> None:
    from aether.config.schema import AugmentCfg
    from aether.data.transforms import train_transform

    for preset in ("light", "none", "strong"):
        raw = compose_raw([*SHRINK, f"data/augment={preset}", "data.augment.mixup=0.2", "data.augment.mixup_off_epoch=3"])
        assert raw["data"]["augment"]["mixup"] == 0.2 and raw["data"]["augment"]["mixup_off_epoch"] == 3
    with pytest.raises(ValueError, match="'trivialaugment' is no timm policy"):
        AugmentCfg(auto_augment="trivialaugment")
    with pytest.raises(AetherError, match="data.augment.auto_augment=rand-q9: timm cannot read"):
        train_transform(PRE, AugmentCfg(auto_augment="rand-q9"))


def test_posterize_at_full_magnitude_keeps_a_bit_on_both_paths() -> None:
    """timm's `inc1` posterize keeps 0 bits at magnitude 10, which Pillow 13 refuses (ValueError):
    the randaugment preset (m9, std 0.5, clipped at 10) crashed a real run mid-epoch that way."""
    from PIL import Image

    from aether.config.schema import AugmentCfg
    from aether.data.transforms import train_transform

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 40, 3), dtype=np.uint8))
    for policy in ("rand-m10-n3-inc1", "rand-m9-mstd0.5-inc1", "augmix-m10-w3"):
        whole = train_transform(PRE, AugmentCfg(auto_augment=policy))
        geometry, colour, tensor = train_transform(PRE, AugmentCfg(auto_augment=policy), separate=True)
        random.seed(0)
        for _ in range(40):  # m10, 3 ops of 15: posterize is drawn in most rounds
            assert tuple(whole(img).shape) == (3, 32, 32)
            assert tuple(tensor(colour(geometry(img))).shape) == (3, 32, 32)


def test_mixed_targets_are_soft_and_mixing_stops_at_the_off_epoch() -> None:
    from timm.loss import SoftTargetCrossEntropy

    from aether.config.schema import AugmentCfg
    from aether.tasks.classification.mixing import Mixing, soft_cross_entropy

    np.random.seed(0), random.seed(0), torch.manual_seed(0)
    mixing = Mixing(AugmentCfg(mixup=0.8, cutmix=1.0, mixup_off_epoch=2), num_classes=3)
    x, y = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for epoch in (0, 1):
        xm, t = mixing(x, y, epoch)
        assert t.shape == (8, 3) and torch.allclose(t.sum(1), torch.ones(8))
        assert not torch.equal(xm, x) and (t.max(1).values < 1).any()  # images and labels mixed
        assert torch.equal(x, x.clone())  # the loaded batch itself is untouched
    xm, t = mixing(x, y, 2)
    assert xm is x and t is y  # from mixup_off_epoch on: clean images, hard labels

    odd, t = mixing(x[:7], y[:7], 0)  # a ragged batch: all but the last image are mixed
    assert t.shape == (7, 3) and torch.allclose(t.sum(1), torch.ones(7)) and torch.equal(odd[-1], x[6])
    assert torch.equal(t[-1], torch.tensor([1.0, 0.0, 0.0]))  # y[6] = 0, as it came

    smooth = Mixing(AugmentCfg(mixup=0.8, mixup_off_epoch=1), num_classes=4, label_smoothing=0.2)
    _, t = smooth(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]), 0)
    assert t.min() >= 0.05 - 1e-6 and torch.allclose(t.sum(1), torch.ones(4))  # smoothing goes into the targets
    logits = torch.randn(4, 4)
    assert torch.allclose(soft_cross_entropy(logits, t), SoftTargetCrossEntropy()(logits, t))


def test_a_classification_run_with_mixup_and_cutmix_finishes(tmp_path: Path) -> None:
    run, data = tmp_path / "run", make_folder(tmp_path / "imgs", per_class=10)  # 21 train images: 2 steps of 8
    rc = run_in_process(run, [f"data={data}", "model.pretrained=false", "data/augment=randaugment", "data.batch_size=8",
                              "data.augment.mixup=0.4", "data.augment.cutmix=1.0", "data.augment.mixup_off_epoch=1",
                              "loss.label_smoothing=0.1"])
    assert rc.data.augment.mixup == 0.4
    m = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [0, 1]
    assert all(np.isfinite(h["train/loss"]) and np.isfinite(h["val/loss"]) for h in m["history"])
    assert 0 <= m["test"]["accuracy"] <= 1 and (run / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("task, extra", [("multilabel", "data.augment.mixup=0.2"),
                                         ("detection", "data.augment.cutmix=1.0")])
def test_tasks_without_single_labels_refuse_mixing(task: str, extra: str, tmp_path: Path) -> None:
    from aether.config.validate import validate
    from aether.run import prepare

    rc = validate(compose_raw([*SHRINK, f"task={task}", f"data={tmp_path}", extra]))
    with pytest.raises(AetherError, match=f"{extra.replace('.', '[.]')}: task={task} cannot train on mixed images"):
        prepare(rc)  # before any data is read (the folder is empty)


def test_the_doctor_picks_the_preset_from_the_training_images() -> None:
    from aether.doctor.recommend import as_overrides, recommend

    cpu = {"cpus": 2, "gpus": 0, "gpu_memory_gb": 0.0}
    sizes = {"width": {"median": 300}, "height": {"median": 200}}
    few = recommend(1400, {"a": 700, "b": 700}, sizes, cpu, num_train=1000)
    many = recommend(8000, {"a": 4000, "b": 4000}, sizes, cpu, num_train=5600)
    scratch = recommend(8000, {"a": 4000, "b": 4000}, sizes, cpu, num_train=5600, weights=lambda name: None)
    assert few["augment"]["value"] == "light" and "1000 training images (< 2,000)" in few["augment"]["reason"]
    assert many["augment"]["value"] == "randaugment" and "RandAugment" in many["augment"]["reason"]
    assert scratch["augment"]["value"] == "none"
    assert "data/augment=randaugment" in as_overrides(many) and "data/augment=light" in as_overrides(few)
    assert [o for o in as_overrides(scratch) if o.startswith("data/augment=")] == ["data/augment=none"]
    compose_raw([*SHRINK, *as_overrides(many)])  # the recommendation composes
