"""The training loop both pretrainings share: warm-up then cosine, a loss curve, a summary.

Example:

>>> import numpy as np, keras
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> model.compile(optimizer=keras.optimizers.SGD(warmup_cosine(4, 0.1)), loss="mse")
>>> rng = np.random.RandomState(0)
>>> curve, seconds = train_with_loss_curve(
...     model, lambda: (rng.normal(size=(8, 2)), np.zeros((8, 1))), steps=4, log_every=2,
...     log=None, name="toy")
>>> [point["step"] for point in curve]
[2, 4]
"""

import json
import os
import time

import numpy as np

from kprefix.runs import files


def warmup_cosine(steps, learning_rate):
    """Linear warm-up over the first 5% of `steps` to `learning_rate`, then cosine decay to 0."""
    import keras

    return keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=learning_rate, warmup_steps=max(1, steps // 20))


def train_with_loss_curve(model, next_batch, steps, log_every, log, name):
    """`steps` of `model.train_on_batch(*next_batch())`; returns `(curve, seconds)`.

    The curve has one point per `log_every` steps (and the last step): the
    step, the mean loss since the previous point and the seconds so far.
    `log` gets a line per point (None: silent).
    """
    curve, losses = [], []
    start = time.time()
    for step in range(1, steps + 1):
        metrics = model.train_on_batch(*next_batch(), return_dict=True)
        losses.append(float(metrics["loss"]))
        if step % log_every == 0 or step == steps:
            curve.append({"step": step, "loss": float(np.mean(losses)),
                          "seconds": round(time.time() - start, 1)})
            losses = []
            if log is not None:
                log(f"[pretrain {name}] step {step}/{steps} loss {curve[-1]['loss']:.4f}")
    return curve, time.time() - start


def finished_summary(path):
    """The summary a finished pretraining wrote to `path`, or None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def save_preset(directory, *parts):
    """Saves `parts` (a backbone, its tokenizer) as one keras-hub preset at `directory`.

    The preset is built in a sibling folder and swapped in, so a kill leaves
    the old preset or the new one, never a part of it.
    """
    from kprefix.runs.export import write_atomically

    write_atomically(lambda folder: [part.save_to_preset(folder) for part in parts], directory)


def write_summary(path, summary):
    """Writes `summary` to `path` atomically (its presence marks a finished pretraining)."""
    files.write_json(path, summary)
    return summary
