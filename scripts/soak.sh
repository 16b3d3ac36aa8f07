#!/usr/bin/env bash
# Long-run check: FRAMES (default 20000) frames from a looping replay of models/samples through
# `dermedge run` (every frame classified and journaled) with the shipped ensemble; prints RSS,
# open descriptors and median latency at the first frame and every 1000 frames.
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-20000}
cargo build --release -q -p dermedge
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/soak.toml" <<TOML
[trigger]
mode = "every"
min_interval_ms = 0
[replay]
loop = true
TOML
started=$(date +%s)
target/release/dermedge run --config "$work/soak.toml" --source folder:models/samples \
  --journal "$work/journal.jsonl" --max-frames "$frames" --stats-every 1000 --json \
  >/dev/null 2>"$work/stderr"
elapsed=$(( $(date +%s) - started ))
grep '^health ' "$work/stderr" | sed 's/^health //' >"$work/health.jsonl"
python3 - "$work/health.jsonl" "$work/journal.jsonl" "$elapsed" <<'PY'
import json, sys
samples = [json.loads(l) for l in open(sys.argv[1])]
records = sum(1 for _ in open(sys.argv[2]))
print(f"{'frames':>7} {'RSS MiB':>8} {'fds':>4} {'median ms':>10}")
for s in samples:
    med = "-" if s["median_ms"] is None else f'{s["median_ms"]:.2f}'
    print(f'{s["frames"]:>7} {s["rss_bytes"] / 2**20:>8.1f} {s["open_fds"]:>4} {med:>10}')
first, last = samples[0], samples[-1]
print(f'frame {first["frames"]}: RSS {first["rss_bytes"] / 2**20:.1f} MiB, {first["open_fds"]} fds; '
      f'frame {last["frames"]}: RSS {last["rss_bytes"] / 2**20:.1f} MiB, {last["open_fds"]} fds; '
      f'{records} journal records; {sys.argv[3]} s')
PY
tail -1 "$work/stderr"
