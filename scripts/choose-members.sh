#!/usr/bin/env bash
# Chooses the members of an ensemble on the validation side by the rule the shipped versions were
# chosen by: every non-empty subset of the members of the given exported f32 manifests is
# calibrated (`calibrate --side val --tta none`) and evaluated (`evaluate --side val`), then ranked
# by the mean of validation top-1 and balanced accuracy; the leader is calibrated and evaluated
# again with horizontal-flip views, which ship if they raise that mean. Subsets that OUT_DIR already
# holds validation predictions of (the same members, from an earlier run) are not evaluated again,
# so adding a new member's manifest costs only the subsets it is in. The ranking also gives how far
# each candidate's mean may lie from the leader's by chance (a bootstrap over validation lesions).
# usage: scripts/choose-members.sh OUT_DIR SPLIT_CSV MANIFEST...
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n '2,11p' "$0"; exit 2; }
out=$1 split=$2
shift 2
cd "$(dirname "$0")/.."
cargo build --release -q -p dermedge-tools
T=target/release/dermedge-tools
python3 scripts/member_subsets.py write "$out" "$@" > "$out.list"
while read -r candidate; do
  $T calibrate --manifest "$candidate/ensemble.toml" --split "$split" --side val --tta none \
    > "$candidate/calibrate.txt"
  $T evaluate --manifest "$candidate/ensemble.toml" --split "$split" --side val \
    --out "$candidate/val" > "$candidate/evaluate.txt"
done < "$out.list"
rm "$out.list"
python3 scripts/member_subsets.py rank "$out" "$split" | tee "$out/ranking.md"
leader=$(sed -n '3p' "$out/ranking.md" | cut -d'|' -f2 | tr -d ' ')
mirrored="$out/$leader+hflip"
rm -rf "$mirrored" && cp -r "$out/$leader" "$mirrored" && rm -rf "$mirrored/val"
$T calibrate --manifest "$mirrored/ensemble.toml" --split "$split" --side val \
  --tta horizontal-flip > "$mirrored/calibrate.txt"
$T evaluate --manifest "$mirrored/ensemble.toml" --split "$split" --side val \
  --out "$mirrored/val" > "$mirrored/evaluate.txt"
echo "with horizontal-flip views:"
python3 scripts/member_subsets.py rank "$out" "$split" | grep -F "| $leader" || true
