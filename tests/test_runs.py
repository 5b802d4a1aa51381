"""`aether runs` lists the runs under a folder; `aether runs compare` sets them side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_folder, run_cli, run_in_process


def test_runs_table_and_compare(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs", per_class=8)
    common = [f"data={folder}", "model.pretrained=false", "trainer.max_epochs=1"]
    run_in_process(tmp_path / "outputs" / "a", [*common, "optimizer.lr=1e-3"])
    run_in_process(tmp_path / "outputs" / "b", [*common, "optimizer.lr=3e-3"])
    broken = tmp_path / "outputs" / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    (broken / "config.yaml").write_text("recipe: x\n")

    r = run_cli(["runs", "--json"], tmp_path)  # default folder: ./outputs
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {Path(row["run"]).name: row for row in json.loads(r.stdout)}
    assert set(rows) == {"a", "b", "broken"}  # the unreadable one is listed with its reason, not dropped
    assert "unreadable" in rows["broken"]["error"]
    for name in ("a", "b"):
        assert rows[name]["task"] == "classification" and rows[name]["metric"] == "accuracy"
        assert 0 <= rows[name]["value"] <= 1 and rows[name]["model"] == "test_convnext"
    table = run_cli(["runs", "outputs"], tmp_path)
    assert table.returncode == 0 and "3 run(s) under outputs" in table.stdout

    out = tmp_path / "cmp.png"
    c = run_cli(["runs", "compare", "outputs/a", "outputs/b", f"out={out}", "--json"], tmp_path)
    assert c.returncode == 0, c.stderr[-2000:]
    cmp = json.loads(c.stdout)
    assert cmp["config_differences"]["optimizer.lr"] == [1e-3, 3e-3]
    assert "seed" not in cmp["config_differences"] and len(cmp["test"]["accuracy"]) == 2
    assert out.is_file() and out.stat().st_size > 5000

    bad = run_cli(["runs", "compare", "outputs/a", str(folder)], tmp_path)
    assert bad.returncode == 2 and "aether: error: aether runs compare:" in bad.stderr and "Traceback" not in bad.stderr


def test_runs_imports_no_torch(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('HEAVY', sorted(m for m in ('torch', 'lightning', 'timm') if m in sys.modules)))\n"
            "from aether.cli import main\nmain(['runs'])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout and "0 run(s) under outputs" in out.stdout, out.stdout + out.stderr
