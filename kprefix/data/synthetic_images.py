"""Images rendered in NumPy: a many-class pretraining source and a mini-VTAB.

Nothing here is downloaded; every image is a function of a fixed seed.

* `source_arrays`: the pretraining task (formula-driven, in the spirit of
  FractalDB): one to six copies of a star-shaped polygon, one of 100 shape
  classes (each its own radius profile and stripe texture), on a flat or
  grating background. Every image is labelled with six factors
  (`SOURCE_FACTORS`): the shape class, the number of copies, the column and
  row bin of the first copy, the rotation bin and the scale bin; colours,
  phases and noise vary freely.
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

>>> from kprefix.data.synthetic_images import minivtab_arrays, source_arrays
>>> _, factors = source_arrays(8)
>>> sorted(factors)
['count', 'rotation', 'scale', 'shape', 'x', 'y']
>>> images, labels = minivtab_arrays("count", "train800", image_size=32)
>>> images.shape, int(labels.min()), int(labels.max())
((800, 32, 32, 3), 0, 5)
"""

import functools
import re

import numpy as np

# Factors of a source image and their numbers of classes; pretraining has one
# head per factor, so the backbone must keep what each one needs.
SOURCE_FACTORS = {"shape": 100, "count": 6, "x": 8, "y": 8, "rotation": 8, "scale": 6}
SOURCE_SCALE_EDGES = np.linspace(0.07, 0.31, SOURCE_FACTORS["scale"] + 1)
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


def source_arrays(num_examples, image_size=32, seed=0, with_objects=False):
    """`(images float32 [N,S,S,3] in [-1,1], labels)` of the source task.

    `labels` maps each factor of `SOURCE_FACTORS` to int32 [N]:

    - `shape`: the class, which fixes a star-shaped radius profile (3-8
      lobes) and a stripe texture (frequency and angle);
    - `count`: the number of copies of that shape, minus one (1-6 copies);
    - `x`, `y`: the column bin of the leftmost copy's centre and the row bin
      of the topmost copy's centre (8 bins each);
    - `rotation`: the copies' common rotation, in 8 bins over 360 degrees;
    - `scale`: their common outer radius, in 6 bins (`SOURCE_SCALE_EDGES`,
      fractions of the image side).

    Colours, texture phase, the background (flat or a random grating) and
    pixel noise vary freely; `seed` draws the instances. `with_objects`
    adds a third array, int8 [N,S,S]: 0 on the background, k on the pixels
    of the k-th copy (what the labels say, drawn).
    """
    rng = np.random.RandomState(_SOURCE_SEED + 1 + seed)
    rows, columns = _grid(image_size)
    labels = {factor: np.zeros(num_examples, "int32") for factor in SOURCE_FACTORS}
    images = np.empty((num_examples, image_size, image_size, 3), "float32")
    objects = np.zeros((num_examples, image_size, image_size), "int8")
    for i in range(num_examples):
        shape = rng.randint(SOURCE_FACTORS["shape"])
        count, scale_bin, scale, centres = _source_layout(rng)
        rotation_bin = rng.randint(SOURCE_FACTORS["rotation"])
        rotation = (rotation_bin + rng.uniform(0.05, 0.95)) * 2 * np.pi / SOURCE_FACTORS["rotation"]
        phase = rng.uniform(0.0, 2 * np.pi)
        foreground = rng.uniform(0.4, 1.0, 3)
        background = rng.uniform(0.0, 0.4, 3)
        if rng.randint(2):
            frequency, angle = rng.uniform(0.5, 4.0), rng.uniform(0.0, np.pi)
            back = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (
                rows * np.cos(angle) + columns * np.sin(angle)) + phase)
        else:
            back = np.ones_like(rows)
        canvas = back[..., None] * background
        for k, centre in enumerate(centres, start=1):
            mask, texture = _source_object(shape, rows, columns, centre, scale, rotation, phase)
            canvas[mask] = texture[mask][:, None] * foreground
            objects[i][mask] = k
        images[i] = canvas
        labels["shape"][i] = shape
        labels["count"][i] = count - 1
        labels["x"][i] = int(centres[:, 1].min() * SOURCE_FACTORS["x"])
        labels["y"][i] = int(centres[:, 0].min() * SOURCE_FACTORS["y"])
        labels["rotation"][i] = rotation_bin
        labels["scale"][i] = scale_bin
    images = _to_model_range(images, 0.05, rng)
    return (images, labels, objects) if with_objects else (images, labels)


@functools.lru_cache(maxsize=1)
def _source_shapes():
    """Per shape class: lobes, radius profile, stripe frequency and angle."""
    classes = np.random.RandomState(_SOURCE_SEED)
    n = SOURCE_FACTORS["shape"]
    return (classes.randint(3, 9, n), classes.uniform(0.35, 1.0, (n, 8)),
            classes.uniform(1.0, 6.0, n), classes.uniform(0.0, np.pi, n))


def _source_layout(rng):
    """`(count, scale_bin, scale, centres [count, 2])`: copies that do not overlap.

    Half the images draw the count first, half the scale bin, each among the
    pairs that fit in the image, so neither factor fixes the other.
    """
    bins = len(SOURCE_SCALE_EDGES) - 1
    fits = lambda count, b: count * (2 * SOURCE_SCALE_EDGES[b + 1]) ** 2 <= 0.6  # noqa: E731
    while True:
        if rng.randint(2):
            count = rng.randint(1, SOURCE_FACTORS["count"] + 1)
            options = [b for b in range(bins) if fits(count, b)]
            scale_bin = options[rng.randint(len(options))]
        else:
            scale_bin = rng.randint(bins)
            options = [c for c in range(1, SOURCE_FACTORS["count"] + 1) if fits(c, scale_bin)]
            count = options[rng.randint(len(options))]
        scale = rng.uniform(SOURCE_SCALE_EDGES[scale_bin], SOURCE_SCALE_EDGES[scale_bin + 1])
        centres = []
        for _ in range(200):
            candidate = rng.uniform(scale + 0.02, 1 - scale - 0.02, 2)
            if all(np.hypot(*(candidate - c)) > 2.05 * scale for c in centres):
                centres.append(candidate)
                if len(centres) == count:
                    return count, scale_bin, scale, np.array(centres)


def _source_object(shape, rows, columns, centre, scale, rotation, phase):
    """Mask and stripe texture of one copy of source `shape`."""
    lobes, profiles, frequency, texture_angle = (a[shape] for a in _source_shapes())
    dy, dx = rows - centre[0], columns - centre[1]
    position = np.mod((np.arctan2(dy, dx) - rotation) / (2 * np.pi), 1.0) * lobes
    lower = np.floor(position).astype(int)
    fraction = position - lower
    boundary = scale * (profiles[lower % lobes] * (1 - fraction)
                        + profiles[(lower + 1) % lobes] * fraction)
    angle = texture_angle + rotation
    along = dx * np.cos(angle) + dy * np.sin(angle)
    texture = 0.65 + 0.35 * np.sin(2 * np.pi * frequency * along / 0.25 + phase)
    return np.hypot(dy, dx) < boundary, texture


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
        from kprefix.data.digits import digits_arrays  # imports TensorFlow

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
