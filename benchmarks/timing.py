"""Side-by-side timing shared by the benchmark scripts.

Example:

>>> from timing import side_by_side
>>> sorted(side_by_side({"a": lambda: None, "b": lambda: None}, repeats=3))
['a', 'b']
"""

import statistics
import time


def side_by_side(callables, repeats, warmup=1):
    """`{name: median seconds}` of zero-argument callables.

    Each callable first runs `warmup` times (compilation); then the timed
    runs alternate between the callables, so that load on the machine
    affects every variant alike.
    """
    for fn in callables.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in callables}
    for _ in range(repeats):
        for name, fn in callables.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
