"""What the traced training step of a prefix-tuned ViT computes, and what it leaves out.

The step is Keras's own `train_step`, traced as `fit` traces it; these tests
read its graph: no op computes a gradient for a frozen weight, and every
prefix generator runs once per step.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import image_classifier

MATRIX_PRODUCTS = {"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum",
                   "Conv2DBackpropFilter", "Conv2DBackpropInput"}


def _specs(model, batch):
    size = model.backbone.image_shape[0]
    return (tf.TensorSpec((batch, size, size, 3), tf.float32), tf.TensorSpec((batch,), tf.int32))


def compiled_step(model):
    """`model.train_step` as a `tf.function`, after compiling `model` for SGD."""
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return tf.function(model.train_step)


def traced_train_step(model, batch=4, step=None):
    """The graph of `model.train_step` (or of `step`) for batches of `batch`."""
    step = step or compiled_step(model)
    return step.get_concrete_function(_specs(model, batch)).graph


def ops_that_run(graph):
    """The ops the step's outputs and side effects depend on.

    Tracing also writes ops whose results nothing reads (e.g. a product's
    gradient for its frozen operand); the function runtime prunes them.
    """
    pending = list(graph.outputs) + [op for op in graph.get_operations()
                                     if op.type in ("AssignVariableOp", "AssignAddVariableOp",
                                                    "AssignSubVariableOp", "NoOp")]
    needed = set()
    while pending:
        item = pending.pop()
        op = item.op if isinstance(item, tf.Tensor) else item
        if op.name in needed:
            continue
        needed.add(op.name)
        pending.extend(op.inputs)
        pending.extend(op.control_inputs)
    return [op for op in graph.get_operations() if op.name in needed]


# The backbone's own projections (the prefix generators run inside attention too).
FROZEN_PROJECTION = re.compile(r"/(query|key|value|attention_output)_\d+/|/mlp_\d+/")


def _reads_a_variable(tensor):
    op = tensor.op
    while op.type in ("Reshape", "Cast", "Identity", "Transpose"):
        op = op.inputs[0].op
    return op.type == "ReadVariableOp"


def weight_gradient_products(graph):
    """`{forward product: does its weight gradient run}` for the backbone's
    products of an activation with a weight (`x @ W`).

    TensorFlow names the gradients of `x @ W` after the forward op:
    `gradient_tape/<forward>/MatMul` for `x`, `.../MatMul_1` for `W`.
    """
    running = {op.name for op in ops_that_run(graph)}
    return {op.name: f"gradient_tape/{op.name}/MatMul_1" in running
            for op in graph.get_operations()
            if op.name in running and op.type in ("MatMul", "BatchMatMulV2")
            and FROZEN_PROJECTION.search(op.name) and "gradient_tape" not in op.name
            and _reads_a_variable(op.inputs[1])}


def test_frozen_backbone_weights_get_no_gradient_op():
    graph = traced_train_step(image_classifier("deep_share"))
    products = weight_gradient_products(graph)
    # query, key, value, output and two MLP kernels in each of the 4 blocks
    assert len(products) == 6 * 4
    assert not any(products.values())
    # Nothing flows back into the image either: no convolution backward at all.
    assert not [op for op in ops_that_run(graph) if op.type.startswith("Conv2DBackprop")]


def test_the_check_sees_weight_gradients_when_the_backbone_trains():
    model = image_classifier("deep_share")
    model.backbone.trainable = True
    products = weight_gradient_products(traced_train_step(model))
    assert len(products) == 6 * 4 and all(products.values())


@pytest.mark.parametrize("variant", ["deep_share", "no_share", "simple_share"])
def test_each_prefix_generator_runs_once_per_step(variant):
    model = image_classifier(variant)
    calls = {}
    for n, generator in enumerate(model.prefix.generators):
        def counted(*args, n=n, generate=generator.generate, **kwargs):
            calls[n] = calls.get(n, 0) + 1
            return generate(*args, **kwargs)

        object.__setattr__(generator, "generate", counted)
    step = compiled_step(model)
    # A first trace runs the Python code twice (TensorFlow traces once more to
    # see whether the function creates variables); a second shape traces once.
    traced_train_step(model, batch=4, step=step)
    calls.clear()
    traced_train_step(model, batch=2, step=step)
    assert calls == {n: 1 for n in range(len(model.prefix.generators))}


def test_last_block_mlp_runs_on_the_class_token_only():
    graph = traced_train_step(image_classifier("deep_share"), batch=4)
    last_mlp = [op for op in ops_that_run(graph) if op.type in MATRIX_PRODUCTS
                and "transformer_block_4" in op.name and "mlp" in op.name
                and "gradient_tape" not in op.name]
    assert last_mlp
    # One row per image (4), not one per token (4 x 17).
    assert all(int(np.prod(op.outputs[0].shape[:-1])) == 4 for op in last_mlp)


def test_attention_projections_are_plain_matrix_products():
    running = ops_that_run(traced_train_step(image_classifier("deep_share")))
    projections = [op for op in running if op.type in MATRIX_PRODUCTS
                   and re.search(r"/(query|key|value|attention_output)_\d+/", op.name)]
    assert len(projections) >= 4 * 4  # four projections forward in each of the 4 blocks
    assert {op.type for op in projections} == {"MatMul"}


def test_gelu_runs_without_erfc():
    """The MLP's exact GELU is `exact_gelu` (vectorised `Erf`, written-out
    gradient), not `tf.nn.gelu`'s element-by-element `Erfc`."""
    graph = traced_train_step(image_classifier("deep_share"))
    types = {op.type for op in ops_that_run(graph)}
    assert "Erf" in types and "Erfc" not in types
