#!/usr/bin/env bash
# Create .venv with specsurgery, its test tools and torch==2.13.0 (local CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq graphviz >/dev/null
    else
        echo "note: Graphviz's 'dot' is missing (sudo apt-get install -y graphviz); SVG/PNG rendering needs it" >&2
    fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
# torch first and pinned, so nothing ever resolves a plain (CUDA) torch.
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,torch]"
