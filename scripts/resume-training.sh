#!/usr/bin/env bash
# Trains or resumes the candidate members of Ensemble 1.0 (issue "Ensemble 1.0") one after
# another in the background, each with scripts/train-converged-member.sh from its last complete
# checkpoint in runs/v7/<arch>-s<seed> (outside git; a fresh start when there is none, an immediate
# return when the member has finished). The queue's lines are seed, backbone, epochs of the cosine
# schedule, and patience (epochs without a better smoothed validation balanced accuracy):
# EfficientNet-Lite0 seed 21 (18 epochs; its smoothed curve peaked at epoch 7 and had not improved
# for 9 epochs when the learning rate was down to 3% of its start, so patience 4 ends it where it
# stands), then MobileNetV2 seed 31, EfficientNet-Lite0 seed 22 (seed 21 is the strongest member
# so far; fine-tuning epochs take 6.5 to 7 minutes for the Lite0 and 5.5 for the MobileNetV2 at
# 200x150 on idle cores), EfficientNet-Lite2 seed 41 (1.4x the Lite0's training time per image:
# 16.7 against 23.5 images/s, `dermedge-tools throughput --backend tch --batch 32`),
# EfficientNet-Lite1 seed 51 (17.6 images/s) and MobileNetV2 seed 32 (seed 31 at 200x150 did not
# join the shipped ensemble: last), on 12-epoch schedules (the 18-epoch runs peaked at epochs 7 and 12) with
# patience 6. Runs at nice 10; each member appends to runs/v7/<arch>-s<seed>.log its per-epoch
# loss, validation balanced accuracy, melanoma sensitivity, epoch time and ETA. A queue started
# while a training run is still under way waits for it to end, so two runs never share a member.
# To resume after a stop, run this script again as it is: `scripts/resume-training.sh` (its build
# of dermedge-tools with the tch feature, target/tch, is reused).
# Pause with `pkill -STOP -f "dermedge-tools.* train"`, go on with `-CONT`. Needs
# `python3 -m pip install torch==2.9.0` (see train-converged-member.sh); DERMEDGE_TOOLS and the
# script's other variables pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/v7
queue='21 efficientnet-lite0 18 4
31 mobilenet-v2 12 6
22 efficientnet-lite0 12 6
41 efficientnet-lite2 12 6
51 efficientnet-lite1 12 6
32 mobilenet-v2 12 6'
nohup nice -n 10 bash -c '
  while pgrep -f "dermedge-tools[ ]train" >/dev/null; do sleep 30; done
  while read -r seed arch epochs patience; do
    EPOCHS=$epochs PATIENCE=$patience scripts/train-converged-member.sh "$seed" runs/v7 "$arch" >>"runs/v7/$arch-s$seed.log" 2>&1 ||
      { echo "$arch seed $seed stopped with an error: see runs/v7/$arch-s$seed.log"; exit 1; }
  done <<<"$0"' "$queue" >>runs/v7/queue.log 2>&1 &
echo "training in the background (pid $!): $(cut -d' ' -f1,2 <<<"$queue" | tr '\n' ',' | sed 's/,$//')"
echo "logs: runs/v7/<arch>-s<seed>.log, runs/v7/queue.log"
