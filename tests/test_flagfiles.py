"""Flagfiles work from any folder; the paper configs can be named without a path."""

import copy
import os
import subprocess
import sys

import pytest
from absl import flags

from kprefix.cli.flagfiles import FlagfileError, available_configs, config_path, expand_flagfiles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch_values(argv):
    """absl's parse of `argv` with kprefix.launch's flags, in a FlagValues of its own."""
    from kprefix import launch

    values = flags.FlagValues()
    for flag in flags.FLAGS.get_flags_for_module(launch):
        values[flag.name] = copy.deepcopy(flag)
    values(argv)
    return values


def test_nested_flagfiles_resolve_against_the_including_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository
    task = os.path.join(ROOT, "configs", "vtab", "deep_cifar100.cfg")
    argv = expand_flagfiles(["launch", f"--flagfile={task}", "--prefix_variant=no_share"])
    values = _launch_values(argv)
    assert values.dataset == "vtab/cifar100"          # deep_cifar100.cfg
    assert values.prefix_dropout == 0.1               # deep.cfg, included by it
    assert values.batch_size == 128                   # base.cfg, included by deep.cfg
    assert values.prefix_variant == "no_share"        # the command line wins


def test_absl_rules_for_lines_and_arguments(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "inner.cfg").write_text("# hash comment\n// slash comment\n\n  --seed=3  \n")
    (tmp_path / "outer.cfg").write_text("--flagfile=a/inner.cfg\n--epochs=2\n")
    monkeypatch.chdir(tmp_path)
    assert expand_flagfiles(["p", "--flagfile", "outer.cfg", "-flagfile=a/inner.cfg", "x"]) == [
        "p", "--seed=3", "--epochs=2", "--seed=3", "x"]
    assert expand_flagfiles(["p", "--", "--flagfile=missing.cfg"]) == [
        "p", "--", "--flagfile=missing.cfg"]
    (tmp_path / "loop.cfg").write_text("--flagfile=loop.cfg\n")
    with pytest.raises(FlagfileError, match="includes itself"):
        expand_flagfiles(["p", "--flagfile=loop.cfg"])
    (tmp_path / "broken.cfg").write_text("--flagfile=nowhere.cfg\n")
    with pytest.raises(FlagfileError, match=r"nowhere.cfg \(included by"):
        expand_flagfiles(["p", "--flagfile=broken.cfg"])


def test_paper_configs_are_named_without_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = available_configs()
    assert {"quickstart", "vtab/deep_cifar100", "fgvc/shallow_cars", "nlg/e2e",
            "theory/smoke"} <= set(names)
    assert len(names) == len([f for _, _, files in os.walk(os.path.join(ROOT, "configs"))
                              for f in files if f.endswith(".cfg")])
    assert config_path("vtab/deep_cifar100.cfg") == config_path("vtab/deep_cifar100")
    argv = expand_flagfiles(["launch", "--config=fgvc/deep_cub", "--epochs=1"], keep_config=True)
    values = _launch_values(argv)
    assert (values.dataset, values.config, values.epochs) == ("fgvc/cub", "fgvc/deep_cub", 1)
    with pytest.raises(FlagfileError, match="vtab/deep_cifar100"):
        config_path("vtab/deep_cifar")


def test_launch_from_another_folder_reads_a_nested_flagfile(tmp_path):
    flagfile = os.path.join(ROOT, "configs", "vtab", "deep_dtd.cfg")
    # A bad value after the flagfile: the run stops at flag validation, after
    # every nested file was read (absl would fail on 'Unable to open flagfile').
    result = subprocess.run(
        [sys.executable, "-m", "kprefix.launch", f"--flagfile={flagfile}", "--prefix_length=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "flagfile" not in result.stderr and "--prefix_length=0" in result.stderr, result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "kprefix.launch", "--config=vtab/no_such_task"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "--config='vtab/no_such_task'" in missing.stderr
