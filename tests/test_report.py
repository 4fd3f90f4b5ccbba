"""The report: result JSONs -> the paper's tables and Figure 2, with hand-computed values."""

import csv
import json
import os
import subprocess
import sys

import pytest

from kprefix.paper_results import paper_results
from kprefix.report import collect, find_results, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    assert set(written) == {f"{name}{kind}.{ext}" for name in ("vtab", "fgvc", "summary")
                            for kind in ("", "_paper") for ext in ("md", "csv")} | {
                                "figure2.png", "prefix_lengths.md"}
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
    # No vision runs, no vision tables.
    assert set(written) == {"language.md", "language.csv", "language_paper.md",
                            "language_paper.csv"}
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


def test_paper_tables_beside_the_measured_cells(results_dir, tmp_path):
    out = tmp_path / "report"
    write_report(str(results_dir), str(out))
    lines = (out / "fgvc_paper.md").read_text().splitlines()
    assert lines[0].startswith("| Variant | cub | cub paper | cub diff | nabirds | nabirds paper |")
    # Simple-share DEEP (Table 6): CUB 90.00 against 88.7; Mean 89.00 against 89.04.
    simple = next(line for line in lines if line.startswith("| Simple-share DEEP |"))
    assert "| 90.00 ± 0.00 | 88.70 | 1.30 |" in simple
    assert simple.endswith("| 89.00 | 89.04 | -0.04 |")
    with open(out / "vtab_paper.csv") as f:
        vtab = {row["variant"]: row for row in csv.DictReader(f)}
    # Deep-share DEEP CIFAR-100 (Table 5: 75.5): measured 72.
    assert (vtab["Deep-share DEEP"]["cifar100 paper"], vtab["Deep-share DEEP"]["cifar100 diff"]) \
        == ("75.5000", "-3.5000")
    # Simple-share appears in Table 6 only: no VTAB value; a missing measurement has no diff.
    assert vtab["Simple-share DEEP"]["cifar100 paper"] == "not in paper"
    assert vtab["Deep-share DEEP"]["Structured mean paper"] == "52.0000"
    assert vtab["Deep-share DEEP"]["Structured mean diff"] == ""


def test_transcribed_group_means_match_the_transcribed_tasks():
    # Table 5's tasks against Table 1's group means, Table 6's datasets against its
    # means: a typo in either would show (the paper rounds tasks to 0.1).
    values = {key: v.value for key, v in paper_results().items()}
    from kprefix.report import benchmark_groups

    groups = benchmark_groups()
    disagreeing = set()
    for row in ("Finetune", "Deep-share SHALLOW", "No-share SHALLOW", "Deep-share DEEP",
                "No-share DEEP"):
        for group, tasks in groups["vtab"].items():
            mean = sum(values[("vtab", row, t.split("/")[1])] for t in tasks) / len(tasks)
            if abs(mean - values[("vtab", row, f"{group} mean")]) >= 0.05:
                disagreeing.add((row, group))
            assert values[("summary", row, f"VTAB {group}")] == values[("vtab", row,
                                                                           f"{group} mean")]
    # The paper's own: its SHALLOW Specialized means (79.48, 77.20) are not the means of
    # its Table 5 tasks (79.68, 78.30); the file keeps both as printed.
    assert disagreeing == {("Deep-share SHALLOW", "Specialized"),
                           ("No-share SHALLOW", "Specialized")}
    for row in {r for table, r, _ in values if table == "fgvc"}:
        mean = sum(values[("fgvc", row, d)] for d in ("cub", "nabirds", "flowers", "dogs",
                                                       "cars")) / 5
        assert abs(mean - values[("fgvc", row, "Mean")]) < 0.05, row


FAKE_LAUNCH = """
import json, os, sys
from kprefix.sweep import read_flag_args
flags = read_flag_args(sys.argv[1:])
os.makedirs(flags["workdir"], exist_ok=True)
accuracy = 0.9 - float(flags["weight_decay"])
with open(os.path.join(flags["workdir"], "results.json"), "w") as f:
    json.dump({"eval_accuracy": accuracy, "eval_split": flags["eval_split"], "flags": flags}, f)
"""


def test_sweep_then_report_shows_the_paper_and_the_difference(tmp_path):
    fake = tmp_path / "fake_launch.py"
    fake.write_text(FAKE_LAUNCH)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))

    def run(*command):
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    run("kprefix.sweep", f"--launcher={sys.executable} {fake}", f"--sweep_dir={tmp_path / 'sw'}",
        "--config=fgvc/deep_cub", "--learning_rates=1", "--weight_decays=0.01,0",
        "--seeds=42,44")
    printed = run("kprefix.report", f"--results_dir={tmp_path / 'sw'}",
                  f"--output_dir={tmp_path / 'report'}")
    # The printed summary (Table 1): the FGVC mean needs all five datasets.
    assert "| Variant | FGVC mean | FGVC mean paper | FGVC mean diff |" in printed
    assert "| Deep-share DEEP | – | 88.28 | – |" in printed
    fgvc = (tmp_path / "report" / "fgvc_paper.md").read_text()
    assert "| Variant | cub | cub paper | cub diff | Mean | Mean paper | Mean diff |" in fgvc
    # Two seeds at 90% (weight decay 0 won) against Table 6's 87.8; no mean of one dataset.
    assert "| Deep-share DEEP | 90.00 ± 0.00 | 87.80 | 2.20 | – | 88.28 | – |" in fgvc
