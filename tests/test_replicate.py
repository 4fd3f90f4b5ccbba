"""The offline replication: rendered tasks, statistics, and the quick pipeline end to end."""

import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage, stats

from kprefix.data.nlg import locate_shared_data_dir
from kprefix.data.synthetic_images import (MINIVTAB_CLASSES, SOURCE_FACTORS,
                                           minivtab_arrays, source_arrays)
from kprefix.replicate.statistics import paired_difference, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _foreground(images):
    """Pixels brighter than the flat background: objects use colours of at least 0.5."""
    return images.max(axis=-1) > -0.16  # [-1, 1] range: backgrounds are at most 0.3 (-0.4)


def test_count_labels_match_the_number_of_objects():
    images, labels = minivtab_arrays("count", "test")
    counted = []
    for image in images[:100]:
        objects, _ = ndimage.label(ndimage.binary_fill_holes(_foreground(image)),
                                   structure=np.ones((3, 3)))
        counted.append(int(np.sum(np.bincount(objects.ravel())[1:] >= 4)))
    assert np.mean(np.array(counted) == labels[:100] + 1) > 0.9


def test_location_x_labels_are_the_column_bin_of_the_object():
    images, labels = minivtab_arrays("location_x", "train800")
    bins = np.array([np.nonzero(_foreground(image))[1].mean() / 32 * 8 for image in images[:200]])
    # The centroid of a few-pixel ring can sit a pixel off its drawn centre.
    assert np.mean(bins.astype(int) == labels[:200]) > 0.95
    assert np.all(np.abs(bins - (labels[:200] + 0.5)) < 1.1)


def test_splits_sizes_determinism_and_disjoint_test():
    for task, num_classes in MINIVTAB_CLASSES.items():
        train, labels = minivtab_arrays(task, "train800val200")
        test, _ = minivtab_arrays(task, "test")
        assert train.shape == (1000, 32, 32, 3) and test.shape[0] == 500
        assert labels.min() >= 0 and labels.max() < num_classes
        assert not {image.tobytes() for image in train} & {image.tobytes() for image in test}
    first, _ = minivtab_arrays("size", "train800")
    np.testing.assert_array_equal(first, minivtab_arrays("size", "train800val200")[0][:800])
    np.testing.assert_array_equal(minivtab_arrays("size", "train100")[0], first[:100])
    with pytest.raises(ValueError, match="train<N>"):
        minivtab_arrays("size", "train2000")
    with pytest.raises(ValueError, match="Unknown mini-VTAB task"):
        minivtab_arrays("colour", "test")


def test_source_task_is_deterministic_and_every_factor_varies():
    images, labels = source_arrays(400, seed=3)
    again, same = source_arrays(400, seed=3)
    np.testing.assert_array_equal(images, again)
    assert set(labels) == set(SOURCE_FACTORS)
    for factor, classes in SOURCE_FACTORS.items():
        np.testing.assert_array_equal(labels[factor], same[factor])
        assert labels[factor].min() >= 0 and labels[factor].max() < classes
        seen = len(np.unique(labels[factor]))
        # The last position bin is rare: only small copies fit there as the first copy.
        assert seen >= (0.9 * classes if factor == "shape" else classes - 1), factor
    assert images.min() >= -1.0 and images.max() <= 1.0
    # Neither the count nor the scale fixes the other.
    assert len(np.unique(labels["scale"][labels["count"] == 0])) == SOURCE_FACTORS["scale"]
    assert len(np.unique(labels["count"][labels["scale"] == 0])) == SOURCE_FACTORS["count"]


def _principal_angle(rows, columns):
    """Angle (mod pi) of the long axis of a pixel set, and how elongated it is."""
    covariance = np.cov(np.stack([columns, rows]).astype(float))
    values, vectors = np.linalg.eigh(covariance)
    return np.arctan2(vectors[1, 1], vectors[0, 1]) % np.pi, values[1] / max(values[0], 1e-9)


