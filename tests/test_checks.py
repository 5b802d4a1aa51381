"""The dataset doctor's per-image checks: every named fault, hashes, the process pool and the cache."""

from __future__ import annotations

import io
import os
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import Dict, List

import pytest
from PIL import Image, ImageDraw, ImageFile

from aether.doctor import checks
from aether.doctor.checks import CheckStats, FileReport, check_file, check_files, hamming

# ----------------------------------------------------------------------------------------------
# Generated files
# ----------------------------------------------------------------------------------------------


def picture(kind: int = 0, size=(256, 192)) -> Image.Image:
    """A smooth, structured picture (perceptual hashes are meaningless on pure noise)."""
    w, h = size
    im = Image.new("RGB", size)
    px = im.load()
    for y in range(h):
        for x in range(w):
            if kind == 0:
                px[x, y] = (x * 255 // w, y * 255 // h, 120)
            else:
                px[x, y] = (255 - y * 255 // h, 90, (x * 3) % 256)
    d = ImageDraw.Draw(im)
    if kind == 0:
        d.ellipse((40, 30, 150, 140), fill=(250, 250, 40))
        d.rectangle((170, 100, 240, 180), fill=(10, 10, 10))
    else:
        d.rectangle((20, 20, 120, 60), fill=(255, 255, 255))
        d.ellipse((130, 80, 250, 190), fill=(0, 40, 200))
    return im


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny valid 1-bit PNG whose IHDR is patched to claim `width` x `height` (CRC fixed)."""
    data = bytearray(encoded(Image.new("1", (4, 4)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Dict[str, Path]:
    return build_zoo(tmp_path_factory.mktemp("zoo"))


def build_zoo(d: Path) -> Dict[str, Path]:
    """One file per fault (and a few good ones), keyed by name."""
    files: Dict[str, Path] = {}

    def put(name: str, data: bytes) -> Path:
        p = d / name
        p.write_bytes(data)
        files[name] = p
        return p

    pic = picture(0)
    jpeg = encoded(pic, "JPEG", quality=90)
    png = encoded(pic, "PNG")
    put("good.jpg", jpeg)
    put("good_copy.jpg", jpeg)
    put("good.png", png)
    put("resized.jpg", encoded(pic.resize((200, 150), Image.Resampling.BILINEAR), "JPEG", quality=70))
    put("other.jpg", encoded(picture(1), "JPEG", quality=90))
    put("empty.jpg", b"")
    put("garbage.jpg", os.urandom(2048))
    put("truncated.jpg", jpeg[: len(jpeg) // 2])
    put("truncated.png", png[: len(png) // 2])
    put("icon.ico", encoded(pic.resize((32, 32)), "ICO"))
    put("bomb.png", png_with_declared_size(50_000, 50_000))
    put("big_header.png", png_with_declared_size(2_000, 2_000))
    put("cmyk.jpg", encoded(pic.convert("CMYK"), "JPEG"))
    grey16 = Image.new("I;16", (64, 48))
    grey16.putdata([(x * 1000 + y * 37) % 65536 for y in range(48) for x in range(64)])
    put("sixteen.png", encoded(grey16, "PNG"))
    put("palette_alpha.png", encoded(pic.convert("P"), "PNG", transparency=0))
    put("la.png", encoded(pic.convert("LA"), "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6
    put("rotated.jpg", encoded(pic, "JPEG", exif=exif))
    frames = [picture(0, (64, 48)), picture(1, (64, 48))]
    put("animated.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0))
    put("png_named.jpg", png)
    put("tiny.png", encoded(Image.new("RGB", (4, 4), (200, 0, 0)), "PNG"))
    put("large.png", encoded(Image.new("RGB", (64, 16)), "PNG"))
    link = d / "broken_link.png"
    os.symlink(d / "does_not_exist.png", link)
    files["broken_link.png"] = link
    return files


# ----------------------------------------------------------------------------------------------
# check_file: each issue by name
# ----------------------------------------------------------------------------------------------


def test_good_files_are_ok(zoo):
    for name in ("good.jpg", "good.png", "resized.jpg", "other.jpg"):
        r = check_file(str(zoo[name]))
        assert r.ok, (name, r)
        assert r.issues == [] and r.detail == ""
    r = check_file(str(zoo["good.jpg"]))
    assert (r.format, r.mode, r.width, r.height, r.frames) == ("JPEG", "RGB", 256, 192, 1)
    assert r.bytes == zoo["good.jpg"].stat().st_size
    assert len(r.sha256) == 64 and len(r.dhash) == 16
    int(r.dhash, 16)


@pytest.mark.parametrize(
    "name, code",
    [
        ("empty.jpg", "empty"),
        ("garbage.jpg", "not_an_image"),
        ("truncated.jpg", "truncated"),
        ("truncated.png", "truncated"),
        ("icon.ico", "unsupported_format"),
        ("bomb.png", "decompression_bomb"),
        ("tiny.png", "too_small"),
        ("broken_link.png", "broken_symlink"),
    ],
)
def test_fatal_issues(zoo, name, code):
    r = check_file(str(zoo[name]))
    assert not r.ok
    assert r.issues[0] == code, r
    assert r.detail, "a fatal issue always carries a human reason"
    assert code in checks.FATAL_ISSUES


@pytest.mark.parametrize(
    "name, code, mode",
    [
        ("cmyk.jpg", "mode_cmyk", "CMYK"),
        ("sixteen.png", "mode_16bit", None),
        ("palette_alpha.png", "mode_palette_alpha", "P"),
        ("la.png", "mode_la", "LA"),
        ("rotated.jpg", "exif_rotated", "RGB"),
        ("animated.gif", "animated", None),
        ("png_named.jpg", "extension_mismatch", "RGB"),
    ],
)
def test_warning_issues_keep_the_file_usable(zoo, name, code, mode):
    r = check_file(str(zoo[name]))
    assert r.ok, r
    assert code in r.issues
    assert code in checks.WARNING_ISSUES
    assert r.dhash is not None
    if mode is not None:
        assert r.mode == mode


def test_details_of_warnings(zoo):
    assert check_file(str(zoo["sixteen.png"])).mode.startswith("I")
    gif = check_file(str(zoo["animated.gif"]))
    assert gif.frames == 2 and gif.format == "GIF"
    mismatch = check_file(str(zoo["png_named.jpg"]))
    assert mismatch.format == "PNG" and mismatch.issues == ["extension_mismatch"]
    large = check_file(str(zoo["large.png"]), max_side=50)
    assert large.ok and large.issues == ["too_large"]
    assert check_file(str(zoo["large.png"])).issues == []


def test_exif_rotation_is_applied_to_the_hash(zoo, tmp_path):
    """A rotated-by-EXIF JPEG hashes like the upright picture it displays as."""
    upright = picture(0).transpose(Image.Transpose.ROTATE_270)  # orientation 6 = rotate 90 CW to view
    p = tmp_path / "upright.jpg"
    p.write_bytes(encoded(upright, "JPEG", quality=90))
    rotated = check_file(str(zoo["rotated.jpg"]))
    assert (rotated.width, rotated.height) == (256, 192)  # stored size
    assert hamming(rotated.dhash, check_file(str(p)).dhash) <= 6


def test_decompression_bomb_is_refused_from_the_header_without_decoding(zoo):
    t0 = time.perf_counter()
    r = check_file(str(zoo["bomb.png"]))
    assert time.perf_counter() - t0 < 1.0
    assert r.issues == ["decompression_bomb"] and not r.ok
    # our own limit (below Pillow's): the header claims 2000x2000 but only holds 4x4 pixels, so a
    # decode would have reported "truncated"; only "decompression_bomb" proves nothing was decoded
    t0 = time.perf_counter()
    r = check_file(str(zoo["big_header.png"]), max_pixels=1_000_000)
    assert time.perf_counter() - t0 < 1.0
    assert r.issues == ["decompression_bomb"] and (r.width, r.height) == (2000, 2000)
    assert "2000x2000" in r.detail
    assert check_file(str(zoo["big_header.png"]), max_pixels=10_000_000).issues == ["truncated"]


def test_truncation_is_found_even_if_pillow_is_told_to_tolerate_it(zoo, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert check_file(str(zoo["truncated.jpg"])).issues == ["truncated"]
    assert check_file(str(zoo["truncated.png"])).issues == ["truncated"]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_unreadable_file(tmp_path):
    p = tmp_path / "locked.png"
    p.write_bytes(encoded(picture(0, (32, 32)), "PNG"))
    p.chmod(0)
    try:
        r = check_file(str(p))
        if os.geteuid() == 0:
            pytest.skip("running as root: chmod 000 does not stop root from reading (see the simulated test)")
        assert r.issues == ["unreadable"] and not r.ok and "permission" in r.detail.lower()
    finally:
        p.chmod(0o644)


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    """Works as root too: the read itself raises PermissionError, as for a chmod-000 file."""
    p = tmp_path / "locked.png"
    p.write_bytes(encoded(picture(0, (32, 32)), "PNG"))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(checks, "open", denied, raising=False)
    r = check_file(str(p))
    assert r.issues == ["unreadable"] and not r.ok and "permission denied" in r.detail.lower()


def test_never_raises(tmp_path):
    (tmp_path / "adir.png").mkdir()
    for path in (tmp_path / "missing.png", tmp_path / "adir.png", "/dev/null", ""):
        r = check_file(str(path))
        assert isinstance(r, FileReport) and not r.ok and r.detail
    assert check_file(str(tmp_path / "missing.png")).issues == ["missing"]
    assert check_file(str(tmp_path / "adir.png")).issues == ["not_an_image"]


# ----------------------------------------------------------------------------------------------
# Hashes
# ----------------------------------------------------------------------------------------------


def test_sha256_and_dhash(zoo):
    a = check_file(str(zoo["good.jpg"]))
    assert a.sha256 == check_file(str(zoo["good_copy.jpg"])).sha256
    assert a.sha256 != check_file(str(zoo["good.png"])).sha256
    resized = check_file(str(zoo["resized.jpg"]))
    assert resized.sha256 != a.sha256
    assert hamming(a.dhash, resized.dhash) <= 6
    assert hamming(a.dhash, check_file(str(zoo["good.png"])).dhash) <= 6
    assert hamming(a.dhash, check_file(str(zoo["other.jpg"])).dhash) > 10


# ----------------------------------------------------------------------------------------------
# check_files: pool, order, cache
# ----------------------------------------------------------------------------------------------


def strip_path(r: FileReport) -> dict:
    d = r.to_dict()
    d.pop("path")
    return d


def test_check_files_in_parallel_matches_check_file(zoo):
    paths = [str(p) for p in zoo.values()] * 3  # more than one chunk per worker
    progress: List[int] = []
    stats = CheckStats()
    reports = list(check_files(paths, workers=2, chunksize=4, progress=progress.append, stats=stats))
    assert [r.path for r in reports] == paths  # input order
    assert sum(progress) == len(paths)
    assert stats.checked == len(paths) and stats.cache_hits == 0 and stats.total == len(paths)
    serial = {p: check_file(p) for p in dict.fromkeys(paths)}
    for r in reports:
        assert r == serial[r.path]


def test_cache_answers_unchanged_files_and_rechecks_changed_ones(zoo, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    names = ["good.jpg", "good.png", "truncated.jpg", "cmyk.jpg", "animated.gif", "empty.jpg"]
    for n in names:
        shutil.copy(zoo[n], folder / n)
    paths = [str(folder / n) for n in names]
    cache = tmp_path / "cache" / "checks.sqlite"

    first_stats = CheckStats()
    first = list(check_files(paths, workers=2, cache_path=cache, stats=first_stats))
    assert first_stats.checked == len(paths) and first_stats.cache_hits == 0
    assert cache.exists()

    # second run: every answer comes from the cache; check_file must not even be called
    def must_not_run(*args, **kwargs):
        raise AssertionError("check_file called on an unchanged file")

    monkeypatch.setattr(checks, "check_file", must_not_run)
    second_stats = CheckStats()
    second = list(check_files(paths, workers=1, cache_path=cache, stats=second_stats))
    assert second == first
    assert second_stats.cache_hits == len(paths) and second_stats.checked == 0
    monkeypatch.undo()

    # different limits are a different cache key
    limited_stats = CheckStats()
    limited = list(check_files(paths, workers=1, cache_path=cache, stats=limited_stats, max_side=100))
    assert limited_stats.checked == len(paths)
    assert "too_large" in limited[0].issues and "too_large" not in first[0].issues

    # a changed file is re-checked; the others still come from the cache
    changed = folder / "truncated.jpg"
    changed.write_bytes((zoo["good.jpg"]).read_bytes())
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third_stats = CheckStats()
    third = list(check_files(paths, workers=1, cache_path=cache, stats=third_stats))
    assert third_stats.checked == 1 and third_stats.cache_hits == len(paths) - 1
    assert third[2].ok and third[2].issues == [] and third[2].sha256 == first[0].sha256
    assert [strip_path(r) for i, r in enumerate(third) if i != 2] == [
        strip_path(r) for i, r in enumerate(first) if i != 2
    ]
    # relative spelling of the same file hits the cache and is reported under that spelling
    monkeypatch.chdir(folder)
    rel = list(check_files(["good.jpg"], workers=1, cache_path=cache, stats=(s := CheckStats())))
    assert s.cache_hits == 1 and rel[0].path == "good.jpg"


def test_unknown_limit_is_an_error():
    with pytest.raises(TypeError):
        check_files([], max_pixel=3)


_REAL_CHECK_CHUNK = checks._check_chunk


def _crashing_chunk(paths, limits):  # runs in a spawned worker, which imports this module by name
    if any("CRASH" in p for p in paths):
        os._exit(3)  # what a segfaulting decoder does to a worker
    return _REAL_CHECK_CHUNK(paths, limits)


def test_a_worker_crash_becomes_a_fatal_issue_not_an_exception(zoo, tmp_path, monkeypatch):
    crash = tmp_path / "CRASH.png"
    shutil.copy(zoo["good.png"], crash)
    monkeypatch.setattr(checks, "_check_chunk", _crashing_chunk)
    paths = [str(zoo["good.jpg"]), str(crash), str(zoo["cmyk.jpg"]), str(zoo["tiny.png"])]
    stats = CheckStats()
    reports = list(check_files(paths, workers=2, chunksize=2, stats=stats))
    assert [r.path for r in reports] == paths
    assert reports[0].ok and reports[2].ok and reports[3].issues == ["too_small"]
    assert reports[1].issues == ["corrupt"] and "crashed" in reports[1].detail
    assert stats.worker_crashes == 1


def test_a_corrupt_cache_file_is_a_warning_not_a_crash(zoo, tmp_path, caplog):
    cache = tmp_path / "checks.sqlite"
    cache.write_bytes(b"this is not an sqlite database" * 100)
    with caplog.at_level("WARNING", logger="aether"):
        reports = list(check_files([str(zoo["good.jpg"])], workers=1, cache_path=cache))
    assert reports[0].ok
    assert any("without a cache" in r.getMessage() for r in caplog.records)
