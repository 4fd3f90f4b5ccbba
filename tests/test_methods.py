"""The comparison methods: exactly the intended variables train, parity with the
untouched backbone where a method starts as an identity, VPT against a
hand-wired forward pass, LoRA merged for export, SavedModels in a fresh process."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import bart_inputs, bart_lm, gpt2_inputs, gpt2_lm, image_classifier, images
from kprefix.backbones import attention_sites, final_norms, transformer_blocks
from kprefix.runs.export import export_image_classifier
from kprefix.methods import (METHODS, TEXT_METHODS, MethodConfig, apply_method,
                             folded_for_export, lora_enabled)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 4


def _size(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _classifier(method, **options):
    model = image_classifier(variant="deep_share" if method == "prefix" else None,
                             num_classes=NUM_CLASSES)
    apply_method(model, MethodConfig(method, **options), seed=0)
    return model


def _lora_size(sites, rank):
    """Keras's EinsumDense LoRA: A spans all kernel axes but the last, B (rank, last)."""
    total = 0
    for site in sites:
        for dense in (site.attention.query_dense, site.attention.value_dense):
            shape = dense._kernel.shape
            total += int(np.prod(shape[:-1])) * rank + rank * int(shape[-1])
    return total


def _expected_trainable(model, method, options):
    """The trainable parameter count, from the backbone's shapes by hand."""
    backbone = model.backbone
    blocks = transformer_blocks(backbone)
    hidden = blocks[0].hidden_dim
    head = hidden * NUM_CLASSES + NUM_CLASSES
    if method == "linear":
        return head
    if method == "finetune":
        return _size(backbone.weights) + head
    if method == "partial":
        k = options.get("partial_layers", 1)
        return (sum(_size(b.layer.weights) for b in blocks[-k:])
                + _size(final_norms(backbone)[0].weights) + head)
    if method == "lora":
        return _lora_size(attention_sites(backbone), options.get("lora_rank", 8)) + head
    if method == "vpt":
        length = options["vpt_length"]
        per_block = length * hidden
        return (len(blocks) if options["vpt_placement"] == "deep" else 1) * per_block + head
    if method == "adapter":
        dim = options["adapter_dim"]
        per_adapter = hidden * dim + dim + dim * hidden + hidden
        count = 2 if options["adapter_style"] == "houlsby" else 1
        return len(blocks) * count * per_adapter + head
    raise AssertionError(method)


VISION_CASES = [
    ("linear", {}),
    ("finetune", {}),
    ("partial", {"partial_layers": 1}),
    ("partial", {"partial_layers": 2}),
    ("lora", {"lora_rank": 2}),
    ("vpt", {"vpt_length": 3, "vpt_placement": "shallow"}),
    ("vpt", {"vpt_length": 3, "vpt_placement": "deep"}),
    ("adapter", {"adapter_dim": 4, "adapter_style": "pfeiffer"}),
    ("adapter", {"adapter_dim": 4, "adapter_style": "houlsby"}),
]


def _train_one_step(model, inputs, labels):
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {id(w): np.array(w) for w in model.weights}
    model.train_on_batch(inputs, labels)
    return before


@pytest.mark.parametrize("method,options", VISION_CASES,
                         ids=[f"{m}-{'-'.join(map(str, o.values()))}" for m, o in VISION_CASES])
