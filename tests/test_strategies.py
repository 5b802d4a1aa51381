"""Fine-tune strategies on every backbone family: what trains really trains, what is frozen stays put."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import lightning as L
import pytest
import torch

from aether.config.validate import validate
from aether.errors import AetherError
from aether.run import prepare
from aether.tasks.base import Job
from tests.conftest import SHRINK, compose_raw, run_in_process

FAMILIES = ["test_vit", "test_convnext", "test_efficientnet", "resnet18"]
STRATEGIES = ["full", "linear_probe", "lora", "gradual_unfreeze"]


def _job(folder: Path, *overrides: str) -> Job:
    L.seed_everything(0, verbose=False)
    return prepare(validate(compose_raw([*SHRINK, f"data={folder}", "model.pretrained=false", *overrides])))


def _fit(job: Job, epochs: int = 1, batches: int = 3) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        callbacks=job.strategy.callbacks(), enable_model_summary=False)
    trainer.fit(job.module, datamodule=job.datamodule)
    return trainer


def _random_init_fix(family: str) -> List[str]:
    # timm initialises each ResNet block's last BatchNorm scale to zero (good from scratch). Under
    # LoRA those scales are frozen, so a randomly initialised ResNet's residual branches pass no
    # gradient. Pretrained weights have non-zero scales; these random-init tests switch it off.
    return ["+model.kwargs.zero_init_last=false"] if family.startswith("resnet") else []


def _snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_frozen_stays_and_trainable_moves(strategy: str, family: str, image_folder: Path) -> None:
    job = _job(image_folder, f"model={family}", f"strategy={strategy}", *_random_init_fix(family))
    model = job.module.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and job.params["trainable"] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    before = _snapshot(model)
    buffers = {n: b.clone() for n, b in model.named_buffers() if b.dtype.is_floating_point}
    _fit(job)
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{strategy}/{family}: trainable {n} did not change"
        else:
            assert torch.equal(p, before[n]), f"{strategy}/{family}: frozen {n} changed"
    if strategy in ("linear_probe", "lora"):  # frozen BatchNorm keeps its statistics
        for n, b in model.named_buffers():
            if n in buffers and "original_module" not in n:
                assert torch.equal(b, buffers[n]), f"{strategy}/{family}: buffer {n} moved"
    if strategy == "full":
        assert job.params["trainable"] == job.params["total"]
    else:
        assert job.params["trainable"] < 0.6 * job.params["total"]


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_merged_equals_unmerged(family: str, image_folder: Path, tmp_path: Path) -> None:
    job = _job(image_folder, f"model={family}", "strategy=lora", *_random_init_fix(family))
    _fit(job)
    model = job.module.model.eval()
    x = torch.randn(4, *job.preprocessing["input_size"])
    plain, info = job.strategy.export(model, tmp_path)
    with torch.no_grad():
        unmerged, merged = model(x), plain.eval()(x)
    assert info == {"adapter": "adapter", "merged": True}
    assert not any("lora" in k for k in plain.state_dict())
    assert torch.allclose(unmerged, merged, atol=1e-4), (unmerged - merged).abs().max()  # float32 re-association
    adapter = tmp_path / "adapter" / "adapter_model.safetensors"
    assert adapter.stat().st_size < 0.5 * sum(v.numel() * 4 for v in plain.state_dict().values())


def test_lora_unmerged_export_reloads_through_the_adapter(image_folder: Path, tmp_path: Path) -> None:
    from aether.data.transforms import eval_transform  # noqa: F401  (same transforms code as serving)
    from aether.models.saved import load_model_dir

    run = tmp_path / "run"
    run_in_process(run, [f"data={image_folder}", "model=test_vit", "strategy=lora", "strategy.merge=false",
                         "trainer.max_epochs=1"])
    info = json.loads((run / "model" / "model.json").read_text())
    assert info["merged"] is False and (run / "model" / "adapter" / "adapter_config.json").exists()
    merged_run = tmp_path / "merged"
    run_in_process(merged_run, [f"data={image_folder}", "model=test_vit", "strategy=lora", "trainer.max_epochs=1"])
    a, _, pre = load_model_dir(run / "model")
    b, _, _ = load_model_dir(merged_run / "model")
    x = torch.randn(2, *pre["input_size"])
    with torch.no_grad():  # same seed, same data: the unmerged and merged exports agree
        assert torch.allclose(a(x), b(x), atol=1e-4)


def test_lora_targets_per_family() -> None:
    import timm

    from aether.strategies.lora import resolve_targets

    def names(model_name: str, spec="auto") -> List[str]:  # type: ignore[no-untyped-def]
        m = timm.create_model(model_name, num_classes=3)
        return resolve_targets(m, m.get_classifier(), spec)

    vit = names("test_vit")
    assert any(n.endswith("attn.qkv") for n in vit) and any(n.endswith("mlp.fc2") for n in vit)
    assert "patch_embed.proj" not in vit and "head" not in vit
    assert all(n.endswith(("mlp.fc1", "mlp.fc2")) for n in names("test_convnext"))
    assert all(n.endswith(("conv_pw", "conv_pwl")) for n in names("test_efficientnet"))
    assert all(n.rsplit(".", 1)[-1] in ("conv1", "conv2", "conv3") for n in names("resnet18"))
    assert names("test_vit", r".*\.qkv") == [n for n in vit if n.endswith("qkv")]
    assert names("test_vit", ["fc1"]) == [n for n in vit if n.endswith("fc1")]


def test_lora_target_that_matches_nothing_is_a_clear_error(image_folder: Path) -> None:
    with pytest.raises(AetherError, match="matches no layer"):
        _job(image_folder, "model=test_vit", "strategy=lora", "strategy.target_modules=nothing_like_this")


def test_gradual_unfreeze_follows_its_schedule(image_folder: Path) -> None:
    job = _job(image_folder, "model=test_convnext", "strategy=gradual_unfreeze", "strategy.every_n_epochs=1")
    model = job.module.model
    groups = job.strategy.groups
    assert len(groups) >= 3
    initially = {n for n, p in model.named_parameters() if p.requires_grad}
    assert initially and not (initially & {n for g in groups for n in g})  # only the head group trains at first
    snapshots = []

    class Spy(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            snapshots.append(({n for n, p in model.named_parameters() if p.requires_grad},
                              len(trainer.optimizers[0].param_groups), _snapshot(model)))

    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        callbacks=[*job.strategy.callbacks(), Spy()], enable_model_summary=False)
    start = _snapshot(model)
    trainer.fit(job.module, datamodule=job.datamodule)
    (t0, g0, s0), (t1, g1, s1), (t2, g2, s2) = snapshots
    assert t0 == initially
    assert t1 == initially | set(groups[0]) and g1 == g0 + 1
    assert t2 == initially | set(groups[0]) | set(groups[1]) and g2 == g1 + 1
    deepest = groups[-1][0]  # never unfrozen in 3 epochs
    assert torch.equal(s2[deepest], start[deepest])
    assert torch.equal(s0[groups[0][0]], start[groups[0][0]]) and not torch.equal(s1[groups[0][0]], s0[groups[0][0]])
    new_lr = trainer.optimizers[0].param_groups[-1]["lr"]
    assert 0 < new_lr < trainer.optimizers[0].param_groups[0]["lr"]  # own, smaller LR


def test_gradual_unfreeze_milestones() -> None:
    from aether.strategies.options import GradualUnfreezeCfg
    from aether.strategies.gradual import GradualUnfreeze

    s = GradualUnfreeze(GradualUnfreezeCfg(milestones=[2, 5], groups_per_step=2))
    s.groups = [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert [s.unfrozen_groups_at(e) for e in range(7)] == [0, 0, 2, 2, 2, 4, 4]


def test_layer_decay_gives_deeper_layers_smaller_lrs(image_folder: Path) -> None:
    job = _job(image_folder, "model=test_vit", "strategy=full", "strategy.layer_decay=0.5")
    groups = job.strategy.param_groups(job.module.model, 0.05)
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.5 ** (len(scales) - 1))
    head = {id(p) for p in job.backbone.head.parameters()}
    assert all(g["lr_scale"] == 1.0 for g in groups if any(id(p) in head for p in g["params"]))
    trainer = _fit(job)
    lrs = {pg["lr_scale"]: pg["lr"] for pg in trainer.optimizers[0].param_groups}
    assert lrs[scales[0]] < lrs[1.0]


def test_qlora_on_cpu_says_what_to_do(image_folder: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU error path does not apply")
    with pytest.raises(AetherError) as err:
        _job(image_folder, "model=test_vit", "strategy=qlora")
    assert "CUDA" in str(err.value) and "strategy=lora" in str(err.value)


def _shapes(root: Path, per_class: int, seed: int, size: int = 32) -> Path:
    """Shape classes in random colours: colour is no shortcut, features must see shape."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for shape in ("circle", "square", "triangle"):
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (size, size), tuple(rng.randint(0, 90) for _ in range(3)))
            d = ImageDraw.Draw(img)
            c = tuple(rng.randint(120, 255) for _ in range(3))
            r = rng.randint(7, 12)
            x, y = rng.randint(r, size - r), rng.randint(r, size - r)
            if shape == "circle":
                d.ellipse([x - r, y - r, x + r, y + r], fill=c)
            elif shape == "square":
                d.rectangle([x - r, y - r, x + r, y + r], fill=c)
            else:
                d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=c)
            img.save(root / shape / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_pretrained_weights_beat_random_init_for_every_strategy(tmp_path: Path) -> None:
    """Pretrain a tiny backbone, save it, fine-tune from model.weights=FILE on a small new set:
    each strategy must do better than the same strategy from random init."""
    big = _shapes(tmp_path / "big", per_class=200, seed=1)
    small = _shapes(tmp_path / "small", per_class=30, seed=2)
    base = ["model=test_convnext", "data.image_size=32", "data.augment.hflip=0", "seed=0"]
    run_in_process(tmp_path / "pre", [*base, f"data={big}", "trainer.max_epochs=20", "optimizer.lr=1e-2"])
    weights = tmp_path / "pre" / "model" / "model.safetensors"
    pre_acc = json.loads((tmp_path / "pre" / "metrics.json").read_text())["test"]["accuracy"]
    assert pre_acc > 0.85
    results = {}
    for strategy in STRATEGIES:
        for init in ("random", "pretrained"):
            run = tmp_path / f"{strategy}-{init}"
            extra = [f"model.weights={weights}"] if init == "pretrained" else []
            run_in_process(run, [*base, f"data={small}", f"strategy={strategy}", "trainer.max_epochs=5",
                                 "optimizer.lr=3e-3", "data.val_fraction=0.2", "data.test_fraction=0.4", *extra])
            results[(strategy, init)] = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    print(results)
    for strategy in STRATEGIES:
        assert results[(strategy, "pretrained")] > results[(strategy, "random")], results


def test_gradual_unfreeze_resumes_with_its_extra_param_groups(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    run = tmp_path / "run"
    common = ["+recipe=quickstart", "model=test_convnext", "strategy=gradual_unfreeze", "data.image_size=32",
              "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.progress=plain",
              "analysis.enabled=false"]
    r = run_cli([*common, "trainer.max_epochs=2", f"hydra.run.dir={run}"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli([f"resume={run}", "trainer.max_epochs=4"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]


def test_qlora_mechanics_checkpoint_and_export(image_folder: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """QLoRA's own code on the CPU (bitsandbytes 0.45+ quantises on the CPU too; the product still
    refuses CPU, see above): a whole run trains the adapters over 4-bit Linear layers, the test
    stage reloads best.ckpt (Linear4bit writes quantisation state it cannot read back without
    Aether's hook), and the exported model is a plain float network that gives the 4-bit model's
    logits: dequantise-then-merge keeps the LoRA update in full precision."""
    pytest.importorskip("bitsandbytes")
    from aether.models.saved import load_model_dir
    from aether.strategies.lora import QLora

    monkeypatch.setattr(QLora, "device", "cpu")
    # bitsandbytes 0.50.2 repacks 4-bit weights for AVX512-BF16 CPUs in eval mode, and that path
    # fails on layers with a bias (in-place add on a leaf); it is a CPU-only path Aether never uses
    monkeypatch.setattr("bitsandbytes.nn.modules.has_avx512bf16", lambda: False)
    run_dir = tmp_path / "run"
    rc = run_in_process(run_dir, [f"data={image_folder}", "model=test_vit", "+model.kwargs.img_size=32",
                                  "strategy=qlora", "strategy.compute_dtype=float32", "trainer.max_epochs=1"])
    assert rc.strategy.name == "qlora"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "accuracy" in metrics["test"]  # the test stage ran on the reloaded best checkpoint
    assert (run_dir / "model" / "adapter" / "adapter_model.safetensors").is_file()

    exported, _, _ = load_model_dir(run_dir / "model")
    assert not any(type(m).__name__ == "Linear4bit" for m in exported.modules())
    # the same weights, reloaded as QLoRA from best.ckpt, against the exported float model
    job = prepare(rc)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    job.module.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        quantised, plain = job.module.model.eval()(x), exported.eval()(x)
    assert (quantised - plain).abs().max().item() < 1e-3
