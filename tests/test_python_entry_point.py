"""`kprefix.run(config)` is `python -m kprefix.launch` without flags: same checks, same results."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import kprefix
from kprefix.runs.config import RunConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Run-specific keys: where the run wrote, and how long it took.
_RUN_SPECIFIC = {"train_seconds", "eval_seconds", "export_dir"}


def _readme_python_example():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _comparable(results):
    flags = {k: v for k, v in results["flags"].items() if k not in ("workdir", "export")}
    return {**{k: v for k, v in results.items() if k not in _RUN_SPECIFIC | {"flags"}},
            "flags": flags}


@pytest.mark.large
def test_the_readme_example_writes_the_results_of_the_quickstart_flagfile(tmp_path):
    """The README's Python example and the quickstart flagfile, one epoch each,
    each in a fresh process: equal results.json (accuracy to 1e-6)."""
    cli_dir, python_dir = tmp_path / "cli", tmp_path / "python"
    cli = subprocess.run(
        [sys.executable, "-m", "kprefix.launch", "--flagfile=configs/quickstart.cfg",
         "--epochs=1", "--noexport", f"--workdir={cli_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    example = _readme_python_example()
    assert "epochs=40" in example and 'workdir="runs/quickstart_python"' in example
    example = (example.replace("epochs=40", "epochs=1")
               .replace('workdir="runs/quickstart_python"',
                        f"workdir={str(python_dir)!r}, export=False")
               .replace('results["export_dir"]', 'results.get("export_dir")'))
    python = subprocess.run([sys.executable, "-c", example], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert python.returncode == 0, python.stderr[-3000:]
    from_cli = json.loads((cli_dir / "results.json").read_text())
    from_python = json.loads((python_dir / "results.json").read_text())
    assert from_python["eval_accuracy"] == pytest.approx(from_cli["eval_accuracy"], abs=1e-6)
    assert str(from_python["eval_accuracy"]) in python.stdout
    from_cli["flags"].pop("config")
    from_python["flags"].pop("config")
    assert _comparable(from_python) == _comparable(from_cli)


def test_a_config_holds_every_launch_flag_under_its_name():
    from absl import flags

    from kprefix import launch
    from kprefix.cli.flagfiles import expand_flagfiles

    launch_flags = {f.name for f in flags.FLAGS.get_flags_for_module(launch)} - {"config"}
    assert set(RunConfig().flag_values()) == launch_flags
    flags.FLAGS.unparse_flags()
    flags.FLAGS(expand_flagfiles(["launch", "--config=quickstart"], keep_config=True))
    try:
        from_flags = launch.run_config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    assert from_flags == RunConfig(
        backbone="vit_tiny", dataset="digits",
        prefix=kprefix.PrefixConfig("deep_share", "deep", length=16, mlp_hidden=64),
        optimizer="sgd", learning_rate=0.8, batch_size=64, epochs=40, warmup_epochs=3, seed=0,
        workdir="runs/quickstart")


@pytest.mark.parametrize("settings, message", [
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(optimizer="lamb"), "Unknown optimizer 'lamb'"),
    (dict(learning_rate=float("nan")), "--learning_rate=nan: use a finite number"),
    (dict(task="summarization", method=kprefix.MethodConfig("linear")),
     "--method=linear does not apply to --task=summarization"),
    (dict(workdir=" "), "--workdir is empty"),
])
def test_a_bad_setting_is_refused_when_the_config_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**settings)


def test_decoding_settings_refuse_a_minimum_above_the_maximum():
    with pytest.raises(ValueError, match="--min_new_tokens=9 exceeds"):
        kprefix.DecodingSettings(min_new_tokens=9, max_new_tokens=8)


def test_a_python_run_checks_the_workdir_before_writing(tmp_path):
    """A usage problem (here: another live run holds the workdir) stops
    `kprefix.run` before it writes, as it stops the launch."""
    from kprefix.runs.workdir import WorkdirLock

    workdir = tmp_path / "run"
    with WorkdirLock(str(workdir)):
        before = sorted(os.listdir(workdir))
        script = textwrap.dedent(f"""
            import kprefix
            kprefix.run(kprefix.RunConfig(workdir={str(workdir)!r}, epochs=1))
        """)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode != 0
        assert "in use by a live run" in result.stderr
        assert sorted(os.listdir(workdir)) == before
