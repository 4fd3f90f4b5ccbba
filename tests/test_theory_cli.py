"""End-to-end runs of ``python -m kprefix.theory`` and its flag checking."""

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags, timeout=120):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "kprefix.theory", *flags],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_small_run_writes_json_table_and_plot(tmp_path):
    output_dir = tmp_path / "small"
    result = _run(
        "--settings=nonshared,shared_onelayer", "--truths=random,proof", "--specifications=exact,over",
        "--min_sample_size=150", "--max_sample_size=600", "--num_sample_sizes=3", "--repetitions=2",
        "--near_starts=1", "--random_starts=1", "--screen_size=250", "--bootstrap_samples=50", "--workers=1",
        f"--output_dir={output_dir}",
    )
    assert result.returncode == 0, result.stderr
    assert "n=600" in result.stdout  # progress lines
    for name in ("results.json", "results.md", "rates.png"):
        assert str(output_dir / name) in result.stdout

    results = json.loads((output_dir / "results.json").read_text())
    assert len(results["fits"]) == 2 * 2 * 2 * 3 * 2
    assert {fit["sample_size"] for fit in results["fits"]} == {150, 300, 600}
    rows = results["summary"]
    # nonshared reports D1,r for r = 1 and 2, shared_onelayer reports D3.
    assert len(rows) == 2 * 2 * 2 + 2 * 2
    for row in rows:
        low, high = row["slope_ci"]
        assert low <= high
        assert all(loss >= 0 for loss in row["mean_loss"])

    table = (output_dir / "results.md").read_text()
    assert table.startswith("| setting | truth | spec (L) | loss | slope | 95% CI")
    assert len(table.strip().splitlines()) == 2 + len(rows)

    with open(output_dir / "rates.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "bad_flag, flag_name, detail",
    [
        ("--settings=shared_linear,deep_share", "--settings", "deep_share"),
        ("--truths=adversarial", "--truths", "adversarial"),
        ("--specifications=under", "--specifications", "under"),
        ("--num_sample_sizes=1", "--num_sample_sizes", "at least 2"),
        ("--noise_std=0", "--noise_std", "positive"),
        ("--nonshared_orders=1,half", "--nonshared_orders", "r >= 1"),
        ("--max_sample_size=500", "--max_sample_size", "larger than --min_sample_size"),
    ],
)
def test_bad_flags_fail_with_a_message_naming_the_flag(bad_flag, flag_name, detail, tmp_path):
    result = _run(bad_flag, f"--output_dir={tmp_path}", timeout=60)
    assert result.returncode != 0
    assert flag_name in result.stderr
    assert detail in result.stderr
    assert not os.listdir(tmp_path)


def test_unknown_flag_is_rejected(tmp_path):
    result = _run("--repetitons=3", f"--output_dir={tmp_path}", timeout=60)
    assert result.returncode != 0
    assert "repetitons" in result.stderr


def test_flagfiles_parse_and_meet_the_experiment_design():
    # In a process of its own: the theory command's flags (--seed, --output_dir)
    # share names with other commands' flags that other tests import.
    script = textwrap.dedent("""
        import json, sys
        from absl import flags
        from kprefix.theory import __main__ as cli
        for path in sys.argv[1:]:
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["kprefix.theory", "--flagfile=" + path])
            config = cli.config_from_flags()
            print(json.dumps({"path": path, "output_dir": flags.FLAGS.output_dir,
                              "sample_sizes": list(config.sample_sizes),
                              "repetitions": config.repetitions,
                              "specifications": sorted(config.specifications),
                              "truths": sorted(config.truths)}))
    """)
    flagfiles = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "theory", "*.cfg")))
    assert any(path.endswith("default.cfg") for path in flagfiles)
    result = subprocess.run([sys.executable, "-c", script, *flagfiles], capture_output=True,
                            text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(parsed) == len(flagfiles)
    for config in parsed:
        assert config["output_dir"].startswith("runs/theory/")
        if config["path"].endswith("smoke.cfg"):
            continue
        sizes = config["sample_sizes"]
        assert len(sizes) >= 8 and sizes[0] == 1000 and sizes[-1] == 100000
        assert config["repetitions"] >= 20
        assert config["specifications"] == ["exact", "over"]
        assert config["truths"] == ["proof", "random"]
