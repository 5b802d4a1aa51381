"""Safe extraction of dataset archives: layout, caching, path/link attacks, bombs, corruption."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from PIL import Image

from aether.doctor import archives
from aether.doctor.archives import extract_archive, is_archive
from aether.errors import AetherError


def png(color: Tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def dataset(prefix: str = "") -> Dict[str, bytes]:
    return {
        f"{prefix}cats/c{i}.png": png((200, 10 * i, 10)) for i in range(2)
    } | {f"{prefix}dogs/d{i}.png": png((10, 10 * i, 200)) for i in range(2)}


def make_zip(path: Path, files: Dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps hostile names verbatim
    return path


def make_tar(path: Path, files: Dict[str, bytes], mode: str = "w:gz",
             extra: List[tarfile.TarInfo] = ()) -> Path:  # type: ignore[assignment]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for info in extra:
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def tree_files(root: Path) -> List[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def leftovers(cache: Path) -> List[str]:
    base = cache / "archives"
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------
# Normal archives
# ---------------------------------------------------------------------------------------------


def test_zip_with_class_folders(tmp_path: Path, cache: Path) -> None:
    files = dataset()
    arc = make_zip(tmp_path / "in" / "pets.zip", files)
    res = extract_archive(arc, cache)
    assert res.cached is False and res.refused == [] and res.ignored == {}
    key = archives.archive_key(arc)
    assert len(key) == 16 and res.root.is_relative_to(cache / "archives" / key)
    assert tree_files(res.root) == sorted(files)
    assert (res.root / "cats" / "c1.png").read_bytes() == files["cats/c1.png"]
    assert (cache / "archives" / key / ".complete").is_file()
    assert leftovers(cache) == [key]  # no temp dir left


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w:gz", ".tgz"),
                                         ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz"),
                                         ("w", ".tar")])
def test_tar_variants_with_wrapping_folder_unwrapped(tmp_path: Path, cache: Path,
                                                     mode: str, suffix: str) -> None:
    files = dataset("pets/")
    arc = make_tar(tmp_path / f"pets{suffix}", files, mode)
    assert is_archive(arc)
    res = extract_archive(arc, cache)
    assert res.root.name == "pets" and res.refused == []
    assert tree_files(res.root) == sorted(n.removeprefix("pets/") for n in files)


def test_dot_slash_prefixed_tar_and_directory_members(tmp_path: Path, cache: Path) -> None:
    dirs = []
    for name in ("./", "./data/", "./data/cats/"):
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        dirs.append(info)
    arc = make_tar(tmp_path / "d.tar.gz", {"./data/cats/a.png": png(), "./data/dogs/b.png": png()},
                   extra=dirs)
    res = extract_archive(arc, cache)
    assert res.root.name == "data" and res.refused == []
    assert tree_files(res.root) == ["cats/a.png", "dogs/b.png"]


def test_no_unwrap_when_root_has_files_besides_one_folder(tmp_path: Path, cache: Path) -> None:
    arc = make_zip(tmp_path / "a.zip", {"pets/cats/a.png": png(), "README.txt": b"hi"})
    res = extract_archive(arc, cache)
    assert res.root.name == "tree"
    assert tree_files(res.root) == ["README.txt", "pets/cats/a.png"]


def test_macos_clutter_ignored_and_counted(tmp_path: Path, cache: Path) -> None:
    files = dataset("shots/") | {
        "__MACOSX/": b"",
        "__MACOSX/shots/cats/._c0.png": b"\x00\x05\x16\x07",
        "__MACOSX/shots/._cats": b"\x00\x05\x16\x07",
        "shots/.DS_Store": b"Bud1",
        "shots/cats/.DS_Store": b"Bud1",
        "shots/dogs/._d0.png": b"\x00\x05\x16\x07",
    }
    res = extract_archive(make_zip(tmp_path / "mac.zip", files), cache)
    assert res.ignored == {"macosx": 2, "ds_store": 2, "appledouble": 1}
    assert res.root.name == "shots"  # __MACOSX was not extracted, so "shots" is the only folder
    assert tree_files(res.root) == sorted(n.removeprefix("shots/") for n in dataset("shots/"))
    assert not (res.root.parent / "__MACOSX").exists()


def test_second_call_reuses_the_cache(tmp_path: Path, cache: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    files = dataset("pets/") | {"pets/.DS_Store": b"x", "../evil.txt": b"x"}
    arc = make_zip(tmp_path / "pets.zip", files)
    first = extract_archive(arc, cache)
    assert first.cached is False

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the archive's members were read again")

    monkeypatch.setattr(archives.zipfile, "ZipFile", boom)
    second = extract_archive(arc, cache)
    assert second.cached is True
    assert second.root == first.root
    assert second.refused == first.refused and second.ignored == first.ignored == {"ds_store": 1}
    # a copy under another name has the same content, hence the same cache entry
    copy = tmp_path / "elsewhere" / "copy.zip"
    copy.parent.mkdir()
    copy.write_bytes(arc.read_bytes())
    assert extract_archive(copy, cache).root == first.root


def test_incomplete_cache_entry_is_replaced(tmp_path: Path, cache: Path) -> None:
    arc = make_zip(tmp_path / "pets.zip", dataset())
    entry = cache / "archives" / archives.archive_key(arc)
    (entry / "tree").mkdir(parents=True)
    (entry / "tree" / "junk.txt").write_text("half-written")
    res = extract_archive(arc, cache)
    assert res.cached is False and tree_files(res.root) == sorted(dataset())


# ---------------------------------------------------------------------------------------------
# Hostile paths and member types
# ---------------------------------------------------------------------------------------------


def test_zip_path_traversal_refused_and_nothing_written_outside(tmp_path: Path,
                                                                cache: Path) -> None:
    hostile = {
        "../evil.txt": b"evil",
        "../../evil2.txt": b"evil",
        "/abs.txt": b"abs",
        "C:/drive.txt": b"drive",
        "C:\\windows.txt": b"drive",
        "ok/../../../up.txt": b"up",
        "..\\backslash.txt": b"bs",
    }
    arc = make_zip(tmp_path / "in" / "evil.zip", {"data/cats/a.png": png()} | hostile)
    siblings_before = sorted(p.name for p in tmp_path.parent.iterdir())
    res = extract_archive(arc, cache)
    assert sorted(r["path"] for r in res.refused) == sorted(hostile)
    reasons = {r["path"]: r["reason"] for r in res.refused}
    assert "absolute" in reasons["/abs.txt"] and "drive letter" in reasons["C:/drive.txt"]
    assert "'..'" in reasons["../evil.txt"]
    assert tree_files(res.root) == ["cats/a.png"]
    # nothing outside the extraction tree: not in tmp_path, its siblings, or the cache dirs
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == siblings_before
    for name in ("evil.txt", "evil2.txt", "abs.txt", "drive.txt", "up.txt", "backslash.txt"):
        assert not (tmp_path.parent / name).exists()
        assert [p for p in tmp_path.rglob(name)] == []
    assert Path("/abs.txt").exists() is False
    entry = cache / "archives" / archives.archive_key(arc)
    assert sorted(p.name for p in entry.iterdir()) == [".complete", "meta.json", "tree"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "in"]


def test_tar_links_and_special_files_refused(tmp_path: Path, cache: Path) -> None:
    def info(name: str, type_: bytes, linkname: str = "") -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname = type_, linkname
        return ti

    extra = [
        info("data/escape", tarfile.SYMTYPE, "../../.."),
        info("data/passwd", tarfile.SYMTYPE, "/etc/passwd"),
        info("data/inside", tarfile.SYMTYPE, "cats"),
        info("data/hard", tarfile.LNKTYPE, "/etc/passwd"),
        info("data/fifo", tarfile.FIFOTYPE),
        info("data/tty", tarfile.CHRTYPE),
        info("data/disk", tarfile.BLKTYPE),
    ]
    # the classic follow-up: write through the (refused) link
    arc = make_tar(tmp_path / "links.tar", {"data/cats/a.png": png(),
                                             "data/escape/evil.txt": b"evil"},
                   mode="w", extra=extra)
    res = extract_archive(arc, cache)
    reasons = {r["path"]: r["reason"] for r in res.refused}
    assert set(reasons) == {ti.name for ti in extra}
    assert "symbolic link" in reasons["data/escape"] and "hard link" in reasons["data/hard"]
    assert "FIFO" in reasons["data/fifo"] and "device" in reasons["data/tty"]
    assert not any(p.is_symlink() for p in res.root.rglob("*"))
    # the file meant to go through the link landed in a plain folder inside the tree
    assert (res.root / "escape").is_dir() and not (res.root / "escape").is_symlink()
    assert tree_files(res.root) == ["cats/a.png", "escape/evil.txt"]
    assert [p for p in tmp_path.parent.rglob("evil.txt")
            if not p.is_relative_to(res.root)] == []


def test_tar_absolute_and_parent_members_refused(tmp_path: Path, cache: Path) -> None:
    arc = make_tar(tmp_path / "t.tar.gz", {"/tmp/abs.txt": b"x", "../up.txt": b"x",
                                           "d/cats/a.png": png()})
    res = extract_archive(arc, cache)
    assert {r["path"] for r in res.refused} == {"/tmp/abs.txt", "../up.txt"}
    assert tree_files(res.root) == ["cats/a.png"]
    assert not (tmp_path / "up.txt").exists() and not (cache / "archives" / "up.txt").exists()


def test_zip_symlink_and_special_entries_refused(tmp_path: Path, cache: Path) -> None:
    arc = tmp_path / "links.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("d/cats/a.png", png())
        for name, mode in (("d/link", stat.S_IFLNK | 0o777), ("d/fifo", stat.S_IFIFO | 0o644),
                           ("d/dev", stat.S_IFCHR | 0o644)):
            zi = zipfile.ZipInfo(name)
            zi.create_system = 3
            zi.external_attr = mode << 16
            zf.writestr(zi, "/etc/passwd")
    res = extract_archive(arc, cache)
    reasons = {r["path"]: r["reason"] for r in res.refused}
    assert reasons == {"d/link": "symbolic link", "d/fifo": "FIFO (named pipe)",
                       "d/dev": "device file"}
    assert tree_files(res.root) == ["cats/a.png"]


def test_conflicting_members_refused_not_fatal(tmp_path: Path, cache: Path) -> None:
    arc = make_zip(tmp_path / "c.zip", {"d/x": b"file", "d/x/y.png": png(), "d/z.png": png()})
    res = extract_archive(arc, cache)
    assert [r["path"] for r in res.refused] == ["d/x/y.png"]
    assert "could not be written" in res.refused[0]["reason"]


# ---------------------------------------------------------------------------------------------
# Bombs and limits
# ---------------------------------------------------------------------------------------------


def test_declared_size_over_limit(tmp_path: Path, cache: Path) -> None:
    arc = make_zip(tmp_path / "big.zip", {f"d/{i}.bin": bytes(1000) for i in range(3)})
    with pytest.raises(AetherError) as err:
        extract_archive(arc, cache, max_total_bytes=2500)
    msg = str(err.value)
    assert "big.zip" in msg and "data.max_archive_bytes=2500" in msg
    assert "data.max_archive_bytes" in msg
    assert leftovers(cache) == []
    # within the limit it is fine
    assert extract_archive(arc, cache, max_total_bytes=3000).refused == []


def test_streaming_counter_stops_a_member_that_lies(tmp_path: Path, cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = 3 * 200_000
    arc = make_zip(tmp_path / "liar.zip", {f"d/{i}.bin": bytes(200_000) for i in range(3)})
    # every member claims to be empty, so the declared-size check passes ...
    monkeypatch.setattr(archives, "_declared_size", lambda plan: 0)
    writes: List[int] = []
    original = archives._Writer.file

    def spy(self: archives._Writer, plan: object, open_src: object) -> None:
        try:
            original(self, plan, open_src)  # type: ignore[arg-type]
        finally:
            writes.append(self.written)

    monkeypatch.setattr(archives._Writer, "file", spy)
    with pytest.raises(AetherError) as err:
        extract_archive(arc, cache, max_total_bytes=real - 1)
    msg = str(err.value)
    assert "liar.zip" in msg and f"data.max_archive_bytes={real - 1}" in msg and "while extracting" in msg
    assert "data.max_archive_bytes" in msg
    # ... and the byte counter stopped it on the last member, one byte past the limit
    assert writes[-1] == real and len(writes) == 3
    assert leftovers(cache) == []  # the temp dir is gone, no cache entry


def test_zip_with_forged_small_size_headers(tmp_path: Path, cache: Path) -> None:
    data = b"A" * 50_000
    arc = make_zip(tmp_path / "forged.zip", {"d/a.bin": data})
    raw = bytearray(arc.read_bytes())
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, 10)  # uncompressed size in the local header
    struct.pack_into("<I", raw, central + 24, 10)  # ... and in the central directory
    arc.write_bytes(bytes(raw))
    with pytest.raises(AetherError) as err:
        extract_archive(arc, cache, max_total_bytes=1000)
    assert "forged.zip" in str(err.value)
    assert leftovers(cache) == []


def test_too_many_members(tmp_path: Path, cache: Path) -> None:
    files = {f"d/{i}.txt": b"x" for i in range(6)}
    for arc in (make_zip(tmp_path / "many.zip", files),
                make_tar(tmp_path / "many.tar.gz", files)):
        with pytest.raises(AetherError) as err:
            extract_archive(arc, cache, max_members=5)
        msg = str(err.value)
        assert arc.name in msg and "5" in msg and "data.max_archive_members" in msg
        assert leftovers(cache) == []
    assert extract_archive(tmp_path / "many.zip", cache, max_members=6).cached is False


# ---------------------------------------------------------------------------------------------
# Corrupt / unsupported input, is_archive
# ---------------------------------------------------------------------------------------------


def test_corrupt_and_unsupported_archives(tmp_path: Path, cache: Path) -> None:
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"this is not a zip at all" * 10)
    with pytest.raises(AetherError, match=r"bad\.zip is not a valid ZIP archive"):
        extract_archive(bad_zip, cache)

    good = make_tar(tmp_path / "ok.tar.gz", {f"d/{i}.png": png((i, i, i)) for i in range(30)})
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AetherError, match=r"truncated\.tar\.gz") as err:
        extract_archive(truncated, cache)
    assert "tar" in str(err.value)

    zip_bytes = make_zip(tmp_path / "z.zip", dataset()).read_bytes()
    broken = tmp_path / "broken.zip"  # valid directory, garbage member data
    raw = bytearray(zip_bytes)
    start = raw.find(b"PK\x03\x04") + 30 + len("cats/c0.png")
    raw[start:start + 40] = b"\xff" * 40
    broken.write_bytes(bytes(raw))
    with pytest.raises(AetherError, match=r"broken\.zip could not be read as a ZIP archive"):
        extract_archive(broken, cache)

    rar = tmp_path / "data.rar"
    rar.write_bytes(b"Rar!\x1a\x07\x00" + bytes(100))
    with pytest.raises(AetherError, match=r"data\.rar is not a supported archive; expected"):
        extract_archive(rar, cache)
    with pytest.raises(AetherError, match="does not exist"):
        extract_archive(tmp_path / "missing.zip", cache)
    assert leftovers(cache) == []


def test_is_archive(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", {"x.txt": b"x"})
    t = make_tar(tmp_path / "a.tar.gz", {"x.txt": b"x"})
    assert is_archive(z) and is_archive(t)
    no_suffix_zip = tmp_path / "blob"
    no_suffix_zip.write_bytes(z.read_bytes())
    no_suffix_tar = tmp_path / "blob2"
    no_suffix_tar.write_bytes(t.read_bytes())
    assert is_archive(no_suffix_zip) and is_archive(no_suffix_tar)
    img = tmp_path / "img.png"
    img.write_bytes(png())
    assert not is_archive(img)
    assert not is_archive(tmp_path)  # a directory
    assert not is_archive(tmp_path / "nope.zip")  # missing
    # a claimed archive counts, so extraction can explain what is wrong with it
    fake = tmp_path / "fake.tgz"
    fake.write_bytes(b"junk")
    assert is_archive(fake)
    with pytest.raises(AetherError, match="not a valid tar archive"):
        extract_archive(fake, tmp_path / "cache")
