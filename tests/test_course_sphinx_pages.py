"""Each built page loads each script once; widget scripts only where widget state is stored."""
from sphinx.builders.html._assets import _JavaScript

from sparse_core.course.sphinx_pages import WIDGET_STATE_MIME, page_scripts, stores_widget_state

REQUIRE, EMBED = "vendor/requirejs-2.3.8/require.js", "vendor/html-manager-1.0.15/embed-amd.js"


def _names(scripts):
    return [(js.filename, js.attributes.get("body")) for js in scripts]


def test_repeated_inline_and_file_scripts_are_kept_once_in_order():
    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("doctools.js"), _JavaScript(None, body=thebe), _JavaScript("sphinx-thebe.js", **{"async": "async"}),
               _JavaScript(None, body=thebe), _JavaScript("doctools.js"), _JavaScript(None, body="other")]
    out = page_scripts(scripts, [REQUIRE, EMBED], has_widgets=False)
    assert _names(out) == [("doctools.js", None), (None, thebe), ("sphinx-thebe.js", None), (None, "other")]


def test_widget_scripts_stay_once_on_widget_pages_and_leave_other_pages():
    state = _JavaScript(None, body="{}", type=WIDGET_STATE_MIME)
    # Sphinx stores the files under _static/; piled up from earlier pages, in the wrong order
    piled = [_JavaScript("_static/doctools.js"), _JavaScript("_static/" + EMBED), _JavaScript("_static/" + REQUIRE),
             _JavaScript("_static/" + EMBED), _JavaScript("_static/" + REQUIRE)]
    assert stores_widget_state(piled + [state]) and not stores_widget_state(piled)
    on_widget_page = page_scripts(piled + [state], [REQUIRE, EMBED], stores_widget_state(piled + [state]))
    assert _names(on_widget_page) == [("_static/doctools.js", None), (None, "{}"), ("_static/" + REQUIRE, None),
                                      ("_static/" + EMBED, None)]
    assert _names(page_scripts(piled, [REQUIRE, EMBED], has_widgets=False)) == [("_static/doctools.js", None)]
