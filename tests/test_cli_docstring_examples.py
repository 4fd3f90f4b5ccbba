"""The runnable examples in the command-line modules' docstrings."""

import doctest
import importlib

import pytest

MODULES = ["kprefix.flagfiles", "kprefix.logs", "kprefix.errors", "kprefix.flag_help", "kprefix.prefix.flags",
           "kprefix.prefix.config", "kprefix.data.nlg_common", "kprefix.sweep",
           "kprefix.data.synthetic_images", "kprefix.replicate.statistics",
           "kprefix.replicate.comparison", "kprefix.replicate.results",
           "kprefix.replicate.byte_pair_encoding", "kprefix.replicate.text_comparison",
           "kprefix.replicate.pretraining"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