def test_source_labels_match_the_rendered_objects():
    """Count, position, scale and rotation labels, read back from the drawn copies."""
    images, labels, objects = source_arrays(1500, seed=5, with_objects=True)
    assert objects.shape == images.shape[:3]
    counts = np.array([len(np.unique(o)) - 1 for o in objects])
    # A copy of the smallest scale with a thin radius profile may cover no pixel centre.
    assert np.mean(counts == labels["count"] + 1) > 0.97
    assert np.all(counts <= labels["count"] + 1)
    drawn = objects != 0
    # Copies change the pixels they cover: object pixels differ from their surround.
    assert np.abs(images[drawn] - images[~drawn].mean(0)).max() > 0.5
    whole = np.nonzero(counts == labels["count"] + 1)[0]
    for factor, axis in (("x", 1), ("y", 0)):
        first = np.array([min(np.mean(np.nonzero(objects[i] == k)[axis])
                              for k in range(1, counts[i] + 1)) for i in whole]) / 32 * 8
        # The centroid of a star-shaped copy sits within a pixel or two of its centre.
        assert np.mean(np.abs(first - (labels[factor][whole] + 0.5)) < 1.0) > 0.95, factor
    area = drawn.sum((1, 2)) / np.maximum(counts, 1)
    assert stats.spearmanr(labels["scale"][whole], area[whole]).correlation > 0.7
    assert np.median(area[labels["scale"] == 5]) > 6 * np.median(area[labels["scale"] == 0])
    # Rotation: two single copies of one shape, turned by different bins, have
    # long axes turned by the difference of the bins (give or take a bin).
    single = [i for i in whole if counts[i] == 1 and labels["scale"][i] >= 3]
    axes = {i: _principal_angle(*np.nonzero(objects[i])) for i in single}
    agree, shuffled = [], []
    rng = np.random.RandomState(0)
    for i in single:
        for j in single:
            if i < j and labels["shape"][i] == labels["shape"][j] and min(
                    axes[i][1], axes[j][1]) > 1.5:
                turned = axes[j][0] - axes[i][0]
                for claimed, out in ((labels["rotation"][j] - labels["rotation"][i], agree),
                                     (rng.randint(8) - rng.randint(8), shuffled)):
                    error = (turned - claimed * np.pi / 4 + np.pi / 2) % np.pi - np.pi / 2
                    out.append(abs(error) < np.pi / 4 + 0.2)
    assert len(agree) >= 10
    assert np.mean(agree) > 0.9 and np.mean(shuffled) < 0.75


