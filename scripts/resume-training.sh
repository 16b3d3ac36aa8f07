#!/usr/bin/env bash
# Trains or resumes the candidate members of Ensemble 1.0 (issue "Ensemble 1.0") one after
# another in the background, each with scripts/train-converged-member.sh from its last complete
# checkpoint in runs/v7/<arch>-s<seed> (outside git; a fresh start when there is none, an immediate
# return when the member has finished): EfficientNet-Lite0 seed 21, MobileNetV2 seed 31,
# EfficientNet-Lite0 seed 22, each through its whole cosine schedule (PATIENCE=18: seed 21 had
# stopped with patience 4 at epoch 11 of 18, while the learning rate was still high; the best
# checkpoint is still the one with the best validation balanced accuracy). Runs at nice 10; each
# member appends to runs/v7/<arch>-s<seed>.log its per-epoch loss, validation balanced accuracy, melanoma sensitivity, epoch time and ETA.
# To resume after a stop, run this script again as it is: `scripts/resume-training.sh` (its build
# of dermedge-tools with the tch feature, target/tch, is reused).
# Pause with `pkill -STOP -f "dermedge-tools.* train"`, go on with `-CONT`. Needs
# `python3 -m pip install torch==2.9.0` (see train-converged-member.sh); DERMEDGE_TOOLS and the
# script's other variables pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/v7
queue='21 efficientnet-lite0
31 mobilenet-v2
22 efficientnet-lite0'
nohup nice -n 10 bash -c '
  while read -r seed arch; do
    PATIENCE=18 scripts/train-converged-member.sh "$seed" runs/v7 "$arch" >>"runs/v7/$arch-s$seed.log" 2>&1 ||
      { echo "$arch seed $seed stopped with an error: see runs/v7/$arch-s$seed.log"; exit 1; }
  done <<<"$0"' "$queue" >>runs/v7/queue.log 2>&1 &
echo "training in the background (pid $!): $(tr '\n' ',' <<<"$queue" | sed 's/,$//')"
echo "logs: runs/v7/<arch>-s<seed>.log, runs/v7/queue.log"
