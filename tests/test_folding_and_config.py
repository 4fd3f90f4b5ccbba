"""Folding keeps outputs; configs of layers and models round-trip."""

import keras
import numpy as np
import pytest

from helpers import VARIANTS, bart_inputs, bart_lm, gpt2_inputs, gpt2_lm, image_classifier, images
from kprefix.prefix import PrefixConfig, generators
from kprefix.tasks import PrefixImageClassifier


def _close(a, b, atol=1e-5):
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


@pytest.mark.parametrize("variant", VARIANTS)
def test_folded_image_classifier_matches_and_holds_no_generator(variant):
    model = image_classifier(variant, dropout=0.1)
    folded = model.fold()
    _close(folded(images()), model(images()))
    prefix_weights = [w.path.split("/")[-1] for w in folded.prefix.weights]
    assert set(prefix_weights) == {"prefix_key", "prefix_value"}
    assert not folded.prefix.trainable_weights
    # The frozen backbone is read, not copied; the head is an independent copy.
    storage = {id(w._value) for w in folded.weights}
    assert model.non_trainable_weights
    assert all(id(w._value) in storage for w in model.non_trainable_weights)
    assert not any(id(w._value) in storage for w in model.trainable_weights)
    folded.head.kernel.assign(folded.head.kernel * 0)
    assert np.abs(np.asarray(model.head.kernel)).sum() > 0


def test_folding_copies_a_backbone_weight_that_was_unfrozen():
    model = image_classifier("deep_share")
    unfrozen = model.backbone.weights[1]
    unfrozen.trainable = True
    folded = model.fold()
    (copy,) = [w for w in folded.backbone.weights if w.path == unfrozen.path]
    assert copy._value is not unfrozen._value
    np.testing.assert_array_equal(np.asarray(copy), np.asarray(unfrozen))


@pytest.mark.parametrize("build, inputs", [(gpt2_lm, gpt2_inputs), (bart_lm, bart_inputs)])
def test_folded_language_models_match(build, inputs):
    model = build("deep_share", share_across_layers=True)
    _close(model.fold()(inputs()), model(inputs()))


def test_image_classifier_config_round_trip():
    model = image_classifier("one_layer_share", key_activation="tanh")
    clone = PrefixImageClassifier.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    for target, source in zip(clone.weights, model.weights):
        target.assign(source)
    _close(clone(images()), model(images()), atol=0)


def test_language_model_config_round_trip():
    model = gpt2_lm("no_share")
    clone = type(model).from_config(model.get_config())
    assert clone.prefix_config == model.prefix_config
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


GENERATOR_CASES = {
    "no_share": (generators.NoSharePrefix, {}),
    "deep_share": (generators.DeepSharePrefix, dict(embedding_dim=6, mlp_hidden=5)),
    "linear_share": (generators.LinearSharePrefix, {}),
    "one_layer_share": (generators.OneLayerSharePrefix,
                        dict(embedding_dim=7, key_activation="relu", value_activation="tanh")),
}


@pytest.mark.parametrize("name", sorted(GENERATOR_CASES))
def test_generator_config_round_trip(name):
    cls, extra = GENERATOR_CASES[name]
    generator = cls(length=3, num_heads=2, key_dim=4, value_dim=4, dropout=0.1, **extra)
    clone = cls.from_config(generator.get_config())
    assert clone.get_config() == generator.get_config()
    for target, source in zip(clone.weights, generator.weights):
        target.assign(source)
    _close(clone.prefixes(False), generator.prefixes(False), atol=0)


def test_prefix_config_round_trip_and_errors():
    config = PrefixConfig("one_layer_share", (0, 2), length=4, dropout=0.1)
    assert PrefixConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="variant 'bogus'"):
        PrefixConfig("bogus")
    with pytest.raises(ValueError, match="prefix length"):
        PrefixConfig(length=0)
    with pytest.raises(ValueError, match="placement"):
        PrefixConfig(placement="middle")


def test_generators_run_once_per_call_and_ignore_the_batch():
    model = image_classifier("deep_share")
    calls = []
    generator = model.prefix.generators[0]
    original = generator.generate

    def counting_generate():
        calls.append(1)
        return original()

    generator.generate = counting_generate
    model(images(batch=1))
    model(images(batch=8))
    assert len(calls) == 2