def test_minivtab_is_a_launch_dataset():
    from kprefix.data.image_tasks import load_image_task

    data = load_image_task("minivtab/orientation", 16, 64, seed=0)
    assert (data.num_classes, data.steps_per_epoch) == (8, 1000 // 64)
    images, labels = next(iter(data.make_epoch(np.int64(0))))
    assert images.shape == (64, 16, 16, 3)


def test_summary_matches_scipy_t_interval():
    values = [0.71, 0.74, 0.69, 0.77, 0.72]
    summary = summarize(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                 scale=stats.sem(values))
    assert summary["std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["ci95"] == pytest.approx([low, high])
    difference = paired_difference([0.8, 0.9, 0.85], [0.7, 0.8, 0.8])
    assert difference["paired"] and difference["mean"] == pytest.approx(0.25 / 3)
    with pytest.raises(ValueError, match="finite"):
        summarize([0.5, math.nan])


QUICK = ["--flagfile=configs/replicate/quick.cfg", "--tasks=count", "--learning_rates=1",
         "--variants=deep_share-deep,no_share-deep",
         "--sample_efficiency_variants=deep_share-deep", "--pretrain_steps=20",
         # The language half: one E2E run per variant.
         "--text_seeds=42", "--text_pretrain_steps=10"]
TEXT_DATA, _ = locate_shared_data_dir()
HAS_TEXT_DATA = all((TEXT_DATA / name).is_dir() for name in ("e2e", "webnlg2017", "xsum"))


def _replicate(output_dir, *extra):
    return subprocess.run([sys.executable, "-m", "kprefix.replicate", *QUICK, *extra,
                           f"--output_dir={output_dir}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False)


@pytest.mark.large
def test_quick_replication_writes_results_and_resumes(tmp_path):
    out = str(tmp_path)
    process = _replicate(out)
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads(open(os.path.join(out, "results.json")).read())
    rows = results["tasks"]["count"]
    assert set(rows) == {"deep_share-deep", "no_share-deep"}
    for row in rows.values():
        assert len(row["values"]) == 2 and all(0.0 <= v <= 1.0 for v in row["values"])
        assert row["mean"] == pytest.approx(np.mean(row["values"]))
        assert row["ci95"][0] <= row["mean"] <= row["ci95"][1]
    assert [c["placement"] for c in results["comparisons"]] == ["deep"]
    assert "Deep-share" in results["comparisons"][0]["sentence"]
    assert results["transfer"] == []  # no linear probe among these --variants
    curve = results["vision_pretraining"]["loss_curve"]
    assert curve[-1]["step"] == 20 and all(math.isfinite(p["loss"]) for p in curve)
    assert set(results["sample_efficiency"]["count"]["deep_share-deep"]) == {"100", "1000"}
    assert results["sample_efficiency_design"] == {
        "seeds_by_size": {"100": [42, 44]}, "schedule_by_size": {"100": {}},
        "matched_steps": False}
    assert results["sample_efficiency_gaps"] == []  # No-share is not among its variants
    # Validation accuracy against the training epochs, with the selected settings.
    curve = results["training_length"]
    assert (curve["task"], curve["split"], curve["epochs"]) == ("count", "val200", [1, 3])
    assert set(curve["validation_accuracy"]) == {"deep_share-deep"}
    run = os.path.join(out, "runs", "count", "deep_share-deep", "epochs3", "final", "seed42")
    launched = json.loads(open(os.path.join(run, "results.json")).read())
    assert launched["flags"]["epochs"] == 3 and launched["eval_split"] == "val200"
    assert curve["validation_accuracy"]["deep_share-deep"]["3"] == launched["eval_accuracy"]
    selection = results["selection"]["count"]["deep_share-deep"]
    assert selection["grid"] == {"learning_rates": [1.0], "weight_decays": [0.0]}
    assert selection["at_grid_edge"] is False and selection["grid_extensions"] == 0
    assert os.path.getsize(os.path.join(out, "sample_efficiency.png")) > 1000
    markdown = open(os.path.join(out, "results.md")).read()
    assert "deep_share-deep" in markdown and "95% CI" in markdown
    # The presets reload through the normal --backbone=<dir> path.
    from kprefix.backbones import build_backbone

    assert results["presets"] == {"pretrained": "vit_pretrained", "random": "vit_random"}
    assert build_backbone(os.path.join(out, results["presets"]["pretrained"])).num_layers == 2

    text_runs = _check_language_half(results, markdown, out)

    # Publishing copies the results and writes the README's tables from them.
    from kprefix.replicate import publish

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{publish.BEGIN}stale\n{publish.END}after\n")
    docs = tmp_path / "docs"
    assert {"results.json", "results.md", "timings.json"} <= set(
        publish.publish(out, str(docs), str(readme)))
    assert json.loads((docs / "results.json").read_text()) == results
    tables = readme.read_text()
    assert "stale" not in tables and tables.endswith(f"{publish.END}after\n")
    row = rows["deep_share-deep"]
    assert f"| deep_share-deep | {row['mean'] * 100:.1f} ± {row['std'] * 100:.1f} " in tables

    # Resume: a deleted run is the only one run again; the others are skipped.
    finished = sorted(glob.glob(os.path.join(out, "runs", "*", "*", "**", "results.json"),
                                recursive=True))
    assert len(finished) == 2 * 3 + 2 + 2 + text_runs
    removed = os.path.join(out, "runs", "count", "no_share-deep", "final", "seed44",
                           "results.json")
    os.remove(removed)
    stamps = {path: os.path.getmtime(path) for path in finished if path != removed}
    process = _replicate(out)
    assert process.returncode == 0, process.stderr[-3000:]
    assert os.path.exists(removed)
    assert {path: os.path.getmtime(path) for path in stamps} == stamps
    assert json.loads(open(os.path.join(out, "timings.json")).read())[
        "last_invocation_runs_started"] == 1


def _check_language_half(results, markdown, out):
    """The E2E part of the quick run; returns how many E2E runs it made."""
    text = results["text"]
    if not HAS_TEXT_DATA:
        assert "skipped" in text and any("E2E" in note for note in results["notes"])
        return 0
    curve = text["pretraining"]["loss_curve"]
    assert curve[-1]["step"] == 10 and all(math.isfinite(p["loss"]) for p in curve)
    assert text["pretraining"]["corpus"]["sources"][0]["dropped_as_e2e_references"] == 0
    from kprefix.backbones import build_backbone

    assert build_backbone(os.path.join(out, text["presets"]["pretrained"])).num_layers == 2
    assert text["fractions"]["train100pct"] == {
        "fraction": 1.0, "inputs": 4862, "pairs": 42061, "epochs": 1, "max_steps_per_epoch": 20}
    assert set(text["variants"]) == {"deep_share-deep", "no_share-deep"}
    for name, by_fraction in text["variants"].items():
        row = by_fraction["train100pct"]
        assert len(row["values"]) == 1 and 0.0 <= row["values"][0] <= 1.0
        run = os.path.join(out, "runs", "e2e", name, "train100pct", "final", "seed42")
        launched = json.loads(open(os.path.join(run, "results.json")).read())
        assert launched["scores"]["BLEU"] == row["values"][0]
        assert launched["num_eval_examples"] == 8 and launched["flags"]["backbone"] == \
            os.path.abspath(os.path.join(out, text["presets"]["pretrained"]))
        # One epoch capped at --e2e_train_steps batches of the whole training set.
        assert "20 steps/epoch" in open(os.path.join(run, "launch.log")).read()
    assert [c["fraction"] for c in text["comparisons"]] == ["train100pct"]
    assert "one seed" in text["comparisons"][0]["sentence"]
    assert "Language: GPT-2 pretrained here" in markdown and "E2E test BLEU" in markdown
    assert "data_dir" not in text["pretraining"]["config"]
    assert os.path.getsize(os.path.join(out, text["plot"])) > 1000
    curve = text["training_length"]
    assert (curve["variant"], curve["steps"]) == ("deep_share-deep", [5, 10])
    run = os.path.join(out, "runs", "e2e", "deep_share-deep", "steps10", "final", "seed42")
    launched = json.loads(open(os.path.join(run, "results.json")).read())
    assert launched["eval_split"] == "validation" and launched["flags"]["max_steps_per_epoch"] == 10
    assert curve["validation_bleu"]["10"] == launched["scores"]["BLEU"]
    assert "E2E learning curve" in markdown
    return 2 + 2


def test_a_bad_language_flag_is_refused_before_anything_is_written(tmp_path):
    # The language half runs last; its flags are still checked first.
    out = tmp_path / "replication"
    process = _replicate(str(out), "--text_variants=no_such_variant")
    assert process.returncode != 0
    assert "--text_variants: use names from" in process.stderr, process.stderr[-2000:]
    assert not out.exists()
