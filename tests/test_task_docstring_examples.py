"""The examples in the docstrings of the public API and its task modules run."""

import doctest
import importlib

import pytest

MODULES = ["kprefix", "kprefix.backbones", "kprefix.backbones.hub", "kprefix.prefix.tuning",
           "kprefix.tasks.image_classifier", "kprefix.tasks.image_preprocessors",
           "kprefix.tasks.prefixed", "kprefix.tasks.tokenizers"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
