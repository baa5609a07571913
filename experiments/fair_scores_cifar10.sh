#!/usr/bin/env bash
# README "Fair scores", CIFAR-10 rows: DM, DM + FYI, DSA, DSA + FYI at IPC 1 and 10 at CPU scale
# (ConvNet-3 width 32, 3 evaluation models x 100 epochs, 2,000 test images, seed 0), each with
# DD-Ranking's scores; the full-data model (20 epochs on the 50,000 training images) is trained
# by the first job and read from the cache by the others. One thread; about an hour on 2 cores.
#   experiments/fair_scores_cifar10.sh && distillkit-summary outputs/fair_scores_cifar10
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
bin=${DISTILLKIT:-.venv/bin/distillkit}
out=outputs/fair_scores_cifar10
common=(dataset=cifar10 dataset.root=../shared/data dataset.test_limit=200 model.width=32
  eval.num_models=3 eval.epochs=100 ++method.batch_real=64 unequalness.enabled=false
  eval.scores=true eval.scores_full_epochs=20 progress=false)
"$bin" -m method=dm regularizer=none,fyi ipc=1,10 method.iterations=200 "${common[@]}" hydra.sweep.dir=$out/dm
"$bin" -m method=dsa regularizer=none,fyi ipc=1 method.iterations=100 "${common[@]}" hydra.sweep.dir=$out/dsa_ipc1
"$bin" -m method=dsa regularizer=none,fyi ipc=10 method.iterations=5 "${common[@]}" hydra.sweep.dir=$out/dsa_ipc10
