"""Backbone dropout switch, reference initialisers and Simple-share dropout
placement, checked on the values they produce."""

import math

import keras
import numpy as np
import pytest

from helpers import gpt2_inputs, images, prefix_config
from kprefix.backbones import build_backbone
from kprefix.prefix import PrefixConfig
from kprefix.prefix.generators import DeepSharePrefix, SimpleSharePrefix
from kprefix.tasks import PrefixGPT2CausalLM, PrefixImageClassifier
from kprefix.tasks.image_classifier import REFERENCE_HEAD_BIAS


def _gpt2(backbone_dropout, **overrides):
    backbone = build_backbone("gpt2_tiny", dropout=backbone_dropout)
    return PrefixGPT2CausalLM(backbone, prefix_config=prefix_config("deep_share", **overrides),
                              seed=0)


def test_backbone_dropout_off_makes_training_passes_identical():
    inputs = gpt2_inputs()
    off = _gpt2(backbone_dropout=False)
    np.testing.assert_array_equal(off(inputs, training=True), off(inputs, training=True))
    np.testing.assert_allclose(off(inputs, training=True), off(inputs, training=False),
                               atol=1e-6)
    on = _gpt2(backbone_dropout=True)  # gpt2_tiny's own dropout is 0.1
    assert on.backbone.get_config()["dropout"] > 0
    assert not np.allclose(on(inputs, training=True), on(inputs, training=True))


def test_prefix_dropout_stays_on_with_backbone_dropout_off():
    inputs = gpt2_inputs()
    model = _gpt2(backbone_dropout=False, dropout=0.5)
    assert not np.allclose(model(inputs, training=True), model(inputs, training=True))


def test_vit_backbone_dropout_off_sets_every_rate_to_zero():
    config = build_backbone("vit_tiny", dropout=False).get_config()
    assert config["dropout_rate"] == 0.0 and config["attention_dropout"] == 0.0


def _assert_uniform(values, bound):
    values = np.asarray(values).ravel()
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.9 * bound  # fills the interval, not a narrower one
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_torch_linear_init_is_uniform_within_one_over_sqrt_fan_in():
    generator = DeepSharePrefix(length=64, num_heads=4, key_dim=16, value_dim=16,
                                embedding_dim=256, mlp_hidden=100, mlp_init="torch_linear",
                                seed=3)
    hidden, output = generator.trunk.hidden, generator.output_projection
    for layer, fan_in in ((hidden, 256), (output, 100)):
        _assert_uniform(layer.kernel, 1 / math.sqrt(fan_in))
        _assert_uniform(layer.bias, 1 / math.sqrt(fan_in))
    glorot = DeepSharePrefix(length=4, num_heads=4, key_dim=16, value_dim=16,
                             embedding_dim=256, mlp_hidden=100, seed=3)
    assert not np.asarray(glorot.output_projection.bias).any()  # default unchanged
    _assert_uniform(glorot.output_projection.kernel, math.sqrt(6 / (100 + 128)))


def test_kaiming_normal_fan_out_head():
    num_classes = 50
    backbone = build_backbone("vit_tiny")
    model = PrefixImageClassifier(backbone, num_classes, None, seed=0,
                                  head_init="kaiming_normal_fan_out")
    kernel = np.asarray(model.head.kernel)  # (64, classes): fan_out = classes
    assert kernel.std() == pytest.approx(math.sqrt(2 / num_classes), rel=0.05)
    assert abs(kernel.mean()) < 0.01
    # Untruncated: about 0.3% of a normal lies beyond 3 std.
    assert (np.abs(kernel) > 3 * kernel.std()).mean() > 0.001
    np.testing.assert_allclose(model.head.bias, REFERENCE_HEAD_BIAS)
    assert REFERENCE_HEAD_BIAS == pytest.approx(-4.59512, abs=1e-5)
    restored = PrefixImageClassifier.from_config(model.get_config())
    assert restored.head_init == "kaiming_normal_fan_out"


def _simple_share(dropout_site):
    """A Simple-share generator whose value map is a copy of its key map."""
    key_dense = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4),
                                         bias_axes="de")
    key_dense.build((1, 6, 8))
    value_dense = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4),
                                           bias_axes="de")
    value_dense.build((1, 6, 8))
    value_dense.set_weights(key_dense.get_weights())
    norm = keras.layers.LayerNormalization()
    norm.build((1, 6, 8))
    return SimpleSharePrefix(6, 2, 4, 4, key_dense, value_dense, norm=norm, hidden_dim=8,
                             dropout=0.5, dropout_site=dropout_site, seed=0)


def test_simple_share_prompt_dropout_is_one_mask_before_layer_norm():
    prompt_site = _simple_share("prompt")
    key, value = prompt_site.prefixes(training=True)
    plain_key, _ = prompt_site.prefixes(training=False)
    np.testing.assert_array_equal(key, value)  # one mask for K and V
    assert not np.allclose(key, plain_key)  # dropout acted
    assert np.all(np.asarray(key) != 0)  # the mask went through LN and W_k: no zeroed entries
    # The dropped prompt, normalized and projected, is exactly K.
    norm, key_dense, _ = prompt_site._frozen
    prompt = np.asarray(prompt_site.prompt)
    for _ in range(3):
        key, _ = prompt_site.prefixes(training=True)
        # Recover the dropped prompt: every prompt entry is either 0 or doubled; try the
        # mask that reproduces K from each row.
        found = _match_dropped_prompt(prompt, np.asarray(key), norm, key_dense)
        assert found

    output_site = _simple_share("output")
    key, value = output_site.prefixes(training=True)
    assert not np.allclose(key, value)  # two masks
    assert np.any(np.asarray(key) == 0)  # dropout after the projection zeroes entries


def _match_dropped_prompt(prompt, key, norm, key_dense):
    """Whether K equals W_k LN(mask * prompt / 0.5) for a 0/1 mask read off row by row."""
    for row in range(prompt.shape[0]):
        candidates = []
        for bits in range(2 ** prompt.shape[1]):
            mask = np.array([(bits >> i) & 1 for i in range(prompt.shape[1])], "float32")
            candidates.append(prompt[row] * mask / 0.5)
        candidates = np.stack(candidates)[None]  # (1, 256, 8)
        projected = np.asarray(key_dense(norm(candidates)))[0]  # (256, 2, 4)
        if not np.any(np.all(np.abs(projected - key[row]) < 1e-5, axis=(1, 2))):
            return False
    return True


def test_new_config_fields_round_trip_and_keep_defaults():
    config = PrefixConfig(mlp_init="torch_linear", dropout_site="prompt")
    assert PrefixConfig.from_dict(config.to_dict()) == config
    assert PrefixConfig().mlp_init == "glorot" and PrefixConfig().dropout_site == "output"
    with pytest.raises(ValueError, match="mlp_init"):
        PrefixConfig(mlp_init="he")
    with pytest.raises(ValueError, match="dropout_site"):
        PrefixConfig(dropout_site="everywhere")


def test_image_classifier_trains_with_reference_settings():
    model = PrefixImageClassifier(
        build_backbone("vit_tiny", dropout=False), 4,
        prefix_config("simple_share", dropout=0.1, dropout_site="prompt"), seed=0,
        head_init="kaiming_normal_fan_out")
    x = images()
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))
    generator = model.prefix.generators[0]
    assert isinstance(generator, SimpleSharePrefix) and generator.dropout_site == "prompt"
