#!/usr/bin/env bash
# An aarch64 speed figure that can be measured without a board: the instructions the cross-built
# dermedge executes per image for the shipped ensemble (three members, two views each), int8 on
# each aarch64 kernel set and its f32 source on tract's own kernels, counted by qemu's `insn`
# plugin (scripts/build-qemu-insn.sh). Per image = (count for 3 images - count for 1 image) / 2,
# so loading, optimising and kernel timing drop out. qemu runs as a Cortex-A76 (dot product); the
# NEON and portable sets are forced with DERMEDGE_INT8_KERNELS. Timings under qemu mean nothing;
# instruction counts are the same on a board, though a board's cycles per instruction differ.
# Usage: [INT8_MANIFEST=DIR/ensemble.toml] scripts/count-instructions.sh [AARCH64_BINARY]
#   INT8_MANIFEST counts other int8 members (default models/ensemble.toml), e.g. 8-bit ones from
#   `dermedge-tools quantize --split splits/ham10000-seed1.csv --equalize 0 --out DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
arm=${1:-target/cross/aarch64-unknown-linux-gnu/board/dermedge}
qemu=target/qemu-insn/qemu-aarch64
plugin=target/qemu-insn/libinsn.so
[ -x "$qemu" ] || scripts/build-qemu-insn.sh
images=$(mktemp -d)
trap 'rm -rf "$images"' EXIT
mkdir "$images/1" "$images/3"
sample=models/samples/ISIC_0024698.jpg
cp "$sample" "$images/1/a.jpg"
for n in a b c; do cp "$sample" "$images/3/$n.jpg"; done
count() {
  local manifest=$1 set=$2 folder=$3
  DERMEDGE_INT8_KERNELS=$set "$qemu" -cpu cortex-a76 -plugin "$plugin,inline=on" -d plugin \
    "$arm" --ensemble "$manifest" classify --json --no-journal "$folder" 2>&1 >/dev/null \
    | sed -n 's/^insns: //p'
}
printf '%-26s %16s\n' "ensemble / kernel set" "instructions/image"
declare -A per_image
int8=${INT8_MANIFEST:-models/ensemble.toml}
for run in "f32 tract:models/f32/ensemble.toml:" "int8 portable:$int8:portable" \
  "int8 aarch64-neon:$int8:aarch64-neon" "int8 aarch64-neon-sdot:$int8:aarch64-neon-sdot"; do
  IFS=: read -r name manifest set <<<"$run"
  one=$(count "$manifest" "$set" "$images/1")
  three=$(count "$manifest" "$set" "$images/3")
  per_image[$name]=$(( (three - one) / 2 ))
  printf '%-26s %16d\n' "$name" "${per_image[$name]}"
done
f32=${per_image["f32 tract"]}
for name in "int8 portable" "int8 aarch64-neon" "int8 aarch64-neon-sdot"; do
  python3 -c "print(f'{\"$name\":<26} {$f32 / ${per_image[$name]}:.2f}x fewer than f32 tract')"
done
