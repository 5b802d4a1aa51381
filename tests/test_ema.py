"""ema.enabled: the averaged weights are validated, kept as best.ckpt, tested and exported;
last.ckpt keeps the raw ones (and the average, which a resumed run continues)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from aether.config.validate import ConfigError, validate
from tests.conftest import compose_raw, run_in_process


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_best_checkpoint_and_export_hold_the_average_and_resume_continues_it(image_folder: Path,
                                                                              tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from aether.run import fit_and_report, resume_config

    run = tmp_path / "run"
    run_in_process(run, [f"data={image_folder}", "trainer.max_epochs=1", "ema.enabled=true", "ema.decay=0.9"])
    best, last = _ckpt(run / "checkpoints" / "best.ckpt"), _ckpt(run / "checkpoints" / "last.ckpt")
    state = last["callbacks"]["WeightAverage"]
    average = state["average"]
    assert average and all(k.startswith("model.") for k in average)
    # one epoch: best.ckpt is that epoch, validated with the average - the average exactly
    assert all(torch.equal(best["state_dict"][k], average[k]) for k in average)
    # last.ckpt resumes training, so its state_dict is the raw weights, which differ from the average
    assert any(not torch.equal(last["state_dict"][k], average[k]) for k in average if average[k].is_floating_point())
    exported = load_file(str(run / "model" / "model.safetensors"))
    assert exported and all(torch.equal(v, best["state_dict"]["model." + k]) for k, v in exported.items())
    m = json.loads((run / "metrics.json").read_text())
    assert m["ema"]["enabled"] and m["ema"]["mode"] == "ema" and m["ema"]["decay"] == 0.9
    assert m["ema"]["updates"] == state["updates"] == last["global_step"] > 1
    assert "ema:\n  enabled: true" in (run / "config.yaml").read_text()
    assert "- weights: averaged (EMA, decay 0.9" in (run / "report.md").read_text()

    raw = resume_config(str(run), ["trainer.max_epochs=2"])
    fit_and_report(validate(raw), raw, run, run_name="test")
    last = _ckpt(run / "checkpoints" / "last.ckpt")
    # the resumed run went on with the same average: it counts the first epoch's steps too
    assert last["callbacks"]["WeightAverage"]["updates"] == last["global_step"] == 2 * state["updates"]
    assert json.loads((run / "metrics.json").read_text())["ema"]["updates"] == last["global_step"]


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(2, 2).requires_grad_(False)  # a frozen base (LoRA): never copied
        self.bn = nn.BatchNorm1d(2)
        self.head = nn.Linear(2, 1)


def _set(module: _Tiny, w: float, tracked: int) -> None:
    with torch.no_grad():
        module.head.weight.fill_(w)
        module.bn.num_batches_tracked.fill_(tracked)


def test_average_math_trainable_tensors_only_integers_kept_and_swaps() -> None:
    from aether.training.averaging import WeightAverage

    m = _Tiny()
    ema = WeightAverage("ema", decay=0.5, warmup=False)
    ema._track(m)
    assert set(ema.average) == {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                "bn.num_batches_tracked", "head.weight", "head.bias"}
    for w, tracked in ((1.0, 5), (3.0, 7)):
        _set(m, w, tracked)
        ema._update()
    assert torch.allclose(ema.average["head.weight"], torch.full((1, 2), 2.0))  # 0.5 * 1 + 0.5 * 3
    assert int(ema.average["bn.num_batches_tracked"]) == 7  # the latest count, not 0.5 * 5 + 0.5 * 7 truncated
    frozen = m.frozen.weight.detach().clone()
    ema._swap_in()
    assert torch.allclose(m.head.weight, torch.full((1, 2), 2.0)) and torch.equal(m.frozen.weight, frozen)
    saved = {"state_dict": m.state_dict()}
    ema.on_save_checkpoint(None, m, saved)  # type: ignore[arg-type]  # a full checkpoint: the raw weights
    assert torch.allclose(saved["state_dict"]["head.weight"], torch.full((1, 2), 3.0))
    ema._swap_out()
    assert torch.allclose(m.head.weight, torch.full((1, 2), 3.0))

    warm = WeightAverage("ema", decay=0.999, warmup=True)
    warm._track(m)
    for w in (0.0, 11.0):
        _set(m, w, 0)
        warm._update()
    d = 2 / 11  # min(0.999, (1 + n) / (10 + n)) at the second update
    assert torch.allclose(warm.average["head.weight"], torch.full((1, 2), (1 - d) * 11.0))

    swa = WeightAverage("swa")
    swa._track(m)
    for w in (1.0, 2.0, 6.0):
        _set(m, w, 0)
        swa._update()
    assert torch.allclose(swa.average["head.weight"], torch.full((1, 2), 3.0))  # the plain mean


def test_bad_ema_settings_are_config_errors() -> None:
    base = compose_raw(["model=test_convnext", "trainer.accelerator=cpu"])
    for key, value, words in (("decay", 1.5, "ema.decay"), ("decay", 1.0, "ema.decay"), ("mode", "mean", "ema.mode"),
                              ("start_epoch", 0, "ema.start_epoch")):
        raw = copy.deepcopy(base)
        raw["ema"][key] = value
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            validate(raw)
    raw = copy.deepcopy(base)
    raw["ema"]["enabled"] = True
    raw["trainer"]["strategy"] = "fsdp"
    with pytest.raises(ConfigError, match=r"ema\.enabled.*fsdp"):
        validate(raw)
