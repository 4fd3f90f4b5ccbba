#!/usr/bin/env bash
# All GPUs of one machine (MirroredStrategy); --batch_size stays global.
# Usage: launch/multi_gpu.sh FLAGFILE [more launch flags...]
#   launch/multi_gpu.sh configs/fgvc/deep_cub.cfg --prefix_variant=simple_share
# Run from the repository root. Mixed precision: add --precision=mixed_float16.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 FLAGFILE [launch flags...]" >&2; exit 2
fi
flagfile="$1"; shift
exec python -m kprefix.launch --flagfile="${flagfile}" --strategy=mirrored "$@"
