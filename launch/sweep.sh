#!/usr/bin/env bash
# Every vision experiment of the paper: 24 tasks x {DEEP, SHALLOW} x
# {Deep-share, No-share, Simple-share}, each a grid then 5 seeds, locally one
# after another (restartable), then the tables.
# Usage: launch/sweep.sh SWEEP_DIR [launch or sweep flags for every run...]
#   launch/sweep.sh runs/paper --tfds_data_dir=/data/tfds
#   launch/sweep.sh runs/paper --print_commands      # one line per run, for a cluster
# Hardware flags go through too, e.g. --strategy=mirrored or --strategy=tpu --tpu=local.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 SWEEP_DIR [flags...]" >&2; exit 2
fi
sweep_dir="$1"; shift
for flagfile in configs/fgvc/deep_*.cfg configs/fgvc/shallow_*.cfg \
                configs/vtab/deep_*.cfg configs/vtab/shallow_*.cfg; do
  for variant in deep_share no_share simple_share; do
    python -m kprefix.sweep --flagfile="${flagfile}" --prefix_variant="${variant}" \
      --sweep_dir="${sweep_dir}" "$@"
  done
done
if [[ " $* " != *" --print_commands "* ]]; then
  python -m kprefix.report --results_dir="${sweep_dir}" --output_dir="${sweep_dir}/report"
fi
