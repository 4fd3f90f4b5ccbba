"""Without prefixes, every wrapped backbone computes exactly what keras-hub does."""

import keras
import numpy as np
import pytest

from helpers import bart_inputs, gpt2_inputs, images, prefix_config
from kprefix.backbones import build_backbone
from kprefix.prefix import PrefixConfig, PrefixTuning

INPUTS = {"vit_tiny": images, "gpt2_tiny": gpt2_inputs, "bart_tiny": bart_inputs}


def _outputs(backbone, inputs):
    return [np.asarray(t) for t in keras.tree.flatten(backbone(inputs))]


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_uninstalled_prefix_gives_exact_keras_hub_outputs(name):
    inputs = INPUTS[name]()
    untouched = build_backbone(name, seed=3)
    wrapped = build_backbone(name, seed=3)
    want = _outputs(untouched, inputs)
    tuning = PrefixTuning(wrapped, prefix_config("deep_share"), seed=0)
    with_prefix = _outputs(wrapped, inputs)
    assert any(not np.array_equal(a, b) for a, b in zip(with_prefix, want))
    tuning.uninstall()
    for got, expected in zip(_outputs(wrapped, inputs), want):
        np.testing.assert_array_equal(got, expected)


def test_placement_selects_layers_per_attention_kind():
    backbone = build_backbone("bart_tiny")
    shallow = PrefixTuning(backbone, PrefixConfig(
        "no_share", "shallow", length=2))
    assert shallow.site_names == ["encoder_0", "decoder_0", "cross_0"]
    shallow.uninstall()
    listed = PrefixTuning(backbone, PrefixConfig(
        "no_share", (1,), length=2))
    assert listed.site_names == ["encoder_1", "decoder_1", "cross_1"]
    listed.uninstall()
    with pytest.raises(ValueError, match="only 2 layers"):
        PrefixTuning(backbone, PrefixConfig("no_share", (5,), length=2))
