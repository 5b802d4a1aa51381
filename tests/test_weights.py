"""Pretrained weights like users expect: downloaded into the HF cache when online (against a local fake
hub, tests.fakehub), read from it offline, imported from a local file, listed; a down hub fails fast."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest
import torch

from aether.errors import AetherError
from tests.conftest import AETHER, run_in_process
from tests.fakehub import COMMIT, FakeHub, down_url

MODEL = "test_convnext"  # 0.27M params; timm's pretrained_cfg: hf_hub_id timm/test_convnext.r160_in1k
REPO = "timm/test_convnext.r160_in1k"


@pytest.fixture(scope="module")
def served() -> Dict[str, torch.Tensor]:
    """The "hub's" weights: a seeded test_convnext at its pretrained 1000 classes."""
    import timm

    torch.manual_seed(7)
    return {k: v.clone() for k, v in timm.create_model(MODEL, pretrained=False).state_dict().items()}


@pytest.fixture
def hub(served: Dict[str, torch.Tensor]) -> Iterator[FakeHub]:
    from safetensors.torch import save

    with FakeHub({(REPO, "model.safetensors"): save(served)}) as h:
        yield h


@pytest.fixture(autouse=True)
def _hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf"


def _online(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """This process as a connected CLI run sees it: huggingface_hub read HF_HUB_OFFLINE=1 from conftest
    when it was imported, so its constant is reset too (the CLI no longer sets the variable)."""
    import huggingface_hub.constants

    from aether.models import weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(weights, "_unreachable", {})


def _cli(args: list, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    return subprocess.run([AETHER, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env={**full, **env})


def _body(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not k.startswith("head.fc")}  # the classifier is re-initialised


def test_pull_shows_progress_fills_the_cache_then_training_runs_offline_from_it(
        hub: FakeHub, served: Dict[str, torch.Tensor], image_folder: Path, tmp_path: Path, _hf_home: Path) -> None:
    r = _cli(["weights", "pull", f"model={MODEL}"], tmp_path, HF_ENDPOINT=hub.url)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"downloading {REPO}/model.safetensors from {hub.url}" in r.stderr and "100%" in r.stderr  # progress
    snapshot = _hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT / "model.safetensors"
    assert snapshot.is_file() and str(snapshot) in r.stdout
    assert (snapshot.parents[2] / "refs" / "main").read_text() == COMMIT
    assert f"GET /{REPO}/resolve/main/model.safetensors" in hub.requests

    # offline (HF_HUB_OFFLINE=1, as conftest sets it): a pretrained run reads the cache, asks the hub nothing
    from aether.models.saved import load_model_dir

    asked = len(hub.requests)
    run = tmp_path / "run"
    run_in_process(run, [f"data={image_folder}", f"model={MODEL}", "model.pretrained=true", "strategy=linear_probe",
                         "trainer.max_epochs=1", "trainer.limit_train_batches=1"])
    assert len(hub.requests) == asked
    model, _, _ = load_model_dir(run / "model")
    trained = _body(model.state_dict())
    assert trained and all(torch.equal(v, served[k]) for k, v in trained.items())  # frozen body = the pulled weights


def test_import_puts_a_local_file_in_the_cache_for_offline_runs_and_list_shows_it(
        served: Dict[str, torch.Tensor], tmp_path: Path, _hf_home: Path) -> None:
    from aether.config.schema import ModelCfg
    from aether.models.timm_provider import TimmProvider

    torch.save({"state_dict": served}, tmp_path / "mine.pt")  # a plain (pickle-free) state dict, wrapped
    r = _cli(["weights", "import", str(tmp_path / "mine.pt"), f"model={MODEL}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    snapshot = Path(r.stdout.strip().split(" -> ")[1].split(";")[0])
    assert snapshot.name == "model.safetensors" and snapshot.parents[2].name == f"models--{REPO.replace('/', '--')}"

    bb = TimmProvider().create(ModelCfg(name=MODEL, pretrained=True), num_classes=3)  # HF_HUB_OFFLINE=1 here
    assert all(torch.equal(v, served[k]) for k, v in _body(bb.model.state_dict()).items())
    assert bb.model.get_classifier().out_features == 3

    r = _cli(["weights", "list"], tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if REPO in ln)
    assert "test_convnext.r160_in1k" in line and "MiB" in line and str(snapshot) in line
    assert r.stdout.startswith(f"1 model with weights in {_hf_home / 'hub'}")


def test_import_refuses_pickle_and_weights_of_another_model_writing_nothing(tmp_path: Path, _hf_home: Path) -> None:
    import timm
    from safetensors.torch import save_file

    from aether.models import weights

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(AetherError, match="files that need pickle to load are refused"):
        weights.import_file(str(tmp_path / "evil.pt"), MODEL)
    assert not (tmp_path / "pwned").exists()

    save_file(timm.create_model("test_vit", pretrained=False).state_dict(), str(tmp_path / "vit.safetensors"))
    with pytest.raises(AetherError, match=f"does not fit model '{MODEL}'"):
        weights.import_file(str(tmp_path / "vit.safetensors"), MODEL)
    assert not (_hf_home / "hub").exists() and weights.list_cached() == []


def test_down_hub_fails_within_seconds_with_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.config.schema import ModelCfg
    from aether.models.timm_provider import TimmProvider

    down = down_url()
    _online(monkeypatch, down)
    start = time.monotonic()
    with pytest.raises(AetherError) as err:
        TimmProvider().create(ModelCfg(name=MODEL, pretrained=True), num_classes=3)
    assert time.monotonic() - start < 10  # huggingface_hub alone retries for ~47 s
    msg = str(err.value)
    assert f"the hub at {down} did not answer" in msg and "pretrained weights are not available offline" in msg
    assert f"aether weights pull model={MODEL}" in msg and "model.pretrained=false" in msg

    r = _cli(["weights", "pull", f"model={MODEL}"], tmp_path, HF_ENDPOINT=down)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()][-1].startswith("aether: error: model 'test_convnext'")


def test_weights_available_says_cache_hub_or_none(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.models import weights

    assert weights.weights_available(MODEL) is None  # offline (conftest's HF_HUB_OFFLINE=1), nothing cached
    assert hub.requests == []
    _online(monkeypatch, hub.url)
    assert weights.weights_available(MODEL) == "hub"
    assert weights.weights_available("test_vit") is None  # the hub here does not have it
    assert weights.weights_available("no_such_model_x") is None
    weights.fetch(MODEL, quiet=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.weights_available(MODEL) == "cache"


def test_offline_true_never_asks_the_hub(hub: FakeHub, image_folder: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _online(monkeypatch, hub.url)
    with pytest.raises(AetherError, match="offline"):
        run_in_process(tmp_path / "run", [f"data={image_folder}", f"model={MODEL}", "model.pretrained=true",
                                          "offline=true", "trainer.max_epochs=1"])
    assert hub.requests == []
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set for the run (monkeypatch restores it)


def test_weights_list_does_not_import_torch(tmp_path: Path) -> None:
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('HEAVY', sorted(m for m in ('torch', 'timm') if m in sys.modules)))\n"
            "from aether.cli import main\nmain(['weights', 'list'])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in r.stdout and "0 models with weights in" in r.stdout, r.stdout + r.stderr
