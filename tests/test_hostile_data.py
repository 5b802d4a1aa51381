"""Hostile datasets (issue 13, items 4, 5 and 13): manifests with repeated, conflicting or escaping
rows, and folders with symlink loops. Nothing is changed silently: every dropped row is in
report.json 'bad' / metrics.json data.skipped with its reason, the counts match the input, and a
broken manifest is one `aether: error:` line naming the file and line."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

import pytest

from aether.config.schema import DataCfg
from aether.tasks.classification.data import build_data
from aether.errors import AetherError
from tests.conftest import draw, make_folder, run_cli, run_in_process


def _inspect(data: Path, tmp_path: Path, *extra: str, timeout: int = 300) -> tuple:
    """`aether inspect` in a subprocess: its exit code, stderr and report.json."""
    out = tmp_path / "out"
    r = run_cli(["inspect", f"data={data}", f"hydra.run.dir={out}", *extra], tmp_path, timeout=timeout,
                env={"AETHER_CACHE": str(tmp_path / "cache")})
    assert "Traceback" not in r.stderr + r.stdout
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return r, report


def _report(cfg: DataCfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    """What `aether inspect` writes to report.json, in this process (faster than the CLI), with
    the doctor's check cache of this test only (tmp_path/cache: the files it opened)."""
    from aether.doctor.inspect import build_report, examine

    monkeypatch.setenv("AETHER_CACHE", str(tmp_path / "cache"))
    build_report(examine(cfg), tmp_path / "out")
    return json.loads((tmp_path / "out" / "report.json").read_text())


def _codes(entries: List[Dict[str, str]]) -> Counter:
    """How many skipped entries per reason code (`code: detail`)."""
    return Counter(e["reason"].split(":")[0] for e in entries)


def _rows_csv(path: Path, rows: List[tuple]) -> Path:
    path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    return path


def _dataset(root: Path, per_class: int = 6) -> List[tuple]:
    make_folder(root / "imgs", per_class=per_class, classes=["red", "green"])
    return [(f"imgs/{c}/{c}_{i:03d}.png", c) for c in ("red", "green") for i in range(per_class)]


# ------------------------------------------------------------------------------------------ manifests


def test_duplicate_rows_are_kept_once_and_conflicting_labels_are_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _dataset(tmp_path / "d")
    rows += [("imgs/red/red_000.png", "red")] * 3  # the same row again: used once
    rows += [("imgs/./red/red_001.png", "red")]  # the same image, spelled differently
    rows += [("imgs/green/green_000.png", "red")]  # green_000 now has two labels: not guessed
    manifest = _rows_csv(tmp_path / "d" / "m.csv", rows)

    rep = _report(DataCfg(path=str(manifest)), tmp_path, monkeypatch)
    assert rep["classes"] == {"green": 5, "red": 6} and rep["num_images"] == 11
    assert _codes(rep["bad"]) == {"duplicate_row": 4, "conflicting_labels": 2}
    conflict = [b for b in rep["bad"] if b["reason"].startswith("conflicting_labels")]
    assert {Path(b["path"]).name for b in conflict} == {"green_000.png"}
    assert all("'green'" in b["reason"] and "'red'" in b["reason"] for b in conflict)
    assert any("4 duplicate row(s)" in w for w in rep["warnings"])
    assert any("conflicting_labels" in w and "green_000.png" in w for w in rep["warnings"])
    assert rep["errors"] == ["2 file(s) cannot be used (listed under 'bad'; training skips them)"]  # not the repeats

    bundle = build_data(DataCfg(path=str(manifest)), seed=0)
    summary = bundle.summary()
    assert summary["num_train"] + summary["num_val"] + summary["num_test"] == 11
    assert _codes(summary["skipped"]) == {"duplicate_row": 4, "conflicting_labels": 2}
    assert len(rows) == 11 + len(summary["skipped"])  # every row accounted for


def test_same_image_in_two_splits_is_left_out(tmp_path: Path) -> None:
    rows = _dataset(tmp_path / "d")
    text = "path,label,split\n" + "".join(f"{p},{c},{'train' if i % 3 else 'val'}\n" for i, (p, c) in enumerate(rows))
    text += "imgs/red/red_001.png,red,test\n"  # red_001 is a train row above
    (tmp_path / "d" / "m.csv").write_text(text)
    bundle = build_data(DataCfg(path=str(tmp_path / "d" / "m.csv")), seed=0)
    assert _codes(bundle.summary()["skipped"]) == {"conflicting_splits": 2}
    used = [s.path for split in bundle.splits.values() for s in split]
    assert not any(p.endswith("red_001.png") for p in used) and len(set(used)) == 11


