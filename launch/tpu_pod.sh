#!/usr/bin/env bash
# A TPU pod slice: the same command on every worker, started from a machine with gcloud.
# Usage: launch/tpu_pod.sh TPU_NAME ZONE FLAGFILE [more launch flags...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/fgvc/deep_cars.cfg \
#       --tfds_data_dir=gs://BUCKET/tfds --workdir=gs://BUCKET/runs/cars
# The repository must be checked out at the same path (~/kprefix by default,
# override with KPREFIX_DIR) on every worker; data and workdir should be gs://
# paths that every worker can reach.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE FLAGFILE [launch flags...]" >&2; exit 2
fi
tpu_name="$1"; zone="$2"; flagfile="$3"; shift 3
repo_dir="${KPREFIX_DIR:-~/kprefix}"
command="cd ${repo_dir} && python -m kprefix.launch --flagfile=${flagfile} --strategy=tpu \
--tpu=${tpu_name} --precision=mixed_bfloat16"
for arg in "$@"; do command+=" $(printf '%q' "${arg}")"; done
exec gcloud compute tpus tpu-vm ssh "${tpu_name}" --zone="${zone}" --worker=all \
  --command="${command}"
