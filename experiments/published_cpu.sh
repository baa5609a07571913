#!/usr/bin/env bash
# One cell of "FYI on CIFAR-10 at the published budget" (README): a base method with or without
# FYI at its published settings, CIFAR-10 IPC 1, 20 evaluation models, one thread.
#   experiments/published_cpu.sh dc fyi      # method (dc|dsa|dm), regularizer (none|fyi)
# Re-running the same line continues the run: from its run directory when it is still there,
# else from the checkpoint copy kept (and committed) under benchmarks/results/published_cpu/
# in_progress/, so a session that starts on a fresh checkout loses nothing. A finished cell's
# files are copied beside the others (re-running a finished line only copies them).
set -euo pipefail
method=${1:?method: dc, dsa or dm}
regularizer=${2:-none}
case $method in dc|dsa|dm) ;; *) echo "published_cpu.sh: method must be dc, dsa or dm" >&2; exit 2;; esac
case $regularizer in none|fyi) ;; *) echo "published_cpu.sh: regularizer must be none or fyi" >&2; exit 2;; esac
suffix=""; [ "$regularizer" = fyi ] && suffix=_fyi
cell=cifar10_${method}${suffix}_ipc1
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
extra=()
if [ "$method" = dm ]; then
  # Native bf16 (AVX-512-BF16 or AMX) makes runtime=fast pay; otherwise compile the fp32 step.
  if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then extra+=(runtime=fast); else extra+=(runtime.compile=true); fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run_dir="${PUBLISHED_CPU_RUNS:-outputs/published}/$cell"
results="${PUBLISHED_CPU_RESULTS:-benchmarks/results/published_cpu}"

# A finished cell's results.json, synthetic set, image grid and flips figure go beside the other
# cells (the README table reads them: experiments/published_cpu_table.py); its checkpoint copy
# goes.
publish() {
  mkdir -p "$results"
  cp "$run_dir/results.json" "$results/$cell.json"
  cp "$run_dir/grid_final.png" "$results/${cell}_grid.png"
  cp "$run_dir/synthetic_set.pt" "$results/${cell}_synthetic_set.pt"  # for distillkit-eval later
  [ -f "$run_dir/flips_final.png" ] && cp "$run_dir/flips_final.png" "$results/${cell}_flips.png"
  rm -f "$results/in_progress/$cell.pt"
  echo "published_cpu.sh: $cell finished; results in $results/$cell.json"
}

if [ -f "$run_dir/results.json" ]; then  # finished before: publish only (delete $run_dir to redo)
  publish
  exit 0
fi
"${DISTILLKIT:-.venv/bin/distillkit}" method="$method" regularizer="$regularizer" \
  dataset=cifar10 dataset.root=../shared/data ipc=1 eval.num_models=20 \
  dsa.always_flip=true eval.always_flip=true \
  checkpoint.every=10 checkpoint.every_s=120 \
  checkpoint.copy_to="$results/in_progress/$cell.pt" \
  "${extra[@]}" hydra.run.dir="$run_dir" "${@:3}"
publish