def test_exactly_the_intended_variables_train(method, options):
    model = _classifier(method, **options)
    assert _size(model.trainable_weights) == _expected_trainable(model, method, options)
    trainable = {id(w) for w in model.trainable_weights}
    before = _train_one_step(model, images(8), np.arange(8) % NUM_CLASSES)
    for weight in model.weights:
        moved = not np.array_equal(before[id(weight)], np.array(weight))
        if id(weight) not in trainable:
            assert not moved, f"frozen {weight.path} changed"
    # Every trainable group moved (a zero-initialised factor, LoRA's B or an
    # adapter's up-projection, moves first; its partner follows a step later).
    moved_paths = {w.path.rsplit("/", 1)[0] for w in model.trainable_weights
                   if not np.array_equal(before[id(w)], np.array(w))}
    assert moved_paths and any("predictions" in p for p in moved_paths)
    if method != "linear":
        assert any("predictions" not in p for p in moved_paths)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_identity_at_start_then_uninstall_leaves_the_backbone_as_it_was(method):
    plain = image_classifier(variant=None, num_classes=NUM_CLASSES)
    reference = np.asarray(plain(images()))
    apply_method(plain, MethodConfig(method, adapter_style="houlsby"), seed=1)
    np.testing.assert_allclose(np.asarray(plain(images())), reference, atol=1e-6)
    if method == "adapter":
        for adapter in plain.adapters.adapters:
            adapter.up.kernel.assign(np.random.default_rng(0).normal(
                size=adapter.up.kernel.shape).astype("float32"))
        assert np.abs(np.asarray(plain(images())) - reference).max() > 1e-3
        plain.adapters.uninstall()
        np.testing.assert_array_equal(np.asarray(plain(images())), reference)


def test_vpt_matches_a_hand_wired_forward_pass():
    model = _classifier("vpt", vpt_length=2, vpt_placement="deep")
    backbone = model.backbone
    prompts = np.asarray(model.visual_prompts.prompts)
    prompts = prompts + np.random.default_rng(0).normal(size=prompts.shape).astype("float32")
    model.visual_prompts.prompts.assign(prompts)
    x = images(3)
    encoder = backbone.get_layer("vit_encoder")
    tokens = np.asarray(backbone.get_layer("vit_patching_and_embedding")(x))
    batch = np.broadcast_to(prompts[0], (3,) + prompts[0].shape)
    h = np.concatenate([tokens[:, :1], batch, tokens[:, 1:]], axis=1)
    for i, block in enumerate(encoder.encoder_layers):
        if i:
            h = np.concatenate([h[:, :1], np.broadcast_to(prompts[i], (3, 2, h.shape[-1])),
                                h[:, 3:]], axis=1)
        h = np.asarray(block(h))
    pooled = np.asarray(encoder.layer_norm(h))[:, 0]
    expected = pooled @ np.asarray(model.head.kernel) + np.asarray(model.head.bias)
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-5)
    reference = image_classifier(variant=None, num_classes=NUM_CLASSES)
    model.visual_prompts.uninstall()
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(reference(x)), atol=1e-6)


def test_lora_export_is_merged_and_computes_the_same():
    model = _classifier("lora", lora_rank=2)
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        if "lora_kernel_b" in weight.path:
            weight.assign(rng.normal(scale=0.1, size=weight.shape).astype("float32"))
    merged = folded_for_export(model)
    assert lora_enabled(model) and not lora_enabled(merged)
    assert not any("lora" in w.path for w in merged.weights)
    np.testing.assert_allclose(np.asarray(merged(images())), np.asarray(model(images())),
                               atol=1e-5)


FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
for folder, inputs, expected in json.loads(sys.argv[1]):
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    got = serve(images=tf.constant(np.load(inputs)))["probabilities"].numpy()
    np.testing.assert_allclose(got, np.load(expected), atol=1e-5)
    print("ok", folder)
