"""The paper's published results, to set beside measured ones.

`paper_results.csv` (installed with the package) holds every value of the
paper's Tables 1, 2, 5, 6, 7 and 8 that a `kprefix.report` table has a cell
for, transcribed once from the paper's text, each with the table and row it
comes from. Keys are the report's own labels: `(table, row, column)` with
`table` one of `summary`, `fgvc`, `vtab`, `language`.

Example:

>>> from kprefix.paper_results import paper_results
>>> value = paper_results()[("fgvc", "Deep-share DEEP", "cub")]
>>> value.value, value.source, value.paper_row
(87.8, 'Table 6', 'Deep-share DEEP')
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources


@dataclasses.dataclass(frozen=True)
class PaperValue:
    """One published number and where it is printed."""

    value: float
    source: str  # "Table 6"
    paper_row: str  # the row as the paper prints it


@functools.lru_cache(maxsize=None)
def paper_results() -> dict[tuple[str, str, str], PaperValue]:
    """{(report table, row, column): PaperValue} from `paper_results.csv`."""
    text = (importlib.resources.files("kprefix") / "paper_results.csv").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {(row["table"], row["row"], row["column"]):
            PaperValue(float(row["value"]), row["source"], row["paper_row"])
            for row in csv.DictReader(lines)}
