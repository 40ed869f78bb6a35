#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, examples included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 -q "$@"
