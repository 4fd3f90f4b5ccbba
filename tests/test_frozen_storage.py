"""A frozen backbone under a mixed policy stores its autocast weights in the compute dtype."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import bart_inputs, gpt2_inputs, images
from kprefix.backbones import build_backbone
from kprefix.experiments.common import strategy_and_backbone
from kprefix.methods import MethodConfig
from kprefix.prefix import PrefixConfig
from kprefix.runs.config import RunConfig
from kprefix.tasks import PrefixBartSeq2SeqLM, PrefixGPT2CausalLM, PrefixImageClassifier

FAMILIES = {
    "vit_tiny": (lambda backbone: PrefixImageClassifier(
        backbone, 4, PrefixConfig("simple_share", "deep", 3), seed=0), images),
    "gpt2_tiny": (lambda backbone: PrefixGPT2CausalLM(
        backbone, prefix_config=PrefixConfig("deep_share", "deep", 2), seed=0), gpt2_inputs),
    "bart_tiny": (lambda backbone: PrefixBartSeq2SeqLM(
        backbone, prefix_config=PrefixConfig("no_share", "deep", 2), seed=0), bart_inputs),
}


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _outputs_and_gradients(model, inputs):
    with tf.GradientTape() as tape:
        outputs = tf.cast(model(inputs), tf.float32)
        loss = tf.reduce_sum(tf.square(outputs))
    return [outputs] + tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("name", FAMILIES)
def test_same_outputs_and_gradients_with_kernels_in_bf16(name, mixed_bfloat16):
    make, inputs = FAMILIES[name]
    plain = make(build_backbone(name, seed=1, dropout=False))
    frozen = make(build_backbone(name, seed=1, dropout=False, frozen=True))
    for expected, got in zip(_outputs_and_gradients(plain, inputs()),
                             _outputs_and_gradients(frozen, inputs())):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    weights = frozen.backbone.weights
    kernels = [w for w in weights if w.path.endswith("/kernel")]
    assert kernels and {w.dtype for w in kernels} == {"bfloat16"}
    # Read in float32 by their layers: stored as before.
    norms = [w for w in weights if w.path.endswith(("/gamma", "/beta"))]
    assert norms and {w.dtype for w in norms} == {"float32"}
    assert {w.dtype for w in frozen.trainable_variables} == {"float32"}
    assert {w.dtype for w in plain.backbone.weights} == {"float32"}


def test_a_loaded_preset_holds_the_rounded_values(tmp_path, mixed_bfloat16):
    keras.mixed_precision.set_global_policy("float32")
    build_backbone("gpt2_tiny", seed=3).save_to_preset(str(tmp_path))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    plain, frozen = (build_backbone(str(tmp_path), frozen=f) for f in (False, True))
    assert any(w.dtype == "bfloat16" for w in frozen.weights)
    for expected, got in zip(plain.weights, frozen.weights):
        np.testing.assert_array_equal(np.asarray(got.value),
                                      np.asarray(tf.cast(expected.value, got.dtype)))


def test_float32_policy_keeps_every_weight_float32():
    backbone = build_backbone("vit_tiny", frozen=True)
    assert {w.dtype for w in backbone.weights} == {"float32"}


@pytest.mark.parametrize("method, stored", [("prefix", "bfloat16"), ("vpt", "bfloat16"),
                                            ("adapter", "float32"), ("finetune", "float32")])
def test_launcher_stores_in_bf16_only_what_its_method_keeps_frozen(method, stored):
    config = RunConfig(backbone="vit_tiny", precision="mixed_bfloat16",
                       method=MethodConfig(method))
    try:
        _, backbone = strategy_and_backbone(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {w.dtype for w in backbone.weights if w.path.endswith("/kernel")} == {stored}
