"""RUN/report.html: the run's report.md as one self-contained page (images inline as data URIs,
no external CSS, fonts or scripts), so it opens offline in any browser and can be mailed.

Every task writes its own report.md; this page is made from it, so each task's sections appear
here without the task knowing about HTML. markdown-it-py (already installed: rich depends on it)
renders the markdown; tables and images are what the reports use.

A small inline script records on <body> how many images loaded and whether a script error
occurred (`data-images-ok`, `data-images-broken`, `data-script-errors`): the test reads those
attributes from headless Chromium's rendered DOM.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Optional

MAX_INLINE_BYTES = 20 * 1024 * 1024  # an image larger than this stays a link (the page must stay openable)
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}

STYLE = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eaeef2; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
img { max-width: min(100%, 760px); height: auto; border: 1px solid #eaeef2; }
code { background: #f6f8fa; padding: .1em .3em; border-radius: 4px; font-size: 90%; }
footer { color: #656d76; font-size: 13px; margin-top: 3em; }
"""

CHECK = """
<script>
(function () {
  var errors = 0;
  window.addEventListener("error", function () { errors += 1; document.body.dataset.scriptErrors = errors; });
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    document.body.dataset.imagesOk = ok;
    document.body.dataset.imagesBroken = imgs.length - ok;
    document.body.dataset.scriptErrors = errors;
  });
})();
</script>
"""

_IMG = re.compile(r'<img src="([^"]+)"')


def _inline(run_dir: Path, src: str) -> Optional[str]:
    """A data URI for the run-dir image `src`; None for anything outside the run dir, missing,
    too large or of another type (the link is kept, and shows as broken or external)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", src, re.I):  # http:, data:, file: ... never fetched
        return None
    path = (run_dir / src).resolve()
    if run_dir.resolve() not in path.parents or not path.is_file() or path.suffix.lower() not in MIME:
        return None
    if path.stat().st_size > MAX_INLINE_BYTES:
        return None
    return f"data:{MIME[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def write_html(run_dir: Path) -> Path:
    """RUN/report.html from RUN/report.md (which stays as it is)."""
    from markdown_it import MarkdownIt

    text = (run_dir / "report.md").read_text(encoding="utf-8")
    # html=False: the markdown's own text is escaped, never passed through as markup (a class
    # name or a file name from someone's dataset cannot inject a script into the page)
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)

    def inline(m: "re.Match[str]") -> str:
        uri = _inline(run_dir, html.unescape(m.group(1)))
        return f'<img src="{uri}"' if uri else m.group(0)

    body = _IMG.sub(inline, body)
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "Aether run")
    page = (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style>{CHECK}</head>\n<body>\n{body}\n"
            f"<footer>Made by Aether from report.md in {html.escape(str(run_dir))}; self-contained (images inline).</footer>"
            f"\n</body></html>\n")
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
