"""Publishes a finished replication: its results beside the code, its tables in the README.

`python -m kprefix.replicate.publish RUN_DIR DOCS_DIR README` copies the
run's `results.json`, `results.md`, `timings.json` and plots from `RUN_DIR`
(a `kprefix.replicate --output_dir`) to `DOCS_DIR`, then rewrites the part of
`README` between the lines `<!-- replication tables: begin -->` and
`<!-- replication tables: end -->` with `results.readme_tables` of that
`results.json`, so that every number in those tables is the run's.
`tests/test_replication_docs.py` checks that they still agree.

Example:

>>> replace_between_markers("a\\n<!-- replication tables: begin -->\\nold\\n"
...                         "<!-- replication tables: end -->\\nb\\n", "new\\n")
'a\\n<!-- replication tables: begin -->\\nnew\\n<!-- replication tables: end -->\\nb\\n'
"""

import json
import os
import shutil
import sys

BEGIN = "<!-- replication tables: begin -->\n"
END = "<!-- replication tables: end -->\n"
PUBLISHED = ("results.json", "results.md", "timings.json", "sample_efficiency.png",
             "e2e_sample_efficiency.png")


def replace_between_markers(document, block):
    """`document` with the text between its BEGIN and END lines replaced by `block`."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"The README has no '{BEGIN.strip()}' ... '{END.strip()}' lines; "
                         "add them where the replication tables go.")
    return document[:start + len(BEGIN)] + block + document[end:]


def readme_block(results_path):
    """The README's replication tables from a `results.json`."""
    from kprefix.replicate.results import readme_tables

    with open(results_path) as f:
        return readme_tables(json.load(f))


def publish(run_dir, docs_dir, readme):
    """Copies the run's results to `docs_dir` and regenerates the README's tables;
    returns the files copied. Raises `FileNotFoundError` before writing anything
    when the run has no `results.json` (it has not finished)."""
    results = os.path.join(run_dir, "results.json")
    if not os.path.exists(results):
        raise FileNotFoundError(f"{results} does not exist: the replication in {run_dir} has "
                                "not finished; rerun it with the same flags to resume.")
    with open(readme) as f:
        document = replace_between_markers(f.read(), readme_block(results))
    os.makedirs(docs_dir, exist_ok=True)
    copied = []
    for name in PUBLISHED:
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(docs_dir, name))
            copied.append(name)
    with open(readme, "w") as f:
        f.write(document)
    return copied


def main(argv):
    if len(argv) != 4:
        sys.exit("usage: python -m kprefix.replicate.publish RUN_DIR DOCS_DIR README")
    try:
        copied = publish(*argv[1:])
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"kprefix.replicate.publish: {error}")
    print(f"Copied {', '.join(copied)} to {argv[2]}; regenerated the tables in {argv[3]}.")


if __name__ == "__main__":
    main(sys.argv)