def test_ten_thousand_rows_of_one_image_train_it_once_quickly(tmp_path: Path) -> None:
    rows = _dataset(tmp_path / "d", per_class=4)
    rows += [("imgs/red/red_000.png", "red")] * 10_000
    manifest = tmp_path / "d" / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": p, "label": c}) + "\n" for p, c in rows))
    start = time.perf_counter()
    bundle = build_data(DataCfg(path=str(manifest)), seed=0)
    assert time.perf_counter() - start < 20  # linear, one check of the image (was: 10,004 samples)
    summary = bundle.summary()
    assert summary["num_train"] + summary["num_val"] + summary["num_test"] == 8
    assert _codes(summary["skipped"]) == {"duplicate_row": 10_000}
    assert any("10000 duplicate row(s)" in w and "red_000.png (10001 rows)" in w for w in summary["warnings"])


@pytest.mark.parametrize("line, says", [
    ('["imgs/red/red_000.png", "red"]', "expected a JSON object per line"),
    ('"imgs/red/red_000.png"', "expected a JSON object per line"),
    ('{"path": "imgs/red/red_001.png", "label": ["red", "green"]}', "'label' is a list"),
    ('{"path": "imgs/red/red_001.png", "label": {"name": "red"}}', "'label' is an object"),
    ('{"path": ["imgs/red/red_001.png"], "label": "red"}', "'path' is a list"),
])
def test_a_malformed_jsonl_line_is_one_error_naming_the_line(tmp_path: Path, line: str, says: str) -> None:
    rows = _dataset(tmp_path / "d", per_class=3)
    good = [json.dumps({"path": p, "label": c}) for p, c in rows]
    manifest = tmp_path / "d" / "m.jsonl"
    manifest.write_text("\n".join(good[:2] + [line] + good[2:]) + "\n")
    with pytest.raises(AetherError, match=r"m\.jsonl:3: ") as err:
        build_data(DataCfg(path=str(manifest)), seed=0)
    assert says in str(err.value)


def test_the_cli_prints_one_error_line_for_a_broken_manifest(tmp_path: Path) -> None:
    rows = _dataset(tmp_path / "d", per_class=3)
    lines = [json.dumps({"path": p, "label": c}) for p, c in rows]
    manifest = tmp_path / "d" / "m.jsonl"
    manifest.write_text("\n".join(lines[:3] + ['["imgs/red/red_000.png", "red"]'] + lines[3:]) + "\n")
    r, _ = _inspect(manifest, tmp_path)
    errors = [x for x in r.stderr.splitlines() if x.startswith("aether: error:")]
    assert r.returncode == 2 and len(errors) == 1
    assert f"{manifest}:4: expected a JSON object per line" in errors[0]


def test_a_manifest_that_is_not_utf8_is_one_error(tmp_path: Path) -> None:
    from aether.data.formats.manifest import Manifest

    (tmp_path / "m.csv").write_bytes(b"path,label\n\xff\xfe.png,x\n")
    with pytest.raises(AetherError, match="m.csv: not UTF-8"):
        Manifest().load(tmp_path / "m.csv", {})


def _checked_paths(cache: Path) -> List[str]:
    """Every path the doctor opened (its check cache records each file it read)."""
    with sqlite3.connect(str(cache / "doctor.sqlite")) as db:
        return [row[0] for row in db.execute("SELECT path FROM file_reports")]


def test_paths_outside_the_root_are_refused_never_opened_and_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _dataset(tmp_path / "d")
    marker = tmp_path / "marker.png"  # a good image outside the dataset folder
    draw((200, 30, 30), seed=7).save(marker)
    os.symlink(marker, tmp_path / "d" / "imgs" / "red" / "link.png")  # inside on paper, outside for real
    escaping = [("../marker.png", "red"), (str(marker), "green"), ("imgs/../../marker.png", "red"),
                ("imgs/red/link.png", "red"), ("/etc/shadow", "green")]
    manifest = _rows_csv(tmp_path / "d" / "m.csv", rows + escaping)

    rep = _report(DataCfg(path=str(manifest)), tmp_path, monkeypatch)
    refused = [b for b in rep["bad"] if b["reason"].startswith("outside_root")]
    assert len(refused) == 5 and _codes(rep["bad"]) == {"outside_root": 5}
    assert {b["path"] for b in refused} >= {"/etc/shadow", str(marker)}
    assert all("data.allow_outside_root=true" in b["reason"] for b in refused)
    assert rep["num_images"] == 12 and rep["classes"] == {"green": 6, "red": 6}
    assert any("5 path(s) outside the dataset folder refused" in w for w in rep["warnings"])
    checked = _checked_paths(tmp_path / "cache")
    assert len(checked) == 12 and not any(p == "/etc/shadow" or "marker" in p or "link" in p for p in checked)

    # opted in: read. Three rows spell the same marker.png with two labels (left out); link.png is used
    allowed = _rows_csv(tmp_path / "d" / "m2.csv", rows + escaping[:4])
    bundle = build_data(DataCfg(path=str(allowed), allow_outside_root=True), seed=0)
    summary = bundle.summary()
    assert _codes(summary["skipped"]) == {"conflicting_labels": 3}
    assert summary["num_train"] + summary["num_val"] + summary["num_test"] == 12 + 1


