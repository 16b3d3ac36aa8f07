#!/usr/bin/env bash
# Int8 against f32, dermedge (tract) against onnxruntime, on the same members and the same input:
# medians per member and for the ensemble (every member on one input; at 2 threads the members may
# run at once, in dermedge and in onnxruntime alike), with ratios, at 1 and 2 threads; f32 and
# int8 take turns in 5 rounds of RUNS / 5 runs, each figure the median of the rounds'. Setup:
# onnxruntime from PyPI into target/bench-venv. By default it compares the shipped int8 default,
# models/ensemble.toml, with its f32 source, models/f32/; an int8 manifest that is missing is made
# with `dermedge-tools quantize` from the f32 one (needs ../shared/ham10000).
# Usage: scripts/bench-int8.sh [RUNS] [F32_MANIFEST] [INT8_MANIFEST]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
f32=${2:-models/f32/ensemble.toml}
int8=${3:-models/ensemble.toml}
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "onnxruntime==1.23.2"
cargo build --release -q -p dermedge
if [ ! -f "$int8" ]; then
  cargo build --release -q -p dermedge-tools
  target/release/dermedge-tools quantize --manifest "$f32" --out "$(dirname "$int8")" \
    --split splits/ham10000-seed1.csv
fi
"$venv/bin/python" scripts/bench_int8.py --runs "$runs" --f32 "$f32" --int8 "$int8" \
  --dermedge target/release/dermedge --image models/samples/ISIC_0024698.jpg --threads 1 2
