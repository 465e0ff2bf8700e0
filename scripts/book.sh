#!/usr/bin/env bash
# Build the whole book from the outputs stored in the chapter notebooks (scripts/test.sh executes
# every notebook under nbval); warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# require.js and the ipywidgets embedder: pinned npm tarballs, sha512-checked, cached (not committed)
.venv/bin/python scripts/fetch_vendor.py
# Notebooks choose their own (inline) matplotlib backend; do not force one here.
export PYDEVD_DISABLE_FILE_VALIDATION=1
.venv/bin/jupyter-book build . -W -n --keep-going "$@"
echo "book: open _build/html/index.html (works offline); check every page in a browser with:"
echo "  .venv/bin/python -m pytest tests/test_book_browser.py   (needs chromium: apt-get install chromium)"
