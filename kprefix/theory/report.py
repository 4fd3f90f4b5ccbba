"""Rates from the fits: log-log slopes with bootstrap intervals, and the JSON, Markdown and PNG outputs.

For every ``(setting, truth, specification, loss)`` the mean loss over
repetitions is computed at each sample size and a line is fitted to
``log(mean loss)`` against ``log(n)``.  Its slope is the empirical rate; the
95% interval comes from resampling repetitions with replacement (the same
repetitions at every ``n``, since one repetition's data sets are nested).

Example:
    >>> records = [{"setting": "shared_linear", "truth": "random", "specification": "exact",
    ...             "num_fitted": 2, "sample_size": n, "repetition": r,
    ...             "losses": {"D2": (1.0 + 0.1 * r) / n ** 0.5}, "gradient_norm": 1e-9,
    ...             "objective_gain": 1.0}
    ...            for n in (100, 1000, 10000) for r in range(5)]
    >>> row = summarize(records, bootstrap_samples=200, seed=0)[0]
    >>> round(row["slope"], 3), round(row["slope_ci"][0], 3)
    (-0.5, -0.5)
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

import numpy as np

from kprefix.theory.settings import SETTING_DESCRIPTIONS


def loglog_slope(sample_sizes: np.ndarray, mean_losses: np.ndarray) -> float:
    """Least-squares slope of ``log(mean_losses)`` against ``log(sample_sizes)``."""
    slope, _ = np.polyfit(np.log(sample_sizes), np.log(mean_losses), 1)
    return float(slope)


def expected_behaviour(setting: str, truth: str, specification: str) -> str:
    """What the paper (or, where the paper is silent, classical theory) predicts."""
    if setting != "nonshared":
        return "<= -0.5 (up to log n)"
    if truth == "random" and specification == "exact":
        return "-0.5 (regular fit; outside Thm 4.1's worst case)"
    return "no polynomial rate (Thm 4.1)"


def summarize(records: Sequence[Dict], bootstrap_samples: int = 2000, seed: int = 0) -> List[Dict]:
    """One row per (setting, truth, specification, loss) with slope, CI and per-n statistics."""
    rng = np.random.default_rng(seed)
    key_of = lambda r: (r["setting"], r["truth"], r["specification"])
    rows = []
    groups: Dict[tuple, List[Dict]] = {}
    for record in records:
        groups.setdefault(key_of(record), []).append(record)
    for (setting, truth, specification), group in groups.items():
        sizes = np.array(sorted({r["sample_size"] for r in group}))
        repetitions = sorted({r["repetition"] for r in group})
        by_cell = {(r["sample_size"], r["repetition"]): r for r in group}
        for loss_name in group[0]["losses"]:
            losses = np.array([[by_cell[(n, rep)]["losses"][loss_name] for rep in repetitions] for n in sizes])
            means = losses.mean(axis=1)
            slope = loglog_slope(sizes, means)
            draws = rng.integers(0, len(repetitions), size=(bootstrap_samples, len(repetitions)))
            boot = [loglog_slope(sizes, losses[:, draw].mean(axis=1)) for draw in draws]
            gradients = np.array([r["gradient_norm"] for r in group])
            gains = np.array([r["objective_gain"] for r in group])
            rows.append({
                "setting": setting,
                "truth": truth,
                "specification": specification,
                "num_fitted": group[0]["num_fitted"],
                "loss": loss_name,
                "sample_sizes": sizes.tolist(),
                "mean_loss": means.tolist(),
                "standard_error": (losses.std(axis=1, ddof=1) / np.sqrt(len(repetitions))).tolist()
                if len(repetitions) > 1 else [0.0] * len(sizes),
                "median_loss": np.median(losses, axis=1).tolist(),
                "slope": slope,
                "slope_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                "intercept": float(np.mean(np.log(means)) - slope * np.mean(np.log(sizes))),
                "loss_at_largest_n": float(means[-1]),
                "median_gradient_norm": float(np.median(gradients)),
                "max_gradient_norm": float(np.max(gradients)),
                "min_objective_gain": float(np.min(gains)),
                "expected": expected_behaviour(setting, truth, specification),
            })
    return rows


def markdown_table(rows: Sequence[Dict]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| setting | truth | spec (L) | loss | slope | 95% CI | expected slope | mean loss at n_max | median / max grad |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = row["slope_ci"]
        lines.append(
            f"| {row['setting']} | {row['truth']} | {row['specification']} ({row['num_fitted']}) "
            f"| {row['loss']} | {row['slope']:.2f} | [{low:.2f}, {high:.2f}] | {row['expected']} "
            f"| {row['loss_at_largest_n']:.3g} (n={row['sample_sizes'][-1]}) "
            f"| {row['median_gradient_norm']:.0e} / {row['max_gradient_norm']:.0e} |"
        )
    return "\n".join(lines) + "\n"


_STYLES = (("o", "--"), ("s", ":"), ("^", "-."))


def plot_rates(rows: Sequence[Dict], path: str) -> None:
    """Log-log plot of mean loss against n with fitted lines: one panel per (truth, setting).

    Points are mean losses with error bars of two standard errors; blue is
    the exact fit, red the over-specified one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(row["setting"] for row in rows))
    truths = list(dict.fromkeys(row["truth"] for row in rows))
    figure, axes = plt.subplots(
        len(truths), len(settings), figsize=(4.2 * len(settings), 3.6 * len(truths)), squeeze=False
    )
    color_of = {"exact": "tab:blue", "over": "tab:red"}
    losses_of = {}  # per setting, its losses in order of appearance; each gets a marker and line style
    for row in rows:
        axis = axes[truths.index(row["truth"]), settings.index(row["setting"])]
        color = color_of.get(row["specification"], "tab:gray")
        setting_losses = losses_of.setdefault(row["setting"], [])
        if row["loss"] not in setting_losses:
            setting_losses.append(row["loss"])
        marker, line = _STYLES[setting_losses.index(row["loss"]) % len(_STYLES)]
        sizes = np.array(row["sample_sizes"], dtype=float)
        means = np.array(row["mean_loss"])
        errors = 2.0 * np.array(row["standard_error"])
        axis.errorbar(sizes, means, yerr=np.minimum(errors, 0.95 * means), fmt=marker, color=color,
                      markersize=4, capsize=2)
        axis.plot(sizes, np.exp(row["intercept"]) * sizes ** row["slope"], line, color=color,
                  label=f"{row['specification']} (L={row['num_fitted']}) {row['loss']}: slope {row['slope']:.2f}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(f"{SETTING_DESCRIPTIONS.get(row['setting'], row['setting'])}\ntruth: {row['truth']}",
                       fontsize=9)
        axis.set_xlabel("sample size n")
        axis.set_ylabel("Voronoi loss")
        axis.grid(True, which="both", alpha=0.3)
    for axis in axes.ravel():
        if axis.has_data():
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_outputs(output_dir: str, config: Dict, records: Sequence[Dict], rows: Sequence[Dict],
                  extra: Dict) -> Dict[str, str]:
    """Write ``results.json``, ``results.md`` and ``rates.png``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {
        "json": os.path.join(output_dir, "results.json"),
        "table": os.path.join(output_dir, "results.md"),
        "plot": os.path.join(output_dir, "rates.png"),
    }
    with open(paths["json"], "w") as handle:
        json.dump({"config": config, **extra, "summary": list(rows), "fits": list(records)}, handle, indent=1)
    with open(paths["table"], "w") as handle:
        handle.write(markdown_table(rows))
    plot_rates(rows, paths["plot"])
    return paths
