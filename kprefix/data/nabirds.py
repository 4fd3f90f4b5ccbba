"""A TFDS builder for NABirds (Cornell Lab of Ornithology), which TFDS lacks.

NABirds has 48,562 photos of North American birds: 23,929 for training and
24,633 for testing in the official split. Images are labelled with the 555
leaf categories of its taxonomy (species, some split by sex or age); the
labels here are those leaves, ordered by their NABirds class id and
renumbered 0..554.

The data must be downloaded by hand (see `MANUAL_DOWNLOAD_INSTRUCTIONS`);
importing this module registers the builder with TFDS, which is then driven
as usual:

    import tensorflow_datasets as tfds
    import kprefix.data.nabirds  # registers "nabirds"

    builder = tfds.builder("nabirds", data_dir="~/tensorflow_datasets")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="~/downloads"))
    train = builder.as_dataset(split="train")

or from the shell:
``tfds build nabirds --imports=kprefix.data.nabirds --manual_dir=~/downloads``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import ClassVar

import tensorflow_datasets as tfds
from etils import epath

NUM_CLASSES = 555
ARCHIVE_NAMES = ("nabirds.tar.gz", "nabirds.tgz", "nabirds.tar", "nabirds.zip")
METADATA_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "classes.txt",
    "hierarchy.txt",
)

_CITATION = """\
@inproceedings{van2015building,
  title={Building a bird recognition app and large scale dataset with citizen
         scientists: The fine print in fine-grained dataset collection},
  author={Van Horn, Grant and Branson, Steve and Farrell, Ryan and Haber, Scott
          and Barry, Jessie and Ipeirotis, Panos and Perona, Pietro and
          Belongie, Serge},
  booktitle={CVPR},
  year={2015}
}
"""


def _read_pairs(path: epath.Path) -> list[tuple[str, str]]:
    """Reads '<key> <value>' lines (the value may contain spaces)."""
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip():
            key, value = line.strip().split(maxsplit=1)
            pairs.append((key, value.strip()))
    return pairs


def leaf_classes(root: epath.Path) -> list[tuple[int, str]]:
    """The leaf categories of the taxonomy as (class id, name), by class id.

    A leaf is a class of classes.txt that is nobody's parent in hierarchy.txt.
    """
    names = {int(class_id): name for class_id, name in _read_pairs(root / "classes.txt")}
    parents = {int(parent) for _, parent in _read_pairs(root / "hierarchy.txt")}
    return [(class_id, names[class_id]) for class_id in sorted(names) if class_id not in parents]


def find_dataset_root(directory: epath.Path) -> epath.Path | None:
    """The folder holding images.txt: `directory` itself or a `nabirds/` in it."""
    for candidate in (directory, directory / "nabirds"):
        if (candidate / "images.txt").exists():
            return candidate
    return None


class Nabirds(tfds.core.GeneratorBasedBuilder):
    """NABirds: 555 fine-grained North American bird categories."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Official train/test split; labels are the 555 leaf classes."
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    NABirds must be downloaded by hand after accepting its terms of use at
    https://dl.allaboutbirds.org/nabirds . Put the archive nabirds.tar.gz in
    the manual_dir, or extract it there: manual_dir/nabirds/ (or manual_dir
    itself) must then hold images/, images.txt, image_class_labels.txt,
    train_test_split.txt, classes.txt and hierarchy.txt.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "NABirds V1: 48,562 images of North American birds in 555 "
                "visual categories (the leaves of its taxonomy)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    # Names are read from classes.txt while preparing.
                    "label": tfds.features.ClassLabel(),
                    "image/filename": tfds.features.Text(),
                    "image/id": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://dl.allaboutbirds.org/nabirds",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self._locate(dl_manager)
        leaves = leaf_classes(root)
        self.info.features["label"].names = [name for _, name in leaves]
        label_of_class = {class_id: label for label, (class_id, _) in enumerate(leaves)}
        return {
            "train": self._generate_examples(root, label_of_class, training=True),
            "test": self._generate_examples(root, label_of_class, training=False),
        }

    def _locate(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
        manual_dir = epath.Path(dl_manager.manual_dir)
        root = find_dataset_root(manual_dir)
        if root is None:
            for archive in ARCHIVE_NAMES:
                if (manual_dir / archive).exists():
                    root = find_dataset_root(epath.Path(dl_manager.extract(manual_dir / archive)))
                    break
        if root is None:
            raise FileNotFoundError(
                f"No NABirds data in {manual_dir}.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        missing = [name for name in METADATA_FILES if not (root / name).exists()]
        if missing:
            raise FileNotFoundError(f"NABirds folder {root} lacks {', '.join(missing)}.")
        return root

    def _generate_examples(
        self, root: epath.Path, label_of_class: Mapping[int, int], training: bool
    ) -> Iterator[tuple[str, dict]]:
        paths = dict(_read_pairs(root / "images.txt"))
        classes = dict(_read_pairs(root / "image_class_labels.txt"))
        is_training = dict(_read_pairs(root / "train_test_split.txt"))
        for image_id, path in paths.items():
            if (is_training[image_id] == "1") != training:
                continue
            class_id = int(classes[image_id])
            if class_id not in label_of_class:
                raise ValueError(
                    f"NABirds image {image_id} is labelled with class {class_id}, "
                    "which is not a leaf of hierarchy.txt."
                )
            yield (
                image_id,
                {
                    "image": root / "images" / path,
                    "label": label_of_class[class_id],
                    "image/filename": path.replace(os.sep, "/"),
                    "image/id": image_id,
                },
            )
