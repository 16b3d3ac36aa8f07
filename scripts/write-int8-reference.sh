#!/usr/bin/env bash
# Writes tests/fixtures/int8-reference/probabilities.json: the per-member probabilities of the
# shipped int8 ensemble (models/ensemble.toml) on models/samples, on the portable kernel set,
# which every other set must match (tests/cli/kernels.rs, board/check-kernels-qemu.sh). Run it
# after the shipped int8 members change, never to make a kernel's test pass.
# Usage: scripts/write-int8-reference.sh (builds target/release/dermedge when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/dermedge ] || cargo build --release --locked -p dermedge
DERMEDGE_INT8_KERNELS=portable target/release/dermedge --ensemble models/ensemble.toml \
  classify --json --no-journal models/samples |
  python3 -c '
import json, os, sys
records = [json.loads(line) for line in sys.stdin]
ensemble = records[0]["ensemble"]
version = ensemble.split("@")[1]
reference = {
    "note": f"Per-member probabilities of the shipped ensemble ({version}) on "
    "models/samples, written by scripts/write-int8-reference.sh (dermedge classify --json on the "
    "portable kernel set). Every kernel set must give these values within 1e-5, and all sets the "
    "same bits.",
    "ensemble": ensemble,
    "samples": {
        os.path.basename(r["input"]): {
            m["file"]: [p["probability"] for p in m["probabilities"]] for m in r["members"]
        }
        for r in sorted(records, key=lambda r: os.path.basename(r["input"]))
    },
}
with open("tests/fixtures/int8-reference/probabilities.json", "w") as out:
    json.dump(reference, out, indent=1)
    out.write("\n")
print(f"{len(records)} samples of {ensemble} written")
'
