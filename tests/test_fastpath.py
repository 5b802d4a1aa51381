"""The fast data path: decoded uint8 cache built once and reused, identical eval tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import SHRINK, compose_raw, make_folder


def _datamodule(folder: Path, *extra: str) -> Any:
    from aether.config.validate import validate
    from aether.data.datamodule import ClassificationData
    from aether.tasks.classification.data import build_data
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


def _seal(dm: Any) -> None:
    for split in ("train", "val", "test"):  # what CacheFinisher does at each split's first epoch end
        dm.fast.complete(split, 0)


def test_disk_cache_built_once_then_reused_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether.data import cache as cache_mod

    monkeypatch.setenv("AETHER_CACHE", str(tmp_path / "cache"))  # this test counts cache folders
    folder = make_folder(tmp_path / "imgs", per_class=8, ext=".jpg")
    dm = _datamodule(folder, "data.cache=disk", "data.augment.re_prob=0.5")
    first_val = _batches(dm, "val")
    train = _batches(dm, "train")
    dm.test_dataloader()
    assert train[0][0].dtype == torch.float32 and train[0][0].shape[1:] == (3, 32, 32)
    assert train[0][0].is_contiguous() and -3 < float(train[0][0].mean()) < 3  # normalised
    # filled while read, sealed after the first epoch: until then each lives in its run's partial folder
    assert all(".partial-" in p.name for p in cache_mod.cache_root().iterdir())
    _seal(dm)
    built = sorted(p.name for p in cache_mod.cache_root().iterdir())
    assert len(built) == 3 and not [b for b in built if "." in b]  # train, val, test; no partial or tmp left
    for (a, ya), (b, yb) in zip(first_val, _batches(dm, "val")):  # read back = what the first pass decoded
        assert torch.equal(a, b) and torch.equal(ya, yb)
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
        for (a, ya), (b, yb) in zip(first_val, _batches(dm2, "val")):
            assert torch.equal(a, b) and torch.equal(ya, yb)
        assert len(_batches(dm2, "train")) == len(train)
        _seal(dm2)
    assert sorted(p.name for p in cache_mod.cache_root().iterdir()) == built

    # changing a file (or the resize settings) makes a new cache
    (folder / "red" / "red_000.jpg").touch()
    dm3 = _datamodule(folder, "data.cache=disk")
    for split in ("train", "val", "test"):
        dm3._loader(split, split == "train")
    _seal(dm3)
    assert len(list(cache_mod.cache_root().iterdir())) > len(built)


@pytest.mark.parametrize("mode,workers", [("disk", 0), ("memory", 0), ("memory", 2), ("disk", 2)])
def test_first_epoch_decodes_each_image_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                             workers: int) -> None:
    """Write-through: the epoch that builds the cache decodes every image exactly once (the
    ones drop_last skipped at sealing), and what it trained on is what the cache holds."""
    from aether.data import cache as cache_mod

    monkeypatch.setenv("AETHER_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "imgs", per_class=9, ext=".jpg")
    dm = _datamodule(folder, f"data.cache={mode}", "data.batch_size=5", f"data.num_workers={workers}")
    decoded: list = []
    real = cache_mod.decode_reduced
    monkeypatch.setattr(cache_mod, "decode_reduced", lambda path, side: decoded.append(path) or real(path, side))
    n_train = len(dm.bundle.splits["train"])
    seen = sum(len(y) for _, y in dm.train_dataloader())
    assert seen < n_train  # drop_last left some out of the epoch ...
    ds = dm.fast._datasets["train"]
    assert len(ds.cache.missing()) == n_train - seen  # loader workers write into the cache this process reads
    if not workers:  # (decodes in worker processes are not counted here)
        assert len(decoded) == len(set(decoded)) == seen  # ... and the epoch decoded each image it used once
    dm.fast.complete("train", 0)
    if not workers:
        assert sorted(decoded) == sorted(s.path for s in dm.bundle.splits["train"])  # sealing: the rest, once
    assert ds.cache.complete and ds.cache.filled is None
    # every entry equals a fresh decode of its file
    for i, s in enumerate(dm.bundle.splits["train"]):
        assert np.array_equal(ds.cache.get(i), np.asarray(real(s.path, dm.fast.side)))


def test_fused_crop_flip_matches_the_transforms_it_replaces() -> None:
    """Same random draws, same crop and flip; pixels within resampling noise of crop-then-resize."""
    import random

    from PIL import Image

    from aether.config.schema import AugmentCfg
    from aether.data.fastpath import _CropFlip, fast_augment
    from aether.data.transforms import resolve_preprocessing, train_transform

    pre = resolve_preprocessing({"input_size": (3, 224, 224), "interpolation": "bicubic"}, 48, None)
    geometry, colour, _ = train_transform(pre, AugmentCfg(scale=(0.3, 1.0), vflip=0.5), separate=True)
    steps = [*geometry.transforms, *colour.transforms]
    fused = fast_augment(steps)
    assert isinstance(fused, _CropFlip)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((90, 70), Image.BICUBIC)
    for seed in range(8):
        random.seed(seed), torch.manual_seed(seed)
        a = np.asarray(fused(img), dtype=np.float32)
        random.seed(seed), torch.manual_seed(seed)
        b = np.asarray(geometry(img), dtype=np.float32)
        assert a.shape == b.shape == (48, 48, 3)
        assert np.abs(a - b).mean() < 2.0, seed  # a wrong crop or flip would differ by tens
    geometry, colour, _ = train_transform(pre, AugmentCfg(color_jitter=0.4), separate=True)
    assert fast_augment([*geometry.transforms, *colour.transforms]) is None  # colour steps: the plain Compose


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
