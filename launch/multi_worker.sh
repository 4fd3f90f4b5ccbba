#!/usr/bin/env bash
# Several workers (MultiWorkerMirroredStrategy), each with its own TF_CONFIG;
# --batch_size stays global. Give every worker the same --workdir (shared or
# gs://): the chief (worker 0) writes checkpoints, results and the export.
#
# Local: N workers on this machine, on free localhost ports:
#   launch/multi_worker.sh 2 configs/quickstart.cfg --workdir=runs/quickstart-2w
# Remote: one worker per host, started over ssh (the repository at the same
# path on every host: KPREFIX_DIR, default ~/kprefix; port KPREFIX_PORT, default 2222):
#   HOSTS="node0 node1 node2" launch/multi_worker.sh 3 configs/fgvc/deep_cub.cfg \
#       --workdir=gs://BUCKET/runs/cub
# Worker logs go to LOG_DIR (default: multi_worker_logs/). The script waits
# for all workers and exits non-zero if any failed; Ctrl-C stops them all.
# A worker whose peer dies exits after --peer_timeout_seconds (default 300);
# run the same command again to resume from the last checkpoint.
set -euo pipefail
if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: [HOSTS=\"h0 h1 ...\"] $0 NUM_WORKERS FLAGFILE [launch flags...]" >&2; exit 2
fi
num_workers="$1"; flagfile="$2"; shift 2
log_dir="${LOG_DIR:-multi_worker_logs}"
mkdir -p "${log_dir}"

read -r -a hosts <<< "${HOSTS:-}"
if [[ ${#hosts[@]} -gt 0 && ${#hosts[@]} -ne ${num_workers} ]]; then
  echo "HOSTS names ${#hosts[@]} hosts but NUM_WORKERS is ${num_workers}" >&2; exit 2
fi

addresses=()
if [[ ${#hosts[@]} -eq 0 ]]; then
  ports=$(python -c "
import socket
s = [socket.socket() for _ in range(${num_workers})]
for x in s: x.bind(('localhost', 0))
print(' '.join(str(x.getsockname()[1]) for x in s))")
  for port in ${ports}; do addresses+=("localhost:${port}"); done
else
  for host in "${hosts[@]}"; do addresses+=("${host}:${KPREFIX_PORT:-2222}"); done
fi
cluster=$(printf '"%s",' "${addresses[@]}"); cluster="[${cluster%,}]"

pids=()
stop_all() { for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done; }
trap 'stop_all; exit 130' INT TERM

for ((i = 0; i < num_workers; i++)); do
  tf_config="{\"cluster\": {\"worker\": ${cluster}}, \"task\": {\"type\": \"worker\", \"index\": ${i}}}"
  command=(python -m kprefix.launch --flagfile="${flagfile}" --strategy=multi_worker_mirrored "$@")
  if [[ ${#hosts[@]} -eq 0 ]]; then
    TF_CONFIG="${tf_config}" "${command[@]}" > "${log_dir}/worker-${i}.log" 2>&1 &
  else
    remote="cd ${KPREFIX_DIR:-~/kprefix} && TF_CONFIG=$(printf '%q' "${tf_config}")"
    for arg in "${command[@]}"; do remote+=" $(printf '%q' "${arg}")"; done
    ssh "${hosts[$i]}" "${remote}" > "${log_dir}/worker-${i}.log" 2>&1 &
  fi
  pids+=($!)
  echo "worker ${i} (${addresses[$i]}): pid $!, log ${log_dir}/worker-${i}.log"
done

status=0
for ((i = 0; i < num_workers; i++)); do
  if ! wait "${pids[$i]}"; then
    status=1; echo "worker ${i} failed; see ${log_dir}/worker-${i}.log" >&2
  fi
done
exit "${status}"
