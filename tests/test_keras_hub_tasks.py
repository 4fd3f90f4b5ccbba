"""The three tasks are keras-hub tasks: `.keras` files, presets, preprocessors.

The `.keras` round trip follows keras-hub's `run_model_saving_test`
(`keras_hub/src/tests/test_case.py`): save, load in the same process, same
config and same outputs.
"""

import json
import random

import keras
import keras_hub
import numpy as np
import pytest

from helpers import bart_inputs, bart_lm, gpt2_inputs, gpt2_lm, image_classifier, images
from kprefix.backbones import build_backbone
from kprefix.data.image_preprocessing import resize_and_normalize
from kprefix.prefix import PrefixConfig, PrefixTuning
from kprefix.tasks import PrefixImageClassifier
from kprefix.tasks.image_preprocessors import image_preprocessor, renormalizer

TASKS = {
    "image": (lambda: image_classifier("deep_share"), images),
    "gpt2": (lambda: gpt2_lm("simple_share"), gpt2_inputs),
    "bart": (lambda: bart_lm("no_share"), bart_inputs),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_keras_file_round_trip_gives_identical_outputs(tmp_path, name):
    build, make_inputs = TASKS[name]
    model, inputs = build(), make_inputs()
    # Move the prefixes off their initial values, so loading must restore them.
    for weight in model.prefix.trainable_weights:
        weight.assign(weight + 0.1)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)

    assert type(restored) is type(model)
    # Compared as JSON: ViTBackbone's tuples come back as lists.
    assert json.loads(json.dumps(restored.get_config())) == json.loads(json.dumps(model.get_config()))
    np.testing.assert_array_equal(np.asarray(restored(inputs)), np.asarray(model(inputs)))
    assert len(restored.trainable_weights) == len(model.trainable_weights)


def test_classifier_is_a_linear_head_on_the_class_token():
    model = image_classifier("no_share", num_classes=5)
    x = images()
    features = np.asarray(model.backbone(x))
    kernel, bias = (np.asarray(w) for w in model.head.weights)
    np.testing.assert_allclose(np.asarray(model(x)), features[:, 0] @ kernel + bias,
                               rtol=1e-5, atol=1e-5)
    assert isinstance(model, keras_hub.models.ViTImageClassifier)
    assert model(x).dtype == "float32"


def test_imagenet_preprocessor_is_the_vtab_transform():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (3, 24, 20, 3)).astype("uint8")
    model = PrefixImageClassifier.from_preset("vit_tiny", num_classes=4,
                                              prefix_config=PrefixConfig(length=2), seed=0)
    assert isinstance(model.preprocessor, keras_hub.models.ViTImageClassifierPreprocessor)
    expected = np.stack([resize_and_normalize(image, 16).numpy() for image in raw])
    np.testing.assert_allclose(np.asarray(model.preprocessor(raw.astype("float32"))), expected,
                               atol=1e-5)
    np.testing.assert_allclose(model.predict(raw.astype("float32"), verbose=0),
                               np.asarray(model(expected)), atol=1e-5)


def test_save_to_preset_and_from_preset_restore_the_whole_classifier(tmp_path):
    model = PrefixImageClassifier.from_preset("vit_tiny", num_classes=3, seed=1,
                                              prefix_config=PrefixConfig("deep_share", length=2))
    for weight in model.trainable_weights:
        weight.assign(weight + 0.05)
    model.save_to_preset(str(tmp_path / "saved"))
    restored = PrefixImageClassifier.from_preset(str(tmp_path / "saved"))
    x = images()
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(model(x)))
    assert restored.prefix_config == model.prefix_config
    assert restored.preprocessor.get_config() == model.preprocessor.get_config()
    # A new head on the saved backbone: the prefix config is the caller's.
    probe = PrefixImageClassifier.from_preset(str(tmp_path / "saved"), num_classes=7)
    assert probe.prefix is None and probe.num_classes == 7


