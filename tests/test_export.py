"""The exported SavedModels serve the folded model in a fresh process, with declared shapes."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from helpers import gpt2_lm, image_classifier, images
from kprefix.runs.export import export_image_classifier, export_text_generator
from kprefix.tasks.tokenizers import load_tokenizer


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    model = image_classifier("deep_share", dropout=0.1)
    export_dir = str(tmp_path_factory.mktemp("image") / "export")
    export_image_classifier(model, export_dir)
    return model, export_dir


def _signature_inputs(export_dir):
    """`saved_model_cli show --all`'s lines for the serving signature's inputs."""
    shown = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all",
         "--dir", export_dir], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    serving = shown.stdout.split("signature_def['serving_default']:")[1]
    return serving.split("contains the following output(s):")[0]


def _in_fresh_process(script):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_saved_model_in_fresh_process_matches(image_export, tmp_path):
    model, export_dir = image_export
    inputs = images(batch=3, seed=4)
    np.save(tmp_path / "images.npy", inputs)
    # The serving process imports TensorFlow only: no kprefix, no keras-hub.
    _in_fresh_process(f"""
        import sys, numpy as np, tensorflow as tf
        serve = tf.saved_model.load({export_dir!r}).signatures["serving_default"]
        out = serve(images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
        np.save({str(tmp_path / 'probabilities.npy')!r}, out["probabilities"].numpy())
        assert not any(m.startswith(("kprefix", "keras_hub")) for m in sys.modules)
    """)
    served = np.load(tmp_path / "probabilities.npy")
    want = np.asarray(keras.ops.softmax(model(inputs, training=False)))
    np.testing.assert_allclose(served, want, atol=1e-5)
    np.testing.assert_allclose(served.sum(-1), 1.0, atol=1e-5)


def test_image_signature_declares_float32_batches_of_the_image_shape(image_export):
    inputs = _signature_inputs(image_export[1])
    assert "inputs['images'] tensor_info:" in inputs
    assert "dtype: DT_FLOAT" in inputs and "shape: (-1, 16, 16, 3)" in inputs


BAD_SHAPES = [(16, 16, 3), (1, 2, 16, 16, 3), (2, 32, 32, 3), (2, 16, 16, 1)]


def test_bad_shapes_are_refused_through_python_and_fed_to_the_graph(image_export):
    # Through Python: the loaded signature. Fed to the graph: a TF1 session runs
    # it from C++ with the feed unchecked, as TensorFlow Serving does (the
    # session's Python client, whose feed check would step in first, is bypassed).
    out = _in_fresh_process(f"""
        import numpy as np, tensorflow as tf
        from tensorflow.core.protobuf import config_pb2

        def refusal(serve, shape):
            try:
                serve(np.zeros(shape, np.float32))
                return "accepted"
            except tf.errors.InvalidArgumentError as error:
                named = "images must have shape (batch, 16, 16, 3)" in error.message
                return "refused" if named else error.message

        signature = tf.saved_model.load({image_export[1]!r}).signatures["serving_default"]
        python = lambda images: signature(images=tf.constant(images))["probabilities"]
        print("python", python(np.zeros((2, 16, 16, 3), np.float32)).shape)
        for shape in {BAD_SHAPES!r}:
            print("python", shape, refusal(python, shape))

        with tf.compat.v1.Session(graph=tf.Graph()) as session:
            meta = tf.compat.v1.saved_model.load(session, ["serve"], {image_export[1]!r})
            declared = meta.signature_def["serving_default"]
            graph = session._make_callable_from_options(config_pb2.CallableOptions(
                feed=[declared.inputs["images"].name],
                fetch=[declared.outputs["probabilities"].name]))
            print("graph", graph(np.zeros((2, 16, 16, 3), np.float32))[0].shape)
            for shape in {BAD_SHAPES!r}:
                print("graph", shape, refusal(graph, shape))
    """)
    lines = [line for line in out.splitlines() if line.startswith(("python", "graph"))]
    assert lines == [line for name in ("python", "graph") for line in
                     [f"{name} (2, 4)"] + [f"{name} {shape} refused" for shape in BAD_SHAPES]]


def test_text_signature_declares_a_batch_of_strings(tmp_path):
    tokenizer = load_tokenizer("gpt2_tiny")
    export_dir = str(tmp_path / "export")
    export_text_generator(gpt2_lm("deep_share"), tokenizer, export_dir, source_length=8,
                          settings=dict(num_beams=2, max_new_tokens=2,
                                        end_token_id=tokenizer.end_token_id))
    inputs = _signature_inputs(export_dir)
    assert "inputs['text'] tensor_info:" in inputs
    assert "dtype: DT_STRING" in inputs and "shape: (-1)" in inputs


def test_a_model_with_a_non_finite_weight_is_not_exported(tmp_path):
    from kprefix.runs.checkpoints import NonFiniteState

    model = image_classifier("deep_share")
    head = model.trainable_weights[-1]
    head.assign(np.full(head.shape, np.nan, head.dtype))
    with pytest.raises(NonFiniteState, match="NaN or infinity"):
        export_image_classifier(model, str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()
