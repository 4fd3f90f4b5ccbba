"""Writes a replication's `results.json`, `results.md` and sample-efficiency plot.

`results.json` holds, for every task and variant, the summary of the
per-seed test accuracies (`mean`, `std`, `ci95`, `values`, see
`kprefix.replicate.statistics`), the seeds and the selected
hyperparameters with the grid that ran and whether the selection is still
on its edge (`selection`); `comparisons` holds Deep-share minus No-share per
task and placement, paired per seed; `sample_efficiency_gaps` the same gap
per training-set size and its trend with size. `text` holds the same for E2E (per-seed test
BLEU by training fraction, `text.variants`), its comparisons per fraction and
the GPT-2 pretraining (corpus, loss curve).

Example:

>>> from kprefix.replicate.results import comparison_sentences
>>> tasks = {"count": {"deep_share-deep": {"values": [0.9, 0.8, 0.85]},
...                    "no_share-deep": {"values": [0.8, 0.8, 0.8]}}}
>>> comparison_sentences(tasks)[0]["sentence"][:40]
'count, DEEP: Deep-share does not signifi'
"""

import io
import math
import os

from kprefix.runs import files
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


def text_comparison_sentences(variants):
    """E2E: Deep-share vs No-share for every training fraction and placement both ran on
    (`variants`: name -> fraction label -> summary of per-seed BLEU)."""
    rows = []
    for placement in PLACEMENTS:
        deep, none = variants.get(f"deep_share-{placement}"), variants.get(f"no_share-{placement}")
        if not deep or not none:
            continue
        for label in deep:
            if label not in none:
                continue
            difference = paired_difference(deep[label]["values"], none[label]["values"])
            rows.append({"task": "e2e", "fraction": label, "placement": placement,
                         "difference": difference,
                         "sentence": verdict(difference, "Deep-share", "No-share",
                                             f"E2E {_percent(label)} of the training set, "
                                             f"{placement.upper()}, BLEU")})
    return rows


