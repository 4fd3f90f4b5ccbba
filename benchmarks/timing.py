"""Side-by-side timing and peak memory, shared by the benchmark scripts.

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


def reset_peak_rss():
    """Resets this process's peak resident set size (Linux `/proc`)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib():
    """Peak resident set size of this process since start or `reset_peak_rss`, in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024  # kB
