#!/usr/bin/env bash
# Gain and cost of test-time augmentation: evaluates the ensemble through tract with each
# setting on one side of the shipped split and prints the ensemble's row and latency for each.
# Usage: scripts/measure-tta.sh [SIDE] [MANIFEST]   (side: val (default) or test)
set -euo pipefail
cd "$(dirname "$0")/.."
side=${1:-val}
manifest=${2:-models/ensemble.toml}
cargo build --release -q -p dermedge-tools
for tta in none horizontal-flip flips; do
  out=reports/tta-$side-$tta
  "${CARGO_TARGET_DIR:-target}/release/dermedge-tools" evaluate --manifest "$manifest" --split splits/ham10000-seed1.csv \
    --side "$side" --tta "$tta" --out "$out" > /dev/null
  echo "== test-time augmentation: $tta ($side side)"
  grep -E '^\| model \||^\| ensemble \|' "$out/report.md"
  grep -E '^Whole ensemble per image' "$out/report.md"
done
