"""Text-generation benchmarks (E2E, WebNLG 2017, XSUM) as records and tf.data pipelines.

Loaders return lists of :class:`NLGExample` (one per input, with all its
references); the functions below turn them into what training and evaluation
need:

* :func:`training_pairs` / :func:`training_dataset`: one (source, target) pair
  per reference, the way prefix-tuning trains;
* :func:`evaluation_sources` / :func:`evaluation_references` /
  :func:`evaluation_dataset`: one source per input with its reference list,
  in loader order (the order the official scorers expect).

Example:
    >>> examples = [NLGExample("name[A]", ("A is nice.", "Try A.")),
    ...             NLGExample("name[B]", ("B.",))]
    >>> list(training_pairs(examples))
    [('name[A]', 'A is nice.'), ('name[A]', 'Try A.'), ('name[B]', 'B.')]
    >>> evaluation_references(examples)
    [['A is nice.', 'Try A.'], ['B.']]
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

from kprefix.data.nlg_common import (NLGExample, SHARED_DATA_ENV_VAR, default_shared_data_dir,
                                     locate_shared_data_dir, shared_data_dir)
from kprefix.data.nlg_e2e import (detokenize_e2e, linearize_mr, load_e2e, load_e2e_tfds,
                                  parse_mr, read_e2e_csv)
from kprefix.data.nlg_webnlg import (WEBNLG2017_UNSEEN_CATEGORIES, is_seen_category,
                                     linearize_triples, load_webnlg, load_webnlg_tfds,
                                     read_webnlg_xml)
from kprefix.data.nlg_xsum import load_xsum, load_xsum_tfds, read_xsum_jsonl

__all__ = [
    "NLGExample", "SHARED_DATA_ENV_VAR", "WEBNLG2017_UNSEEN_CATEGORIES", "default_shared_data_dir",
    "detokenize_e2e", "evaluation_dataset", "evaluation_references", "evaluation_sources",
    "is_seen_category", "linearize_mr", "linearize_triples", "load_e2e", "load_e2e_tfds",
    "load_task", "load_webnlg", "load_webnlg_tfds", "load_xsum", "load_xsum_tfds",
    "locate_shared_data_dir", "parse_mr",
    "read_e2e_csv", "read_webnlg_xml", "read_xsum_jsonl", "shared_data_dir", "training_dataset",
    "training_pairs",
]

TASKS = ("e2e", "webnlg", "xsum")


def load_task(task: str, split: str, data_dir: Optional[str] = None,
              source_format: str = "raw") -> List[NLGExample]:
    """Loads ``split`` of ``task`` (e2e, webnlg or xsum) from the shared data folder.

    ``source_format`` (``"reference"`` or ``"raw"``) chooses the E2E/WebNLG
    input form (see :mod:`kprefix.data.nlg_e2e`, :mod:`kprefix.data.nlg_webnlg`);
    XSUM has one form.
    """
    loaders = {"e2e": load_e2e, "webnlg": load_webnlg, "xsum": load_xsum}
    if task not in loaders:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if task == "xsum":
        return load_xsum(split, data_dir)
    return loaders[task](split, data_dir, source_format=source_format)


def training_pairs(examples: Sequence[NLGExample]) -> Iterator[Tuple[str, str]]:
    """Yields one (source, target) pair per reference."""
    for example in examples:
        for target in example.targets:
            yield example.source, target


def evaluation_sources(examples: Sequence[NLGExample]) -> List[str]:
    """One source per input, in order."""
    return [example.source for example in examples]


def evaluation_references(examples: Sequence[NLGExample]) -> List[List[str]]:
    """The reference list of each input, in order."""
    return [list(example.targets) for example in examples]


def training_dataset(examples: Sequence[NLGExample]):
    """A ``tf.data.Dataset`` of (source, target) scalar string tensors, one per reference."""
    import tensorflow as tf  # heavy import, only where a dataset is wanted

    pairs = list(training_pairs(examples))
    if not pairs:
        raise ValueError("no (source, target) pairs: the examples have no references")
    sources, targets = zip(*pairs)
    return tf.data.Dataset.from_tensor_slices((list(sources), list(targets)))


def evaluation_dataset(examples: Sequence[NLGExample]):
    """A ``tf.data.Dataset`` of (source, references) with references a 1-D string tensor."""
    import tensorflow as tf  # heavy import, only where a dataset is wanted

    if not examples:
        raise ValueError("no examples to build an evaluation dataset from")
    references = tf.ragged.constant([list(e.targets) for e in examples], dtype=tf.string)
    sources = tf.constant([e.source for e in examples], dtype=tf.string)
    return tf.data.Dataset.from_tensor_slices((sources, references))
