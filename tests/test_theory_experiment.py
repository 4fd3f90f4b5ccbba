"""Experiment plumbing: nested data, seeds and the in-process runner."""

import numpy as np

from kprefix.theory import experiment, settings


def test_repetition_data_is_nested_across_sample_sizes():
    config = experiment.ExperimentConfig(sample_sizes=(50, 200))
    setting_model = settings.make_model("shared_linear", config.world())
    truth = config.truth(setting_model, "random")
    small = experiment.repetition_data(config, setting_model, truth, 3, 50)
    large = experiment.repetition_data(config, setting_model, truth, 3, 200)
    other = experiment.repetition_data(config, setting_model, truth, 4, 50)
    np.testing.assert_array_equal(small.inputs, large.inputs[:50])
    np.testing.assert_array_equal(small.responses, large.responses[:50])
    assert not np.allclose(small.inputs, other.inputs)


def test_in_process_run_records_every_fit_with_its_losses():
    config = experiment.ExperimentConfig(
        settings=("nonshared", "shared_linear"), truths=("proof",), specifications=("over",),
        sample_sizes=(120, 240), repetitions=2, near_starts=1, random_starts=1, workers=1,
    )
    lines = []
    records = experiment.run_experiment(config, log=lines.append)
    assert len(records) == 2 * 2 * 2
    assert len(lines) == 2 * 2  # one progress line per (setting, n)
    assert all(record["num_fitted"] == 3 for record in records)
    assert sorted(records[0]["losses"]) == ["D1,r=1", "D1,r=2"]
    assert sorted(records[-1]["losses"]) == ["D2"]
    # A fit can only improve on the truth's own objective (up to the optimizer's accuracy).
    assert min(record["objective_gain"] for record in records) > -1e-3
