"""What every training run needs, whatever it trains.

- `config`: `RunConfig`, every setting of a run, and `run(config)`'s checks.
- `train`: the distribution strategy, precision, the epoch stream, `fit`
  and its guards (divergence, preemption).
- `optimizers`: the paper's optimizers and learning-rate schedules, with
  PyTorch's update rules where the reference relies on them.
- `checkpoints`: checksummed training-state checkpoints on any filesystem.
- `workdir`: one run per folder (`run.lock`) and the settings it started with.
- `files`: atomic writes, so a file is whole or absent.
- `cluster`: which process of a cluster this is (only the chief writes).
- `multi_worker`: several processes on several hosts, and their failures.
- `export`: the folded SavedModel for serving.

Example:

>>> from kprefix.runs.cluster import cluster_role
>>> cluster_role({}).is_chief
True
"""
