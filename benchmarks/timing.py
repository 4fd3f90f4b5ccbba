"""Side-by-side timing and peak memory, shared by the benchmark scripts.

Example:

>>> from timing import side_by_side
>>> sorted(side_by_side({"a": lambda: None, "b": lambda: None}, repeats=3))
['a', 'b']
"""

import json
import statistics
import subprocess
import sys
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


def print_steady_state_peak(step):
    """Prints (as JSON) the peak resident memory of two calls of `step`
    after a first one (compilation, optimizer slots), in MiB (Linux `/proc`)."""
    step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set size (VmHWM)
    for _ in range(2):
        step()
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mib": int(line.split()[1]) / 1024}))  # kB


def peak_in_subprocess(script, *args):
    """Runs `python script *args` (which calls `print_steady_state_peak`); its peak in MiB."""
    out = subprocess.run([sys.executable, script, *args], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]
