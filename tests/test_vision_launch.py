"""The vision flagfiles parse and follow the paper; a tiny sweep runs end to end."""

import concurrent.futures
import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from kprefix.data import fgvc, vtab
from kprefix.sweep import read_flag_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
FAMILIES = {"vtab": vtab.TASKS, "fgvc": fgvc.DATASETS}
# The paper's reference scripts: tokens per FGVC dataset (prefixes = tokens // 2).
FGVC_TOKENS = {"deep": {"cub": 20, "nabirds": 100, "flowers": 10, "dogs": 200, "cars": 400},
               "shallow": {"cub": 200, "nabirds": 100, "flowers": 200, "dogs": 200, "cars": 200}}


# The reference's training settings (docs/reference.md, "Training and vision").
REFERENCE_SETTINGS = {
    "weight_decay_mode": "coupled", "drop_remainder": False, "schedule_unit": "epoch",
    "backbone_dropout": False, "prefix_mlp_init": "torch_linear",
    "prefix_dropout_site": "prompt", "head_init": "kaiming_normal_fan_out",
}


def _task_files(family):
    return sorted(glob.glob(os.path.join(ROOT, "configs", family, "*_*.cfg")))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_task_file_per_task_and_placement_with_paper_settings(family, monkeypatch):
    monkeypatch.chdir(ROOT)
    seen = set()
    for path in _task_files(family):
        placement = os.path.basename(path).split("_", 1)[0]
        values = read_flag_args([f"--flagfile={os.path.relpath(path, ROOT)}"])
        assert values["dataset"] in FAMILIES[family], path
        assert values["prefix_placement"] == placement, path
        assert values["prefix_dropout"] == (0.1 if placement == "deep" else 0.0), path
        with open(path) as f:
            text = f.read()
        length = int(values["prefix_length"])
        if family == "fgvc":
            source = re.search(r"# prefix length (\d+): from Minhchuyentoancbn/ReparamPrefix "
                               r"CV/scripts/\S+ .*\(NUM_TOKENS (\d+), P = T/2", text)
            assert source and int(source.group(1)) == length, path
            tokens = int(source.group(2))
            assert tokens == FGVC_TOKENS[placement][values["dataset"].split("/")[1]], path
            assert length == tokens // 2, path
        else:
            assert re.search(rf"# prefix length {length}: selected by sweep", text), path
        assert values["batch_size"] == (128 if family == "vtab" else 64)
        assert (values["epochs"], values["warmup_epochs"], values["optimizer"]) == (100, 10, "sgd")
        assert values["backbone"] == "vit_base_patch16_224_imagenet21k"
        assert (values["prefix_mlp_hidden"], values["prefix_init"]) == (48, "xavier_uniform")
        assert {name: values[name] for name in REFERENCE_SETTINGS} == REFERENCE_SETTINGS, path
        seen.add((values["dataset"], placement))
    assert seen == {(task, p) for task in FAMILIES[family] for p in ("deep", "shallow")}


