#!/usr/bin/env bash
# One TPU VM (e.g. v4-8), bfloat16 compute; --batch_size stays global.
# Usage: launch/tpu_vm.sh FLAGFILE [more launch flags...]
#   launch/tpu_vm.sh configs/vtab/deep_cifar100.cfg --tfds_data_dir=gs://BUCKET/tfds
# Run from the repository root on the TPU VM (TPU name "local").
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 FLAGFILE [launch flags...]" >&2; exit 2
fi
flagfile="$1"; shift
exec python -m kprefix.launch --flagfile="${flagfile}" --strategy=tpu --tpu=local \
  --precision=mixed_bfloat16 "$@"
