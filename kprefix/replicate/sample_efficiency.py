"""The sample-efficiency curve: chosen variants rerun on fewer training examples, and the gap.

Each (task, variant) reruns with the hyperparameters selected on the full
1,000 examples, on the first `N` training examples (`train<N>`) for every
size `N`, with many seeds where the gap is noisy (the small sizes) and fewer
where it is not. With `matched steps` every size trains about as many
optimizer steps as the 1,000-example runs (epochs and warm-up epochs scaled
up by the ratio of batches per epoch), so the sizes differ in the data they
see, not in compute. Layout:

    <runs_dir>/<task>/<variant>/train<N>/final/seed<seed>/results.json

The gap is Deep-share minus No-share, paired per seed at each size (the
1,000-example runs included), and its trend is the least-squares slope of the
per-seed gaps on log2 of the size (`statistics.log_size_trend`): a negative
slope whose interval excludes zero says sharing matters more as data shrinks.

Example:

>>> matched_schedule(50, full_size=1000, batch_size=32, epochs=5, warmup_epochs=1)
{'epochs': 155, 'warmup_epochs': 31}
>>> seeds_by_size([50, 400], seeds=[1, 2, 3, 4], seed_counts=[4, 2])
{50: [1, 2, 3, 4], 400: [1, 2]}
"""

from kprefix.replicate.statistics import log_size_trend, paired_difference

FULL_SIZE = 1000  # the mini-VTAB train800val200 split the comparison's seed runs train on


def matched_schedule(size, full_size, batch_size, epochs, warmup_epochs):
    """`{"epochs", "warmup_epochs"}` that give `size` training examples about the
    optimizer steps (and the warm-up share) of `epochs` on `full_size` examples,
    with `size // batch_size` batches per epoch."""
    batches = size // batch_size
    if batches < 1:
        raise ValueError(f"{size} training examples make no batch of {batch_size}; use a "
                         "larger size or a smaller --batch_size launch flag.")
    factor = (full_size // batch_size) / batches
    return {"epochs": max(epochs, round(epochs * factor)),
            "warmup_epochs": round(warmup_epochs * factor)}


def seeds_by_size(sizes, seeds, seed_counts=()):
    """The seeds each size runs: the first `seed_counts[i]` of `seeds` for `sizes[i]`
    (no counts: every seed at every size)."""
    if seed_counts and len(seed_counts) != len(sizes):
        raise ValueError(f"{len(seed_counts)} seed counts for {len(sizes)} sizes: give one per "
                         "size.")
    counts = seed_counts or [len(seeds)] * len(sizes)
    if any(not 1 <= c <= len(seeds) for c in counts):
        raise ValueError(f"Seed counts {list(counts)}: each must be between 1 and the "
                         f"{len(seeds)} seeds.")
    return {size: list(seeds[:count]) for size, count in zip(sizes, counts)}


def gap_by_size(curves, task, placement):
    """Deep-share minus No-share on one task and placement, from `curves`
    (task -> variant -> size label -> summary with per-seed `values`): per size, the
    paired difference, and the trend of the per-seed gaps on log2(size); None when
    either variant is missing."""
    deep = curves.get(task, {}).get(f"deep_share-{placement}")
    none = curves.get(task, {}).get(f"no_share-{placement}")
    if not deep or not none:
        return None
    by_size, sizes, gaps = {}, [], []
    for label in sorted(set(deep) & set(none), key=int):
        first, second = deep[label]["values"], none[label]["values"]
        by_size[label] = paired_difference(first, second)
        if len(first) == len(second):
            sizes += [int(label)] * len(first)
            gaps += [a - b for a, b in zip(first, second)]
    trend = log_size_trend(sizes, gaps) if len(set(sizes)) >= 2 and len(gaps) >= 3 else None
    return {"task": task, "placement": placement, "by_size": by_size, "trend": trend,
            "sentence": trend_sentence(task, placement, trend)}


def trend_sentence(task, placement, trend):
    """One sentence on whether the gap widens as the training set shrinks."""
    where = f"{task}, {placement.upper()}"
    if trend is None:
        return f"{where}: too few paired sizes to fit a trend."
    low, high = trend["ci95"]
    slope = (f"{trend['slope_per_doubling'] * 100:+.2f} points per doubling of the training "
             f"set, 95% CI [{low * 100:+.2f}, {high * 100:+.2f}], over {trend['n']} paired "
             "seed runs")
    if high < 0:
        outcome = "the Deep-share minus No-share gap widens as data shrinks"
    elif low > 0:
        outcome = "the Deep-share minus No-share gap narrows as data shrinks"
    else:
        outcome = "no significant trend of the Deep-share minus No-share gap with data size"
    return f"{where}: {outcome} ({slope})."