"""


@pytest.mark.large
def test_every_method_exports_a_savedmodel_with_the_in_process_outputs(tmp_path):
    cases = []
    for method in METHODS:
        model = _classifier(method, vpt_length=2, vpt_placement="shallow")
        if method == "lora":  # B starts at zero: give the merge something to merge
            for weight in model.trainable_weights:
                if "lora_kernel_b" in weight.path:
                    weight.assign(np.full(weight.shape, 0.05, "float32"))
        x = images(3, seed=4)
        expected = keras.ops.softmax(model(x, training=False)).numpy()
        folder = str(tmp_path / method)
        export_image_classifier(model, folder)
        np.save(tmp_path / f"{method}_x.npy", x)
        np.save(tmp_path / f"{method}_y.npy", expected)
        cases.append((folder, str(tmp_path / f"{method}_x.npy"),
                      str(tmp_path / f"{method}_y.npy")))
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(cases)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ok ") == len(METHODS)


@pytest.mark.parametrize("family", ["gpt2", "bart"])
@pytest.mark.parametrize("method", [m for m in TEXT_METHODS if m != "prefix"])
def test_text_methods_train_exactly_their_variables(family, method):
    model = gpt2_lm(variant=None) if family == "gpt2" else bart_lm(variant=None)
    backbone = model.backbone
    blocks = transformer_blocks(backbone)
    apply_method(model, MethodConfig(method, partial_layers=1, lora_rank=2, adapter_dim=3,
                                     adapter_style="houlsby"), seed=0)
    hidden = blocks[0].hidden_dim
    expected = {
        "finetune": _size(backbone.weights),
        "partial": sum(_size(b.layer.weights) for b in blocks
                       if b.index == max(c.index for c in blocks if c.kind == b.kind))
        + sum(_size(n.weights) for n in final_norms(backbone)),
        # query and value of every self- and cross-attention
        "lora": _lora_size(attention_sites(backbone), 2),
        "adapter": sum(1 + len(b.attention_outputs) for b in blocks)
        * (2 * hidden * 3 + 3 + hidden),
    }[method]
    assert _size(model.trainable_weights) == expected
    if family == "gpt2":
        inputs = gpt2_inputs(batch=2, length=7)
        labels = np.roll(inputs["token_ids"], -1, axis=1)
    else:
        inputs = bart_inputs()
        labels = np.roll(inputs["decoder_token_ids"], -1, axis=1)
    trainable = {id(w) for w in model.trainable_weights}
    before = _train_one_step(model, inputs, labels)
    assert all(np.array_equal(before[id(w)], np.array(w))
               for w in model.weights if id(w) not in trainable)
    assert any(not np.array_equal(before[id(w)], np.array(w)) for w in model.trainable_weights)


def _launch(*args):
    return subprocess.run([sys.executable, "-m", "kprefix.launch", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_methods_that_do_not_fit_the_task_are_usage_errors(tmp_path):
    text = _launch("--task=table_to_text", "--method=vpt", f"--workdir={tmp_path}/a")
    assert text.returncode != 0 and "--method=vpt does not apply to --task=table_to_text" \
        in text.stderr and "prefix, finetune, partial, lora, adapter" in text.stderr
    vpt = _launch("--method=vpt", "--prefix_placement=0,2", f"--workdir={tmp_path}/b")
    assert vpt.returncode != 0 and "--prefix_placement='0,2'" in vpt.stderr
    deep = _launch("--method=partial", "--partial_layers=9", "--epochs=1",
                   f"--workdir={tmp_path}/c")
    assert deep.returncode != 0 and "--partial_layers=9" in deep.stderr
    assert "has only 4 blocks" in deep.stderr


@pytest.mark.parametrize("method,options", VISION_CASES,
                         ids=[f"{m}-{'-'.join(map(str, o.values()))}" for m, o in VISION_CASES])
def test_checkpoints_hold_every_trained_variable(method, options):
    from kprefix.runs.checkpoints import training_state

    model = _classifier(method, **options)
    held = {id(v) for v in training_state(model).values()}
    assert {id(w) for w in model.trainable_weights} <= held
    # The frozen backbone stays out (it comes from the preset); fine-tuning holds all of it.
    frozen = [w for w in model.backbone.weights if not w.trainable]
    assert not any(id(w) in held for w in frozen)
    assert bool(frozen) == (method != "finetune")


@pytest.mark.parametrize("family", ["gpt2", "bart"])
def test_lora_merge_of_language_models(family):
    model = gpt2_lm(variant=None) if family == "gpt2" else bart_lm(variant=None)
    apply_method(model, MethodConfig("lora", lora_rank=2), seed=0)
    for weight in model.trainable_weights:
        if "lora_kernel_b" in weight.path:
            weight.assign(np.full(weight.shape, 0.05, "float32"))
    inputs = gpt2_inputs() if family == "gpt2" else bart_inputs()
    merged = folded_for_export(model)
    assert not lora_enabled(merged)
    np.testing.assert_allclose(np.asarray(merged(inputs)), np.asarray(model(inputs)), atol=1e-4)
