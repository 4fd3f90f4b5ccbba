"""Images rendered in NumPy: a many-class pretraining source and a mini-VTAB.

Nothing here is downloaded; every image is a function of a fixed seed.

* `source_arrays`: the pretraining task (formula-driven, in the spirit of
  FractalDB): `SOURCE_CLASSES` classes, each a star-shaped polygon with its
  own radius profile filled with its own sinusoidal texture, on a textured
  background; instances vary in position, scale, rotation, colour and noise.
* `minivtab_arrays`: downstream tasks disjoint from the source (other
  objects: plain ellipses, rings and bars on a flat background, or
  handwritten digits; other seeds), `--dataset=minivtab/<task>`:

  - `digits`: scikit-learn's handwritten digits, upscaled (natural);
  - `count`: how many discs and rings (1-6) are shown (structured, counting);
  - `location_x`, `location_y`: the column / row of one object, in 8 bins
    (structured, location, as dSprites-loc);
  - `orientation`: the angle of a bar, in 8 bins over 180 degrees
    (structured, as dSprites-ori);
  - `size`: the radius of one ring or disc, in 6 bins (structured, as
    CLEVR's distance).

  Splits as VTAB-1k: `train800`, `val200`, `train800val200` (1,000 training
  examples) and a held-out `test` of `TEST_SIZE` examples; `train<N>` is the
  first N (1-1,000) of the 1,000 training examples, for sample-efficiency
  curves.

Example:

>>> from kprefix.data.synthetic_images import minivtab_arrays
>>> images, labels = minivtab_arrays("count", "train800", image_size=32)
>>> images.shape, int(labels.min()), int(labels.max())
((800, 32, 32, 3), 0, 5)
"""

import functools
import re

import numpy as np

SOURCE_CLASSES = 100
TEST_SIZE = 500
MINIVTAB_CLASSES = {
    "digits": 10,
    "count": 6,
    "location_x": 8,
    "location_y": 8,
    "orientation": 8,
    "size": 6,
}
SPLITS = ("train800", "val200", "train800val200", "test")
# Distinct seed ranges: the source task and each downstream split never share one.
_SOURCE_SEED = 1_000_003
_MINIVTAB_SEED = {"train": 2_000_003, "test": 3_000_017}


def _grid(size):
    coordinates = (np.arange(size, dtype="float32") + 0.5) / size
    return np.meshgrid(coordinates, coordinates, indexing="ij")  # (rows, columns)


def _to_model_range(images, noise, rng):
    """[0, 1] RGB plus Gaussian noise, clipped, mapped to [-1, 1] float32."""
    images = images + rng.normal(0.0, noise, images.shape)
    return (np.clip(images, 0.0, 1.0) * 2.0 - 1.0).astype("float32")


def source_arrays(num_examples, image_size=32, seed=0):
    """`(images float32 [N,S,S,3] in [-1,1], labels int32 [N])` of the source task.

    Class `c` fixes a radius profile (3-8 lobes), a texture frequency and
    angle, and a background texture; `seed` draws the instances.
    """
    classes = np.random.RandomState(_SOURCE_SEED)
    vertices = classes.randint(3, 9, SOURCE_CLASSES)
    profiles = classes.uniform(0.35, 1.0, (SOURCE_CLASSES, 8))
    frequency = classes.uniform(1.0, 6.0, SOURCE_CLASSES)
    texture_angle = classes.uniform(0.0, np.pi, SOURCE_CLASSES)
    background_frequency = classes.uniform(0.5, 4.0, SOURCE_CLASSES)

    rng = np.random.RandomState(_SOURCE_SEED + 1 + seed)
    labels = rng.randint(0, SOURCE_CLASSES, num_examples).astype("int32")
    rows, columns = _grid(image_size)
    centre = rng.uniform(0.3, 0.7, (num_examples, 2))
    scale = rng.uniform(0.2, 0.38, num_examples)
    rotation = rng.uniform(0.0, 2 * np.pi, num_examples)
    phase = rng.uniform(0.0, 2 * np.pi, num_examples)
    foreground = rng.uniform(0.3, 1.0, (num_examples, 3))
    background = rng.uniform(0.0, 0.5, (num_examples, 3))

    dy = rows[None] - centre[:, 0, None, None]
    dx = columns[None] - centre[:, 1, None, None]
    radius = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx) - rotation[:, None, None]
    # Radius profile: the class's lobes, interpolated around the circle.
    lobes = vertices[labels][:, None, None]
    position = np.mod(theta / (2 * np.pi), 1.0) * lobes
    lower = np.floor(position).astype(int)
    fraction = position - lower
    profile = profiles[labels]
    index = np.arange(num_examples)[:, None, None]
    r0 = profile[index, lower % lobes]
    r1 = profile[index, (lower + 1) % lobes]
    boundary = scale[:, None, None] * (r0 * (1 - fraction) + r1 * fraction)
    mask = (radius < boundary)[..., None]

    angle = texture_angle[labels][:, None, None] + rotation[:, None, None]
    along = dx * np.cos(angle) + dy * np.sin(angle)
    texture = 0.5 + 0.5 * np.sin(2 * np.pi * frequency[labels][:, None, None]
                                 * along / 0.25 + phase[:, None, None])
    back = 0.5 + 0.5 * np.sin(2 * np.pi * background_frequency[labels][:, None, None]
                              * (rows[None] + columns[None]) + phase[:, None, None])
    images = np.where(mask, texture[..., None] * foreground[:, None, None],
                      back[..., None] * background[:, None, None])
    return _to_model_range(images, 0.05, rng), labels


