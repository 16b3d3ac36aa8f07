#!/usr/bin/env bash
# Where the instructions of scripts/count-instructions.sh go: qemu's `hotblocks` plugin
# (scripts/build-qemu-insn.sh) on an unstripped board build, summed per function, per image
# (a run on 3 images minus a run on 1, halved), as a Cortex-A76.
# Usage: scripts/instruction-profile.sh KERNEL_SET [MANIFEST] [TOP]
#   e.g. scripts/instruction-profile.sh aarch64-neon-sdot models/ensemble.toml
# The binary: ARM=... or target/cross-sym/dermedge, the board build linked again with its symbols
# by scripts/relink-unstripped.sh (run here when it is missing; board/cross-build.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
set_=${1:?usage: scripts/instruction-profile.sh KERNEL_SET [MANIFEST] [TOP]}
manifest=${2:-models/ensemble.toml}
arm=${ARM:-target/cross-sym/dermedge}
[ -n "${ARM:-}" ] || [ -f "$arm" ] || scripts/relink-unstripped.sh
[ -f target/qemu-insn/libhotblocks.so ] || scripts/build-qemu-insn.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/1" "$work/3"
cp models/samples/ISIC_0024698.jpg "$work/1/a.jpg"
for n in a b c; do cp models/samples/ISIC_0024698.jpg "$work/3/$n.jpg"; done
for k in 1 3; do
  DERMEDGE_INT8_KERNELS=$set_ target/qemu-insn/qemu-aarch64 -cpu cortex-a76 \
    -plugin target/qemu-insn/libhotblocks.so -d plugin \
    "$arm" --ensemble "$manifest" classify --json --no-journal "$work/$k" \
    2>"$work/blocks-$k.txt" >/dev/null
done
python3 scripts/instruction_profile.py "$arm" "$work/blocks-1.txt" "$work/blocks-3.txt" "${3:-25}"
