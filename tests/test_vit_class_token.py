"""The class-token-only last ViT block: the same logits, and keras-hub's outputs when undone."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from helpers import image_classifier, images, prefix_config
from kprefix.backbones import build_backbone
from kprefix.backbones.vit_class_token import (keep_all_tokens, keep_class_token_only,
                                               keeps_class_token_only)
from kprefix.tasks import PrefixImageClassifier


def _copy_weights(target, source):
    assert len(target.weights) == len(source.weights)
    for t, s in zip(target.weights, source.weights):
        t.assign(s)


@pytest.mark.parametrize("variant", [None, "deep_share", "no_share", "simple_share"])
def test_class_token_only_gives_the_full_paths_logits(variant):
    x = images(batch=3)
    fast = image_classifier(variant)
    config = None if variant is None else prefix_config(variant)
    full = PrefixImageClassifier(build_backbone("vit_tiny"), num_classes=4, prefix_config=config,
                                 seed=0, class_token_only=False)
    _copy_weights(full, fast)
    assert keeps_class_token_only(fast.backbone) and not keeps_class_token_only(full.backbone)
    np.testing.assert_allclose(fast(x), full(x), atol=1e-5)
    assert tuple(fast.backbone(x).shape) == (3, 1, 64)


def test_training_gradients_match_the_full_path():
    x, y = images(batch=3), np.array([0, 1, 3])
    fast = image_classifier("deep_share")
    full = PrefixImageClassifier(build_backbone("vit_tiny"), num_classes=4,
                                 prefix_config=prefix_config("deep_share"), seed=0,
                                 class_token_only=False)
    _copy_weights(full, fast)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    gradients = []
    for model in (fast, full):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        gradients.append(tape.gradient(value, model.trainable_variables))
    for a, b in zip(*gradients):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_without_prefixes_the_classifier_is_keras_hubs():
    x = images(batch=2)
    ours = image_classifier(None)
    theirs = keras_hub.models.ViTImageClassifier(build_backbone("vit_tiny"), num_classes=4)
    _copy_weights(theirs, ours)
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)


def test_keep_all_tokens_restores_keras_hubs_backbone_exactly():
    x = images(batch=2)
    backbone, untouched = build_backbone("vit_tiny", seed=1), build_backbone("vit_tiny", seed=1)
    keep_class_token_only(backbone)
    keep_all_tokens(backbone)
    assert not keeps_class_token_only(backbone)
    np.testing.assert_array_equal(backbone(x), untouched(x))


def test_mean_pooling_keeps_every_token():
    model = PrefixImageClassifier(build_backbone("vit_tiny"), num_classes=4, pooling="gap")
    assert not model.class_token_only and not keeps_class_token_only(model.backbone)


def test_setting_survives_config_round_trip_and_folding():
    model = PrefixImageClassifier(build_backbone("vit_tiny"), num_classes=4,
                                  prefix_config=prefix_config("deep_share"),
                                  class_token_only=False)
    assert PrefixImageClassifier.from_config(model.get_config()).class_token_only is False
    folded = image_classifier("deep_share").fold()
    assert folded.class_token_only and keeps_class_token_only(folded.backbone)


def test_weights_saved_with_class_token_only_load_into_keras_hubs_backbone(tmp_path):
    model = image_classifier("deep_share")
    model.backbone.save_to_preset(str(tmp_path / "backbone"))
    loaded = keras_hub.models.ViTBackbone.from_preset(str(tmp_path / "backbone"))
    for ours, theirs in zip(model.backbone.weights, loaded.weights):
        np.testing.assert_array_equal(ours, theirs)
