"""Data pipelines and benchmark protocols.

Importing this package is cheap; the pipelines import TensorFlow and TFDS
when first used.

>>> from kprefix.data import load_image_task
>>> callable(load_image_task)
True
"""


def load_image_task(name: str, split: str, **kwargs):
    """Batched (image, label) dataset of a vision task: "vtab/<task>" or "fgvc/<dataset>".

    Keyword arguments go to `kprefix.data.vtab.load_vtab` or
    `kprefix.data.fgvc.load_fgvc`, e.g.
    ``load_image_task("fgvc/cub", "train", batch_size=64, seed=0, data_dir=...)``.
    """
    if name.startswith("vtab/"):
        from kprefix.data import vtab

        return vtab.load_vtab(name, split, **kwargs)
    if name.startswith("fgvc/"):
        from kprefix.data import fgvc

        return fgvc.load_fgvc(name, split, **kwargs)
    raise ValueError(f"Unknown image task {name!r}: expected 'vtab/<task>' or 'fgvc/<dataset>'.")


def image_task_num_classes(name: str) -> int:
    """Number of classes of a "vtab/..." or "fgvc/..." task, without reading data.

    >>> image_task_num_classes("vtab/smallnorb_azimuth"), image_task_num_classes("fgvc/dogs")
    (18, 120)
    """
    if name.startswith("vtab/"):
        from kprefix.data import vtab

        return vtab.num_classes(name)
    if name.startswith("fgvc/"):
        from kprefix.data import fgvc

        return fgvc.num_classes(name)
    raise ValueError(f"Unknown image task {name!r}: expected 'vtab/<task>' or 'fgvc/<dataset>'.")
