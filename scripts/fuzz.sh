#!/usr/bin/env bash
# Longer property-based fuzzing of the input parsers (image decode + preprocessing, MJPEG splitting
# and Huffman-table insertion, YUYV conversion, manifest and config parsers, journal reader and
# repair). CI runs the same properties with 300 cases each.
# Usage: scripts/fuzz.sh [CASES_PER_PROPERTY]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-20000}
started=$(date +%s)
DERMEDGE_FUZZ_CASES=$cases cargo test --release --test fuzz -- --test-threads 2
echo "fuzz: 6 properties x $cases cases in $(( $(date +%s) - started )) s"
