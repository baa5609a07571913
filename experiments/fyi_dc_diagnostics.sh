#!/usr/bin/env bash
# Why DC + FYI falls below DC at CIFAR-10 IPC 1 (README, "FYI on CIFAR-10 at the published
# budget"): re-evaluate a finished cell's synthetic set (20 models, DC's 300 epochs, one thread)
# under the published protocol's augmentation (none for ConvNet on CIFAR), with random
# horizontal flips only, and trained on the set together with its mirror images.
#   experiments/fyi_dc_diagnostics.sh cifar10_dc_fyi_ipc1
set -euo pipefail
cell=${1:?cell, e.g. cifar10_dc_fyi_ipc1}
cd "$(dirname "$0")/.."
# PUBLISHED_CPU_RESULTS: where the cell's files are (published_cpu.sh's variable).
set_pt="${PUBLISHED_CPU_RESULTS:-benchmarks/results/published_cpu}/${cell}_synthetic_set.pt"
out="benchmarks/results/published_cpu/diagnostics"
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
eval_set() { .venv/bin/distillkit-eval "$set_pt" --num-models 20 --device cpu "$@"; }
[ -f "$out/${cell}_flip_aug.json" ] || eval_set --dsa-strategy flip --output "$out/${cell}_flip_aug.json"
[ -f "$out/${cell}_with_flips.json" ] || eval_set --with-flips --output "$out/${cell}_with_flips.json"
[ -f "$out/${cell}_with_flips_flip_aug.json" ] || \
  eval_set --with-flips --dsa-strategy flip --output "$out/${cell}_with_flips_flip_aug.json"
