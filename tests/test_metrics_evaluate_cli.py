"""Tests of ``python -m kprefix.evaluate`` (run as a subprocess, as a user would)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from kprefix import evaluate
from kprefix.data.nlg_common import SHARED_DATA_ENV_VAR, default_shared_data_dir

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.get(SHARED_DATA_ENV_VAR) or default_shared_data_dir())
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"data folder {DATA_DIR} is absent")


def run_cli(*flags):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kprefix.evaluate", *flags], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@needs_data
def test_xsum_prints_one_json_object(tmp_path):
    references = DATA_DIR / "xsum" / "test321.jsonl"
    summaries = [json.loads(line)["summary"] for line in references.open(encoding="utf-8")]
    predictions = tmp_path / "predictions.txt"
    predictions.write_text("\n".join(summaries) + "\n", encoding="utf-8")
    completed = run_cli("--task=xsum", f"--references={references}", f"--predictions={predictions}")
    assert completed.returncode == 0, completed.stderr
    scores = json.loads(completed.stdout)
    assert scores["task"] == "xsum" and scores["num_segments"] == 321
    assert scores["rouge1"] == pytest.approx(100.0) and scores["rougeL"] == pytest.approx(100.0)


@needs_data
def test_e2e_tsv_predictions_without_meteor():
    completed = run_cli("--task=e2e", f"--references={DATA_DIR / 'e2e' / 'testset_w_refs.csv'}",
                        f"--predictions={DATA_DIR / 'e2e' / 'reference_outputs' / 'tgen.tsv'}",
                        "--nometeor")
    assert completed.returncode == 0, completed.stderr
    scores = json.loads(completed.stdout)
    assert (round(scores["BLEU"], 4), round(scores["NIST"], 4)) == (0.6593, 8.6094)
    assert scores["ROUGE_L"] == pytest.approx(0.6850, abs=0.002)
    assert scores["METEOR"] == "unavailable: METEOR was not requested"


def test_missing_predictions_file_names_the_flag(tmp_path):
    references = tmp_path / "refs.txt"
    references.write_text("a summary\n", encoding="utf-8")
    completed = run_cli("--task=xsum", f"--references={references}",
                        f"--predictions={tmp_path / 'nope.txt'}")
    assert completed.returncode == 2
    assert "--predictions: file not found" in completed.stderr
    assert completed.stdout == ""


def test_missing_references_flag_and_mismatched_lines(tmp_path):
    predictions = tmp_path / "predictions.txt"
    predictions.write_text("one\ntwo\n", encoding="utf-8")
    completed = run_cli("--task=xsum", f"--predictions={predictions}")
    assert completed.returncode == 2 and "--references is required" in completed.stderr
    references = tmp_path / "refs.txt"
    references.write_text("only one\n", encoding="utf-8")
    completed = run_cli("--task=xsum", f"--references={references}", f"--predictions={predictions}")
    assert completed.returncode == 2
    assert "--predictions has 2 lines but --references has 1 summaries" in completed.stderr


def test_webnlg_without_test_xml_asks_for_the_flag(tmp_path):
    predictions = tmp_path / "predictions.txt"
    predictions.write_text("x\n", encoding="utf-8")
    with pytest.raises(evaluate.InputError, match="--webnlg_test_xml"):
        evaluate.run("webnlg", str(tmp_path), str(predictions))


def test_e2e_predictions_plain_lines_or_mr_table(tmp_path):
    sources = ["name[A]", "name[B]"]
    plain = tmp_path / "plain.txt"
    plain.write_text("A out\nB out\n", encoding="utf-8")
    assert evaluate.read_e2e_predictions(plain, sources) == ["A out", "B out"]
    table = tmp_path / "table.tsv"
    table.write_text('MR\toutput\n"name[B]"\tB out\n"name[A]"\tA out\n', encoding="utf-8")
    assert evaluate.read_e2e_predictions(table, sources) == ["A out", "B out"]
    with pytest.raises(evaluate.InputError, match="no output for 1 MR"):
        evaluate.read_e2e_predictions(table, sources + ["name[C]"])
    with pytest.raises(evaluate.InputError, match="2 lines but --references has 3 distinct MRs"):
        evaluate.read_e2e_predictions(plain, sources + ["name[C]"])
