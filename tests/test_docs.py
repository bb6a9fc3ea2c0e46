"""The documentation site: ``mkdocs build --strict`` succeeds, and the HTML it writes renders.

What a reader would otherwise see in a browser: reST roles (``:class:``, ``:meth:``) or literal-block
markers (``it::``) left in the text, maths outside the elements that KaTeX typesets (raw ``\\(``),
a page with maths but without the KaTeX scripts, and pictures or linked PNGs that do not exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj):`?")
LITERAL_MARK = re.compile(r"\w::(?:\s|$)")
RAW_MATH = re.compile(r"\\\(|\\\)|\\\[|\\\]")
KATEX = ("assets/katex/katex.min.js", "assets/katex/contrib/auto-render.min.js", "javascripts/katex.js")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Text outside code, scripts and KaTeX's elements; the images, links and scripts of one page."""

    SKIP = {"pre", "code", "script", "style", "kbd", "samp"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []  # per open element: is the text inside it exempt?
        self.text: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts: list[str] = []
        self.has_math = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "arithmatex" in classes:
            self.has_math = True
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if tag in VOID:
            return
        inside = bool(self.stack and self.stack[-1])
        self.stack.append(inside or tag in self.SKIP or "arithmatex" in classes)

    def handle_endtag(self, tag):
        if tag not in VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if not (self.stack and self.stack[-1]):
            self.text.append(data)


def _local(page: Path, url: str, site: Path) -> Path | None:
    """The file a relative URL of ``page`` points to, or None for external / anchor-only URLs."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path or url.startswith("#"):
        return None
    path = unquote(parts.path)
    target = (site / path.lstrip("/") if path.startswith("/") else page.parent / path).resolve()  # 404.html: /...
    if target.is_dir():
        target = target / "index.html"
    assert site in target.parents or target == site, f"{page}: {url} points outside the site"
    return target


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_every_page_has_no_raw_roles_markers_or_unrendered_maths(site):
    pages = _pages(site)
    assert {p.parent.name for p in pages} >= {"patterns", "training", "changelog", "models", "backends"}
    problems = []
    for page in pages:
        parser = Page()
        parser.feed(page.read_text())
        text = " ".join(parser.text)
        for pattern, what in ((ROLE, "a reST role"), (LITERAL_MARK, "a '::' literal marker"), (RAW_MATH, "raw maths")):
            for m in pattern.finditer(text):
                problems.append(f"{page.relative_to(site)}: {what}: ...{text[max(0, m.start() - 60) : m.end() + 30]}...")
        if parser.has_math:
            scripts = {str(_local(page, s, site)) for s in parser.scripts if _local(page, s, site) is not None}
            for needed in KATEX:
                if str((site / needed).resolve()) not in scripts:
                    problems.append(f"{page.relative_to(site)}: has maths but does not load {needed}")
    assert not problems, "\n".join(problems[:40])


def test_every_image_and_asset_exists(site):
    missing, images = [], 0
    for page in _pages(site):
        parser = Page()
        parser.feed(page.read_text())
        linked = [u for u in parser.links if urlsplit(u).path.lower().endswith((".png", ".svg", ".jpg"))]
        for url in parser.images + linked + parser.scripts:
            target = _local(page, url, site)
            images += url in parser.images
            if target is not None and not target.is_file():
                missing.append(f"{page.relative_to(site)}: {url}")
    assert images >= 9  # at least the pattern gallery
    css = (site / "assets" / "katex" / "katex.min.css").read_text()
    fonts = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css))
    assert len(fonts) >= 20
    missing += [f"katex.min.css: {f}" for f in fonts if not (site / "assets" / "katex" / f).is_file()]
    assert not missing, "\n".join(missing)


def test_changelog_page_shows_the_changelog(site):
    html = (site / "changelog" / "index.html").read_text()
    assert "Unreleased" in html and "Keep a Changelog" in html and "--8&lt;--" not in html
