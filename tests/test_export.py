"""The exported SavedModel serves the folded model in a fresh process."""

import subprocess
import sys
import textwrap

import keras
import numpy as np

from helpers import image_classifier, images
from kprefix.export import export_image_classifier


def test_saved_model_in_fresh_process_matches(tmp_path):
    model = image_classifier("deep_share", dropout=0.1)
    export_dir = str(tmp_path / "export")
    export_image_classifier(model, export_dir)
    inputs = images(batch=3, seed=4)
    np.save(tmp_path / "images.npy", inputs)
    # The serving process imports TensorFlow only: no kprefix, no keras-hub.
    script = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        serve = tf.saved_model.load({export_dir!r}).signatures["serving_default"]
        out = serve(images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
        np.save({str(tmp_path / 'probabilities.npy')!r}, out["probabilities"].numpy())
        assert not any(m.startswith(("kprefix", "keras_hub")) for m in sys.modules)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    served = np.load(tmp_path / "probabilities.npy")
    want = np.asarray(keras.ops.softmax(model(inputs, training=False)))
    np.testing.assert_allclose(served, want, atol=1e-5)
    np.testing.assert_allclose(served.sum(-1), 1.0, atol=1e-5)
