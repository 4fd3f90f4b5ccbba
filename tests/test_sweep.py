"""The sweep driver: selection, restarts, printed commands, local runs (no TensorFlow)."""

import json
import math
import os
import subprocess
import sys

import pytest

from kprefix.sweep import (
    SPLIT_PLANS,
    GridResult,
    SweepError,
    grid_runs,
    read_flag_args,
    read_grid_results,
    select_best,
    split_arguments,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILE = "--flagfile=configs/vtab/deep_cifar100.cfg"


def _sweep(*args):
    return subprocess.run([sys.executable, "-m", "kprefix.sweep", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def _write_results(workdir, accuracy, eval_split="val200"):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"eval_accuracy": accuracy, "eval_split": eval_split,
                   "flags": {"eval_split": eval_split}}, f)


def test_best_validation_accuracy_wins():
    results = [GridResult(10, 0.01, 0.50), GridResult(1, 0.0, 0.62), GridResult(0.1, 0.0, 0.61)]
    assert select_best(results) == GridResult(1, 0.0, 0.62)


def test_ties_go_to_smaller_learning_rate_then_larger_weight_decay():
    tied = [GridResult(25, 0.01, 0.8), GridResult(2.5, 0.0, 0.8), GridResult(2.5, 1e-3, 0.8),
            GridResult(0.5, 0.01, 0.79)]
    assert select_best(tied) == GridResult(2.5, 1e-3, 0.8)
    # float32 metrics of the same count of correct answers are a tie too.
    assert select_best([GridResult(5, 0, 0.8000001), GridResult(1, 0, 0.8)]).learning_rate == 1


def test_diverged_runs_never_win():
    results = [GridResult(50, 0.0, math.nan), GridResult(0.05, 0.0, 0.1)]
    assert select_best(results).learning_rate == 0.05


def test_selection_reads_the_grid_and_names_missing_runs(tmp_path):
    runs = grid_runs(str(tmp_path), SPLIT_PLANS["vtab"], [10, 1], [1e-4, 0], seed=42)
    accuracies = {"lr10_wd0.0001": 0.3, "lr10_wd0": 0.7, "lr1_wd0.0001": 0.7, "lr1_wd0": 0.6}
    for run in runs[:3]:
        _write_results(run.workdir, accuracies[os.path.basename(run.workdir)])
    with pytest.raises(SweepError, match="1 of 4 grid runs.*lr1_wd0"):
        read_grid_results(runs)
    _write_results(runs[3].workdir, accuracies["lr1_wd0"])
    assert select_best(read_grid_results(runs)) == GridResult(1.0, 1e-4, 0.7)


def test_arguments_split_into_sweep_and_launch_flags(tmp_path, monkeypatch):
    sweep_args, launch_args = split_arguments(
        ["--flagfile=a.cfg", "--seeds=1,2", "--noprint_commands", "--prefix_variant=no_share"])
    assert sweep_args == ["--seeds=1,2", "--noprint_commands"]
    assert launch_args == ["--flagfile=a.cfg", "--prefix_variant=no_share"]
    (tmp_path / "base.cfg").write_text("# comment\n--dataset=vtab/dtd\n--export\n")
    (tmp_path / "task.cfg").write_text("--flagfile=base.cfg\n--prefix_length=3\n")
    monkeypatch.chdir(tmp_path)
    assert read_flag_args(["--flagfile=task.cfg", "--prefix_length=4", "--noexport"]) == {
        "dataset": "vtab/dtd", "export": False, "prefix_length": 4}


def test_flag_args_are_parsed_by_absl_with_the_launch_flags(tmp_path):
    # Spellings a line-by-line reader gets wrong: `--name value`, `-name=value`,
    # a flagfile nested relative to its includer, and an unknown flag.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.cfg").write_text("// comment\n  --prefix_placement=0,2  \n")
    (tmp_path / "task.cfg").write_text("--flagfile=sub/base.cfg\n-epochs=7\n")
    values = read_flag_args([f"--flagfile={tmp_path / 'task.cfg'}", "--seed", "3",
                             "--noprefix_share_across_layers"])
    assert values == {"epochs": 7, "prefix_placement": "0,2", "seed": 3,
                      "prefix_share_across_layers": False}
    assert read_flag_args(["--config=vtab/deep_dtd"])["dataset"] == "vtab/dtd"
    with pytest.raises(SweepError, match="prefix_lenght"):
        read_flag_args(["--prefix_lenght=3"])
    with pytest.raises(SweepError, match="prefix_length"):
        read_flag_args(["--prefix_length=0"])


def test_print_commands_skips_finished_runs_then_prints_the_seed_phase(tmp_path):
    grid = tmp_path / "vtab-cifar100" / "no_share-deep" / "grid"
    _write_results(grid / "lr10_wd0", 0.4)
    common = [FLAGFILE, "--prefix_variant=no_share", f"--sweep_dir={tmp_path}",
              "--learning_rates=10,2.5", "--weight_decays=0.001,0", "--print_commands"]
    result = _sweep(*common)
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 3  # 2 x 2 grid, one finished
    assert commands[0] == (
        "python -m kprefix.launch --flagfile=configs/vtab/deep_cifar100.cfg "
        "--prefix_variant=no_share --learning_rate=10 --weight_decay=0.001 "
        "--weight_decay_mode=coupled --seed=42 "
        "--train_split=train800 --eval_split=val200 --export=false "
        f"--workdir={grid / 'lr10_wd0.001'}")
    assert not any("lr10_wd0 " in c or c.endswith("lr10_wd0") for c in commands)
    assert "--phase=final --print_commands" in result.stdout.splitlines()[-1]

    for name, accuracy in {"lr10_wd0.001": 0.5, "lr2.5_wd0.001": 0.55, "lr2.5_wd0": 0.55}.items():
        _write_results(grid / name, accuracy)
    _write_results(grid.parent / "final" / "seed44", 0.5, eval_split="test")
    final = _sweep(*common, "--phase=final")
    assert final.returncode == 0, final.stderr
    commands = [line for line in final.stdout.splitlines() if not line.startswith("#")]
    assert [c.split("--seed=")[1].split()[0] for c in commands] == ["42", "82", "100", "800"]
    assert all("--learning_rate=2.5 --weight_decay=0.001 --weight_decay_mode=coupled" in c
               for c in commands)
    assert all("--train_split=train800val200 --eval_split=test" in c for c in commands)
    selection = json.loads((grid.parent / "selection.json").read_text())
    assert (selection["learning_rate"], selection["weight_decay"]) == (2.5, 0.001)
    assert len(selection["grid"]) == 4
    # Not swept: the flagfile's length is recorded.
    assert (selection["prefix_length"], selection["prefix_length_swept"]) == (10, False)


def test_prefix_lengths_join_the_grid_and_the_selection(tmp_path):
    fake = tmp_path / "fake_launch.py"
    fake.write_text(FAKE_LAUNCH.replace(
        "accuracy = ", "accuracy = -abs(int(args['prefix_length']) - 50) / 1000 + "))
    os.environ["FAKE_LAUNCH_LOG"] = str(tmp_path / "calls.txt")
    result = _sweep(f"--launcher=python {fake}", f"--sweep_dir={tmp_path / 'sw'}", FLAGFILE,
                    "--prefix_lengths=1,5,10,50,100,200", "--learning_rates=5,2",
                    "--weight_decays=0", "--seeds=42")
    assert result.returncode == 0, result.stderr
    exp = tmp_path / "sw" / "vtab-cifar100" / "deep_share-deep"
    assert len(list((exp / "grid").iterdir())) == 6 * 2
    assert (exp / "grid" / "len200_lr5_wd0" / "results.json").exists()
    selection = json.loads((exp / "selection.json").read_text())
    assert (selection["prefix_length"], selection["learning_rate"]) == (50, 2.0)
    assert selection["prefix_length_swept"] and len(selection["grid"]) == 12
    final = json.loads((exp / "final" / "seed42" / "results.json").read_text())
    assert final["flags"]["prefix_length"] == "50"
    assert "prefix_length=50" in result.stdout


def test_ties_between_lengths_go_to_the_shorter_prefix():
    tied = [GridResult(1, 0, 0.8, 100), GridResult(1, 0, 0.8, 10), GridResult(1, 0, 0.7, 5)]
    assert select_best(tied).prefix_length == 10


def test_fgvc_grid_uses_train_and_val_and_final_uses_train_and_test(tmp_path):
    result = _sweep("--flagfile=configs/fgvc/shallow_cars.cfg", f"--sweep_dir={tmp_path}",
                    "--learning_rates=1", "--weight_decays=0", "--print_commands")
    assert "--train_split=train --eval_split=val" in result.stdout
    assert SPLIT_PLANS["fgvc"].final_train == "train" and SPLIT_PLANS["fgvc"].final_eval == "test"


FAKE_LAUNCH = """
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
with open(os.environ["FAKE_LAUNCH_LOG"], "a") as log:
    log.write(args["workdir"] + "\\n")
if float(args["learning_rate"]) > 20:
    sys.exit("diverged")
os.makedirs(args["workdir"], exist_ok=True)
accuracy = 1.0 / (1.0 + abs(float(args["learning_rate"]) - 2.0)) - float(args["weight_decay"])
with open(os.path.join(args["workdir"], "results.json"), "w") as f:
    json.dump({"eval_accuracy": accuracy, "flags": args}, f)
"""


def test_local_sweep_runs_each_run_once_and_restarts(tmp_path):
    fake = tmp_path / "fake_launch.py"
    fake.write_text(FAKE_LAUNCH)
    log = tmp_path / "calls.txt"
    os.environ["FAKE_LAUNCH_LOG"] = str(log)
    common = [f"--launcher=python {fake}", f"--sweep_dir={tmp_path / 'sw'}", FLAGFILE,
              "--learning_rates=5,1", "--weight_decays=0.01,0", "--seeds=42,44"]
    assert _sweep(*common).returncode == 0
    calls = log.read_text().splitlines()
    assert len(calls) == 4 + 2
    assert calls[-1].endswith(os.path.join("final", "seed44"))
    final = json.loads((tmp_path / "sw" / "vtab-cifar100" / "deep_share-deep" / "final" / "seed42"
                        / "results.json").read_text())
    assert (final["flags"]["learning_rate"], final["flags"]["weight_decay"]) == ("1", "0")
    again = _sweep(*common, "--seeds=42,44,82")
    assert again.returncode == 0
    assert log.read_text().splitlines()[len(calls):] == [calls[-1].replace("seed44", "seed82")]
    failing = _sweep(*common[:-3], "--learning_rates=50", "--weight_decays=0", "--seeds=42")
    assert failing.returncode == 1 and "Run failed" in failing.stderr and "diverged" in failing.stderr


def test_a_diverged_grid_run_is_read_and_ranks_last(tmp_path):
    runs = grid_runs(str(tmp_path), SPLIT_PLANS["vtab"], [50, 1], [0], seed=42)
    os.makedirs(runs[0].workdir)
    with open(os.path.join(runs[0].workdir, "results.json"), "w") as f:
        json.dump({"status": "diverged", "error": "loss became nan"}, f)
    _write_results(runs[1].workdir, 0.2)
    assert select_best(read_grid_results(runs)).learning_rate == 1


@pytest.mark.parametrize("method_config,folder,rates", [
    ("vtab/methods/finetune", "finetune", ["0.005", "0.001", "0.0005", "0.0001"]),
    ("vtab/methods/partial", "partial-1", ["0.005", "0.001", "0.0005", "0.0001"]),
    ("vtab/methods/vpt", "vpt-deep", ["50", "25", "10", "5", "2.5", "1", "0.5", "0.25", "0.1",
                                      "0.05"]),
])
def test_methods_get_their_own_folder_and_grid(tmp_path, method_config, folder, rates):
    result = _sweep(FLAGFILE, f"--config={method_config}", f"--sweep_dir={tmp_path}",
                    "--weight_decays=0", "--print_commands")
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert [c.split("--learning_rate=")[-1].split()[0] for c in commands] == rates
    assert all(os.path.join(str(tmp_path), "vtab-cifar100", folder, "grid") in c
               for c in commands)
