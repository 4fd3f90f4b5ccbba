"""Export: fold the prefixes, then write a SavedModel for serving.

The SavedModel needs neither kprefix nor keras-hub to load: its
`serving_default` signature takes float32 images `(batch, H, W, 3)`, already
preprocessed as in training, and returns class probabilities under the key
`probabilities`.

Example (in a fresh process, no kprefix import):

    import tensorflow as tf
    serving = tf.saved_model.load("runs/quickstart/export").signatures["serving_default"]
    probabilities = serving(images=tf.zeros((1, 16, 16, 3)))["probabilities"]
"""

import keras
import tensorflow as tf


def export_image_classifier(model, directory):
    """Folds `model`'s prefixes and writes the serving SavedModel to `directory`.

    Returns the folded model (the one that was exported).
    """
    folded = model.fold() if model.prefix is not None else model
    image_shape = tuple(folded.backbone.image_shape)

    def serve(images):
        logits = folded(images, training=False)
        return {"probabilities": keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(folded)
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec((None,) + image_shape, tf.float32, name="images")],
    )
    archive.write_out(directory, verbose=False)
    return folded
