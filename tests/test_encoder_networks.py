"""Segmentation and detection build their networks through the backbone provider registry: `model.grad_checkpointing`,
`model.drop_rate` and a plugin backbone (the example torchvision provider) work for segmentation and
detection; segmentation-models-pytorch decoders build over any encoder, train, and their saved
model predicts (in process and through ONNX)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import torch

from aether.errors import AetherError
from tests.conftest import SHRINK, compose_raw, run_in_process
from tests.tasks_data import make_scenes, write_detection, write_masks

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "aether-torchvision"
TINY = ["model.pretrained=false", "data.batch_size=4", "scheduler=none", "data/augment=none"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dense")
    return {"segmentation": [f"data={write_masks(root / 'seg', n=12, size=32)}", "data.image_size=32"],
            "detection": [f"data={write_detection(root / 'det', 'voc', make_scenes(12, size=64, seed=11))}",
                          "data.image_size=64"]}


@pytest.fixture
def torchvision_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example plugin's provider, registered as its entry point would (tests/test_plugin.py
    installs it and runs it through the CLI)."""
    import sys

    from aether import registry

    # what it registers (a backbone, the labels_txt format, task=regression) is taken back after
    # the test, and the module forgotten so the next use registers again: a format left behind
    # would join every later test's format detection in this worker
    for reg in (registry.adapters, registry.backbones, registry.tasks):
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    for name in [m for m in sys.modules if m == "aether_torchvision" or m.startswith("aether_torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(PLUGIN))
    import aether_torchvision  # noqa: F401  (importing it registers `torchvision` in the backbone registry)

    yield
    for name in [m for m in sys.modules if m == "aether_torchvision" or m.startswith("aether_torchvision.")]:
        del sys.modules[name]


def _job(overrides: List[str]) -> Any:
    import lightning as L

    from aether.config.validate import validate
    from aether.run import prepare

    L.seed_everything(0, verbose=False)
    return prepare(validate(compose_raw([*SHRINK, *TINY, *overrides])))


def _loss(job: Any, batch: Any) -> torch.Tensor:
    model = job.module.model.train()
    x, y = batch
    if job.task.name == "detection":
        return sum(model(x, y).values())
    return torch.nn.functional.cross_entropy(model(x), y, ignore_index=255)


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_grad_checkpointing_recomputes_the_encoder_with_the_same_gradients(data: dict, task: str) -> None:
    plain = _job(data[task])
    ckpt = _job([*data[task], "model.grad_checkpointing=true"])
    ckpt.module.model.load_state_dict(plain.module.model.state_dict())
    batch = next(iter(plain.datamodule.train_dataloader()))
    grads, calls = [], []
    for job in (plain, ckpt):
        stage = job.module.model.encoder.stages_1  # test_convnext's second stage: inside the checkpointed part
        n = [0]
        # a pre-hook: torch stops a recomputation once it has what backward needs, before forward hooks
        hook = stage.register_forward_pre_hook(lambda *_: n.__setitem__(0, n[0] + 1))
        job.module.model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks in both (DeepLabV3+'s ASPP has dropout)
        _loss(job, batch).backward()
        hook.remove()
        calls.append(n[0])
        grads.append({k: p.grad.clone() for k, p in job.module.model.named_parameters() if p.grad is not None})
    assert calls == [1, 2]  # recomputed once in the backward pass
    assert grads[0].keys() == grads[1].keys() and all(torch.allclose(grads[0][k], grads[1][k], atol=1e-5)
                                                      for k in grads[0])


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_drop_rate_drops_feature_channels_in_training_only(data: dict, task: str) -> None:
    job = _job([*data[task], "model.drop_rate=0.5"])
    model = job.module.model
    assert isinstance(model.feature_drop, torch.nn.Dropout2d) and model.feature_drop.p == 0.5
    x = torch.rand(2, 3, 32, 32)
    model.train()
    a, b = model.features(x), model.features(x)
    dropped = [f.flatten(2).abs().sum(-1) == 0 for f in a]  # whole channels are zero
    assert any(d.any() for d in dropped) and any(not torch.equal(u, v) for u, v in zip(a, b))
    model.eval()
    assert all(torch.equal(u, v) for u, v in zip(model.features(x), model.encoder(x)))
    assert job.backbone.info["kwargs"].get("drop_rate") is None  # not the encoder's: nothing to rebuild


# segmentation: LoRA on a torchvision ResNet's blocks; detection: MobileNetV3 trained in full (PEFT
# wraps the FCOS head's own classification_head / regression_head too when `head` is the module
# to save, so a LoRA detector's saved model does not reload yet: a strategies/lora.py matter)
@pytest.mark.parametrize("task,name,strategy", [("segmentation", "resnet18", "lora"),
                                                ("detection", "mobilenet_v3_small", "full")])
def test_plugin_backbone_trains_and_reloads(data: dict, task: str, name: str, strategy: str, tmp_path: Path,
                                            torchvision_provider: None) -> None:
    from aether.models.saved import load_model_dir

    ov = [*data[task], *TINY, "model.provider=torchvision", f"model.name={name}", "model.grad_checkpointing=true",
          "model.drop_rate=0.1", f"strategy={strategy}", "trainer.max_epochs=1"]
    job = _job(ov)
    encoder = job.backbone.model.encoder
    assert type(encoder).__name__ == "StageFeatures" and encoder.reductions == [2, 4, 8, 16, 32]
    assert encoder.grad_checkpointing and job.backbone.model.feature_drop.p == 0.1
    if strategy == "lora":
        assert [n for n, _ in encoder.named_children()][-4:] == ["layer1", "layer2", "layer3", "layer4"]
        assert job.strategy.targets and all(".layer" in t for t in job.strategy.targets)  # the ResNet blocks
    run = tmp_path / "run"
    rc = run_in_process(run, ov)
    assert rc.task == task
    info = json.loads((run / "model" / "model.json").read_text())
    assert info["provider"] == "torchvision" and info["features_only"] and info["task"] == task
    model, classes, pre = load_model_dir(run / "model")
    side = pre["input_size"][-1]
    with torch.no_grad():
        out = model(torch.rand(2, 3, side, side)) if task == "segmentation" else model([torch.rand(3, side, side)])
    if task == "segmentation":
        assert out.shape == (2, len(classes), side, side)
    else:
        assert {"boxes", "labels", "scores"} <= set(out[0])


def test_torchvision_encoder_refuses_a_body_without_feature_maps(torchvision_provider: None) -> None:
    from aether.config.schema import ModelCfg
    from aether.models.encoder_net import create_encoder

    with pytest.raises(AetherError, match="not a sequence of convolutional stages"):
        create_encoder(ModelCfg(provider="torchvision", name="vit_b_16"))
    enc = create_encoder(ModelCfg(provider="torchvision", name="mobilenet_v3_small"))
    assert enc.reductions == [2, 4, 8, 16, 32] and [f.shape[1] for f in enc.model(torch.rand(1, 3, 64, 64))] == enc.channels


def test_a_provider_without_an_encoder_is_a_clear_error(data: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether import registry

    class ClassifierOnly:
        name = "classifier_only"

        def create(self, cfg: Any, num_classes: int) -> Any:
            raise AssertionError("not called")

    monkeypatch.setitem(registry.backbones._entries, "classifier_only",
                        registry.Entry("classifier_only", ClassifierOnly))
    with pytest.raises(AetherError, match="model.provider=classifier_only: this backbone provider builds "
                                          "classifiers only"):
        _job([*data["segmentation"], "model.provider=classifier_only"])


@pytest.mark.parametrize("model", ["test_convnext", "test_resnet"])  # encoders from stride 4 and from stride 2
def test_every_smp_decoder_builds_over_a_provider_encoder(model: str) -> None:
    from typing import get_args

    from aether.config.schema import ModelCfg
    from aether.models.encoder_net import create_encoder
    from aether.tasks.segmentation.network import build_head
    from aether.tasks.segmentation.options import Decoder

    encoder = create_encoder(ModelCfg(name=model))
    x = torch.rand(2, 3, 64, 64)
    for decoder in get_args(Decoder):
        head = build_head({"decoder": decoder, "decoder_channels": 8}, encoder, 3, {}).eval()
        with torch.no_grad():
            assert head(x, encoder.model).shape == (2, 3, 64, 64), decoder


def test_smp_decoder_trains_and_its_saved_model_predicts(tmp_path: Path) -> None:
    import numpy as np

    from aether.deploy.onnx_export import OnnxRunner, export_onnx
    from aether.deploy.tasks import TaskPredictor

    root = write_masks(tmp_path / "seg", n=12, size=32)
    run = tmp_path / "run"
    run_in_process(run, [f"data={root}", *TINY, "data.image_size=32", "optimizer.lr=5e-3", "trainer.max_epochs=2",
                         "+task_options.decoder=unet", "+task_options.decoder_channels=16"])
    m = json.loads((run / "metrics.json").read_text())
    assert {"miou", "dice", "pixel_accuracy", "per_class"} <= set(m["test"])
    assert json.loads((run / "model" / "model.json").read_text())["task_options"]["decoder"] == "unet"
    predictor = TaskPredictor(run / "model", device="cpu")
    rows, failed = predictor.predict_task_paths([str(p) for p in sorted((root / "images").iterdir())[:3]])
    assert not failed and len(rows) == 3 and all(r["width"] == 32 and r["areas"] for r in rows)
    info = export_onnx(str(run))
    assert info["max_abs_diff"] <= 1e-4
    x = torch.rand(2, *info["input"]["shape"][1:])
    got = OnnxRunner(run / "model" / "model.onnx", task="segmentation").outputs(x.numpy())
    assert (got == predictor.outputs(x)).mean() > 0.999 and got.dtype == np.uint8
