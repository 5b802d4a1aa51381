"""The fast data path: decoded uint8 cache built once and reused, identical eval tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import SHRINK, compose_raw, make_folder


def _datamodule(folder: Path, *extra: str) -> Any:
    from aether.config.validate import validate
    from aether.data.datamodule import ClassificationData
    from aether.data.dataset import build_data
    from aether.data.transforms import resolve_preprocessing

    rc = validate(compose_raw([*SHRINK, f"data={folder}", *extra]))
    pre = resolve_preprocessing({"input_size": (3, 224, 224), "interpolation": "bicubic"}, rc.data.image_size, None)
    return ClassificationData(build_data(rc.data, rc.seed), pre, rc.data)


def _batches(dm: Any, split: str) -> Any:
    loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
    out = []
    for x, y in loader:
        x, y = dm.on_after_batch_transfer((x, y), 0)
        out.append((x, y))
    return out


def test_cached_eval_tensors_equal_uncached(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs", per_class=8, ext=".jpg")
    plain = _batches(_datamodule(folder, "data.cache=off"), "val")
    dm = _datamodule(folder, "data.cache=memory")
    assert next(iter(dm.val_dataloader()))[0].dtype == torch.uint8  # normalised after the transfer
    for cached in (_batches(dm, "val"),):
        assert len(cached) == len(plain) > 0
        for (xc, yc), (xp, yp) in zip(cached, plain):
            assert xc.dtype == xp.dtype == torch.float32 and xc.shape == xp.shape
            assert torch.equal(yc, yp)
            assert torch.equal(xc, xp)  # bit-identical: same PIL steps, same float arithmetic


def test_disk_cache_built_once_then_reused_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.data import cache as cache_mod

    monkeypatch.setenv("AETHER_CACHE", str(tmp_path / "cache"))  # this test counts cache folders
    folder = make_folder(tmp_path / "imgs", per_class=8, ext=".jpg")
    dm = _datamodule(folder, "data.cache=disk", "data.augment.re_prob=0.5")
    dm.prepare_data()
    first_val = _batches(dm, "val")
    train = _batches(dm, "train")
    assert train[0][0].dtype == torch.float32 and train[0][0].shape[1:] == (3, 32, 32)
    assert train[0][0].is_contiguous() and -3 < float(train[0][0].mean()) < 3  # normalised
    built = sorted(p.name for p in cache_mod.cache_root().iterdir())
    assert len(built) == 3 and not [b for b in built if ".tmp-" in b]  # train, val, test
    import pickle

    ds = dm.val_dataloader().dataset  # spawned workers get the folder name, not a copy of the pixels
    assert len(pickle.dumps(ds.cache)) < 2000 and torch.equal(pickle.loads(pickle.dumps(ds))[0][0], ds[0][0])

    # a second run must not decode a single image: any decode now fails loudly
    def no_decoding(*a: Any, **k: Any) -> Any:
        raise AssertionError("decoded an image although the cache exists")

    with monkeypatch.context() as m:
        m.setattr(cache_mod, "load_rgb", no_decoding)
        m.setattr(cache_mod, "decode_reduced", no_decoding)
        dm2 = _datamodule(folder, "data.cache=auto", "data.augment.re_prob=0.5")
        dm2.prepare_data()
        for (a, ya), (b, yb) in zip(first_val, _batches(dm2, "val")):
            assert torch.equal(a, b) and torch.equal(ya, yb)
        assert len(_batches(dm2, "train")) == len(train)
    assert sorted(p.name for p in cache_mod.cache_root().iterdir()) == built

    # changing a file (or the resize settings) makes a new cache
    (folder / "red" / "red_000.jpg").touch()
    _datamodule(folder, "data.cache=disk").prepare_data()
    assert len(list(cache_mod.cache_root().iterdir())) > len(built)


def test_compile_failure_falls_back_to_eager_with_a_message(caplog: pytest.LogCaptureFixture) -> None:
    import timm

    from aether.training.speed import maybe_compile, restore

    model = timm.create_model("test_vit", num_classes=3, img_size=32).eval()
    x = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert not maybe_compile(model, True, backend="no_such_backend")
        assert "torch.compile is not available" in caplog.text and "no_such_backend" in caplog.text
        assert torch.equal(model(x), ref)

        # a failure at the first call (compilation is lazy): one message, then eager
        assert maybe_compile(model, True, backend=_failing_backend)
        assert torch.equal(model(x), ref) and torch.equal(model(x), ref)
        assert caplog.text.count("continuing in eager mode") == 1
        restore(model)
        assert "forward" not in model.__dict__


def _failing_backend(gm: Any, example_inputs: Any) -> Any:
    raise RuntimeError("this backend cannot compile anything")
