"""Result JSONs -> the paper's tables (Markdown, CSV) and Figure 2 (PNG).

    python -m kprefix.report --results_dir=runs/paper --output_dir=runs/paper/report

Reads every `*.json` under `--results_dir` that a launch wrote (it has
`eval_accuracy` and `flags`), keeps the final runs (`flags.eval_split` is
`test`), and groups them by `flags.dataset` and the run's family
(`kprefix.methods.run_family`: the prefix variant and placement, or the
comparison method: Finetune, Linear, Partial-k, LoRA, Adapter, VPT-Shallow /
VPT-Deep); each seed counts once. One row per family, with `Params (%)`, the
mean share of trainable parameters against the backbone (`results.json`'s
`trainable_percent`) over the table's runs. Writes:

* `vtab.md|csv`: accuracy per VTAB-1k task (mean +- std over seeds, in %)
  and the Natural / Specialized / Structured means (Table 5);
* `fgvc.md|csv`: accuracy per FGVC dataset and their mean (Table 6);
* `summary.md|csv`: FGVC mean and the three VTAB group means (Table 1);
* `prefix_lengths.md`: the prefix length of each task and prefix variant's
  final runs (the sweep's choice when `--prefix_lengths` was swept);
* `figure2.png`: per-dataset bars of the prefix variants (FGVC datasets
  when there are FGVC results, otherwise every dataset found);
* `language.md|csv` (Table 2), from text runs (`results.json` with
  `scores`; `flags.task` table_to_text or summarization): E2E BLEU, NIST,
  METEOR, ROUGE-L, CIDEr; WebNLG BLEU, METEOR and TER on the seen (S),
  unseen (U) and all (A) test entries; XSUM ROUGE-1/2/L. Scales as the
  paper prints them: E2E BLEU/METEOR/ROUGE-L and XSUM ROUGE x100, NIST and
  CIDEr as is, WebNLG BLEU x100 with METEOR and TER as fractions.

Vision tables and the figure are written when there are vision results, the
language table when there are text results. Beside each table `<name>.md|csv`,
`<name>_paper.md|csv` sets the paper's published value (`paper`, from
`kprefix.paper_results`: Tables 1, 2, 5, 6 and the comparison rows of 7 and
8) and the difference measured - paper (`diff`) after each measured column;
a cell the paper does not print reads "not in paper".

The std is the sample standard deviation (ddof=1; 0 for one seed). A group
mean is the mean of its tasks' mean accuracies, given only when every task
of the group has results (a partial mean would not compare with the paper).

Example:

>>> from kprefix.report import summarize
>>> cell = summarize([71.0, 73.0, 72.0])
>>> round(cell.mean, 2), round(cell.std, 2), cell.seeds
(72.0, 1.0, 3)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import statistics
import sys
from collections.abc import Mapping

from absl import app, flags

from kprefix import cli
from kprefix.methods import run_family
from kprefix.paper_results import paper_results

METHOD_NAMES = {
    "finetune": "Finetune",
    "linear": "Linear",
    "partial": "Partial",
    "lora": "LoRA",
    "adapter": "Adapter",
    "vpt": "VPT",
}
VARIANT_NAMES = {
    "deep_share": "Deep-share",
    "no_share": "No-share",
    "simple_share": "Simple-share",
    "linear_share": "Linear-share",
    "one_layer_share": "One-layer-share",
}
PLACEMENT_ORDER = ("deep", "shallow")
FINAL_SPLIT = "test"
PARAMS_COLUMN = "Params (%)"
NOT_IN_PAPER = "not in paper"


@dataclasses.dataclass(frozen=True)
class Cell:
    """Accuracy (%) of one task and variant over its seeds."""

    mean: float
    std: float
    seeds: int

    def text(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"


def summarize(accuracies) -> Cell:
    """Mean and sample std (0 for a single value) of accuracies in %."""
    values = list(accuracies)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Cell(statistics.fmean(values), std, len(values))


def _json_files(results_dir: str):
    """The JSON objects in the files under `results_dir` (searched recursively)."""
    for root, _, files in os.walk(results_dir):
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(root, name)) as f:
                    payload = json.load(f)
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(payload, dict):
                yield payload


def find_results(results_dir: str) -> list[dict]:
    """Every image-classification results JSON under `results_dir`."""
    return [p for p in _json_files(results_dir) if "eval_accuracy" in p and "flags" in p]


Key = tuple[str, str, str]  # (dataset, variant, placement)


def find_text_results(results_dir: str) -> list[dict]:
    """Every text-generation results JSON (it has `scores` and `flags.task`) under `results_dir`."""
    return [p for p in _json_files(results_dir)
            if isinstance(p.get("scores"), dict) and isinstance(p.get("flags"), dict)
            and p["flags"].get("task") in TEXT_TASKS]


TEXT_TASKS = ("table_to_text", "summarization")
WEBNLG_SUBSETS = (("S", "seen"), ("U", "unseen"), ("A", "all"))
# Table 2's columns: (column, dataset, metric key(s) in `scores`, scale).
LANGUAGE_COLUMNS = (
    [("E2E BLEU", "e2e", ("BLEU",), 100.0), ("E2E NIST", "e2e", ("NIST",), 1.0),
     ("E2E MET", "e2e", ("METEOR",), 100.0), ("E2E R-L", "e2e", ("ROUGE_L",), 100.0),
     ("E2E CIDEr", "e2e", ("CIDEr",), 1.0)]
    + [(f"WebNLG {metric} {short}", "webnlg", (key, subset), scale)
       for metric, key, scale in (("BLEU", "BLEU", 1.0), ("MET", "METEOR", 1.0),
                                  ("TER", "TER", 1.0))
       for short, subset in WEBNLG_SUBSETS]
    + [("XSUM R-1", "xsum", ("rouge1",), 1.0), ("XSUM R-2", "xsum", ("rouge2",), 1.0),
       ("XSUM R-L", "xsum", ("rougeL",), 1.0)])


def _metric(scores, path):
    value = scores
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def language_table(results) -> Table | None:
    """Table 2 from text results: final runs, mean +- std over seeds; None without any."""
    by_cell: dict[tuple[tuple[str, str], str], dict[int, float]] = {}
    for payload in results:
        run_flags = payload["flags"]
        if run_flags.get("eval_split", payload.get("eval_split")) != FINAL_SPLIT:
            continue
        if run_flags.get("max_eval_examples"):
            continue  # scored on part of the test split: not comparable with the paper
        family = run_family(run_flags)
        for column, dataset, path, scale in LANGUAGE_COLUMNS:
            if run_flags.get("dataset") != dataset:
                continue
            value = _metric(payload["scores"], path)
            if value is not None:
                by_cell.setdefault((family, column), {})[int(run_flags["seed"])] = scale * value
    if not by_cell:
        return None
    families = sorted({family for family, _ in by_cell}, key=_family_rank)
    columns = [c for c, *_ in LANGUAGE_COLUMNS if any(col == c for _, col in by_cell)]
    values = {(family_label(*family), column): summarize(seeds.values())
              for (family, column), seeds in by_cell.items()}
    shares = collect_parameter_shares(results)
    for family in families:
        values[(family_label(*family), PARAMS_COLUMN)] = _row_share(shares, *family)
    return _with_shares(columns, [family_label(*family) for family in families], values)


def collect(results) -> dict[Key, Cell]:
    """Final-run accuracies (%) per (dataset, variant, placement), one per seed."""
    by_key: dict[Key, dict[int, float]] = {}
    for payload in results:
        run_flags = payload["flags"]
        if run_flags.get("eval_split", payload.get("eval_split")) != FINAL_SPLIT:
            continue
        accuracy = float(payload["eval_accuracy"])
        if math.isnan(accuracy):
            continue
        key = (run_flags["dataset"], *run_family(run_flags))
        by_key.setdefault(key, {})[int(run_flags["seed"])] = 100.0 * accuracy
    return {key: summarize(seeds.values()) for key, seeds in by_key.items()}


def collect_parameter_shares(results) -> dict[Key, float]:
    """Mean `trainable_percent` of the final runs per (dataset, family)."""
    shares: dict[Key, list[float]] = {}
    for payload in results:
        run_flags = payload["flags"]
        share = payload.get("trainable_percent")
        if (run_flags.get("eval_split", payload.get("eval_split")) == FINAL_SPLIT
                and isinstance(share, (int, float))):
            key = (run_flags.get("dataset", ""), *run_family(run_flags))
            shares.setdefault(key, []).append(float(share))
    return {key: statistics.fmean(values) for key, values in shares.items()}


def _row_share(shares, variant, placement, datasets=None) -> float | None:
    found = [share for (dataset, v, p), share in shares.items()
             if (v, p) == (variant, placement) and (datasets is None or dataset in datasets)]
    return statistics.fmean(found) if found else None


def collect_prefix_lengths(results) -> dict[Key, list[int]]:
    """The prefix lengths of the final runs per (dataset, variant, placement)."""
    lengths: dict[Key, set[int]] = {}
    for payload in results:
        run_flags = payload["flags"]
        if run_flags.get("eval_split", payload.get("eval_split")) != FINAL_SPLIT:
            continue
        if run_flags.get("method", "prefix") != "prefix":
            continue
        key = (run_flags["dataset"], *run_family(run_flags))
        if "prefix_length" in run_flags:
            lengths.setdefault(key, set()).add(int(run_flags["prefix_length"]))
    return {key: sorted(values) for key, values in lengths.items()}


def prefix_lengths_markdown(lengths: Mapping[Key, list[int]]) -> str:
    """One row per dataset and variant: the prefix length(s) its final runs used."""
    lines = ["| dataset | variant | prefix length |", "|---|---|---|"]
    for (dataset, variant, placement), values in sorted(lengths.items()):
        lines.append(f"| {dataset} | {family_label(variant, placement)} | "
                     f"{', '.join(str(v) for v in values)} |")
    return "\n".join(lines) + "\n"


def family_label(variant: str, placement: str) -> str:
    """A row's label, as the paper prints it.

    >>> family_label("deep_share", "deep"), family_label("partial", "1")
    ('Deep-share DEEP', 'Partial-1')
    >>> family_label("vpt", "shallow"), family_label("lora", "")
    ('VPT-Shallow', 'LoRA')
    """
    if variant == "partial":
        return f"Partial-{placement}"
    if variant == "vpt":
        return f"VPT-{placement.capitalize()}"
    if variant in METHOD_NAMES:
        return METHOD_NAMES[variant]
    return f"{VARIANT_NAMES.get(variant, variant)} {placement.upper()}"


def _family_rank(family):
    """Comparison methods first (the paper's order), then prefixes, DEEP before SHALLOW."""
    variant, placement = family
    if variant in METHOD_NAMES:
        return (0, list(METHOD_NAMES).index(variant), placement, "")
    placement_rank = PLACEMENT_ORDER.index(placement) if placement in PLACEMENT_ORDER else 9
    variant_rank = list(VARIANT_NAMES).index(variant) if variant in VARIANT_NAMES else 99
    return (1, placement_rank, placement, variant_rank, variant)


def _rows(cells) -> list[tuple[str, str]]:
    return sorted({(variant, placement) for _, variant, placement in cells}, key=_family_rank)


def benchmark_groups() -> dict[str, dict[str, list[str]]]:
    """{'vtab': {'Natural': [tasks...], ...}, 'fgvc': {'FGVC': [datasets...]}}."""
    from kprefix.data import fgvc, vtab

    groups: dict[str, list[str]] = {}
    for name, task in vtab.TASKS.items():
        groups.setdefault(task.group.capitalize(), []).append(name)
    return {"vtab": groups, "fgvc": {"FGVC": list(fgvc.DATASETS)}}


@dataclasses.dataclass
class Table:
    """A results table: row labels, column names and cells (None where missing)."""

    columns: list[str]
    rows: list[str]
    values: dict[tuple[str, str], Cell | float | None]

    def to_markdown(self) -> str:
        lines = ["| Variant | " + " | ".join(self.columns) + " |",
                 "|---|" + "---|" * len(self.columns)]
        for row in self.rows:
            cells = []
            for column in self.columns:
                value = self.values.get((row, column))
                cells.append("–" if value is None else value if isinstance(value, str) else
                             value.text() if isinstance(value, Cell) else f"{value:.2f}")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def write_csv(self, path: str) -> None:
        header = ["variant"]
        for column in self.columns:
            is_cell = any(isinstance(self.values.get((r, column)), Cell) for r in self.rows)
            header += [column, f"{column}_std", f"{column}_seeds"] if is_cell else [column]
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in self.rows:
                line = [row]
                for column in self.columns:
                    value = self.values.get((row, column))
                    if f"{column}_std" in header:
                        line += (["", "", ""] if value is None else
                                 [f"{value.mean:.4f}", f"{value.std:.4f}", value.seeds])
                    else:
                        line.append("" if value is None else value if isinstance(value, str)
                                    else f"{value:.4f}")
                writer.writerow(line)


def with_paper_values(table: Table, name: str) -> Table:
    """`table` with `<column> paper` and `<column> diff` (measured - paper)
    after each measured column; `name` is the report table (`summary`,
    `fgvc`, `vtab` or `language`).

    >>> measured = Table(["cub"], ["Deep-share DEEP"], {("Deep-share DEEP", "cub"): 88.8})
    >>> print(with_paper_values(measured, "fgvc").to_markdown(), end="")
    | Variant | cub | cub paper | cub diff |
    |---|---|---|---|
    | Deep-share DEEP | 88.80 | 87.80 | 1.00 |
    """
    published = paper_results()
    columns, values = [], dict(table.values)
    for column in table.columns:
        columns.append(column)
        if column == PARAMS_COLUMN:
            continue
        columns += [f"{column} paper", f"{column} diff"]
        for row in table.rows:
            measured = table.values.get((row, column))
            paper = published.get((name, row, column))
            values[(row, f"{column} paper")] = NOT_IN_PAPER if paper is None else paper.value
            if measured is not None and paper is not None:
                mean = measured.mean if isinstance(measured, Cell) else measured
                values[(row, f"{column} diff")] = mean - paper.value
    return Table(columns, table.rows, values)


def group_mean(cells: Mapping[Key, Cell], tasks, variant, placement) -> float | None:
    """Mean over the tasks' mean accuracies; None unless every task has results."""
    found = [cells.get((task, variant, placement)) for task in tasks]
    if any(cell is None for cell in found):
        return None
    return statistics.fmean(cell.mean for cell in found)


def benchmark_table(cells, groups: Mapping[str, list[str]], mean_names,
                    shares=None) -> Table:
    """Per-task cells (tasks with results, in benchmark order) plus group
    means, after the parameter share over the table's tasks."""
    rows = _rows(cells)
    tasks_seen = {dataset for dataset, _, _ in cells}
    columns, values = [], {}
    in_table = {task for tasks in groups.values() for task in tasks}
    for variant, placement in rows:
        values[(family_label(variant, placement), PARAMS_COLUMN)] = _row_share(
            shares or {}, variant, placement, in_table)
    for group, tasks in groups.items():
        for task in tasks:
            if task in tasks_seen:
                columns.append(task.split("/", 1)[1])
                for variant, placement in rows:
                    values[(family_label(variant, placement), columns[-1])] = cells.get(
                        (task, variant, placement))
        columns.append(mean_names[group])
        for variant, placement in rows:
            values[(family_label(variant, placement), columns[-1])] = group_mean(
                cells, tasks, variant, placement)
    return _with_shares(columns, [family_label(*row) for row in rows], values)


def summary_table(cells, groups, shares=None) -> Table:
    """FGVC mean and VTAB Natural / Specialized / Structured means (Tables
    1 and 7), after the parameter share over all runs."""
    rows = _rows(cells)
    named = [("FGVC mean", groups["fgvc"]["FGVC"])] + [
        (f"VTAB {group}", tasks) for group, tasks in groups["vtab"].items()]
    values = {}
    for variant, placement in rows:
        values[(family_label(variant, placement), PARAMS_COLUMN)] = _row_share(
            shares or {}, variant, placement)
        for column, tasks in named:
            values[(family_label(variant, placement), column)] = group_mean(
                cells, tasks, variant, placement)
    return _with_shares([name for name, _ in named], [family_label(*row) for row in rows],
                        values)


def _with_shares(columns, rows, values) -> Table:
    """The table, with the parameter share first when any run recorded one."""
    if any(values.get((row, PARAMS_COLUMN)) is not None for row in rows):
        columns = [PARAMS_COLUMN] + columns
    return Table(columns, rows, values)


def plot_figure2(cells, groups, path: str) -> None:
    """Bars per dataset for each variant, one panel per placement (Figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fgvc_names = [d for d in groups["fgvc"]["FGVC"] if any(k[0] == d for k in cells)]
    ordered = [t for g in groups["vtab"].values() for t in g] + groups["fgvc"]["FGVC"]
    datasets = fgvc_names or [d for d in ordered if any(k[0] == d for k in cells)]
    rows = [row for row in _rows(cells) if row[0] in VARIANT_NAMES] or _rows(cells)
    placements = [p for p in PLACEMENT_ORDER if any(r[1] == p for r in rows)] or \
        sorted({r[1] for r in rows})
    figure, axes = plt.subplots(len(placements), 1, squeeze=False,
                                figsize=(max(6.0, 1.6 * len(datasets)), 3.6 * len(placements)))
    for axis, placement in zip(axes[:, 0], placements):
        variants = [v for v, p in rows if p == placement]
        width = 0.8 / max(1, len(variants))
        for i, variant in enumerate(variants):
            found = [cells.get((d, variant, placement)) for d in datasets]
            positions = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(datasets))]
            axis.bar(positions, [c.mean if c else 0.0 for c in found], width,
                     yerr=[c.std if c else 0.0 for c in found], capsize=3,
                     label=VARIANT_NAMES.get(variant, variant))
        axis.set_xticks(range(len(datasets)), [d.split("/", 1)[1] for d in datasets])
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"{placement.upper()} prefixes")
        axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(results_dir: str, output_dir: str) -> dict[str, str]:
    """Writes the tables and Figure 2; returns {name: path} of what it wrote."""
    results = find_results(results_dir)
    cells = collect(results)
    shares = collect_parameter_shares(results)
    language = language_table(find_text_results(results_dir))
    if not cells and language is None:
        raise FileNotFoundError(
            f"No final results (results JSON with flags.eval_split='{FINAL_SPLIT}') under "
            f"--results_dir={results_dir!r}; point it at the sweep's folder.")
    groups = benchmark_groups()
    os.makedirs(output_dir, exist_ok=True)
    tables = {}
    if cells:
        tables = {
            "vtab": benchmark_table(cells, groups["vtab"],
                                    {g: f"{g} mean" for g in groups["vtab"]}, shares),
            "fgvc": benchmark_table(cells, groups["fgvc"], {"FGVC": "Mean"}, shares),
            "summary": summary_table(cells, groups, shares),
        }
    if language is not None:
        tables["language"] = language
    written = {}
    for name, table in tables.items():
        for file_name, content in ((name, table),
                                   (f"{name}_paper", with_paper_values(table, name))):
            written[f"{file_name}.md"] = os.path.join(output_dir, f"{file_name}.md")
            with open(written[f"{file_name}.md"], "w") as f:
                f.write(content.to_markdown())
            written[f"{file_name}.csv"] = os.path.join(output_dir, f"{file_name}.csv")
            content.write_csv(written[f"{file_name}.csv"])
    if cells:
        written["prefix_lengths.md"] = os.path.join(output_dir, "prefix_lengths.md")
        with open(written["prefix_lengths.md"], "w") as f:
            f.write(prefix_lengths_markdown(collect_prefix_lengths(results)))
        written["figure2.png"] = os.path.join(output_dir, "figure2.png")
        plot_figure2(cells, groups, written["figure2.png"])
    return written


FLAGS = flags.FLAGS


def define_flags():
    """The command's flags; defined only when it runs, so importing stays free of them."""
    flags.DEFINE_string("results_dir", None, "Folder searched recursively for results JSONs.")
    flags.DEFINE_string("output_dir", None, "Where the tables and figure2.png go.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.results_dir or not FLAGS.output_dir:
        raise app.UsageError("Set --results_dir (results to read) and --output_dir (tables).")
    try:
        written = write_report(FLAGS.results_dir, FLAGS.output_dir)
    except FileNotFoundError as error:
        print(f"kprefix.report: {error}", file=sys.stderr)
        sys.exit(1)
    for name in ("summary_paper.md", "language_paper.md"):
        if name in written:
            with open(written[name]) as f:
                print(f.read())
    print("Wrote:\n" + "\n".join(f"  {path}" for path in written.values()))


def console_main():
    """The `kprefix-report` console script."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    console_main()
