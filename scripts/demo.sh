#!/usr/bin/env bash
# Set up (idempotent) and run the end-to-end demo: convert, split, link, pipeline,
# dedupe, compress, render; prints the bytes saved and the verify result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/specsurgery demo "${1:-demo-out}"
