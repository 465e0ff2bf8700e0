"""A Sphinx extension for the course's book: each page loads each script once.

Two things in the Jupyter Book 1.x stack put scripts on pages more than once:
``sphinx_thebe`` registers its inline configuration (``const THEBE_JS_URL = ...``) twice, which
throws "Identifier 'THEBE_JS_URL' has already been declared" on every page; and MyST-NB adds the
ipywidgets scripts (``nb_ipywidgets_js``) to the builder's shared script list while rendering a
page that stores widget state, so they pile up and land on every later page too. This extension
runs last on ``html-page-context`` and gives each page its scripts once, in their order, keeping
the widget scripts only on pages that store widget state.

Enabled in ``_config.yml`` (``sphinx: extra_extensions``).
"""
from __future__ import annotations

from typing import Any

WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"


def _filename(js: Any) -> str:
    return str(getattr(js, "filename", js) or "")


def _key(js: Any) -> tuple:
    attributes = getattr(js, "attributes", {}) or {}
    return (_filename(js), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _widget_rank(js: Any, widget_scripts: list[str]) -> int | None:
    """Position of ``js`` in ``widget_scripts`` (Sphinx stores them as ``_static/<path>``), or None."""
    name = _filename(js)
    for i, w in enumerate(widget_scripts):
        if name in (w, f"_static/{w}"):
            return i
    return None


def page_scripts(scripts: list, widget_scripts: list[str], has_widgets: bool) -> list:
    """``scripts`` without repeats (same file and attributes, or same inline body), the
    ``widget_scripts`` last and in their configured order (require.js before the embedder) when
    the page has widgets, and left out when it has none."""
    seen, out, widgets = set(), [], {}
    for js in scripts:
        key = _key(js)
        if key in seen:
            continue
        seen.add(key)
        rank = _widget_rank(js, widget_scripts)
        if rank is None:
            out.append(js)
        elif has_widgets:
            widgets.setdefault(rank, js)
    return out + [widgets[r] for r in sorted(widgets)]


def stores_widget_state(scripts: list) -> bool:
    """Does one of the page's scripts hold saved ipywidgets state (MyST-NB puts it there)?"""
    return any((getattr(js, "attributes", {}) or {}).get("type") == WIDGET_STATE_MIME for js in scripts)


def _on_page(app, pagename, templatename, context, doctree) -> None:
    if "script_files" not in context:
        return
    scripts = list(context["script_files"])
    widget_scripts = list(getattr(app.config, "nb_ipywidgets_js", {}) or {})
    context["script_files"] = page_scripts(scripts, widget_scripts, stores_widget_state(scripts))


def setup(app) -> dict:
    app.connect("html-page-context", _on_page, priority=900)  # after MyST-NB (500) has added its scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
