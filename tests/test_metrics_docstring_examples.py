"""The short examples in the metric modules' docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["kprefix.metrics.coco_caption", "kprefix.metrics.e2e", "kprefix.metrics.java",
           "kprefix.metrics.meteor", "kprefix.metrics.mteval", "kprefix.metrics.multi_bleu",
           "kprefix.metrics.ptb_tokenizer", "kprefix.metrics.rouge", "kprefix.metrics.ter",
           "kprefix.metrics.webnlg"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
