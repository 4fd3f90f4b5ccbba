"""Summaries of per-seed scores: mean, sample std, Student-t 95% confidence intervals.

Example:

>>> from kprefix.replicate.statistics import summarize, paired_difference
>>> summary = summarize([0.8, 0.9, 1.0])
>>> round(summary["mean"], 3), round(summary["std"], 3), [round(x, 3) for x in summary["ci95"]]
(0.9, 0.1, [0.652, 1.148])
>>> difference = paired_difference([0.9, 0.8, 0.7], [0.8, 0.8, 0.6])
>>> round(difference["mean"], 3), difference["paired"]
(0.067, True)
>>> trend = log_size_trend([50, 50, 100, 100, 200, 200], [0.08, 0.06, 0.05, 0.03, 0.02, 0.0])
>>> round(trend["slope_per_doubling"], 3), [round(x, 3) for x in trend["ci95"]]
(-0.03, [-0.047, -0.013])
"""

import math

import numpy as np


def _t_quantile(degrees_of_freedom):
    from scipy import stats

    return float(stats.t.ppf(0.975, degrees_of_freedom))


def summarize(values):
    """`{"mean", "std", "ci95": [low, high], "n", "values"}` of finite `values`.

    `std` is the sample standard deviation (n-1); with one value std is 0 and
    the interval is the value itself (no spread can be estimated).
    """
    values = [float(v) for v in values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"Cannot summarize {values}: every value must be a finite number.")
    mean = float(np.mean(values))
    if len(values) == 1:
        return {"mean": mean, "std": 0.0, "ci95": [mean, mean], "n": 1, "values": values}
    std = float(np.std(values, ddof=1))
    half = _t_quantile(len(values) - 1) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": len(values),
            "values": values}


def paired_difference(first, second):
    """Summary of `first - second`: per seed when both have the same number of
    values (`paired: True`), else Welch's interval on the two means."""
    first, second = [float(v) for v in first], [float(v) for v in second]
    if len(first) == len(second):
        summary = summarize(np.subtract(first, second))
        return {**summary, "paired": True}
    from scipy import stats

    a, b = summarize(first), summarize(second)
    mean = a["mean"] - b["mean"]
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    dof = (va + vb) ** 2 / max(1e-30, va ** 2 / max(1, a["n"] - 1) + vb ** 2 / max(1, b["n"] - 1))
    half = float(stats.t.ppf(0.975, dof)) * math.sqrt(va + vb)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": min(a["n"], b["n"]),
            "paired": False}


def verdict(difference, better, worse, where):
    """One sentence: does `better` beat `worse` on `where`, with the interval."""
    low, high = difference["ci95"]
    if difference["n"] < 2:
        return (f"{where}: one seed ({difference['mean'] * 100:+.2f} points) cannot say "
                f"whether {better} beats {worse}.")
    interval = (f"{difference['mean'] * 100:+.2f} points, 95% CI [{low * 100:+.2f}, "
                f"{high * 100:+.2f}]{', paired over seeds' if difference['paired'] else ''}")
    if low > 0:
        outcome = f"{better} beats {worse}"
    elif high < 0:
        outcome = f"{better} is worse than {worse}"
    else:
        outcome = f"{better} does not significantly differ from {worse}"
    return f"{where}: {outcome} ({interval})."


def log_size_trend(sizes, differences):
    """Least-squares line of per-seed `differences` on log2 of their training-set `sizes`:
    `{"slope_per_doubling", "ci95", "intercept_at_one", "n", "sizes"}`.

    The slope is how much the difference changes when the data doubles; its
    95% interval is Student t with n - 2 degrees of freedom on the usual
    standard error of an ordinary least-squares slope. A negative slope whose
    interval excludes zero says the difference grows as data shrinks.
    """
    x = np.log2(np.asarray(sizes, dtype="float64"))
    y = np.asarray(differences, dtype="float64")
    if x.shape != y.shape or len(x) < 3:
        raise ValueError(f"Need as many sizes as differences, at least 3 (got {len(x)} sizes "
                         f"and {len(y)} differences).")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"Cannot fit {y.tolist()}: every difference must be a finite number.")
    spread = np.sum((x - x.mean()) ** 2)
    if spread == 0:
        raise ValueError("Every difference comes from one size: no trend can be fitted.")
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / spread)
    intercept = float(y.mean() - slope * x.mean())
    residuals = y - (intercept + slope * x)
    standard_error = math.sqrt(float(np.sum(residuals ** 2)) / (len(x) - 2) / spread)
    half = _t_quantile(len(x) - 2) * standard_error
    return {"slope_per_doubling": slope, "ci95": [slope - half, slope + half],
            "standard_error": standard_error, "intercept_at_one": intercept, "n": len(x),
            "sizes": sorted({int(s) for s in sizes})}
