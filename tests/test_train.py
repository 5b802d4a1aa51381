"""End to end: train -> test -> report on generated images, through the real configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from aether.errors import AetherError
from tests.conftest import run_in_process, wandb_offline_run

CONTRACT_FILES = ["config.yaml", "metrics.json", "report.md", "curves.png", "confusion_matrix.png",
                  "checkpoints/best.ckpt", "checkpoints/last.ckpt", "model/model.safetensors",
                  "model/labels.json", "model/preprocessing.json", "model/model.json"]


def test_train_evaluate_report(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / "red" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    run = tmp_path / "run"
    run_in_process(run, ["+recipe=resnet_full", f"data={image_folder}", "model.pretrained=false",
                         "trainer.max_epochs=3", "optimizer.lr=3e-3"])
    for f in CONTRACT_FILES:
        assert (run / f).exists(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["accuracy"] > 0.6  # three colour classes: chance is 0.33
    assert set(m["test"]["per_class"]) == {"blue", "green", "red"}
    assert {"precision", "recall"} <= set(m["test"]["per_class"]["red"])
    assert 0 <= m["test"]["f1_macro"] <= 1 and m["test"]["accuracy_top5"] == 1.0
    assert [h["epoch"] for h in m["history"]] == [0, 1, 2]
    assert m["history"][-1]["train/loss"] < m["history"][0]["train/loss"]  # it learned
    assert m["params"]["trainable"] == m["params"]["total"] > 0
    d = m["data"]
    assert d["task"] == "classification" and d["classes"] == ["blue", "green", "red"]
    assert d["num_train"] + d["num_val"] + d["num_test"] == 60
    assert [Path(s["path"]).name for s in d["skipped"]] == ["corrupt.png"]
    t = m["time"]
    assert t["train_s"] > 0 and t["images_per_s"] > 0 and t["device_hours"] > 0
    assert t["est_cost"] == pytest.approx(t["device_hours"] * 0.10, rel=1e-2)
    report = (run / "report.md").read_text()
    assert "corrupt.png" in report and "confusion_matrix.png" in report and "Test results" in report
    assert "model_name" not in (run / "config.yaml").read_text() and "recipe: resnet_full" in (run / "config.yaml").read_text()


def test_saved_model_reloads_with_the_same_predictions(image_folder: Path, tmp_path: Path) -> None:
    from aether.data.images import load_rgb
    from aether.data.transforms import eval_transform
    from aether.models.saved import load_model_dir

    run = tmp_path / "run"
    run_in_process(run, [f"data={image_folder}", "trainer.max_epochs=1"])
    model, classes, pre = load_model_dir(run / "model")
    assert classes == ["blue", "green", "red"] and pre["input_size"] == [3, 32, 32]
    x = torch.stack([eval_transform(pre)(load_rgb(str(p))) for p in sorted((image_folder / "red").glob("*.png"))[:4]])
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    ref_sd = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    ref, _, _ = load_model_dir(run / "model")
    ref.load_state_dict(ref_sd)
    with torch.no_grad():
        assert torch.allclose(model(x), ref.eval()(x), atol=1e-5)


def test_linear_probe_freezes_the_backbone(image_folder: Path, tmp_path: Path) -> None:
    from aether.config.validate import validate
    from aether.run import prepare
    from tests.conftest import SHRINK, compose_raw

    rc = validate(compose_raw([*SHRINK, "+recipe=convnext_linear_probe", "model=test_convnext",
                               "model.pretrained=false", f"data={image_folder}"]))
    job = prepare(rc)
    head_ids = {id(p) for p in job.backbone.head.parameters()}
    before = {n: p.detach().clone() for n, p in job.module.model.named_parameters()}
    bn_before = {n: b.detach().clone() for n, b in job.module.model.named_buffers()}
    import lightning as L

    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              num_sanity_val_steps=0, limit_val_batches=0).fit(job.module, datamodule=job.datamodule)
    for n, p in job.module.model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == (id(p) in head_ids), n
    for n, b in job.module.model.named_buffers():
        assert torch.equal(b, bn_before[n]), f"BatchNorm statistics moved: {n}"
    assert job.params["trainable"] == sum(p.numel() for p in job.backbone.head.parameters())


@pytest.mark.parametrize("scheduler", ["cosine", "step", "plateau", "onecycle", "none"])
def test_every_scheduler_and_optimizer_runs(scheduler: str, image_folder: Path, tmp_path: Path) -> None:
    optimizer = {"cosine": "adamw", "step": "sgd", "plateau": "adam", "onecycle": "adamw", "none": "sgd"}[scheduler]
    run_in_process(tmp_path / "run", [f"data={image_folder}", f"scheduler={scheduler}", f"optimizer={optimizer}",
                                      "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                                      "loss.class_weights=balanced", "loss.label_smoothing=0.1",
                                      "trainer.gradient_clip_val=1.0", "trainer.accumulate_grad_batches=2"])
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["history"][0]["lr"] > 0


def test_bf16_mixed_precision_on_cpu(image_folder: Path, tmp_path: Path) -> None:
    run_in_process(tmp_path / "run", [f"data={image_folder}", "trainer.precision=bf16-mixed", "trainer.max_epochs=1",
                                      "trainer.limit_train_batches=2"])
    assert (tmp_path / "run" / "metrics.json").exists()


def test_wandb_offline_and_tensorboard_loggers(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: must go offline by itself
    run_in_process(tmp_path / "wb", [f"data={image_folder}", "logger=wandb", "trainer.max_epochs=1",
                                     "trainer.limit_train_batches=2"])
    offline = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert offline
    # what a dashboard needs to filter, compare and show the run: its config, its test results
    # as the summary, the confusion matrix, the report's pictures and the model as an artifact
    wb = wandb_offline_run(tmp_path / "wb")
    assert wb["config"]["optimizer.lr"] == 1e-3 and wb["config"]["logger.name"] == "wandb"
    accuracy = json.loads((tmp_path / "wb" / "metrics.json").read_text())["test"]["accuracy"]
    assert wb["summary"]["test/accuracy"] == pytest.approx(accuracy)
    assert "model" in {kind for _, kind in wb["artifacts"]}
    media = wb["files"] / "media"
    assert list((media / "table" / "test").glob("confusion_matrix_table*.json"))
    assert {p.name.split("_")[0] for p in (media / "images" / "report").glob("*.png")} >= {"confusion", "curves"}
    # a second run in the same process (a sweep trial) gets its own W&B run, in its own folder
    run_in_process(tmp_path / "wb2", [f"data={image_folder}", "logger=wandb", "trainer.max_epochs=1",
                                      "trainer.limit_train_batches=2"])
    assert len(list((tmp_path / "wb2" / "wandb").glob("offline-run-*"))) == 1
    assert len(list((tmp_path / "wb" / "wandb").glob("offline-run-*"))) == 1
    run_in_process(tmp_path / "tb", [f"data={image_folder}", "logger=tensorboard", "trainer.max_epochs=1",
                                     "trainer.limit_train_batches=2"])
    events = list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"report/confusion_matrix", "report/curves"} <= set(acc.Tags()["images"])
    hparams = (tmp_path / "tb" / "tensorboard" / "hparams.yaml").read_text()
    assert "optimizer.lr" in hparams


def test_local_weights_file_is_loaded_and_head_reinitialised(image_folder: Path, tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    from aether.config.schema import ModelCfg
    from aether.models.timm_provider import TimmProvider

    src = timm.create_model("test_convnext", num_classes=7)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(src.state_dict(), tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        bb = TimmProvider().create(ModelCfg(name="test_convnext", weights=str(tmp_path / f)), num_classes=3)
        sd = bb.model.state_dict()
        body = [k for k in sd if not k.startswith("head.fc")]
        assert all(torch.equal(sd[k], src.state_dict()[k]) for k in body)  # backbone weights came from the file
        assert sd["head.fc.weight"].shape[0] == 3  # new head for 3 classes
    same = TimmProvider().create(ModelCfg(name="test_convnext", weights=str(tmp_path / "w.safetensors")), num_classes=7)
    assert torch.equal(same.model.state_dict()["head.fc.weight"], src.state_dict()["head.fc.weight"])


def test_weights_that_need_pickle_are_refused(tmp_path: Path) -> None:
    from aether.models.backbone import read_state_dict

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pickle code ran",))

    torch.save({"w": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(AetherError, match="pickle"):
        read_state_dict(str(tmp_path / "evil.pt"))


def test_missing_pretrained_weights_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.config.schema import ModelCfg
    from aether.models.timm_provider import TimmProvider

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AetherError) as err:
        TimmProvider().create(ModelCfg(name="resnet18.a1_in1k", pretrained=True), num_classes=3)
    msg = str(err.value)
    assert "resnet18.a1_in1k" in msg and "model.safetensors" in msg and "model.weights=" in msg


def test_unknown_timm_name_suggests(tmp_path: Path) -> None:
    from aether.config.schema import ModelCfg
    from aether.models.timm_provider import TimmProvider

    with pytest.raises(AetherError, match="did you mean 'resnet18'"):
        TimmProvider().create(ModelCfg(name="resnet181"), num_classes=3)


def test_lora_trains_adapters_and_exports_merged(image_folder: Path, tmp_path: Path) -> None:
    from aether.models.saved import load_model_dir

    run = tmp_path / "run"
    run_in_process(run, ["+recipe=vit_lora", "model=test_vit", "model.pretrained=false", f"data={image_folder}",
                         "trainer.max_epochs=1"])
    m = json.loads((run / "metrics.json").read_text())
    assert 0 < m["params"]["trainable"] < 0.5 * m["params"]["total"]
    model, _, _ = load_model_dir(run / "model")  # merged into a plain timm model
    assert not any("lora" in k for k in model.state_dict())


def test_same_seed_same_result(image_folder: Path, tmp_path: Path) -> None:
    args = [f"data={image_folder}", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "seed=3"]
    run_in_process(tmp_path / "a", args)
    run_in_process(tmp_path / "b", args)
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["history"][0]["train/loss"] == b["history"][0]["train/loss"]
    assert a["test"] == b["test"]


def test_early_stopping_says_why_the_run_ended(image_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run that early stopping ends before max_epochs says so (it used to end without a word)."""
    import logging

    caplog.set_level(logging.INFO, logger="aether")
    run = tmp_path / "run"
    run_in_process(run, ["trainer.max_epochs=6", "trainer.early_stopping.enabled=true",
                         "trainer.early_stopping.patience=1", "trainer.early_stopping.min_delta=100"])
    m = json.loads((run / "metrics.json").read_text())
    assert len(m["history"]) == 2  # epoch 1 sets the best, epoch 2 fails to beat it by 100: stop
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("early stopping:")]
    assert len(notes) == 1 and "val/loss" in notes[0] and "after epoch 2 of 6" in notes[0], notes
