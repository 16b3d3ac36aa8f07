#!/usr/bin/env bash
# Runs the cross-built aarch64 dermedge under qemu-aarch64-static on the sample images with the
# default ensemble and checks that every image gets the same top-3 as the native build.
# Usage: board/check-qemu.sh [AARCH64_BINARY] [NATIVE_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
arm=${1:-target/cross/aarch64-unknown-linux-gnu/board/dermedge}
native=${2:-target/release/dermedge}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
file "$arm" 2>/dev/null || true
started=$(date +%s)
qemu-aarch64-static "$arm" --ensemble models/ensemble.toml classify --json --no-journal models/samples >"$out/arm.jsonl"
echo "qemu run: $(( $(date +%s) - started )) s"
"$native" --ensemble models/ensemble.toml classify --json --no-journal models/samples >"$out/native.jsonl"
python3 - "$out/arm.jsonl" "$out/native.jsonl" <<'PY'
import json, sys
arm = [json.loads(l) for l in open(sys.argv[1])]
native = [json.loads(l) for l in open(sys.argv[2])]
assert len(arm) == len(native) > 0, (len(arm), len(native))
worst = 0.0
for a, n in zip(arm, native):
    assert a["input"] == n["input"] and a["sha256"] == n["sha256"], (a["input"], n["input"])
    ca = [t["class"] for t in a["top"]]
    cn = [t["class"] for t in n["top"]]
    assert ca == cn, f'{a["input"]}: aarch64 top-3 {ca} != native {cn}'
    for x, y in zip(a["top"], n["top"]):
        worst = max(worst, abs(x["probability"] - y["probability"]))
    print(f'{a["input"]}: {" ".join(ca)} (same on both)')
assert worst < 1e-4, f"probabilities differ by up to {worst}"
print(f"{len(arm)} images: same top-3 under qemu-aarch64 and native; largest probability difference {worst:.2e}")
PY
