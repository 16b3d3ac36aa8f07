#!/usr/bin/env bash
# Resumes the Ensemble 1.0 member in training (issue "Ensemble 1.0"): EfficientNet-Lite0, seed 21,
# checkpoints in runs/v7/efficientnet-lite0-s21 (outside git), from its last complete checkpoint
# (a fresh start when there is none). Runs in the background at nice 10 and appends to
# runs/v7/efficientnet-lite0-s21.log: per-epoch loss, validation balanced accuracy, melanoma
# sensitivity, epoch time and ETA. Pause with `pkill -STOP -f "dermedge-tools train"`, go on with
# `-CONT`. Needs `python3 -m pip install torch==2.9.0` (see train-converged-member.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/v7
log=runs/v7/efficientnet-lite0-s21.log
nohup nice -n 10 scripts/train-converged-member.sh 21 runs/v7 efficientnet-lite0 >>"$log" 2>&1 &
echo "training in the background (pid $!); log: $log"
