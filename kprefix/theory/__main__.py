"""Command line: simulate prompt estimation rates in the prefix mixture-of-experts model.

    python -m kprefix.theory --flagfile=configs/theory/default.cfg
    python -m kprefix.theory --settings=shared_linear --repetitions=5 --output_dir=runs/theory/quick

Writes ``results.json``, ``results.md`` and ``rates.png`` to ``--output_dir``.
"""

import os

# The fits are many small dense problems run in parallel worker processes;
# multi-threaded BLAS inside each worker only oversubscribes the cores.
# This must happen before numpy is imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import dataclasses  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

from kprefix import cli  # noqa: E402
from kprefix.theory import experiment, report, settings, truths  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_list("settings", list(settings.SETTINGS), f"Prompt settings to simulate: {', '.join(settings.SETTINGS)}.")
flags.DEFINE_list("truths", list(truths.TRUTH_KINDS), f"Ground-truth kinds: {', '.join(truths.TRUTH_KINDS)}.")
flags.DEFINE_list("specifications", list(experiment.SPECIFICATIONS),
                  "exact: fit L = L* prompt experts; over: fit L = L* + 1.")
flags.DEFINE_integer("min_sample_size", 1000, "Smallest sample size.")
flags.DEFINE_integer("max_sample_size", 100000, "Largest sample size.")
flags.DEFINE_integer("num_sample_sizes", 8, "Number of log-spaced sample sizes.")
flags.DEFINE_integer("repetitions", 20, "Independent data sets per sample size.")
flags.DEFINE_float("noise_std", 0.1, "Standard deviation s of the Gaussian noise.")
flags.DEFINE_integer("input_dim", 2, "Dimension d of the inputs X.")
flags.DEFINE_integer("prompt_dim", 2, "Dimension of the prompts p, pK, pV.")
flags.DEFINE_integer("num_pretrained_experts", 2, "Number N of known pre-trained experts.")
flags.DEFINE_integer("num_true_prompts", 2, "Number L* of prompt experts in the ground truth.")
flags.DEFINE_float("proof_half_gap", 0.5, "delta of the 'proof' truth: its pair of prompts is p +- delta.")
flags.DEFINE_integer("near_starts", 2, "Optimizer starts near the truth per fit.")
flags.DEFINE_integer("random_starts", 2, "Random optimizer starts per fit.")
flags.DEFINE_float("start_perturbation", 0.3, "Noise added to the truth for near starts.")
flags.DEFINE_integer("screen_size", 1000, "Samples used to screen the starts before polishing on all.")
flags.DEFINE_integer("screen_evaluations", 60, "Function evaluations per start when screening.")
flags.DEFINE_integer("max_evaluations", 100, "Function evaluations per run on all samples.")
flags.DEFINE_integer("polish_candidates", 1, "Screened solutions (distinct basins) polished on all samples.")
flags.DEFINE_bool("direct_near_start", True, "Also run the last near start on all samples without screening.")
flags.DEFINE_list("nonshared_orders", ["1", "2"], "Orders r of the non-shared loss D1,r.")
flags.DEFINE_integer("bootstrap_samples", 2000, "Bootstrap resamples for the slope intervals.")
flags.DEFINE_integer("workers", 2, "Worker processes (1 runs in this process).")
flags.DEFINE_integer("seed", 0, "Seed of the known model, the truths, the data and the starts.")
flags.DEFINE_string("output_dir", "runs/theory/default", "Where results.json, results.md and rates.png go.")


def _choices_validator(flag_name, choices, what):
    def check(values):
        if not values:
            raise flags.ValidationError(f"--{flag_name} must name at least one {what}")
        unknown = [value for value in values if value not in choices]
        if unknown:
            raise flags.ValidationError(
                f"--{flag_name}: unknown {what} {', '.join(map(repr, unknown))}; choose from {', '.join(choices)}"
            )
        return True

    flags.register_validator(flag_name, check)


_choices_validator("settings", settings.SETTINGS, "setting")
_choices_validator("truths", truths.TRUTH_KINDS, "truth kind")
_choices_validator("specifications", experiment.SPECIFICATIONS, "specification")


def _positive(flag_name, minimum=1):
    flags.register_validator(
        flag_name, lambda value: value >= minimum, message=f"--{flag_name} must be at least {minimum}"
    )


for _name, _minimum in (("min_sample_size", 10), ("num_sample_sizes", 2), ("repetitions", 2),
                        ("input_dim", 1), ("prompt_dim", 1), ("num_pretrained_experts", 1),
                        ("num_true_prompts", 1), ("workers", 1), ("screen_size", 10),
                        ("screen_evaluations", 1), ("max_evaluations", 1), ("polish_candidates", 1),
                        ("bootstrap_samples", 10)):
    _positive(_name, _minimum)

