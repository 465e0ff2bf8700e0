"""The built book as a reader's browser shows it, without a network.

Headless Chromium (Debian's ``chromium``, driven by Playwright) opens every page of
``_build/html`` from a local HTTP server. Every request that leaves 127.0.0.1 is refused and
counted as a failure (CI also runs this file under ``unshare -n``, with no network at all).
On every page: no console error and no uncaught exception, every formula typeset by MathJax
(an ``mjx-container`` in each ``.math`` element, no ``mjx-merror``), every results table
visible with something in it, no Markdown table left as a paragraph of pipes, every saved
widget drawn, and every *Explore* section showing a figure. A full-page screenshot of each page
goes to ``_build/screenshots/`` (with ``-explore`` and ``-table`` close-ups where the page has them).

Run after the book build:  bash scripts/book.sh && .venv/bin/python -m pytest tests/test_book_browser.py
Without a built book the tests skip (the main test command runs before the build).
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
SKIP_PAGES = {"genindex.html", "search.html"}  # Sphinx's generated index and search pages
PAGES = sorted(str(p.relative_to(SITE)) for p in SITE.rglob("*.html")
               if p.name not in SKIP_PAGES and "_static" not in p.parts and "_sources" not in p.parts) \
    if (SITE / "index.html").exists() else []


def _skip(reason: str):
    """Skip, unless the run requires this test (.ci/run's browser step sets
    SPARSE_COURSE_BROWSER_TEST=required): then a missing book or browser is a failure."""
    if os.environ.get("SPARSE_COURSE_BROWSER_TEST") == "required":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def site_url():
    if not PAGES:
        _skip(f"the book is not built ({SITE.relative_to(ROOT)} absent): run bash scripts/book.sh first")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api as playwright
    except ImportError:
        _skip("playwright is not installed (bash scripts/setup.sh installs it)")
    exe = _chromium()
    if exe is None:
        _skip("no chromium on PATH (Debian: apt-get install chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


# Runs in the page once it has loaded: waits for MathJax, then reports what a reader would see.
_INSPECT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const maths = [...document.querySelectorAll('.math')];
  const tables = [...document.querySelectorAll('.cell_output table, article table')];
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const pipes = [...document.querySelectorAll('.cell_output p')].filter(
      (p) => /^\\s*\\|.*\\|\\s*$/m.test(p.textContent) && (p.textContent.match(/\\|/g) || []).length >= 4);
  const explore = [...document.querySelectorAll('section')].filter(
      (sec) => { const h = sec.querySelector(':scope > h2'); return h && /^Explore/.test(h.textContent.trim()); });
  const shows = (sec) => [...sec.querySelectorAll('.cell_output img, .cell_output svg, .cell_output canvas')]
      .some((el) => el.getBoundingClientRect().height > 80);
  return {
    explore_empty: explore.filter((sec) => !shows(sec)).map((sec) => sec.querySelector('h2').textContent.trim()),
    maths: maths.length,
    untypeset: maths.filter((m) => !m.querySelector('mjx-container')).map((m) => m.textContent.slice(0, 60)),
    merrors: [...document.querySelectorAll('mjx-merror')].map((e) => e.textContent.slice(0, 60)),
    tables: tables.length,
    empty_tables: tables.filter((t) => !visible(t) || !t.querySelector('td, th')
        || ![...t.querySelectorAll('td')].some((td) => td.textContent.trim())).map((t) => t.outerHTML.slice(0, 80)),
    pipe_paragraphs: pipes.map((p) => p.textContent.slice(0, 60)),
    widget_views: views.length,
    widgets_drawn: views.filter((s) => { const n = s.nextElementSibling || s.parentElement;
        return n && n.querySelector && (n.classList.contains('jupyter-widgets') || n.querySelector('.jupyter-widgets, .widget-box, .jupyter-widget, .widget-output'));
      }).length,
  };
}"""


@pytest.mark.parametrize("page_path", PAGES or ["(book not built)"])
def test_page_renders_offline(browser, site_url, page_path):
    local = urlparse(site_url).netloc
    blocked, errors, missing = [], [], []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

    def route(r):
        if urlparse(r.request.url).netloc == local or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(f"{site_url}/{page_path}", wait_until="load", timeout=60_000)
        page.wait_for_load_state("networkidle", timeout=60_000)
        seen = page.evaluate(_INSPECT)
        page.wait_for_timeout(300)  # let the widget manager finish drawing before the screenshot
        shot = SHOTS / (page_path[:-len(".html")] + ".png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        for name, selector in (("explore", "section:has(> h2:text-matches('^Explore'))"), ("table", ".cell_output table")):
            found = page.locator(selector)
            if found.count():  # a closer look at the parts a reader is most likely to miss
                found.first.scroll_into_view_if_needed()
                found.first.screenshot(path=str(shot.with_name(f"{shot.stem}-{name}.png")))
    finally:
        context.close()

    assert not blocked, f"{page_path}: requests left the site (offline they fail): {blocked[:5]}"
    assert not missing, f"{page_path}: files the page asks for are missing from the site: {missing[:5]}"
    assert not errors, f"{page_path}: console errors: {errors[:5]}"
    assert not seen["merrors"], f"{page_path}: MathJax errors in {seen['merrors'][:5]}"
    assert not seen["untypeset"], (f"{page_path}: {len(seen['untypeset'])} of {seen['maths']} formulas "
                                   f"not typeset, e.g. {seen['untypeset'][:3]}")
    assert not seen["empty_tables"], f"{page_path}: tables that show nothing: {seen['empty_tables'][:3]}"
    assert not seen["pipe_paragraphs"], f"{page_path}: Markdown tables rendered as text: {seen['pipe_paragraphs'][:3]}"
    assert not seen["explore_empty"], f"{page_path}: Explore sections with no figure drawn: {seen['explore_empty']}"
    assert seen["widgets_drawn"] == seen["widget_views"], (
        f"{page_path}: {seen['widget_views'] - seen['widgets_drawn']} of {seen['widget_views']} saved widgets not drawn")


def test_every_chapter_of_the_manifest_has_a_built_page():
    """The pages above include every chapter (a build that drops one does not pass quietly)."""
    if not PAGES:
        _skip(f"the book is not built ({SITE.relative_to(ROOT)} absent): run bash scripts/book.sh first")
    from sparse_core.course.manifest import CHAPTERS

    missing = [c.notebook for c in CHAPTERS if c.notebook.replace(".ipynb", ".html") not in PAGES]
    assert not missing, f"chapters without a built page: {missing}"
