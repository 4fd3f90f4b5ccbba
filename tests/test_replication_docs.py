"""The README's replication tables are the committed run's numbers (docs/replication)."""

import json
import pathlib

import pytest

from kprefix.replicate import publish

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "replication" / "results.json"


def test_readme_replication_tables_equal_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    block = publish.readme_block(str(RESULTS))
    assert publish.replace_between_markers(readme, block) == readme, (
        "The README's replication tables differ from docs/replication/results.json; "
        "regenerate them with python -m kprefix.replicate.publish.")


def test_the_committed_run_answers_what_the_replication_asks():
    results = json.loads(RESULTS.read_text())
    at_edge = [(task, name) for task, by_variant in results["selection"].items()
               for name, chosen in by_variant.items() if chosen["at_grid_edge"]]
    assert not at_edge
    gaps = results["sample_efficiency_gaps"]
    assert len({gap["task"] for gap in gaps}) >= 2
    assert all(len(gap["by_size"]) >= 5 for gap in gaps)
    assert results["timings"]["last_invocation_seconds"] < 3 * 3600
    assert results["text"]["variants"]
    # No machine path: the presets are named relative to the run's folder.
    assert not any(path.startswith("/") for path in results["presets"].values())
    assert "/" not in json.dumps(results["text"]["pretraining"]["config"])


def test_publish_refuses_an_unfinished_run_and_a_readme_without_markers(tmp_path):
    (tmp_path / "README.md").write_text("no markers\n")
    with pytest.raises(FileNotFoundError, match="not finished"):
        publish.publish(str(tmp_path / "run"), str(tmp_path / "docs"),
                        str(tmp_path / "README.md"))
    with pytest.raises(ValueError, match="no '<!-- replication tables: begin -->'"):
        publish.replace_between_markers("no markers\n", "x\n")
    assert not (tmp_path / "docs").exists()
