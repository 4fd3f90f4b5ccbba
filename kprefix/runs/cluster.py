"""Which process of a cluster this is, and so whether it writes.

Only the chief writes a run's files (checkpoints, summaries, results,
exports); the other workers of a multi-worker run, or the other hosts of a
TPU pod, train and read. TensorFlow calls a process of a cluster a "task";
kprefix says "cluster role", to keep "task" for what a model learns.

Example:

>>> cluster_role({})
ClusterRole(type='chief', index=0, is_chief=True)
"""

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class ClusterRole:
    """This process's place in a cluster (`TF_CONFIG`, TPU pod host id)."""

    type: str = "chief"
    index: int = 0
    is_chief: bool = True

    @property
    def name(self):
        return f"{self.type}:{self.index}"


def cluster_role(environ=None):
    """The `ClusterRole` of this process, read from the environment.

    Multi-worker runs name it in `TF_CONFIG` (the chief is the `chief` task,
    or worker 0 when there is none, as in TensorFlow's multi-worker
    conventions). TPU pod hosts name it in `TPU_WORKER_ID` or
    `CLOUD_TPU_TASK_ID`; host 0 writes. Anything else is a single chief.

    >>> cluster_role({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...            '"task": {"type": "worker", "index": 1}}'})
    ClusterRole(type='worker', index=1, is_chief=False)
    """
    environ = os.environ if environ is None else environ
    config = json.loads(environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if task:
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
        has_chief = bool(config.get("cluster", {}).get("chief"))
        chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
        return ClusterRole(kind, index, chief)
    for variable in ("TPU_WORKER_ID", "CLOUD_TPU_TASK_ID"):
        if environ.get(variable, "").strip().isdigit():
            index = int(environ[variable])
            return ClusterRole("tpu_host", index, index == 0)
    return ClusterRole()
