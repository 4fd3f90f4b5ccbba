"""The wheel and the editable install give kprefix with its configs and console scripts."""

import ast
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
    with open(os.path.join(ROOT, "kprefix", "__init__.py")) as f:
        assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$', f.read(), re.M)


def test_setup_py_is_a_shim_that_passes_no_metadata():
    with open(os.path.join(ROOT, "setup.py")) as f:
        calls = [node for node in ast.walk(ast.parse(f.read())) if isinstance(node, ast.Call)]
    assert [ast.unparse(call) for call in calls] == ["setup()"]


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-3000:])
    return result


def _source_copy(folder):
    """The files a source distribution holds, copied to `folder`."""
    folder.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), folder / name)
    for name in ("kprefix", "configs"):
        shutil.copytree(os.path.join(ROOT, name), folder / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return folder


def _venv_seeing_this_interpreters_packages(folder):
    """A venv whose Python also finds every package this interpreter finds.

    Offline the venv cannot download kprefix's dependencies, so it is given
    this interpreter's `sys.path` in a .pth file. That works whether those
    packages live in the system's site-packages or in a venv of their own,
    where `--system-site-packages` would only reach the base interpreter's.
    The repository itself stays out, so `import kprefix` finds the install.
    """
    _run([sys.executable, "-m", "venv", str(folder)])
    python = folder / ("Scripts" if os.name == "nt" else "bin") / "python"
    venv_site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    inherited = [path for path in sys.path if os.path.isdir(path)
                 and os.path.commonpath([os.path.abspath(path), ROOT]) != ROOT]
    with open(os.path.join(venv_site.stdout.strip(), "inherited_paths.pth"), "w") as f:
        f.write("\n".join(inherited) + "\n")
    return python


def _outside_env():
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _installed_kprefix(python, cwd):
    """Where `python` imports kprefix and its configs from, and a named config expanded."""
    probe = _run([str(python), "-c", (
        "import json, kprefix; from kprefix.cli.flagfiles import configs_dir, expand_flagfiles\n"
        "print(json.dumps([kprefix.__file__, str(configs_dir()),"
        " expand_flagfiles(['p', '--config=vtab/deep_cifar100'])]))")],
        cwd=cwd, env=_outside_env())
    package_file, configs, expanded = json.loads(probe.stdout.splitlines()[-1])
    # deep_cifar100.cfg includes deep.cfg, which includes base.cfg.
    assert "--dataset=vtab/cifar100" in expanded and "--prefix_dropout=0.1" in expanded
    assert "--batch_size=128" in expanded
    return package_file, configs


@pytest.mark.large
def test_wheel_installs_and_runs_a_named_config_from_another_folder(tmp_path):
    source = _source_copy(tmp_path / "source")
    # Offline: the build uses the installed setuptools, the venv sees the
    # installed dependencies, and only the wheel itself is installed.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(tmp_path / "dist"), str(source)])
    (wheel,) = (tmp_path / "dist").glob("kprefix-*.whl")
    venv = tmp_path / "venv"
    python = _venv_seeing_this_interpreters_packages(venv)
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--ignore-installed",  # a kprefix among the inherited packages stays out of it
          str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    package_file, configs = _installed_kprefix(python, elsewhere)
    assert package_file.startswith(str(venv)) and configs.startswith(str(venv))

    bin_dir = python.parent
    # Package data: VPT's FGVC splits and the paper's published results.
    data = _run([str(python), "-c", (
        "from kprefix.data.fgvc import vpt_split; from kprefix.paper_results import paper_results\n"
        "print(len(vpt_split('fgvc/nabirds')['val']), len(paper_results()))")],
        cwd=elsewhere, env=_outside_env())
    assert data.stdout.split()[-2] == "2393" and int(data.stdout.split()[-1]) > 200

    for script in ("kprefix-launch", "kprefix-evaluate", "kprefix-sweep", "kprefix-report"):
        assert (bin_dir / script).exists(), script
    helped = _run([str(bin_dir / "kprefix-launch"), "--helpfull"], cwd=elsewhere,
                  env=_outside_env())
    assert helped.stdout.index("--prefix_variant") < helped.stdout.index("absl.app:")
    launched = _run([str(bin_dir / "kprefix-launch"), "--config=quickstart", "--epochs=1",
                     "--prefix_length=2", "--noexport", "--workdir=run"],
                    cwd=elsewhere, env=_outside_env())
    results = json.loads((elsewhere / "run" / "results.json").read_text())
    assert results["flags"]["config"] == "quickstart"
    assert results["flags"]["prefix_mlp_hidden"] == 64  # from quickstart.cfg
    assert len(results["history"]["loss"]) == 1
    assert "Epoch 1/1" in launched.stdout


@pytest.mark.large
def test_editable_install_imports_the_source_folder_and_its_configs(tmp_path):
    source = _source_copy(tmp_path / "source")
    python = _venv_seeing_this_interpreters_packages(tmp_path / "venv")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--no-build-isolation", "--ignore-installed", "-e", str(source)])
    package_file, configs = _installed_kprefix(python, tmp_path)
    assert package_file == str(source / "kprefix" / "__init__.py")
    assert configs == str(source / "configs")
    # An edit to the source shows without reinstalling.
    (source / "configs" / "edited.cfg").write_text("--epochs=3\n")
    listed = _run([str(python), "-c", "from kprefix.cli.flagfiles import available_configs\n"
                   "print(available_configs())"], cwd=tmp_path, env=_outside_env())
    assert "'edited'" in listed.stdout
