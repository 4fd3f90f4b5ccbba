"""A hyperparameter grid that grows past an edge its selection lands on.

A selection at the edge of its grid says only that the best value may lie
beyond it. After the grid runs, `extend_grid` looks at the selected learning
rate and weight decay: on an edge of an axis that was searched (two or more
values), it adds the next value beyond that edge, at the axis' own ratio
there (`next_beyond`), and those points run too; this repeats up to a bounded
number of times. A weight decay of 0 is a natural lower end, not an edge.
`at_grid_edge` stays true only when the selection is still on an edge after
the last allowed extension.

Example:

>>> next_beyond([0.3, 1, 3], "upper"), next_beyond([0.3, 1, 3], "lower")
(9.0, 0.09)
>>> next_beyond([0, 0.001], "upper")
0.01
>>> edges([0.3, 1, 3], [0, 0.001], learning_rate=3, weight_decay=0)
['learning_rate upper']
>>> extend_grid([0.3, 1, 3], [0, 0.001], learning_rate=3, weight_decay=0.001)
([0.3, 1, 3, 9.0], [0, 0.001, 0.01])
"""

FALLBACK_RATIO = 10.0  # beyond an edge whose spacing cannot be read (from 0)


def _rounded(value):
    """Three significant digits, so workdir names stay short (0.3 / 3.33 -> 0.09)."""
    return float(f"{value:.3g}")


def next_beyond(values, edge):
    """The next value beyond the `'lower'` or `'upper'` edge of a searched axis: the edge
    value times (or divided by) the ratio of the two outermost values there, or
    `FALLBACK_RATIO` when that ratio is not above 1 (an axis starting at 0)."""
    ordered = sorted(float(v) for v in values)
    if len(ordered) < 2:
        raise ValueError(f"An axis of one value ({ordered}) has no spacing to extend by.")
    if edge == "upper":
        inner, outer = ordered[-2], ordered[-1]
        ratio = outer / inner if inner > 0 else FALLBACK_RATIO
        return _rounded(outer * (ratio if ratio > 1 else FALLBACK_RATIO))
    if edge == "lower":
        inner, outer = ordered[1], ordered[0]
        if outer <= 0:
            raise ValueError(f"No value below {outer}: 0 is the natural lower end.")
        ratio = inner / outer
        return _rounded(outer / (ratio if ratio > 1 else FALLBACK_RATIO))
    raise ValueError(f"edge must be 'lower' or 'upper', got {edge!r}.")


def _axis_edges(name, values, selected):
    ordered = sorted(float(v) for v in values)
    if len(ordered) < 2:
        return []  # one value: a fixed setting, not a search
    found = []
    if float(selected) == ordered[0] and ordered[0] > 0:
        found.append(f"{name} lower")
    if float(selected) == ordered[-1]:
        found.append(f"{name} upper")
    return found


def edges(learning_rates, weight_decays, learning_rate, weight_decay):
    """The edges the selection lies on, e.g. `['learning_rate upper']` (empty: interior)."""
    return (_axis_edges("learning_rate", learning_rates, learning_rate)
            + _axis_edges("weight_decay", weight_decays, weight_decay))


def extend_grid(learning_rates, weight_decays, learning_rate, weight_decay):
    """`(learning_rates, weight_decays)` with the next value beyond every edge the
    selection lies on (unchanged when it is interior)."""
    axes = {"learning_rate": list(learning_rates), "weight_decay": list(weight_decays)}
    for edge in edges(learning_rates, weight_decays, learning_rate, weight_decay):
        name, side = edge.split()
        beyond = next_beyond(axes[name], side)
        axes[name] = [beyond, *axes[name]] if side == "lower" else [*axes[name], beyond]
    return axes["learning_rate"], axes["weight_decay"]
