"""The report: result JSONs -> the paper's tables and Figure 2, with hand-computed values."""

import csv
import json
import os

import pytest

from kprefix.report import collect, find_results, write_report

NATURAL = {"cifar100": None, "caltech101": 0.90, "dtd": 0.65, "oxford_flowers102": 0.99,
           "oxford_iiit_pet": 0.91, "svhn": 0.80, "sun397": 0.52}
FGVC = {"cub": 0.90, "nabirds": 0.80, "flowers": 0.99, "dogs": 0.91, "cars": 0.85}


def _result(root, dataset, variant, placement, seed, accuracy, eval_split="test",
            prefix_length=10):
    folder = root / dataset.replace("/", "-") / f"{variant}-{placement}" / f"seed{seed}-{eval_split}"
    folder.mkdir(parents=True)
    flags = {"dataset": dataset, "prefix_variant": variant, "prefix_placement": placement,
             "seed": seed, "eval_split": eval_split, "learning_rate": 1.0,
             "prefix_length": prefix_length}
    (folder / "results.json").write_text(json.dumps(
        {"eval_accuracy": accuracy, "eval_split": eval_split, "flags": flags}))


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "runs"
    for seed, accuracy in zip((42, 44, 82), (0.70, 0.72, 0.74)):
        _result(root, "vtab/cifar100", "deep_share", "deep", seed, accuracy)
    for task, accuracy in NATURAL.items():
        if accuracy is not None:
            _result(root, f"vtab/{task}", "deep_share", "deep", 42, accuracy)
    _result(root, "vtab/cifar100", "deep_share", "deep", 100, 0.99, eval_split="val200")
    _result(root, "vtab/cifar100", "no_share", "deep", 42, 0.40)
    _result(root, "vtab/cifar100", "no_share", "shallow", 42, 0.30, prefix_length=50)
    for dataset, accuracy in FGVC.items():
        _result(root, f"fgvc/{dataset}", "simple_share", "deep", 42, accuracy)
    _result(root, "fgvc/cub", "deep_share", "deep", 42, 0.88)
    _result(root, "fgvc/cub", "deep_share", "deep", 44, 0.90)
    (root / "selection.json").write_text(json.dumps({"learning_rate": 1.0}))
    return root


def test_only_final_runs_count_with_mean_and_sample_std(results_dir):
    cells = collect(find_results(str(results_dir)))
    cifar = cells[("vtab/cifar100", "deep_share", "deep")]
    assert (round(cifar.mean, 6), round(cifar.std, 6), cifar.seeds) == (72.0, 2.0, 3)
    cub = cells[("fgvc/cub", "deep_share", "deep")]
    assert round(cub.mean, 6) == 89.0 and cub.std == pytest.approx(2 ** 0.5)
    assert cells[("vtab/cifar100", "no_share", "shallow")].std == 0.0


def test_tables_with_group_means_in_markdown_and_csv(results_dir, tmp_path):
    out = tmp_path / "report"
    written = write_report(str(results_dir), str(out))
    assert set(written) == {"vtab.md", "vtab.csv", "fgvc.md", "fgvc.csv", "summary.md",
                            "summary.csv", "figure2.png", "prefix_lengths.md"}
    assert "| vtab/cifar100 | No-share SHALLOW | 50 |" in (out / "prefix_lengths.md").read_text()
    vtab_lines = (out / "vtab.md").read_text().splitlines()
    assert vtab_lines[0].startswith("| Variant | cifar100 | caltech101 | dtd |")
    assert "Natural mean" in vtab_lines[0] and "Structured mean" in vtab_lines[0]
    rows = [line.split(" | ")[0] for line in vtab_lines[2:]]
    assert rows == ["| Deep-share DEEP", "| No-share DEEP", "| Simple-share DEEP",
                    "| No-share SHALLOW"]
    deep_share = vtab_lines[2]
    # Natural mean = (72 + 90 + 65 + 99 + 91 + 80 + 52) / 7 = 78.43; other groups incomplete.
    assert "| 72.00 ± 2.00 | 90.00 ± 0.00 |" in deep_share and "| 78.43 |" in deep_share
    assert deep_share.endswith("| – | – |")
    assert "| 40.00 ± 0.00 |" in vtab_lines[3] and "78.43" not in vtab_lines[3]

    with open(out / "summary.csv") as f:
        summary = {row["variant"]: row for row in csv.DictReader(f)}
    assert summary["Simple-share DEEP"]["FGVC mean"] == "89.0000"  # (90+80+99+91+85)/5
    assert summary["Deep-share DEEP"]["VTAB Natural"] == "78.4286"
    assert summary["Deep-share DEEP"]["FGVC mean"] == ""
    with open(out / "fgvc.csv") as f:
        fgvc = {row["variant"]: row for row in csv.DictReader(f)}
    assert (fgvc["Deep-share DEEP"]["cub"], fgvc["Deep-share DEEP"]["cub_std"],
            fgvc["Deep-share DEEP"]["cub_seeds"]) == ("89.0000", "1.4142", "2")
    assert fgvc["Simple-share DEEP"]["Mean"] == "89.0000"
    png = (out / "figure2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_no_final_results_is_an_error_naming_the_flag(tmp_path):
    _result(tmp_path, "vtab/dtd", "deep_share", "deep", 42, 0.5, eval_split="val200")
    with pytest.raises(FileNotFoundError, match="--results_dir"):
        write_report(str(tmp_path), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
