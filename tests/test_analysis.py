"""After testing, a classification run analyses its own predictions (issue 17 parts 2, 4, 6):
errors.csv + the worst-errors gallery, confused pairs, PR curves, suspected label errors
(cleanlab on the held-out probabilities) and model/MODEL_CARD.md with bootstrap intervals.

One tiny run on a pre-split colour dataset in which a few validation and test images were put
into the wrong class folder on purpose: those must come out near the top of label_issues.csv."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Dict, List

import pytest

from tests.conftest import COLORS, compose_raw, draw, run_in_process

WORST_N = 6
# (split, true colour, index, folder it is filed under): mislabelled on purpose
FLIPPED = [("val", "red", 0, "green"), ("val", "blue", 1, "red"), ("test", "green", 2, "blue"),
           ("test", "red", 3, "blue")]


def _dataset(root: Path) -> Dict[str, List[Path]]:
    """root/{train,val,test}/<colour>/*.png, 32 px; FLIPPED images filed under the wrong colour."""
    sizes = {"train": 12, "val": 8, "test": 8}
    flipped = {(s, c, i): wrong for s, c, i, wrong in FLIPPED}
    out: Dict[str, List[Path]] = {"flipped": []}
    for si, (split, n) in enumerate(sizes.items()):
        for ci, colour in enumerate(COLORS):
            for i in range(n):
                folder = flipped.get((split, colour, i), colour)
                path = root / split / folder / f"{split}_{colour}_{i:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                draw(COLORS[colour], seed=10_000 * si + 100 * ci + i, size=28).save(path)
                if folder != colour:
                    out["flipped"].append(path)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Dict:
    root = tmp_path_factory.mktemp("analysis")
    data = root / "colours"
    made = _dataset(data)
    run_dir = root / "run"
    run_in_process(run_dir, [f"data={data}", "optimizer.lr=0.003",
                             f"analysis.worst_n={WORST_N}", "analysis.enabled=true"])
    return {"run": run_dir, "data": data, "flipped": made["flipped"], "root": root}


def _csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_errors_csv_lists_every_test_image_and_the_gallery_holds_the_highest_loss_ones(run: Dict) -> None:
    rows = _csv(run["run"] / "errors.csv")
    test_files = sorted(str(p) for p in (run["data"] / "test").rglob("*.png"))
    assert sorted(r["path"] for r in rows) == test_files  # one row per test image
    assert list(rows[0]) == ["path", "true", "predicted", "confidence", "loss", "correct"]
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    for r in rows:  # the loss is the cross-entropy of the true class; confidence is the top probability
        assert r["true"] == Path(r["path"]).parent.name
        assert 0 < float(r["confidence"]) <= 1
        assert (r["true"] == r["predicted"]) == (r["correct"] == "1")
        if r["true"] == r["predicted"]:
            assert math.isclose(float(r["loss"]), -math.log(float(r["confidence"])), rel_tol=1e-4, abs_tol=1e-5)

    metrics = json.loads((run["run"] / "metrics.json").read_text())
    a = metrics["analysis"]
    assert [w["path"] for w in a["worst"]] == [r["path"] for r in rows[:WORST_N]]
    from PIL import Image

    with Image.open(run["run"] / "worst_errors.png") as gallery:  # 4 tiles a row, 128 px + 3 caption lines
        assert gallery.size == (4 * 128, math.ceil(WORST_N / 4) * (128 + 13 * 3 + 4))
    report = (run["run"] / "report.md").read_text()
    table = [line.split(" | ")[1] for line in report.split("### The 6 highest-loss test images")[1].splitlines()
             if line.startswith("| ") and line[2].isdigit()][:WORST_N]
    assert table == [Path(r["path"]).name for r in rows[:WORST_N]]
    for picture in ("worst_errors.png", "pr_curves.png"):
        assert f"]({picture})" in report and (run["run"] / picture).stat().st_size > 1000
    # the most confused pairs: counted from errors.csv, drawn when there are any
    wrong = {}
    for r in rows:
        if r["correct"] == "0":
            wrong[(r["true"], r["predicted"])] = wrong.get((r["true"], r["predicted"]), 0) + 1
    assert {(p["true"], p["predicted"]): p["count"] for p in a["confused_pairs"]} == \
        dict(sorted(wrong.items(), key=lambda kv: -kv[1])[:5])
    assert (run["run"] / "confused_pairs.png").is_file() == bool(wrong)
    assert set(a["average_precision"]) == set(COLORS)
    html = (run["run"] / "report.html").read_text()
    assert "Error analysis" in html and "Suspected label errors" in html


def test_heatmaps_of_the_worst_failures_and_one_right_image_per_class(run: Dict) -> None:
    rows = _csv(run["run"] / "errors.csv")
    heat = json.loads((run["run"] / "metrics.json").read_text())["analysis"]["heatmaps"]
    wrong = [r for r in rows[:8] if r["correct"] == "0"]  # analysis.heatmaps=8 of the highest-loss rows
    right = {r["true"] for r in rows if r["correct"] == "1"}
    assert heat["method"] == "gradcam" and heat["images"] == len(wrong) + len(right) > 0
    assert (run["run"] / "explanations.png").stat().st_size > 1000
    assert "](explanations.png)" in (run["run"] / "report.md").read_text()


def test_mislabelled_holdout_images_top_the_label_issues(run: Dict) -> None:
    issues = _csv(run["run"] / "label_issues.csv")
    assert list(issues[0]) == ["rank", "path", "split", "given_label", "suggested_label", "score"]
    top = [r["path"] for r in issues[:len(run["flipped"]) + 2]]
    for path in run["flipped"]:
        assert str(path) in top, (path, issues[:8])
    by_path = {r["path"]: r for r in issues}
    for path in run["flipped"]:
        r = by_path[str(path)]
        assert r["given_label"] == path.parent.name  # the folder it was filed under
        assert r["suggested_label"] == path.stem.split("_")[1]  # its real colour
        assert r["split"] == path.parts[-3]
    assert [int(r["rank"]) for r in issues] == list(range(1, len(issues) + 1))
    assert all(str(run["data"] / "train") not in r["path"] for r in issues)  # out-of-sample only
    report = (run["run"] / "report.md").read_text()
    assert str(run["flipped"][0]) in report


def test_inspect_run_shows_the_runs_label_issues(run: Dict, capsys: pytest.CaptureFixture) -> None:
    from aether.cli import cmd_inspect

    out = run["root"] / "inspect"
    code = cmd_inspect([f"data={run['data']}", f"run={run['run']}", f"hydra.run.dir={out}"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "suspected label errors" in printed
    report = json.loads((out / "report.json").read_text())
    li = report["label_issues"]
    assert li["count"] == len(_csv(run["run"] / "label_issues.csv")) and li["outside"] == 0
    assert {str(p) for p in run["flipped"]} <= {r["path"] for r in li["rows"]}

    from aether.errors import AetherError

    with pytest.raises(AetherError, match="label_issues.csv"):
        cmd_inspect([f"data={run['data']}", f"run={run['data']}", f"hydra.run.dir={out}"])


def test_model_card_has_intervals_and_the_dataset_fingerprint(run: Dict) -> None:
    card = (run["run"] / "model" / "MODEL_CARD.md").read_text()
    metrics = json.loads((run["run"] / "metrics.json").read_text())
    boot = metrics["analysis"]["bootstrap"]
    assert boot["resamples"] == 1000
    for key in ("accuracy", "f1_macro"):
        b = boot[key]
        assert b["low"] <= b["value"] <= b["high"]
        assert f"| {key} | {metrics['test'][key]:.4f} | {b['low']:.4f} - {b['high']:.4f} |" in card
    assert math.isclose(boot["accuracy"]["value"], metrics["test"]["accuracy"], abs_tol=1e-6)
    assert "95% CI" in card and "1000 resamples" in card

    # the fingerprint: every used file's relative path, class, split and SHA-256, hashed in order
    lines = []
    files = sorted(run["data"].rglob("*.png"))
    for p in files:
        rel = p.relative_to(run["data"]).as_posix()
        lines.append(f"{rel}\t{p.parent.name}\t{p.parts[-3]}\t{hashlib.sha256(p.read_bytes()).hexdigest()}")
    expected = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    fp = metrics["data"]["fingerprint"]
    assert fp == {"files": len(files), "sha256": expected}
    assert f"{len(files)} files" in card and expected in card
    assert metrics["lineage"]["versions"]["cleanlab"] and "cleanlab" in card
    assert "## Intended use" in card and "## Worst classes" in card
    assert "seed: 42" in card  # the resolved config travels with it

    # aether export carries the card: RUN/bento/ gets it as the bento's description; the model's
    # version (its store tag) does not depend on it
    from aether.deploy.bento import model_version, write_bento_dir

    v = model_version(run["run"] / "model")
    bento = write_bento_dir(run["root"] / "bento", {"tag": "aether-x:1", "labels": {}, "backend": "torch"},
                            run["run"] / "model" / "MODEL_CARD.md")
    assert (bento / "MODEL_CARD.md").read_text() == card
    bentofile = (bento / "bentofile.yaml").read_text()
    assert 'description: "file: ./MODEL_CARD.md"' in bentofile and '- "MODEL_CARD.md"' in bentofile
    (run["run"] / "model" / "MODEL_CARD.md").write_text(card + "\nedited\n")
    try:
        assert model_version(run["run"] / "model") == v
    finally:
        (run["run"] / "model" / "MODEL_CARD.md").write_text(card)


def test_label_issue_modes_validate_and_a_bad_one_is_named() -> None:
    from aether.config.validate import validate
    from aether.errors import AetherError

    assert validate(compose_raw(["analysis.label_issues=kfold"])).analysis.label_issues == "kfold"
    rc = validate(compose_raw(["analysis.label_issues=off", "analysis.worst_n=0", "analysis.near_duplicates=false"]))
    assert rc.analysis.label_issues == "off" and rc.analysis.worst_n == 0 and not rc.analysis.near_duplicates
    with pytest.raises(AetherError, match="label_issues"):
        validate(compose_raw(["analysis.label_issues=fivefold"]))


def test_per_image_ap_of_detection_errors() -> None:
    import numpy as np

    from aether.reporting.analysis import image_ap

    assert image_ap(np.array([0.9, 0.8]), np.array([True, True]), 2) == 1.0
    assert image_ap(np.array([0.9, 0.8]), np.array([False, True]), 1) == 0.5  # a false box ranked first
    assert image_ap(np.array([0.9]), np.array([True]), 2) == 0.5  # one of two true boxes found
    assert image_ap(np.array([]), np.array([], dtype=bool), 3) == 0.0
    assert image_ap(np.array([]), np.array([], dtype=bool), 0) == 1.0  # nothing to find, nothing claimed
    assert image_ap(np.array([0.4]), np.array([False]), 0) == 0.0


def test_a_failing_analysis_is_reported_not_fatal() -> None:
    from aether.reporting.analysis import guarded, report_lines

    def broken() -> dict:
        raise OSError("disk full")

    section = guarded(broken)
    assert section == {"error": "OSError: disk full"}
    assert "- not done: OSError: disk full" in report_lines(section)
