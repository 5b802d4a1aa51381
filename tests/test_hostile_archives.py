"""Hostile archives (issue 13, item 7): decompression bombs are refused from their headers and,
when the headers lie, while streaming; a refused archive leaves nothing in the cache; the total
allowed never exceeds half the free disk. Each bomb is a few KB on disk (zeros compress ~1000x)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from aether.doctor import archives
from aether.doctor.archives import extract_archive
from aether.errors import AetherError
from tests.conftest import run_cli
from tests.test_archives import dataset, leftovers

MB = 2**20


def deflated_zip(path: Path, members: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_bomb_refused_from_its_headers(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    arc = deflated_zip(tmp_path / "bomb.zip", {**dataset(), "pad/zeros.bin": bytes(8 * MB)})
    assert arc.stat().st_size < 64 * 1024  # 8 MB of zeros in a few KB: a ~500x ratio
    with pytest.raises(AetherError) as err:
        extract_archive(arc, cache, ratio_floor=1 * MB)
    msg = str(err.value)
    assert "bomb.zip" in msg and "pad/zeros.bin" in msg and "decompression bomb" in msg
    assert "data.max_archive_ratio=100" in msg and "declares" in msg
    assert leftovers(cache) == []  # nothing extracted, no temporary folder left
    # the same archive is fine for a user who trusts it and raises the limit
    assert extract_archive(arc, cache, ratio_floor=1 * MB, max_ratio=10_000).root.is_dir()


def test_bomb_whose_headers_understate_is_stopped_while_streaming(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every member claims to be empty, so the declared checks pass (Python's zipfile itself stops
    at a forged zip size, see test_archives.py; other readers and formats may not): the byte counter
    stops the extraction once the bytes written pass the ratio, long before the 16 MB it holds."""
    cache = tmp_path / "cache"
    arc = deflated_zip(tmp_path / "liar.zip", {"d/zeros.bin": bytes(16 * MB)})
    monkeypatch.setattr(archives, "_declared_size", lambda plan: 0)
    with pytest.raises(AetherError) as err:
        extract_archive(arc, cache, ratio_floor=1 * MB)
    msg = str(err.value)
    assert "liar.zip" in msg and "d/zeros.bin" in msg and "while extracting" in msg and "bomb" in msg
    assert leftovers(cache) == []


def test_tar_gz_bomb_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    arc = tmp_path / "bomb.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        info = tarfile.TarInfo("imgs/zeros.bin")
        info.size = 8 * MB
        tf.addfile(info, io.BytesIO(bytes(8 * MB)))
    with pytest.raises(AetherError) as err:
        extract_archive(arc, cache, ratio_floor=1 * MB)
    assert "bomb.tar.gz" in str(err.value) and "imgs/zeros.bin" in str(err.value)
    assert leftovers(cache) == []


def test_total_limit_never_exceeds_half_the_free_disk(tmp_path: Path) -> None:
    import shutil

    arc = deflated_zip(tmp_path / "ok.zip", dataset())
    free = shutil.disk_usage(tmp_path).free
    limits = archives.archive_limits(arc, tmp_path / "cache" / "not-yet", 10 * free, 100.0)
    assert limits.max_bytes <= free // 2 + 1 and "free" in limits.why
    small = archives.archive_limits(arc, tmp_path, 1000, 100.0)
    assert small.max_bytes == 1000 and small.why == "data.max_archive_bytes=1000"


@pytest.mark.slow
def test_cli_names_the_bomb_in_one_line(tmp_path: Path) -> None:
    """Through `aether inspect` with the default limits: 80 MB of zeros in ~80 KB (1000x)."""
    arc = deflated_zip(tmp_path / "photos.zip", {**dataset(), "cats/huge.bin": bytes(80 * MB)})
    cache = tmp_path / "cache"
    r = run_cli(["inspect", f"data={arc}", f"hydra.run.dir={tmp_path / 'out'}"], tmp_path,
                env={"AETHER_CACHE": str(cache)})
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len([ln for ln in lines if ln.startswith("aether: error:")]) == 1 and "Traceback" not in r.stderr
    assert "photos.zip" in r.stderr and "cats/huge.bin" in r.stderr and "data.max_archive_ratio" in r.stderr
    assert leftovers(cache) == []


# --- read-only places (issue 13, item 12) -----------------------------------------------------


@pytest.fixture
def readonly_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A folder that is read-only for everyone, root included (tests run as root, where chmod
    stops nothing): a read-only bind mount of an empty folder."""
    import subprocess

    src, target = tmp_path / "ro-src", tmp_path / "ro"
    src.mkdir()
    target.mkdir()
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(target)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {r.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


TINY = ["model=test_convnext", "data.image_size=32", "trainer.max_epochs=1", "data.num_workers=0",
        "trainer.progress=plain", "trainer.early_stopping.enabled=false", "analysis.enabled=false"]


@pytest.mark.slow
def test_read_only_cache_trains_with_cache_off(readonly_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    env = {"AETHER_CACHE": str(readonly_dir)}
    run = tmp_path / "run"
    r = run_cli([f"data={image_folder}", *TINY, "data.cache=off", f"hydra.run.dir={run}"], tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "metrics.json").is_file() and "Traceback" not in r.stderr
    assert (r.stdout + r.stderr).count("checking without a cache") == 1  # said once, as a log line
    # a cache folder that does not exist yet, under a read-only parent: the same
    sub = {"AETHER_CACHE": str(readonly_dir / "not-yet")}
    r = run_cli([f"data={image_folder}", *TINY, "data.cache=off", f"hydra.run.dir={tmp_path / 'run1'}"], tmp_path, env=sub)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    # the decoded-image cache (data.cache=auto) needs the folder: one line saying what to do
    r = run_cli([f"data={image_folder}", *TINY, f"hydra.run.dir={tmp_path / 'run2'}"], tmp_path, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "read-only file system" in r.stderr and "data.cache=off" in r.stderr


def test_read_only_output_folder_fails_at_once(readonly_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    for args in ([f"data={image_folder}", *TINY, f"hydra.run.dir={readonly_dir / 'run'}"],
                 ["inspect", f"data={image_folder}", f"hydra.run.dir={readonly_dir / 'inspect'}"]):
        r = run_cli(args, tmp_path, timeout=60)
        assert r.returncode == 2, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("aether: error:")]
        assert len(errors) == 1 and "read-only file system" in errors[0] and "hydra.run.dir" in errors[0]
        assert "Traceback" not in r.stderr and "data:" not in r.stdout + r.stderr  # no data was read
    # a path under a regular file cannot be created either
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = run_cli([f"data={image_folder}", *TINY, f"hydra.run.dir={blocker / 'run'}"], tmp_path, timeout=60)
    assert r.returncode == 2 and "is not a folder" in r.stderr