def _percent(label):
    """'train5pct' -> '5%'."""
    return label[len("train"):-len("pct")] + "%"


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
    files.write_json(os.path.join(output_dir, "results.json"), payload)
    lines = [
        "# Replication results",
        "",
        f"Backbones pretrained here (see `vision_pretraining.json`); test accuracy in % over "
        f"seeds {', '.join(map(str, payload['seeds']))}: mean ± std [95% CI, Student t].",
        "",
        *_accuracy_table(tasks),
    ]
    pretraining = payload.get("vision_pretraining")
    if pretraining:
        curve = pretraining["loss_curve"]
        lines += ["", "## Pretraining", "",
                  f"ViT {pretraining['config']['num_layers']} layers, width "
                  f"{pretraining['config']['hidden_dim']}, on {pretraining['source_factors']['shape']} "
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
    lines += _grid_lines(payload.get("selection") or {})
    if payload.get("sample_efficiency"):
        lines += ["", "## Sample efficiency", "",
                  f"Test accuracy against training examples: `{payload['plot']}`.", "",
                  *_sample_efficiency_table(payload)]
    lines += _gap_lines(payload.get("sample_efficiency_gaps") or [])
    lines += _training_length_lines(payload.get("training_length"))
    lines += _text_lines(payload.get("text") or {})
    for note in payload.get("notes", []):
        lines += ["", note]
    files.write_text(os.path.join(output_dir, "results.md"), "\n".join(lines) + "\n")


def _accuracy_table(tasks):
    """Test accuracy (%) per variant (rows) and task (columns), with the mean over tasks."""
    variants = list(dict.fromkeys(name for v in tasks.values() for name in v))
    lines = ["| variant | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
    for name in variants:
        cells = [tasks[task].get(name) for task in tasks]
        means = [c["mean"] for c in cells if c]
        average = f"{sum(means) / len(means) * 100:.1f}" if len(means) == len(cells) else "n/a"
        lines.append(f"| {name} | " + " | ".join(_cell(c) for c in cells) + f" | {average} |")
    return lines


def _sample_efficiency_table(payload):
    """Test accuracy (%) per task and variant (rows) and training-set size (columns)."""
    sizes = payload["sample_efficiency_sizes"]
    lines = ["| task | variant | " + " | ".join(f"{n} examples" for n in sizes) + " |",
             "|---|---" + "|---" * len(sizes) + "|"]
    for task, variants_by_size in payload["sample_efficiency"].items():
        for name, by_size in variants_by_size.items():
            lines.append(f"| {task} | {name} | " + " | ".join(
                _cell(by_size.get(str(n))) for n in sizes) + " |")
    return lines


def _text_table(text):
    """E2E test BLEU x 100 per variant (rows) and training fraction (columns, smallest
    first, also when read back from a `results.json` with sorted keys)."""
    labels = sorted(text["fractions"], key=lambda label: text["fractions"][label]["fraction"])
    lines = ["| variant | " + " | ".join(
                 f"{_percent(label)} ({text['fractions'][label]['inputs']:,} MRs)"
                 for label in labels) + " |",
             "|---" * (len(labels) + 1) + "|"]
    for name, by_fraction in text["variants"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(by_fraction.get(label))
                                                 for label in labels) + " |")
    return lines


def readme_tables(payload):
    """The tables a README shows from a replication's `results.json` payload: test
    accuracy by task, sample efficiency with the paired gaps and their trend, and
    E2E BLEU by training fraction (each only when the run has it), as markdown."""
    lines = ["Test accuracy in % over seeds " + ", ".join(map(str, payload["seeds"]))
             + ": mean ± std [95% CI, Student t].", "", *_accuracy_table(payload["tasks"])]
    if payload.get("sample_efficiency"):
        lines += ["", "Sample efficiency, test accuracy in %:", "",
                  *_sample_efficiency_table(payload)]
    lines += _gap_lines(payload.get("sample_efficiency_gaps") or [])
    lines += _training_length_lines(payload.get("training_length"))
    text = payload.get("text") or {}
    if text.get("variants"):
        lines += ["", f"E2E test BLEU x 100 on the first {text['test_examples']} test inputs "
                  f"over seeds {', '.join(map(str, text['seeds']))}:", "", *_text_table(text),
                  *_text_training_length_lines(text.get("training_length"))]
    return "\n".join(lines) + "\n"


def _grid_lines(selection):
    """Per task and variant: the selected learning rate and weight decay, the grid
    that ran and whether the selection is still on its edge."""
    rows = [(task, name, chosen) for task, by_variant in selection.items()
            for name, chosen in by_variant.items() if "grid" in chosen]
    if not rows:
        return []
    still = [f"{task} {name} ({', '.join(chosen['edges'])})" for task, name, chosen in rows
             if chosen["at_grid_edge"]]
    lines = ["", "## Hyperparameter selection", "",
             "Selected on validation accuracy; a selection on a grid edge extends the grid "
             "past it. Still on an edge after the allowed extensions: "
             + ("; ".join(still) if still else "none") + ".", "",
             "| task | variant | learning rate | weight decay | learning rates run | "
             "weight decays run | extensions | at grid edge |", "|---" * 8 + "|"]
    for task, name, chosen in rows:
        grid = chosen["grid"]
        lines.append(f"| {task} | {name} | {chosen['learning_rate']:g} | "
                     f"{chosen['weight_decay']:g} | "
                     f"{', '.join(f'{v:g}' for v in grid['learning_rates'])} | "
                     f"{', '.join(f'{v:g}' for v in grid['weight_decays'])} | "
                     f"{chosen['grid_extensions']} | {'yes' if chosen['at_grid_edge'] else 'no'} |")
    return lines


def _difference_cell(difference):
    low, high = difference["ci95"]
    return (f"{difference['mean'] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}] "
            f"({difference['n']})")


def _gap_lines(gaps):
    """Deep-share minus No-share per training-set size, paired per seed, and its trend."""
    if not gaps:
        return []
    sizes = sorted({label for gap in gaps for label in gap["by_size"]}, key=int)
    lines = ["", "### Deep-share minus No-share by training-set size", "",
             "Test accuracy points, paired per seed: mean [95% CI] (seeds).", "",
             "| task | placement | " + " | ".join(f"{n} examples" for n in sizes) + " |",
             "|---|---" + "|---" * len(sizes) + "|"]
    for gap in gaps:
        lines.append(f"| {gap['task']} | {gap['placement'].upper()} | " + " | ".join(
            _difference_cell(gap["by_size"][n]) if n in gap["by_size"] else "n/a"
            for n in sizes) + " |")
    lines += ["", "Trend of the per-seed gap on log2(training examples):", ""]
    lines += [f"- {gap['sentence']}" for gap in gaps]
    return lines


def _training_length_lines(curve):
    """Validation accuracy (%) per variant against the training epochs (when measured)."""
    if not curve:
        return []
    epochs = curve["epochs"]
    lines = ["", f"Validation accuracy in % on {curve['task']} ({curve['split']}, seed "
             f"{curve['seed']}, selected settings) against the training epochs:", "",
             "| variant | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
             "|---" * (len(epochs) + 1) + "|"]
    for name, by_epochs in curve["validation_accuracy"].items():
        lines.append(f"| {name} | " + " | ".join(f"{by_epochs[str(e)] * 100:.1f}"
                                                 for e in epochs) + " |")
    return lines


def _text_training_length_lines(curve):
    """E2E validation BLEU x 100 against the optimizer steps (when measured)."""
    if not curve:
        return []
    steps = curve["steps"]
    return ["", f"E2E learning curve: validation BLEU x 100 on the first "
            f"{curve['validation_examples']} validation inputs, {curve['variant']} on "
            f"{_percent(curve['fraction'])} of the training set (seed {curve['seed']}, "
            "selected settings), against the optimizer steps:", "",
            "| variant | " + " | ".join(f"{n} steps" for n in steps) + " |",
            "|---" * (len(steps) + 1) + "|",
            f"| {curve['variant']} | " + " | ".join(
                f"{curve['validation_bleu'][str(n)] * 100:.1f}" for n in steps) + " |"]


def _text_lines(text):
    """The E2E section of `results.md` (nothing when the language half did not run)."""
    pretraining = text.get("pretraining")
    if not pretraining:
        return []
    config, corpus, curve = pretraining["config"], pretraining["corpus"], pretraining["loss_curve"]
    lines = ["", "## Language: GPT-2 pretrained here, then E2E", "",
             f"GPT-2 {config['num_layers']} layers, width {config['hidden_dim']}, byte-level BPE "
             f"vocabulary of {corpus['vocabulary_size']} learnt from the corpus, pretrained for "
             f"{config['steps']} steps of {config['batch_size']} x {config['sequence_length']} "
             f"tokens ({corpus['epochs_over_corpus']} passes) on "
             f"{corpus['training_texts']:,} texts ({corpus['training_tokens']:,} tokens) of "
             f"this corpus of {corpus['texts']:,} texts without any E2E text:", ""]
    lines += [f"- {source['name']} ({source['licence']}): {source['texts']:,} texts, "
              f"{source['characters']:,} characters" for source in corpus["sources"]]
    lines += ["", f"Training loss {curve[0]['loss']:.3f} (first {curve[0]['step']} steps) -> "
              f"{curve[-1]['loss']:.3f} (last); held-out loss {pretraining['held_out_loss']:.3f} "
              f"(random weights: {pretraining['held_out_loss_random_weights']:.3f}) on "
              f"{corpus['held_out_texts']:,} held-out texts (`text_pretraining.json` has the "
              "curve)."]
    if not text.get("variants"):
        return lines
    selected = ("hyperparameters selected on BLEU of the first "
                f"{text['validation_examples']} validation inputs"
                if any(s.get("validation_bleu") is not None for s in text["selection"].values())
                else "one learning rate and weight decay (no selection)")
    lines += ["", f"E2E test BLEU x 100 on the first {text['test_examples']} of the 630 test "
              f"inputs over seeds {', '.join(map(str, text['seeds']))}: mean ± std [95% CI, "
              f"Student t]; every run trains about {text['train_steps']} steps, {selected}. "
              f"Plot: `{text.get('plot')}`.", "", *_text_table(text)]
    lines += _text_training_length_lines(text.get("training_length"))
    lines += ["", "### Deep-share vs No-share on E2E", ""]
    lines += [f"- {row['sentence']}" for row in text["comparisons"]]
    if text.get("transfer"):
        lines += ["", "### Transfer: Deep-share on the pretrained vs the random-weight GPT-2", ""]
        lines += [f"- {row['sentence']}" for row in text["transfer"]]
    return lines


def plot_text_sample_efficiency(path, text):
    """Mean E2E test BLEU (95% CI band) against the training fraction, one line per variant."""
    labels = list(text["fractions"])
    percents = [text["fractions"][label]["fraction"] * 100 for label in labels]
    curves = {"e2e": {name: {f"{p:g}": by_fraction[label]
                             for p, label in zip(percents, labels) if label in by_fraction}
                      for name, by_fraction in text["variants"].items()}}
    plot_sample_efficiency(path, curves, [float(f"{p:g}") for p in percents],
                           xlabel="% of the E2E training set", ylabel="test BLEU")


def plot_sample_efficiency(path, sample_efficiency, sizes, xlabel="training examples",
                           ylabel="test accuracy (%)"):
    """One panel per task: mean test accuracy (95% CI band) against training examples,
    one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(sample_efficiency)
    figure, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for name, by_size in sample_efficiency[task].items():
            points = [(n, by_size[f"{n:g}"]) for n in sizes if f"{n:g}" in by_size]
            xs = [n for n, _ in points]
            axis.plot(xs, [s["mean"] * 100 for _, s in points], marker="o", label=name)
            axis.fill_between(xs, [s["ci95"][0] * 100 for _, s in points],
                              [s["ci95"][1] * 100 for _, s in points], alpha=0.15)
        axis.set_xscale("log")
        axis.set_title(task)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    plt.close(figure)
    files.write_bytes(path, image.getvalue())


def finite_summary(values):
    """`summarize` of the finite values (a diverged seed is dropped and counted)."""
    finite = [v for v in values if math.isfinite(v)]
    summary = summarize(finite)
    summary["diverged_seeds"] = len(values) - len(finite)
    return summary


def _source_accuracy(pretraining):
    """Held-out accuracy of every source factor head."""
    return ", ".join(f"{factor} {accuracy * 100:.1f}%"
                     for factor, accuracy in pretraining["held_out_factor_accuracy"].items())