def _blob(rows, columns, centre, radii, angle, ring):
    """Mask of an ellipse (or ring) with semi-axes `radii` rotated by `angle`."""
    dy, dx = rows - centre[0], columns - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    distance = np.sqrt((u / radii[0]) ** 2 + (v / radii[1]) ** 2)
    return (distance < 1.0) & (distance > 0.55) if ring else distance < 1.0


def _render_structured(task, num_examples, image_size, rng):
    rows, columns = _grid(image_size)
    num_classes = MINIVTAB_CLASSES[task]
    labels = rng.randint(0, num_classes, num_examples).astype("int32")
    images = np.empty((num_examples, image_size, image_size, 3), "float32")
    for i, label in enumerate(labels):
        canvas = np.ones((image_size, image_size, 3), "float32") * rng.uniform(0.0, 0.3, 3)
        colour = rng.uniform(0.5, 1.0, 3)
        ring = bool(rng.randint(2))
        if task == "count":
            centres = _spread_points(label + 1, rng, radius=0.09)
            masks = [_blob(rows, columns, c, (0.08, 0.08), 0.0, ring) for c in centres]
            mask = np.any(masks, axis=0)
        elif task in ("location_x", "location_y"):
            bin_low = label / num_classes
            along = rng.uniform(bin_low + 0.02, bin_low + 1.0 / num_classes - 0.02)
            across = rng.uniform(0.1, 0.9)
            centre = (across, along) if task == "location_x" else (along, across)
            mask = _blob(rows, columns, np.array(centre), (0.07, 0.07), 0.0, ring)
        elif task == "orientation":
            angle = (label + rng.uniform(0.1, 0.9)) * np.pi / num_classes
            centre = rng.uniform(0.35, 0.65, 2)
            mask = _blob(rows, columns, centre, (0.3, 0.06), angle, False)
        elif task == "size":
            radius = 0.08 + 0.05 * (label + rng.uniform(0.1, 0.9))
            centre = rng.uniform(0.5 - (0.45 - radius) / 2, 0.5 + (0.45 - radius) / 2, 2)
            mask = _blob(rows, columns, centre, (radius, radius), 0.0, ring)
        else:
            raise ValueError(f"No structured task {task!r}.")
        canvas[mask] = colour
        images[i] = canvas
    return _to_model_range(images, 0.04, rng), labels


def _spread_points(count, rng, radius):
    """`count` centres in the unit square, at least 2*radius apart (rejection sampling)."""
    points = []
    while len(points) < count:
        candidate = rng.uniform(radius + 0.02, 1 - radius - 0.02, 2)
        if all(np.hypot(*(candidate - p)) > 2.2 * radius for p in points):
            points.append(candidate)
    return points


@functools.lru_cache(maxsize=None)
def _minivtab_pool(task, image_size):
    """(train pool of 1,000, test pool of TEST_SIZE) of `task`."""
    if task not in MINIVTAB_CLASSES:
        raise ValueError(f"Unknown mini-VTAB task {task!r}; use one of "
                         f"{', '.join(MINIVTAB_CLASSES)}.")
    if task == "digits":
        from kprefix.data.image_tasks import digits_arrays

        # 1,797 digits: a fixed 1,000 train, TEST_SIZE of the rest as test.
        (train_x, train_y), (test_x, test_y) = digits_arrays(
            image_size, seed=_MINIVTAB_SEED["train"], test_fraction=1 - 1000 / 1797)
        return (train_x[:1000], train_y[:1000]), (test_x[:TEST_SIZE], test_y[:TEST_SIZE])
    offset = list(MINIVTAB_CLASSES).index(task)
    return (_render_structured(task, 1000, image_size,
                               np.random.RandomState(_MINIVTAB_SEED["train"] + offset)),
            _render_structured(task, TEST_SIZE, image_size,
                               np.random.RandomState(_MINIVTAB_SEED["test"] + offset)))


def minivtab_arrays(task, split, image_size=32):
    """`(images float32 [N,S,S,3] in [-1,1], labels int32 [N])` of one split."""
    part = {"train800": slice(0, 800), "val200": slice(800, 1000),
            "train800val200": slice(0, 1000)}
    subset = re.fullmatch(r"train([0-9]+)", split)
    if subset and split not in part and 1 <= int(subset.group(1)) <= 1000:
        part[split] = slice(0, int(subset.group(1)))
    if split not in part and split != "test":
        raise ValueError(f"mini-VTAB split {split!r}: use one of {', '.join(SPLITS)} or "
                         "train<N> with N from 1 to 1000.")
    (train_x, train_y), (test_x, test_y) = _minivtab_pool(task, image_size)
    if split == "test":
        return test_x, test_y
    return train_x[part[split]], train_y[part[split]]
