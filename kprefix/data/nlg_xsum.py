"""XSUM (extreme summarisation) data: JSON lines and TFDS ``xsum``.

The source is the article text, the single target its one-sentence summary.
The shared folder holds two small JSON-lines samples (``id``, ``document``,
``summary``): 321 articles of the official test split and 1,000 of the
validation split. TFDS ``xsum`` needs the articles downloaded by hand (its
``manual_dir``); this module only reads an already built copy.

Example:
    >>> import io, json, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "tiny.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write(json.dumps({"id": "1", "document": "Long text.", "summary": "Short."}) + "\\n")
    >>> read_xsum_jsonl(path)[0].targets
    ('Short.',)
"""

from __future__ import annotations

import json
from typing import List, Mapping, Optional

from kprefix.data.nlg_common import (NLGExample, PathLike, require_file, shared_data_dir,
                                     tfds_not_prepared_error)

XSUM_SPLIT_FILES = {"test": "test321.jsonl", "validation": "validation1000.jsonl"}
_REQUIRED_FIELDS = ("id", "document", "summary")


def read_xsum_jsonl(path: PathLike) -> List[NLGExample]:
    """Reads JSON lines with ``id``, ``document`` and ``summary`` fields."""
    path = require_file(path, "XSUM JSON-lines file")
    examples = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error})") from None
            missing = [field for field in _REQUIRED_FIELDS if field not in record]
            if missing:
                raise ValueError(f"{path}:{line_number}: missing field(s) {', '.join(missing)}")
            examples.append(NLGExample(source=record["document"], targets=(record["summary"],),
                                       example_id=str(record["id"])))
    return examples


def load_xsum(split: str, data_dir: Optional[PathLike] = None) -> List[NLGExample]:
    """Loads the shared XSUM sample of ``split`` (``test``: 321, ``validation``: 1,000)."""
    if split not in XSUM_SPLIT_FILES:
        raise ValueError(f"unknown XSUM split {split!r}; the shared folder has "
                         f"{', '.join(XSUM_SPLIT_FILES)} (use load_xsum_tfds for the full data)")
    return read_xsum_jsonl(shared_data_dir(data_dir) / "xsum" / XSUM_SPLIT_FILES[split])


def xsum_example_from_tfds(features: Mapping, index: int) -> NLGExample:
    """One decoded TFDS ``xsum`` example as an :class:`NLGExample`."""
    def text(value) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    return NLGExample(source=text(features["document"]), targets=(text(features["summary"]),),
                      example_id=str(index))


def load_xsum_tfds(split: str, data_dir: Optional[PathLike] = None,
                   manual_dir: Optional[PathLike] = None) -> List[NLGExample]:
    """Loads TFDS ``xsum`` (train / validation / test).

    The dataset must already be built: its build reads the hand-downloaded
    articles (``xsum-extracts-from-downloads.tar.gz`` in ``manual_dir``) and
    fetches the split ids from the network, so a missing build raises
    FileNotFoundError naming the ``tfds build xsum --manual_dir=...`` command.
    """
    import tensorflow_datasets as tfds  # heavy import, only for this code path

    builder = tfds.builder("xsum", data_dir=None if data_dir is None else str(data_dir))
    if not builder.is_prepared():
        manual = manual_dir or "<folder with xsum-extracts-from-downloads.tar.gz>"
        raise tfds_not_prepared_error("xsum", data_dir, extra=f" --manual_dir={manual}")
    return [xsum_example_from_tfds(features, index)
            for index, features in enumerate(tfds.as_numpy(builder.as_dataset(split=split)))]
