"""The wheel installs kprefix with its configs and console scripts, and runs anywhere."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_every_package_is_listed_and_the_version_is_written_once():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(folder, ROOT).replace(os.sep, ".")
             for folder, _, files in os.walk(os.path.join(ROOT, "kprefix"))
             if "__init__.py" in files}
    assert found | {"kprefix.configs"} == listed
    assert _pyproject()["project"]["dynamic"] == ["version"]
    assert not os.path.exists(os.path.join(ROOT, "setup.py"))
    with open(os.path.join(ROOT, "kprefix", "__init__.py")) as f:
        assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$', f.read(), re.M)


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.mark.large
def test_wheel_installs_and_runs_a_named_config_from_another_folder(tmp_path):
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name if source.exists() else
                    (source.mkdir() or source / name))
    for name in ("kprefix", "configs"):
        shutil.copytree(os.path.join(ROOT, name), source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # Offline: the build uses the installed setuptools, the venv sees the
    # installed dependencies, and only the wheel itself is installed.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(tmp_path / "dist"), str(source)])
    (wheel,) = (tmp_path / "dist").glob("kprefix-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--ignore-installed",  # a kprefix in the system site-packages stays out of it
          str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = _run([str(bin_dir / "python"), "-c", (
        "import json, kprefix; from kprefix.flagfiles import configs_dir, expand_flagfiles\n"
        "print(json.dumps([kprefix.__file__, str(configs_dir()),"
        " expand_flagfiles(['p', '--config=vtab/deep_cifar100'])]))")],
        cwd=elsewhere, env=env)
    package_file, configs, expanded = json.loads(probe.stdout.splitlines()[-1])
    assert package_file.startswith(str(venv)) and configs.startswith(str(venv))
    # deep_cifar100.cfg includes deep.cfg, which includes base.cfg.
    assert "--dataset=vtab/cifar100" in expanded and "--prefix_dropout=0.1" in expanded
    assert "--batch_size=128" in expanded

    # Package data: VPT's FGVC splits and the paper's published results.
    data = _run([str(bin_dir / "python"), "-c", (
        "from kprefix.data.fgvc import vpt_split; from kprefix.paper_results import paper_results\n"
        "print(len(vpt_split('fgvc/nabirds')['val']), len(paper_results()))")],
        cwd=elsewhere, env=env)
    assert data.stdout.split()[-2] == "2393" and int(data.stdout.split()[-1]) > 200

    for script in ("kprefix-launch", "kprefix-evaluate", "kprefix-sweep", "kprefix-report"):
        assert (bin_dir / script).exists(), script
    helped = _run([str(bin_dir / "kprefix-launch"), "--helpfull"], cwd=elsewhere, env=env)
    assert helped.stdout.index("--prefix_variant") < helped.stdout.index("absl.app:")
    launched = _run([str(bin_dir / "kprefix-launch"), "--config=quickstart", "--epochs=1",
                     "--prefix_length=2", "--noexport", "--workdir=run"],
                    cwd=elsewhere, env=env)
    results = json.loads((elsewhere / "run" / "results.json").read_text())
    assert results["flags"]["config"] == "quickstart"
    assert results["flags"]["prefix_mlp_hidden"] == 64  # from quickstart.cfg
    assert len(results["history"]["loss"]) == 1
    assert "Epoch 1/1" in launched.stdout
