#!/usr/bin/env bash
# Create ./.venv (once) and install the course with the pinned versions of constraints.txt.
# Safe to re-run: it reinstalls only when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup: '$PY' not found; install Python 3.11 (or set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
    echo "setup: Python 3.11 or 3.12 is required, '$PY' is $("$PY" -V 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PY" -V 2>&1)"
    if ! "$PY" -m venv .venv; then
        rm -rf .venv
        echo "setup: 'python3 -m venv' failed; on Debian/Ubuntu run: apt-get install python3-venv" >&2
        exit 1
    fi
fi

stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
    echo "setup: installing pinned dependencies into .venv (about a minute)"
    # DeepSpeed is only used to check our DeepSpeed-equivalent layouts; DS_BUILD_OPS=0 keeps it
    # a pure-Python install (no CUDA extensions are built).
    DS_BUILD_OPS=0 .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -e ".[dev,deepspeed,equiv]"
    echo "$stamp" > .venv/.setup-stamp
else
    echo "setup: .venv is up to date"
fi
