"""Writes a replication's `results.json`, `results.md` and sample-efficiency plot.

`results.json` holds, for every task and variant, the summary of the
per-seed test accuracies (`mean`, `std`, `ci95`, `values`, see
`kprefix.replicate.statistics`), the seeds and the selected
hyperparameters; `comparisons` holds Deep-share minus No-share per task and
placement, paired per seed.

Example:

>>> from kprefix.replicate.results import comparison_sentences
>>> tasks = {"count": {"deep_share-deep": {"values": [0.9, 0.8, 0.85]},
...                    "no_share-deep": {"values": [0.8, 0.8, 0.8]}}}
>>> comparison_sentences(tasks)[0]["sentence"][:40]
'count, DEEP: Deep-share does not signifi'
"""

import json
import math
import os

from kprefix.replicate.statistics import paired_difference, summarize, verdict

PLACEMENTS = ("deep", "shallow")


def comparison_sentences(tasks):
    """Deep-share vs No-share for every task and placement both ran on."""
    rows = []
    for task, variants in tasks.items():
        for placement in PLACEMENTS:
            deep, none = variants.get(f"deep_share-{placement}"), variants.get(
                f"no_share-{placement}")
            if not deep or not none:
                continue
            difference = paired_difference(deep["values"], none["values"])
            rows.append({"task": task, "placement": placement, "difference": difference,
                         "sentence": verdict(difference, "Deep-share", "No-share",
                                             f"{task}, {placement.upper()}")})
    return rows


def _cell(summary):
    if summary is None:
        return "n/a"
    low, high = summary["ci95"]
    return (f"{summary['mean'] * 100:.1f} ± {summary['std'] * 100:.1f} "
            f"[{low * 100:.1f}, {high * 100:.1f}]")


def write_results(output_dir, payload):
    """Writes `results.json` and `results.md` from `payload` (see `kprefix.replicate`)."""
    tasks = payload["tasks"]
    payload["comparisons"] = comparison_sentences(
        {task: {name: row for name, row in variants.items()} for task, variants in tasks.items()})
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(payload, f, indent=2, allow_nan=False)
    variants = list(dict.fromkeys(name for v in tasks.values() for name in v))
    lines = [
        "# Replication results",
        "",
        f"Backbones pretrained here (see `vision_pretraining.json`); test accuracy in % over "
        f"seeds {', '.join(map(str, payload['seeds']))}: mean ± std [95% CI, Student t].",
        "",
        "| variant | " + " | ".join(tasks) + " | mean |",
        "|---" * (len(tasks) + 2) + "|",
    ]
    for name in variants:
        cells = [tasks[task].get(name) for task in tasks]
        means = [c["mean"] for c in cells if c]
        average = f"{sum(means) / len(means) * 100:.1f}" if len(means) == len(cells) else "n/a"
        lines.append(f"| {name} | " + " | ".join(_cell(c) for c in cells) + f" | {average} |")
    pretraining = payload.get("vision_pretraining")
    if pretraining:
        curve = pretraining["loss_curve"]
        lines += ["", "## Pretraining", "",
                  f"ViT {pretraining['config']['num_layers']} layers, width "
                  f"{pretraining['config']['hidden_dim']}, on {pretraining['source_classes']} "
                  f"rendered shape classes (summed loss of the source factor heads), "
                  f"{pretraining['config']['steps']} steps: loss "
                  f"{curve[0]['loss']:.3f} (first {curve[0]['step']} steps) -> "
                  f"{curve[-1]['loss']:.3f} (last), held-out source accuracy "
                  f"{_source_accuracy(pretraining)}.", ""]
    transfer = payload.get("transfer")
    if transfer:
        lines += ["## Transfer: linear probe, pretrained vs random weights", ""]
        lines += [f"- {row['sentence']}" for row in transfer]
        lines.append("")
    lines += ["## Deep-share vs No-share", ""]
    lines += [f"- {row['sentence']}" for row in payload["comparisons"]]
    if payload.get("sample_efficiency"):
        lines += ["", "## Sample efficiency", "",
                  f"Test accuracy against training examples: `{payload['plot']}`.", "",
                  "| task | variant | " + " | ".join(
                      f"{n} examples" for n in payload["sample_efficiency_sizes"]) + " |",
                  "|---|---" + "|---" * len(payload["sample_efficiency_sizes"]) + "|"]
        for task, variants_by_size in payload["sample_efficiency"].items():
            for name, by_size in variants_by_size.items():
                lines.append(f"| {task} | {name} | " + " | ".join(
                    _cell(by_size.get(str(n))) for n in payload["sample_efficiency_sizes"]) + " |")
    for note in payload.get("notes", []):
        lines += ["", note]
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def plot_sample_efficiency(path, sample_efficiency, sizes):
    """One panel per task: mean test accuracy (95% CI band) against training examples,
    one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(sample_efficiency)
    figure, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for name, by_size in sample_efficiency[task].items():
            points = [(n, by_size[str(n)]) for n in sizes if str(n) in by_size]
            xs = [n for n, _ in points]
            axis.plot(xs, [s["mean"] * 100 for _, s in points], marker="o", label=name)
            axis.fill_between(xs, [s["ci95"][0] * 100 for _, s in points],
                              [s["ci95"][1] * 100 for _, s in points], alpha=0.15)
        axis.set_xscale("log")
        axis.set_title(task)
        axis.set_xlabel("training examples")
        axis.set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def finite_summary(values):
    """`summarize` of the finite values (a diverged seed is dropped and counted)."""
    finite = [v for v in values if math.isfinite(v)]
    summary = summarize(finite)
    summary["diverged_seeds"] = len(values) - len(finite)
    return summary


def _source_accuracy(pretraining):
    """Held-out accuracy per source factor (the shape class alone where there is one head)."""
    by_factor = pretraining.get("held_out_factor_accuracy")
    if not by_factor:
        return f"{pretraining['held_out_source_accuracy'] * 100:.1f}%"
    return ", ".join(f"{factor} {accuracy * 100:.1f}%" for factor, accuracy in by_factor.items())
