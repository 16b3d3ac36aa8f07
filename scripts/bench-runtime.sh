#!/usr/bin/env bash
# Runtime-core figures: start-up and per-member latency of a MobileNetV2-size member in dermedge
# versus plain tract on the same file and input, ensemble latency, and peak RSS of `classify`.
# Usage: scripts/bench-runtime.sh [RUNS]   (writes its fixtures under target/bench/)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
cargo build --release --workspace -q
bin=target/release
mkdir -p target/bench
for size in 224x224 200x150; do
  w=${size%x*}; h=${size#*x}
  dir=target/bench/mobilenetv2-$size
  $bin/dermedge-tools fixture --arch mobilenetv2 --members 2 --width "$w" --height "$h" --out "$dir" >/dev/null
  for threads in 1 2; do
    echo "=== MobileNetV2 x2 (untrained fixture), input ${size}, ${threads} thread(s)"
    $bin/dermedge --threads "$threads" --ensemble "$dir/ensemble.toml" bench --runs "$runs" --warmup 5 \
      --image models/samples/ISIC_0024698.jpg
    echo
  done
done
echo "=== classify on models/samples with the MobileNetV2 x2 200x150 ensemble (peak RSS in the last line)"
$bin/dermedge --ensemble target/bench/mobilenetv2-200x150/ensemble.toml classify --no-journal models/samples | tail -2