def test_a_model_on_a_preset_folder_is_the_same_for_the_same_seed(tmp_path):
    """The Deep-share MLP and the head take Keras's default initializers, which draw
    from Python's `random`: a preset backbone must seed it as a built-in one does,
    or two processes with the same `--seed` start from different prefixes."""
    build_backbone("vit_tiny").save_to_preset(str(tmp_path / "vit"))

    def trainable_weights(seed):
        random.random()  # whatever ran before in the process does not matter
        model = PrefixImageClassifier.from_preset(
            str(tmp_path / "vit"), num_classes=3, seed=seed,
            prefix_config=PrefixConfig("deep_share", length=2))
        return {w.path: np.asarray(w) for w in model.trainable_weights}

    first, again, other = trainable_weights(5), trainable_weights(5), trainable_weights(6)
    assert any("trunk/hidden/kernel" in path for path in first)
    for path, value in first.items():
        np.testing.assert_array_equal(again[path], value, err_msg=path)
    assert not np.array_equal(other["prefix/encoder_0/trunk/hidden/kernel"],
                              first["prefix/encoder_0/trunk/hidden/kernel"])


def test_preset_normalization_uses_the_preset_converter(tmp_path):
    backbone = build_backbone("vit_tiny")
    converter = keras_hub.layers.ViTImageConverter(image_size=(16, 16), scale=1 / 127.5,
                                                   offset=-1.0)
    keras_hub.models.ViTImageClassifier(
        backbone, num_classes=2,
        preprocessor=keras_hub.models.ViTImageClassifierPreprocessor(converter),
    ).save_to_preset(str(tmp_path / "vit"))
    model = PrefixImageClassifier.from_preset(str(tmp_path / "vit"), num_classes=2,
                                              image_normalization="preset")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model.preprocessor(pixels)), pixels / 127.5 - 1,
                               atol=1e-5)
    # What the training pipelines feed (ImageNet-normalized) maps to the same.
    imagenet = np.asarray(image_preprocessor(None, "imagenet", 16)(pixels))
    renormalize = renormalizer(model.preprocessor.image_converter)
    np.testing.assert_allclose(np.asarray(renormalize(imagenet)), pixels / 127.5 - 1, atol=1e-4)

    with pytest.raises(ValueError, match="--image_normalization=imagenet"):
        PrefixImageClassifier.from_preset("vit_tiny", num_classes=2, image_normalization="preset")
    with pytest.raises(ValueError, match="imagenet, preset"):
        PrefixImageClassifier.from_preset("vit_tiny", num_classes=2, image_normalization="raw")
    with pytest.raises(ValueError, match="pass num_classes"):
        PrefixImageClassifier.from_preset("vit_tiny")


def test_prefix_tuning_on_a_stock_keras_hub_task_trains_the_prefix():
    task = keras_hub.models.GPT2CausalLM(build_backbone("gpt2_tiny"))
    with pytest.raises(ValueError, match="already part of a model"):
        PrefixTuning(task.backbone, PrefixConfig("deep_share", length=2))
    tuning = PrefixTuning(task, PrefixConfig("deep_share", length=2), seed=0)
    assert task.prefix is tuning
    assert {id(w) for w in task.trainable_weights} == {id(w) for w in tuning.trainable_weights}

    task.compile(optimizer=keras.optimizers.SGD(0.5),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = gpt2_inputs()
    prefix_before = [np.asarray(w) for w in tuning.trainable_weights]
    backbone_before = [np.asarray(w) for w in task.backbone.weights]
    task.train_on_batch(x, x["token_ids"])
    assert all(not np.array_equal(np.asarray(w), b)
               for w, b in zip(tuning.trainable_weights, prefix_before))
    for w, b in zip(task.backbone.weights, backbone_before):
        np.testing.assert_array_equal(np.asarray(w), b)
    with pytest.raises(ValueError, match="already has a prefix"):
        PrefixTuning(task, PrefixConfig("no_share", length=2))
