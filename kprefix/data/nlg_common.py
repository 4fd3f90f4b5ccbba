"""Record type and data-folder lookup shared by the E2E, WebNLG and XSUM loaders.

Example:
    >>> example = NLGExample(source="name[The Eagle]", targets=("The Eagle.",))
    >>> example.targets[0]
    'The Eagle.'
"""

from __future__ import annotations

import dataclasses
import doctest
import os
import pathlib
from typing import Optional, Tuple, Union

SHARED_DATA_ENV_VAR = "KPREFIX_SHARED_DATA"

# Marks a docstring example that reads the benchmark data folder
# (`# doctest: +REQUIRES_BENCHMARK_DATA`); the test suite leaves such examples
# out, with the reason, when the folder is absent.
REQUIRES_BENCHMARK_DATA = doctest.register_optionflag("REQUIRES_BENCHMARK_DATA")

PathLike = Union[str, os.PathLike]


@dataclasses.dataclass(frozen=True)
class NLGExample:
    """One input of a text-generation benchmark with all of its references.

    Attributes:
      source: the linearised input the model reads (E2E MR string, WebNLG
        triples joined with " | ", XSUM document).
      targets: every reference text for this input, in file order.
      example_id: the benchmark's own id (WebNLG ``eid``, XSUM ``id``) or a running index.
      category: WebNLG DBpedia category; None elsewhere.
      seen: WebNLG only: whether the category occurs in the training data.
      triples: WebNLG only: the (subject, property, object) triples behind ``source``.
    """

    source: str
    targets: Tuple[str, ...]
    example_id: str = ""
    category: Optional[str] = None
    seen: Optional[bool] = None
    triples: Tuple[Tuple[str, str, str], ...] = ()


def default_shared_data_dir() -> pathlib.Path:
    """``../shared/data`` next to the repository root (where tests look by default)."""
    repository_root = pathlib.Path(__file__).resolve().parents[2]
    return repository_root.parent / "shared" / "data"


def locate_shared_data_dir(explicit: Optional[PathLike] = None) -> Tuple[pathlib.Path, str]:
    """Where the benchmark data folder should be, and why, without requiring it to exist.

    ``explicit``, else ``$KPREFIX_SHARED_DATA``, else the default. Returns ``(folder,
    origin)``; callers that can do without the data (tests that skip) check
    ``folder.is_dir()`` themselves.

    >>> folder, origin = locate_shared_data_dir("/no/such/folder")
    >>> (str(folder), origin, folder.is_dir())
    ('/no/such/folder', 'the given path', False)
    """
    if explicit is not None:
        return pathlib.Path(explicit), "the given path"
    if os.environ.get(SHARED_DATA_ENV_VAR):
        return pathlib.Path(os.environ[SHARED_DATA_ENV_VAR]), f"${SHARED_DATA_ENV_VAR}"
    return default_shared_data_dir(), "the default ../shared/data"


def shared_data_dir(explicit: Optional[PathLike] = None) -> pathlib.Path:
    """The benchmark data folder: ``explicit``, else ``$KPREFIX_SHARED_DATA``, else the default.

    Raises:
      FileNotFoundError: the chosen folder does not exist; the message says how to point
        the code at the data.
    """
    chosen, origin = locate_shared_data_dir(explicit)
    if not chosen.is_dir():
        raise FileNotFoundError(
            f"benchmark data folder {chosen} (from {origin}) does not exist; pass the folder "
            f"that holds e2e/, webnlg2017/ and xsum/, or set ${SHARED_DATA_ENV_VAR} to it")
    return chosen


def require_file(path: PathLike, what: str) -> pathlib.Path:
    """Returns ``path`` as a Path, or raises FileNotFoundError naming ``what`` it should be."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def tfds_not_prepared_error(name: str, data_dir: Optional[PathLike], extra: str = "") -> FileNotFoundError:
    """The error raised when a TFDS dataset has not been built into ``data_dir``."""
    where = f" --data_dir={data_dir}" if data_dir else ""
    location = f" in {data_dir}" if data_dir else ""
    return FileNotFoundError(
        f"TFDS dataset '{name}' is not prepared{location}, and kprefix never downloads data at "
        f"run time. Build it on a machine with network access with "
        f"'tfds build {name}{where}{extra}', then pass that data folder as data_dir.")
