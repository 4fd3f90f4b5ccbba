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


def _text_result(root, dataset, variant, seed, scores, eval_split="test", **extra_flags):
    task = "summarization" if dataset == "xsum" else "table_to_text"
    folder = root / dataset / variant / f"seed{seed}"
    folder.mkdir(parents=True)
    flags = {"task": task, "dataset": dataset, "prefix_variant": variant,
             "prefix_placement": "deep", "seed": seed, "eval_split": eval_split,
             "max_eval_examples": 0, **extra_flags}
    (folder / "results.json").write_text(json.dumps(
        {"eval_split": eval_split, "scores": scores, "flags": flags}))


def _webnlg_scores(bleu, meteor, ter):
    return {"BLEU": dict(zip(("seen", "unseen", "all"), bleu)),
            "METEOR": dict(zip(("seen", "unseen", "all"), meteor)),
            "TER": dict(zip(("seen", "unseen", "all"), ter))}


def test_language_table_two_from_text_runs(tmp_path):
    root = tmp_path / "runs"
    e2e = {"BLEU": 0.69, "NIST": 8.7, "METEOR": 0.46, "ROUGE_L": 0.71, "CIDEr": 2.4,
           "coco_tokenizer": "ptb"}
    _text_result(root, "e2e", "deep_share", 1, e2e)
    _text_result(root, "e2e", "deep_share", 2, {**e2e, "BLEU": 0.71, "NIST": 8.9})
    _text_result(root, "e2e", "no_share", 1, {**e2e, "METEOR": "unavailable: no Java"})
    _text_result(root, "e2e", "no_share", 9, {**e2e, "BLEU": 0.10}, eval_split="validation")
    _text_result(root, "e2e", "no_share", 8, {**e2e, "BLEU": 0.10}, max_eval_examples=4)
    _text_result(root, "webnlg", "deep_share", 1,
                 _webnlg_scores((63.9, 44.3, 54.5), (0.45, 0.36, 0.41), (0.34, 0.52, 0.42)))
    _text_result(root, "xsum", "no_share", 1, {"rouge1": 36.86, "rouge2": 15.16, "rougeL": 29.89})
    out = tmp_path / "report"
    written = write_report(str(root), str(out))
    assert set(written) == {"language.md", "language.csv"}  # no vision runs, no vision tables
    lines = (out / "language.md").read_text().splitlines()
    assert lines[0] == ("| Variant | E2E BLEU | E2E NIST | E2E MET | E2E R-L | E2E CIDEr | "
                        "WebNLG BLEU S | WebNLG BLEU U | WebNLG BLEU A | WebNLG MET S | "
                        "WebNLG MET U | WebNLG MET A | WebNLG TER S | WebNLG TER U | "
                        "WebNLG TER A | XSUM R-1 | XSUM R-2 | XSUM R-L |")
    # Deep-share E2E BLEU: mean of 69 and 71 = 70, sample std sqrt(2) = 1.41.
    assert lines[2].startswith("| Deep-share DEEP | 70.00 ± 1.41 | 8.80 ± 0.14 | 46.00 ± 0.00 "
                               "| 71.00 ± 0.00 | 2.40 ± 0.00 | 63.90 ± 0.00 | 44.30 ± 0.00 |")
    assert lines[2].endswith("| 0.42 ± 0.00 | – | – | – |")
    # No-share: only its final, full-test run counts; METEOR was not computed.
    assert lines[3].startswith("| No-share DEEP | 69.00 ± 0.00 | 8.70 ± 0.00 | – |")
    assert lines[3].endswith("| 36.86 ± 0.00 | 15.16 ± 0.00 | 29.89 ± 0.00 |")
    with open(out / "language.csv") as f:
        rows = {row["variant"]: row for row in csv.DictReader(f)}
    assert rows["Deep-share DEEP"]["E2E BLEU_seeds"] == "2"
    assert float(rows["No-share DEEP"]["XSUM R-2"]) == 15.16