def test_every_flagfile_loads_with_the_launch_flags():
    """absl itself parses each file (expanded) with kprefix.launch's flag definitions."""
    files = sorted(glob.glob(os.path.join("configs", "vtab", "*.cfg"))
                   + glob.glob(os.path.join("configs", "fgvc", "*.cfg")))
    script = textwrap.dedent("""
        import sys
        from absl import flags
        import kprefix.launch
        from kprefix.cli.flagfiles import expand_flagfiles
        for path in sys.argv[1:]:
            flags.FLAGS.unparse_flags()
            flags.FLAGS(expand_flagfiles(["launch", "--flagfile=" + path]))
            print(path, flags.FLAGS.dataset, flags.FLAGS.prefix_length, flags.FLAGS.batch_size,
                  flags.FLAGS.weight_decay_mode, flags.FLAGS.drop_remainder,
                  flags.FLAGS.schedule_unit, flags.FLAGS.backbone_dropout)
    """)
    result = subprocess.run([sys.executable, "-c", script, *files], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == len(files)
    assert "configs/vtab/deep_svhn.cfg vtab/svhn 50 128 coupled False epoch False" in result.stdout


WRAPPER = """
import dataclasses
import sys

sys.path.insert(0, {tests!r})
from kprefix.cli import tensorflow_logs as logs

logs.configure_tensorflow_logging(sys.argv)
logs.import_tensorflow_quietly(None)  # as the launch does, before the mocks import TFDS
import tensorflow_datasets as tfds
from kprefix import cli, launch
from kprefix.data import vtab
from test_data_vtab import fake_as_dataset

# A few mocked examples per split instead of the protocol's 800/200/1880.
tiny = {{"train800": (("train", 0, 16),), "val200": (("validation", 0, 8),),
        "train800val200": (("train", 0, 16), ("validation", 0, 8)), "test": (("test", 0, 12),)}}
vtab.TASKS["vtab/dtd"] = dataclasses.replace(vtab.TASKS["vtab/dtd"], slices=tiny)
with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                            as_dataset_fn=fake_as_dataset):
    cli.run(launch.main)
"""


def _tiny_sweep(wrapper, sweep_dir, family, learning_rate, *launch_flags):
    """A one-point sweep of vtab/dtd whose grid point is already done (the local
    grid loop has its own fast test): it selects that point and trains the seed
    run for real."""
    experiment = sweep_dir / "vtab-dtd" / family
    grid_point = experiment / "grid" / f"lr{learning_rate}_wd0"
    grid_point.mkdir(parents=True)
    (grid_point / "results.json").write_text(
        json.dumps({"eval_accuracy": 0.25, "flags": {"eval_split": "val200"}}))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "kprefix.sweep", f"--launcher=python {wrapper}",
         f"--sweep_dir={sweep_dir}", f"--learning_rates={learning_rate}", "--weight_decays=0",
         "--seeds=42", "--flagfile=configs/vtab/deep_dtd.cfg", *launch_flags,
         "--backbone=vit_tiny", "--batch_size=8", "--epochs=2", "--warmup_epochs=1",
         "--prefix_length=2", "--prefix_mlp_hidden=8", "--noexport", "--nojit_compile"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    return experiment, result


@pytest.mark.large
def test_tiny_sweep_then_report_end_to_end(tmp_path):
    wrapper = tmp_path / "mock_launch.py"
    wrapper.write_text(WRAPPER.format(tests=TESTS))
    sweep_dir = tmp_path / "sweeps"
    experiment, result = _tiny_sweep(wrapper, sweep_dir, "deep_share-deep", 0.5)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = json.loads((experiment / "final" / "seed42" / "results.json").read_text())
    assert final["flags"]["train_split"] == "train800val200" and final["eval_split"] == "test"
    assert final["flags"]["learning_rate"] == 0.5 and final["flags"]["backbone"] == "vit_tiny"
    assert len(final["history"]["loss"]) == 2
    # The run's log reads as plain text: one line per epoch, no progress-bar
    # redraws, no TensorFlow start-up noise.
    log = (experiment / "final" / "seed42" / "launch.log").read_text()
    assert not set(log) & {"\x1b", "\r", "\x08"}, repr(log[:500])
    assert [line.split(" - ")[0] for line in log.splitlines() if line.startswith("Epoch ")] == [
        "Epoch 1/2", "Epoch 2/2"]
    assert "oneDNN" not in log and "absl::InitializeLog" not in log
    assert json.loads((experiment / "selection.json").read_text())["learning_rate"] == 0.5

    report_dir = tmp_path / "report"
    report = subprocess.run(
        [sys.executable, "-m", "kprefix.report", f"--results_dir={sweep_dir}",
         f"--output_dir={report_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (report_dir / "vtab.md").read_text()
    expected = f"{100 * final['eval_accuracy']:.2f} ± 0.00"
    assert "| Deep-share DEEP |" in table and expected in table, table
    assert table.splitlines()[0].startswith("| Variant | Params (%) | dtd | Natural mean |")
    assert (report_dir / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The comparison methods go through the same sweep and land in the same table.
    # Their sweeps write to folders of their own: two run at a time.
    methods = {"linear": ("linear", 0.5), "finetune": ("finetune", 0.001),
               "lora": ("lora", 0.001), "vpt": ("vpt-deep", 0.5)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        sweeps = {method: pool.submit(_tiny_sweep, wrapper, sweep_dir, family, learning_rate,
                                      f"--config=vtab/methods/{method}")
                  for method, (family, learning_rate) in methods.items()}
    for method, sweep in sweeps.items():
        method_dir, result = sweep.result()
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        run = json.loads((method_dir / "final" / "seed42" / "results.json").read_text())
        assert run["flags"]["method"] == method and run["status"] == "completed"
    report = subprocess.run(
        [sys.executable, "-m", "kprefix.report", f"--results_dir={sweep_dir}",
         f"--output_dir={report_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False)
    assert report.returncode == 0, report.stderr[-3000:]
    lines = (report_dir / "vtab.md").read_text().splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:]}
    assert list(rows) == ["Finetune", "Linear", "LoRA", "VPT-Deep", "Deep-share DEEP"]
    shares = {name: float(cells[1]) for name, cells in rows.items()}
    # Parameter shares order as the methods do: all > LoRA, VPT, prefixes > head alone.
    assert shares["Finetune"] > 100 > shares["LoRA"] > shares["Linear"]
    assert shares["VPT-Deep"] > shares["Linear"] and shares["Deep-share DEEP"] > shares["Linear"]
