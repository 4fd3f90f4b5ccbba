"""Data pipelines and benchmark protocols.

Importing this package is cheap; the pipelines import TensorFlow and TFDS
when first used. The image benchmark families share one interface: each
module of `BENCHMARKS` has `lookup(name)`, `num_classes(name)`,
`num_examples(name, split)`, `prepare(name, data_dir, manual_dir)` and
`load(name, split, ...)` (batched `(image, label)`), and `benchmark(name)`
finds it. Training reads every image task, benchmarks and offline ones,
through `kprefix.data.image_tasks.load_image_task`.

>>> benchmark("vtab/smallnorb_azimuth").num_classes("vtab/smallnorb_azimuth")
18
>>> benchmark("fgvc/dogs").num_examples("fgvc/dogs", "test")
8580
"""

import importlib

# Benchmark family -> the module that implements its protocol.
BENCHMARKS = {"vtab": "kprefix.data.vtab", "fgvc": "kprefix.data.fgvc"}


def benchmark(name: str):
    """The module of the family that `name` ("vtab/<task>", "fgvc/<dataset>") belongs to."""
    family, _, rest = name.partition("/")
    if family not in BENCHMARKS or not rest:
        raise ValueError(f"Unknown image task {name!r}: expected 'vtab/<task>' or "
                         "'fgvc/<dataset>'.")
    return importlib.import_module(BENCHMARKS[family])
