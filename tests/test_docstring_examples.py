"""Every module's `>>>` examples run and show what they say.

The modules are found by walking the package, as keras-hub's docstring test
does, so a new module's examples are tested without being listed anywhere.
Examples marked `# doctest: +REQUIRES_BENCHMARK_DATA` or `+REQUIRES_JAVA`
are left out where that requirement is missing, and the test says so.
"""

import doctest
import importlib
import pathlib

import pytest

import kprefix
from kprefix.data.nlg_common import REQUIRES_BENCHMARK_DATA, locate_shared_data_dir
from kprefix.metrics.java import REQUIRES_JAVA, java_unavailable_reason

PACKAGE = pathlib.Path(kprefix.__file__).parent


def modules_with_examples():
    """Names of the kprefix modules whose source holds a `>>>` example."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _benchmark_data_missing():
    folder, origin = locate_shared_data_dir()
    if folder.is_dir():
        return None
    return f"the benchmark data folder {folder} (from {origin}) is absent"


def _unmet_requirements():
    """{doctest option flag: why its examples cannot run here} for every unmet requirement."""
    reasons = {REQUIRES_BENCHMARK_DATA: _benchmark_data_missing(),
               REQUIRES_JAVA: java_unavailable_reason()}
    return {flag: reason for flag, reason in reasons.items() if reason is not None}


def test_the_walk_finds_modules_and_packages():
    names = modules_with_examples()
    assert {"kprefix", "kprefix.data.nlg_e2e", "kprefix.theory.voronoi"} <= set(names)
    assert len(names) == len(set(names)) > 60


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    unmet = _unmet_requirements()
    left_out = set()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module):
        for example in list(test.examples):
            missing = [reason for flag, reason in unmet.items() if example.options.get(flag)]
            if missing:
                test.examples.remove(example)
                left_out.update(missing)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {name}'s examples failed (printed above)"
    assert result.attempted > 0 or left_out, f"{name} has no example that doctest finds"
    if left_out:
        pytest.skip(f"{name}: examples left out because {'; '.join(sorted(left_out))}")
