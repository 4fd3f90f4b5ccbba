#!/usr/bin/env bash
# A TPU pod slice (e.g. v4-32), started from a machine with gcloud; bfloat16
# compute, --batch_size stays global, and the run writes to a gs:// workdir.
# Usage: launch/tpu_pod.sh TPU_NAME ZONE FLAGFILE --workdir=gs://BUCKET/RUN [more launch flags...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/fgvc/deep_cars.cfg \
#       --workdir=gs://BUCKET/runs/cars --tfds_data_dir=gs://BUCKET/tfds
# Step 1 runs on every host of the slice: it checks that the repository is
# checked out at the same commit at KPREFIX_DIR (default ~/kprefix) and that
# the host can write the workdir. Step 2 starts the program on worker 0:
# in TensorFlow's TPU pod model one client drives the TPUs and input
# pipelines of all hosts over the network (TPU_LOAD_LIBRARY=0 leaves the
# local TPU to the TPU runtime), so one process writes checkpoints, results
# and the export. Running the script again resumes from the newest
# checkpoint in the workdir.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE FLAGFILE --workdir=gs://BUCKET/RUN [launch flags...]" >&2; exit 2
fi
tpu_name="$1"; zone="$2"; flagfile="$3"; shift 3
workdir=""
for arg in "$@"; do
  if [[ "${arg}" == --workdir=* ]]; then workdir="${arg#--workdir=}"; fi
done
if [[ "${workdir}" != gs://* ]]; then
  echo "$0: pass --workdir=gs://BUCKET/RUN: every host of a pod must reach the workdir" >&2
  exit 2
fi
repo_dir="${KPREFIX_DIR:-~/kprefix}"
commit=$(git rev-parse HEAD)
ssh_all=(gcloud compute tpus tpu-vm ssh "${tpu_name}" --zone="${zone}" --worker=all)

# 1. Every host: same code, workdir reachable.
"${ssh_all[@]}" --command="cd ${repo_dir} && test \"\$(git rev-parse HEAD)\" = ${commit} \
|| { echo \"\$(hostname): ${repo_dir} is not at commit ${commit}\" >&2; exit 1; }; \
python -c 'import sys, tensorflow as tf; tf.io.gfile.makedirs(sys.argv[1])' $(printf '%q' "${workdir}")"

# 2. Worker 0 runs the TensorFlow client of the whole pod.
command="cd ${repo_dir} && TPU_LOAD_LIBRARY=0 python -m kprefix.launch --flagfile=${flagfile} \
--strategy=tpu --tpu=${tpu_name} --precision=mixed_bfloat16"
for arg in "$@"; do command+=" $(printf '%q' "${arg}")"; done
exec gcloud compute tpus tpu-vm ssh "${tpu_name}" --zone="${zone}" --worker=0 --command="${command}"
