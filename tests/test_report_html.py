"""RUN/report.html: report.md as one self-contained page (images inline), checked in headless
Chromium when it is installed (.ci/run installs Debian's `chromium`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_folder, run_in_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def assert_report_html(run: Path) -> None:
    """report.html exists, every <img> is an inline data URI (nothing loaded from elsewhere)."""
    page = (run / "report.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs), [s[:40] for s in srcs]


def rendered_body(page: Path) -> str:
    """The <body> tag of `page` as headless Chromium renders it (the page's own check sets its attributes)."""
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"<body[^>]*>", out.stdout)
    assert m, out.stderr[-2000:]
    return m.group(0)


def test_report_html_is_self_contained_and_escapes_names(tmp_path: Path) -> None:
    # a class folder named like markup: shown as text, never run as a script
    folder = make_folder(tmp_path / "imgs", per_class=6, classes=("red", "<img src=x onerror=alert(1)>"))
    run = tmp_path / "run"
    run_in_process(run, [f"data={folder}", "model.pretrained=false", "trainer.max_epochs=1",
                         "analysis.enabled=true"])  # every section: the galleries and heatmaps too
    assert_report_html(run)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Test results" in page and (run / "report.md").is_file()
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's package): rendering not checked")
    body = rendered_body(run / "report.html")
    assert 'data-images-broken="0"' in body and 'data-script-errors="0"' in body, body
    assert int(re.search(r'data-images-ok="(\d+)"', body).group(1)) >= 2, body  # confusion matrix, curves
