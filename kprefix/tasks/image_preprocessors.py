"""Preprocessors of the image task: ImageNet normalization or the preset's own.

The VTAB-1k / FGVC protocol of VPT normalizes pixels with the ImageNet mean
and standard deviation (`torchvision.transforms.Normalize`, the same figures
as `kprefix.data.image_preprocessing`), whatever the checkpoint was trained
with. keras-hub presets carry their own image converter instead (for ViT:
scale to [-1, 1]). `image_normalization` picks one of the two:

- `imagenet`: a keras-hub `ViTImageClassifierPreprocessor` whose
  `ViTImageConverter` resizes (bilinear, no antialiasing, as the VTAB resize)
  and computes `(pixel / 255 - mean) / std` per channel;
- `preset`: the preprocessor saved with the preset.

Example:

>>> import numpy as np
>>> preprocessor = imagenet_preprocessor(image_size=4)
>>> x = preprocessor(np.full((1, 8, 8, 3), 255.0, "float32"))
>>> [round(float(v), 4) for v in x[0, 0, 0]]
[2.2489, 2.4286, 2.64]
"""

import keras_hub

from kprefix.data.image_preprocessing import IMAGENET_MEAN, IMAGENET_STD
from kprefix.runs.config import IMAGE_NORMALIZATIONS



def imagenet_preprocessor(image_size):
    """Resize to `image_size` squares and ImageNet-normalize pixels in [0, 255]."""
    size = (int(image_size), int(image_size))
    converter = keras_hub.layers.ViTImageConverter(
        image_size=size,
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
        crop_to_aspect_ratio=False,
        interpolation="bilinear",
        antialias=False,
    )
    return keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)


def preset_preprocessor(preset):
    """The preprocessor `preset` was saved with; an error if it has none."""
    try:
        preprocessor = keras_hub.models.ViTImageClassifierPreprocessor.from_preset(preset)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(
            f"{preset!r} brings no ViT image preprocessor ({error}). Use "
            "image_normalization='imagenet' (--image_normalization=imagenet)."
        ) from None
    if preprocessor.image_converter is None:
        raise ValueError(
            f"{preset!r} brings no image converter (keras-hub does not read a Hugging "
            "Face preprocessor_config.json). Use image_normalization='imagenet' "
            "(--image_normalization=imagenet)."
        )
    return preprocessor


def image_preprocessor(preset, image_normalization, image_size):
    """The preprocessor that `image_normalization` names (see module doc)."""
    if image_normalization == "imagenet":
        return imagenet_preprocessor(image_size)
    if image_normalization == "preset":
        return preset_preprocessor(preset)
    raise ValueError(
        f"Unknown image_normalization {image_normalization!r}; choose one of "
        f"{', '.join(IMAGE_NORMALIZATIONS)}."
    )


def renormalizer(converter):
    """Maps ImageNet-normalized images to what `converter` would have made.

    The data pipelines normalize with ImageNet statistics; undoing that gives
    the pixels back (`x * std + mean` times 255), to which the converter's own
    `scale` and `offset` apply. Resizing stays the pipeline's.
    """
    import tensorflow as tf

    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)
    scale = tf.constant(1.0 if converter.scale is None else converter.scale, tf.float32)
    offset = tf.constant(0.0 if converter.offset is None else converter.offset, tf.float32)

    def renormalize(images):
        pixels = (images * std + mean) * 255.0
        return pixels * scale + offset

    return renormalize
