#!/usr/bin/env bash
# Runs the cross-built aarch64 dermedge under qemu-aarch64-static as three CPUs: a Cortex-A53
# (NEON, no dot product: Pi 3/4, older Jetsons), a Cortex-A76 (the Armv8.2 dot product: Pi 5, and
# the A78AE of Jetson Orin is its sibling) and qemu's `max` (every extension qemu has). On each,
# `inspect` must name the best kernel set that CPU runs; each aarch64 kernel set then runs once,
# on one CPU that picks it (the A53 for NEON, `max` for the dot product, which runs the same
# code on the A76), and must give the shipped ensemble's per-member probabilities on the sample
# images as stored in tests/fixtures/int8-reference (from x86-64) within 1e-5.
# Usage: board/check-kernels-qemu.sh [AARCH64_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
arm=${1:-target/cross/aarch64-unknown-linux-gnu/board/dermedge}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
check() {
  local cpu=$1 best=$2
  shift 2
  local line
  line=$(qemu-aarch64-static -cpu "$cpu" "$arm" --ensemble models/ensemble.toml inspect | grep '^int8 kernels:')
  if [ "$line" != "int8 kernels: $best" ]; then
    echo "qemu -cpu $cpu: inspect says '$line', expected 'int8 kernels: $best'"
    exit 1
  fi
  echo "qemu -cpu $cpu: $line"
  for set in "$@"; do
    local started
    started=$(date +%s)
    DERMEDGE_INT8_KERNELS=$set qemu-aarch64-static -cpu "$cpu" "$arm" --ensemble models/ensemble.toml \
      classify --json --no-journal models/samples >"$out/$cpu-$set.jsonl"
    python3 - "$out/$cpu-$set.jsonl" tests/fixtures/int8-reference/probabilities.json "$cpu $set" <<'PY'
import json, os, sys
records = [json.loads(l) for l in open(sys.argv[1])]
reference = json.load(open(sys.argv[2]))
assert len(records) == len(reference["samples"]) > 0, len(records)
worst = 0.0
for record in records:
    name = os.path.basename(record["input"])
    for member in record["members"]:
        expected = reference["samples"][name][member["file"]]
        ours = [p["probability"] for p in member["probabilities"]]
        worst = max(worst, max(abs(a - b) for a, b in zip(ours, expected)))
assert worst <= 1e-5, f"{sys.argv[3]}: member probabilities differ from the reference by {worst:.2e}"
print(f"{sys.argv[3]}: {len(records)} images, member probabilities within {worst:.1e} of the x86-64 reference")
PY
    echo "  ($(( $(date +%s) - started )) s)"
  done
}
check cortex-a53 aarch64-neon aarch64-neon
check cortex-a76 aarch64-neon-sdot
check max aarch64-neon-sdot aarch64-neon-sdot