flags.register_validator("noise_std", lambda value: value > 0, message="--noise_std must be positive")
flags.register_validator("proof_half_gap", lambda value: value > 0, message="--proof_half_gap must be positive")
flags.register_validator("near_starts", lambda value: value >= 0, message="--near_starts must be >= 0")
flags.register_validator("random_starts", lambda value: value >= 0, message="--random_starts must be >= 0")
flags.register_multi_flags_validator(
    ["min_sample_size", "max_sample_size"],
    lambda values: values["max_sample_size"] > values["min_sample_size"],
    message="--max_sample_size must be larger than --min_sample_size",
)
flags.register_multi_flags_validator(
    ["near_starts", "random_starts"],
    lambda values: values["near_starts"] + values["random_starts"] >= 1,
    message="--near_starts plus --random_starts must be at least 1",
)
flags.register_multi_flags_validator(
    ["truths", "num_true_prompts"],
    lambda values: "proof" not in values["truths"] or values["num_true_prompts"] >= 2,
    message="--truths=proof needs --num_true_prompts of at least 2",
)


def _nonshared_orders(values):
    try:
        orders = tuple(float(value) for value in values)
    except ValueError:
        return False
    return bool(orders) and all(order >= 1 for order in orders)


flags.register_validator("nonshared_orders", _nonshared_orders,
                         message="--nonshared_orders must be numbers r >= 1, e.g. 1,2")


def config_from_flags() -> experiment.ExperimentConfig:
    return experiment.ExperimentConfig(
        settings=tuple(FLAGS.settings),
        truths=tuple(FLAGS.truths),
        specifications=tuple(FLAGS.specifications),
        sample_sizes=experiment.log_spaced_sample_sizes(
            FLAGS.min_sample_size, FLAGS.max_sample_size, FLAGS.num_sample_sizes
        ),
        repetitions=FLAGS.repetitions,
        noise_std=FLAGS.noise_std,
        input_dim=FLAGS.input_dim,
        prompt_dim=FLAGS.prompt_dim,
        num_pretrained_experts=FLAGS.num_pretrained_experts,
        num_true_prompts=FLAGS.num_true_prompts,
        proof_half_gap=FLAGS.proof_half_gap,
        near_starts=FLAGS.near_starts,
        random_starts=FLAGS.random_starts,
        start_perturbation=FLAGS.start_perturbation,
        screen_size=FLAGS.screen_size,
        screen_evaluations=FLAGS.screen_evaluations,
        max_evaluations=FLAGS.max_evaluations,
        polish_candidates=FLAGS.polish_candidates,
        direct_near_start=FLAGS.direct_near_start,
        nonshared_orders=tuple(float(value) for value in FLAGS.nonshared_orders),
        workers=FLAGS.workers,
        seed=FLAGS.seed,
    )


def _describe_truths(config: experiment.ExperimentConfig):
    described = {}
    world = config.world()
    for setting in config.settings:
        setting_model = settings.make_model(setting, world)
        for kind in config.truths:
            truth = config.truth(setting_model, kind)
            described[f"{setting}/{kind}"] = {"biases": truth.biases.tolist(), "params": truth.params.tolist()}
    return described


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = config_from_flags()
    num_fits = len(experiment.all_tasks(config))
    print(f"kprefix.theory: {num_fits} fits; settings {', '.join(config.settings)}; "
          f"n = {', '.join(map(str, config.sample_sizes))}; {config.repetitions} repetitions; "
          f"{config.workers} worker(s)", flush=True)
    started = time.perf_counter()
    records = experiment.run_experiment(config, log=lambda line: print(line, flush=True))
    elapsed = time.perf_counter() - started
    rows = report.summarize(records, FLAGS.bootstrap_samples, config.seed)
    world = config.world()
    extra = {
        "elapsed_seconds": elapsed,
        "world": {
            "gate_matrices": world.experts.gate_matrices.tolist(),
            "gate_biases": world.experts.gate_biases.tolist(),
            "expert_weights": world.experts.expert_weights.tolist(),
            "key_projection": world.key_projection.tolist(),
            "value_projection": world.value_projection.tolist(),
            "key_weights": world.key_weights.tolist(),
            "value_weights": world.value_weights.tolist(),
        },
        "truths": _describe_truths(config),
    }
    paths = report.write_outputs(FLAGS.output_dir, dataclasses.asdict(config), records, rows, extra)
    print()
    print(report.markdown_table(rows))
    print(f"Done in {elapsed:.1f}s.")
    print(f"  results JSON:   {paths['json']}")
    print(f"  Markdown table: {paths['table']}")
    print(f"  log-log plot:   {paths['plot']}")


if __name__ == "__main__":
    cli.run(main)
