"""The built HTML book, rendered by Debian's headless Chromium with no network.

Run after `jupyter-book build .` (``make rendered``). With LRP_TEACH_REQUIRE_BOOK=1 a
missing build or browser is an error; otherwise these tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.rendered

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
REQUIRE = os.environ.get("LRP_TEACH_REQUIRE_BOOK") == "1"


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    _need(False, "headless Chromium is not installed (apt-get install chromium)")
    return ""


def _pages() -> list[Path]:
    _need((HTML / "index.html").exists(), "the book is not built (run `make book`)")
    pages = sorted((HTML / "book").glob("*.html"))
    return [p for p in pages if p.name not in {"genindex.html", "search.html"}]


def _render(page: Path) -> str:
    """The DOM after scripts ran (MathJax typesets asynchronously; give it time)."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                _browser(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--allow-file-access-from-files",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, f"chromium failed on {page.name}: {result.stderr[-2000:]}"
    return result.stdout


class _Text(HTMLParser):
    """Collects visible prose text, skipping code, scripts and typeset math."""

    SKIP = {"script", "style", "pre", "code", "mjx-container", "mjx-assistive-mml", "math"}

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.chunks: list[str] = []
        self.math = 0
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "mjx-container":
            self.math += 1
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "script" and re.match(r"https?://", attrs.get("src") or ""):
            self.external.append(attrs["src"])
        if tag == "link" and "stylesheet" in (attrs.get("rel") or ""):
            if re.match(r"https?://", attrs.get("href") or ""):
                self.external.append(attrs["href"])
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.chunks.append(data)


def _parse(dom: str) -> _Text:
    parser = _Text()
    parser.feed(dom)
    return parser


def _static_math_count(page: Path) -> int:
    """Math the build emitted for MathJax (before any script runs)."""
    source = page.read_text(encoding="utf-8")
    return len(re.findall(r'class="math[ "]', source))


def test_pages_exist():
    pages = _pages()
    assert len(pages) >= 2, f"expected the chapters in _build/html/book, found {pages}"


def test_every_page_is_typeset_and_complete():
    problems = []
    for page in _pages():
        dom = _render(page)
        parsed = _parse(dom)
        text = " ".join(parsed.chunks)
        expected_math = _static_math_count(page)
        if expected_math and parsed.math == 0:
            problems.append(f"{page.name}: {expected_math} formulas but MathJax typeset none")
        for pattern, what in ((r"\\\(|\\\)|\\\[|\\\]", "raw \\( or \\["), (r"\$\$", "raw $$")):
            if re.search(pattern, text):
                problems.append(f"{page.name}: {what} left in the text")
        if re.search(r"(?<![\w$])\$[^$\s][^$]*\$(?![\w$])", text):
            problems.append(f"{page.name}: raw $...$ math left in the text")
        if "application/vnd.jupyter.widget-state+json" in page.read_text(encoding="utf-8"):
            if "widget-subarea" not in dom:
                problems.append(f"{page.name}: embedded widgets were not rendered offline")
        if parsed.external:
            problems.append(f"{page.name}: loads from the network: {parsed.external[:3]}")
        for src in parsed.images:
            if src.startswith("data:") or re.match(r"https?://", src):
                continue
            if not (page.parent / src.split("#")[0]).resolve().exists():
                problems.append(f"{page.name}: missing image {src}")
    assert not problems, "\n".join(problems)


def test_chapters_have_figures():
    for page in _pages():
        if not re.match(r"\d\d_", page.name):
            continue
        parsed = _parse(page.read_text(encoding="utf-8"))
        figures = [s for s in parsed.images if "_images/" in s or s.startswith("data:image")]
        assert figures, f"{page.name}: no figures rendered"


def test_mathjax_is_served_locally():
    _need((HTML / "index.html").exists(), "the book is not built (run `make book`)")
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert (HTML / "_static" / "vendor" / "embed-amd.js").exists()
    assert (HTML / "_static" / "vendor" / "require.js").exists()
