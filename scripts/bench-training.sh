#!/usr/bin/env bash
# Training throughput (images/s: forward, backward and AdamW step on random batches) of every
# backbone on burn-ndarray and on libtorch (burn's tch backend), at the shipped input size.
# Usage: scripts/bench-training.sh [STEPS]   (needs `pip install torch==2.9.0` for the tch rows)
# PyTorch eager on the same network, for comparison: python3 scripts/training_reference.py 16
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-3}
export LIBTORCH_USE_PYTORCH=1
CARGO_TARGET_DIR=target/tch cargo build --release -q -p dermedge-tools --features tch
tools=target/tch/release/dermedge-tools
echo "input 200x150, ${steps} timed steps after one warm-up step; $(nproc) CPU threads"
for arch in tiny-cnn mobilenet-v2 efficientnet-lite0 resnet50; do
  for backend in ndarray tch; do
    batch=16
    # burn-ndarray needs minutes per ResNet50 step: one small batch is enough for a rate.
    if [[ $backend == ndarray && $arch != tiny-cnn ]]; then batch=4; fi
    "$tools" throughput --arch "$arch" --backend "$backend" --batch "$batch" --steps "$steps" 2>/dev/null
  done
done