def test_multilabel_manifest_settles_repeats_and_refuses_outside_paths(tmp_path: Path) -> None:
    from aether.data.formats.multilabel import MultilabelManifest

    rows = [{"path": p, "labels": [c, "shape"]} for p, c in _dataset(tmp_path / "d", per_class=3)]
    rows += [{"path": "imgs/red/red_000.png", "labels": ["shape", "red"]}]  # same set, other order
    rows += [{"path": "imgs/green/green_000.png", "labels": ["red"]}]  # another set: not guessed
    rows += [{"path": "../../etc/passwd", "labels": ["red"]}]
    (tmp_path / "d" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = MultilabelManifest().load(tmp_path / "d" / "m.jsonl", {})
    assert len(index.items) == 5
    codes = Counter(s.reason.split(":")[0] for s in index.skipped)
    assert codes == {"duplicate_row": 1, "conflicting_labels": 2, "outside_root": 1}
    assert any("conflicting_labels" in w for w in index.warnings)
    (tmp_path / "d" / "bad.jsonl").write_text('{"path": "imgs/red/red_000.png", "labels": {"a": 1}}\n')
    with pytest.raises(AetherError, match="bad.jsonl:1: 'labels' is an object"):
        MultilabelManifest().load(tmp_path / "d" / "bad.jsonl", {})


def test_training_reports_every_dropped_row_in_metrics_json(tmp_path: Path) -> None:
    rows = _dataset(tmp_path / "d")
    rows += [("imgs/red/red_000.png", "red")] * 2 + [("imgs/green/green_000.png", "red"), ("../x.png", "red")]
    manifest = _rows_csv(tmp_path / "d" / "m.csv", rows)
    run_in_process(tmp_path / "run", [f"data={manifest}", "trainer.max_epochs=1"])
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]
    assert _codes(data["skipped"]) == {"duplicate_row": 2, "conflicting_labels": 2, "outside_root": 1}
    assert data["num_train"] + data["num_val"] + data["num_test"] == 11
    assert data["class_counts"] == {"green": 5, "red": 6}
    assert any("duplicate row(s)" in w for w in data["warnings"])


# -------------------------------------------------------------------------------------------- folders


def test_a_symlink_loop_counts_each_image_once_and_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_folder(tmp_path / "d", per_class=5, classes=["cat", "dog"])
    os.symlink(".", data / "cat" / "again")  # `ln -s . cat/again`
    rep = _report(DataCfg(path=str(data)), tmp_path, monkeypatch)
    assert rep["classes"] == {"cat": 5, "dog": 5} and rep["num_images"] == 10 and rep["bad"] == []
    assert any(w.startswith("symlink_loop") and str(data / "cat" / "again") in w for w in rep["warnings"])
    assert rep["errors"] == []
    bundle = build_data(DataCfg(path=str(data)), seed=0)
    assert bundle.classes == ["cat", "dog"] and sum(len(v) for v in bundle.splits.values()) == 10
    assert any("symlink_loop" in w for w in bundle.summary()["warnings"])


def test_two_symlink_loops_do_not_hang_inspect(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "d", per_class=4, classes=["cat", "dog"])
    os.symlink(".", data / "cat" / "again")
    os.symlink("..", data / "dog" / "up")  # back to the dataset folder: the walk used to branch forever
    os.symlink("../cat", data / "dog" / "cats")  # an alias of a folder walked anyway
    start = time.perf_counter()
    r, rep = _inspect(data, tmp_path, timeout=60)  # a few seconds; main's walk never ended
    assert time.perf_counter() - start < 60
    assert rep["classes"] == {"cat": 4, "dog": 4} and rep["num_images"] == 8
    kinds = sorted(w.split(":")[0] for w in rep["warnings"])
    assert kinds == ["duplicate_folder", "symlink_loop", "symlink_loop"]
    assert any(str(data / "dog" / "up") in w for w in rep["warnings"])


def test_symlinks_out_of_the_folder_are_refused_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_folder(tmp_path / "d", per_class=4, classes=["cat", "dog"])
    elsewhere = make_folder(tmp_path / "elsewhere", per_class=3, classes=["cat"])
    os.symlink(elsewhere / "cat", data / "cat" / "more")  # a folder outside
    os.symlink(elsewhere / "cat" / "cat_000.png", data / "dog" / "outside.png")  # a file outside
    os.symlink(data / "cat" / "cat_001.png", data / "dog" / "inside.png")  # a file inside: fine
    rep = _report(DataCfg(path=str(data)), tmp_path, monkeypatch)
    assert rep["classes"] == {"cat": 4, "dog": 5}
    refused = {Path(b["path"]).name: b["reason"] for b in rep["bad"]}
    assert set(refused) == {"more", "outside.png"} and all(v.startswith("outside_root") for v in refused.values())
    assert not any("elsewhere" in p for p in _checked_paths(tmp_path / "cache"))
    assert len(rep["errors"]) == 1

    bundle = build_data(DataCfg(path=str(data), allow_outside_root=True), seed=0)
    assert bundle.index.class_counts() == {"cat": 4, "cat/more": 3, "dog": 6}
    assert bundle.skipped == []
