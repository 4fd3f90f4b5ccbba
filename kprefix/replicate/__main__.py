"""Offline replication: pretrain small backbones, then the paper's comparison with seeds.

    python -m kprefix.replicate --flagfile=configs/replicate/cpu.cfg --output_dir=runs/replicate
    python -m kprefix.replicate --flagfile=configs/replicate/quick.cfg --output_dir=/tmp/quick

1. pretrains a small ViT on a rendered many-class source task and saves it,
   and its random initialisation, as keras-hub presets
   (`<output_dir>/vit_pretrained`, `<output_dir>/vit_random`);
2. on the rendered mini-VTAB (`--dataset=minivtab/<task>`, disjoint from the
   source task) runs Deep-share, Simple-share and No-share, SHALLOW and DEEP,
   and the linear probe (`--method=linear`), each through
   `python -m kprefix.launch --backbone=<preset dir>`: a learning rate x weight
   decay grid selected on validation (extended past an edge the selection lands
   on, `--grid_extensions` times at most), then every seed on the test split;
   the linear probe also runs on the random-weight preset (does pretraining
   transfer?);
3. reruns chosen variants on fewer training examples, with as many optimizer
   steps, and reports the paired Deep-share minus No-share gap per size and
   its trend (`kprefix.replicate.sample_efficiency`), and measures their
   validation accuracy against the training epochs (`--training_length_*`);
4. the language half (`--text_pretrain_steps` > 0): pretrains a small GPT-2
   on the offline text of the shared data folder except E2E (WebNLG
   lexicalisations after their tables, XSUM articles and summaries) and
   saves it, with its tokenizer, and its random initialisation as presets
   (`<output_dir>/gpt2_pretrained`, `<output_dir>/gpt2_random`); then on E2E
   Deep-share, Simple-share and No-share with a grid selected on validation
   BLEU, then every seed on each fraction of the training set, scored on the
   test set, and its learning curve (`--e2e_training_length_steps`;
   `kprefix.replicate.text_comparison`);
5. runs up to `--parallel_runs` launches at once (default: one per CPU core,
   each single-threaded; `kprefix.replicate.launch_pool`);
6. writes `results.json`, `results.md`, `timings.json`, `sample_efficiency.png`
   and `e2e_sample_efficiency.png` (`kprefix.replicate.publish` copies them
   beside the code and regenerates the README's tables).

Finished runs (their `results.json`) and a finished pretraining are
skipped, so an interrupted replication resumes where it stopped.
"""

import dataclasses
import math
import os
import shlex
import sys
import time

from absl import app, flags

from kprefix import cli

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Where presets, runs and results go.", required=True)
flags.DEFINE_integer("pretrain_steps", 3000, "ViT pretraining steps.", lower_bound=1)
flags.DEFINE_integer("pretrain_examples", 50000, "Rendered source images.", lower_bound=64)
flags.DEFINE_integer("pretrain_batch_size", 128, "ViT pretraining batch size.", lower_bound=1)
flags.DEFINE_float("pretrain_learning_rate", 2e-3, "ViT pretraining peak AdamW learning rate.")
flags.DEFINE_integer("vit_layers", 4, "ViT depth.", lower_bound=1)
flags.DEFINE_integer("vit_width", 128, "ViT hidden width (MLP: twice that).", lower_bound=8)
flags.DEFINE_list("tasks", ["digits", "count", "location_x", "location_y", "orientation", "size"],
                  "mini-VTAB tasks.")
flags.DEFINE_list("variants", None,
                  "Comparison rows (default: all of kprefix.replicate.comparison.VARIANTS).")
flags.DEFINE_list("learning_rates", ["0.5", "2"], "Grid of base learning rates.")
flags.DEFINE_list("weight_decays", ["0", "0.001"], "Grid of weight decays.")
flags.DEFINE_list("seeds", ["42", "44", "82", "100", "800"], "Seeds of the final runs.")
flags.DEFINE_integer("grid_seed", 42, "Seed of the grid runs.")
flags.DEFINE_integer("grid_extensions", 2,
                     "Times a selection on an edge of the learning-rate or weight-decay grid "
                     "adds the next value beyond that edge and runs it (0: never).",
                     lower_bound=0)
flags.DEFINE_list("sample_efficiency_sizes", ["50", "100", "200", "400", "800"],
                  "Training-set sizes (besides the full 1,000) of the sample-efficiency runs; "
                  "empty: none.")
flags.DEFINE_list("sample_efficiency_tasks", ["location_x", "location_y"],
                  "Tasks of the sample-efficiency runs.")
flags.DEFINE_list("sample_efficiency_variants", ["deep_share-deep", "no_share-deep"],
                  "Variants of the sample-efficiency runs (with their selected hyperparameters).")
flags.DEFINE_list("sample_efficiency_seeds", [],
                  "Seeds of the sample-efficiency runs (empty: --seeds).")
flags.DEFINE_list("sample_efficiency_seed_counts", [],
                  "How many of --sample_efficiency_seeds (the first ones) each size runs, one "
                  "count per --sample_efficiency_sizes entry (empty: all at every size).")
flags.DEFINE_bool("sample_efficiency_matched_steps", True,
                  "Each smaller training set trains about the optimizer steps of the "
                  "1,000-example runs (epochs and warm-up epochs scaled up); else the launch "
                  "flags' epochs.")
flags.DEFINE_string("training_length_task", "location_x",
                    "Task whose validation accuracy is measured against the training length "
                    "(--training_length_epochs) for --sample_efficiency_variants with their "
                    "selected settings; empty: not measured.")
flags.DEFINE_list("training_length_epochs", ["2", "5", "10", "20"],
                  "Epochs of the training-length runs (train800 -> val200, the grid seed).")
flags.DEFINE_multi_string("launch_flag", [],
                          "A --name=value flag every downstream launch gets (repeatable), "
                          "e.g. --launch_flag=--epochs=20.")
flags.DEFINE_string("launcher", "python -m kprefix.launch", "Command that runs one launch.")
flags.DEFINE_integer("parallel_runs", 0,
                     "Launches run at once, each with CPU cores / this many TensorFlow threads "
                     "(0: one per CPU core without an accelerator, else 1).", lower_bound=0)

# The language half: GPT-2 pretrained on offline text without E2E, then E2E.
flags.DEFINE_integer("text_pretrain_steps", 0,
                     "GPT-2 pretraining steps (0: the language half is skipped).", lower_bound=0)
flags.DEFINE_integer("text_pretrain_batch_size", 32, "GPT-2 pretraining batch size.",
                     lower_bound=1)
flags.DEFINE_integer("text_sequence_length", 128, "GPT-2 pretraining window (tokens).",
                     lower_bound=8)
flags.DEFINE_float("text_pretrain_learning_rate", 1e-3, "GPT-2 pretraining peak AdamW learning "
                   "rate.")
flags.DEFINE_integer("text_vocabulary_size", 4096,
                     "Byte-level BPE vocabulary learnt from the pretraining corpus.",
                     lower_bound=257)
flags.DEFINE_integer("text_pretrain_max_texts", 0,
                     "Pretrain on a random subset of this many corpus texts (0: all of them).",
                     lower_bound=0)
flags.DEFINE_integer("gpt2_layers", 4, "GPT-2 depth.", lower_bound=1)
flags.DEFINE_integer("gpt2_width", 128, "GPT-2 hidden width (MLP: four times that).",
                     lower_bound=8)
flags.DEFINE_string("text_data_dir", None,
                    "Folder with e2e/, webnlg2017/ and xsum/ (default: "
                    "kprefix.data.nlg.shared_data_dir()); the language half is skipped, with "
                    "the reason in the results, when it is absent.")
flags.DEFINE_list("text_variants", ["deep_share-deep", "simple_share-deep", "no_share-deep"],
                  "E2E comparison rows (names of kprefix.replicate.text_comparison.TEXT_VARIANTS, "
                  "or deep_share-deep-random_backbone); empty: no E2E runs.")
flags.DEFINE_list("e2e_fractions", ["0.01", "0.05", "0.2", "1"],
                  "Fractions of the E2E training inputs the seed runs train on; empty: no E2E "
                  "runs.")
flags.DEFINE_float("e2e_grid_fraction", 0.05,
                   "Fraction of the E2E training inputs the learning-rate x weight-decay grid "
                   "trains on.")
flags.DEFINE_list("text_learning_rates", ["0.001", "0.005"], "E2E grid of AdamW learning rates.")
flags.DEFINE_list("text_weight_decays", ["0"], "E2E grid of weight decays.")
flags.DEFINE_list("text_seeds", ["42", "44", "82"], "Seeds of the E2E runs.")
flags.DEFINE_integer("e2e_train_steps", 200,
                     "Optimizer steps of every E2E run (whole epochs on small fractions, one "
                     "capped epoch on large ones).", lower_bound=1)
flags.DEFINE_integer("e2e_batch_size", 16, "E2E batch size.", lower_bound=1)
flags.DEFINE_integer("e2e_validation_examples", 50,
                     "Validation inputs (MRs) the grid is scored on (0: all 547).", lower_bound=0)
flags.DEFINE_integer("e2e_test_examples", 100,
                     "Test inputs (MRs) the seed runs are scored on (0: all 630).", lower_bound=0)
flags.DEFINE_list("e2e_training_length_steps", [],
                  "E2E's learning curve: the first --text_variants row, with its selected "
                  "settings, trained on the whole training set for each of these numbers of "
                  "steps and scored on the validation inputs (empty: not run).")
flags.DEFINE_multi_string("text_launch_flag", [],
                          "A --name=value flag every E2E launch gets (repeatable), "
                          "e.g. --text_launch_flag=--num_beams=3.")


def _usage(condition, message):
    if condition:
        raise app.UsageError(message)


def main(argv):
    _usage(len(argv) > 1, f"Unexpected arguments: {' '.join(argv[1:])}")
    from kprefix import sweep

    try:
        replicate()
    except sweep.SweepError as error:
        print(f"kprefix.replicate: {error}\nRerun the same command to resume.", file=sys.stderr)
        sys.exit(1)


def replicate():
    """The whole replication with the flags' settings (see the module doc).

    Every flag is checked before anything is written.
    """
    from kprefix.cli import tensorflow_logs

    vision = _vision_plan()
    language = _language_plan()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    started = time.time()
    tensorflow_logs.import_tensorflow_quietly(None)
    pretraining, presets = _pretrain_vision()
    pool, counter = _launch_pool(started)
    runs_dir = os.path.join(FLAGS.output_dir, "runs")
    tasks, selections = _compare_variants(runs_dir, vision, presets, pool)
    sample_efficiency = _sample_efficiency(runs_dir, vision, presets, pool, tasks, selections)
    training_length = _training_length(runs_dir, vision, presets, pool, selections)
    text = replicate_language(runs_dir, pool, language)
    timings = _record_timings(started, counter["started"], pool.parallel)
    _write_results(vision, tasks, selections, sample_efficiency, text, pretraining, presets,
                   timings, training_length)
    print(f"\nDone in {time.time() - started:.0f}s ({counter['started']} runs started): "
          f"{os.path.join(FLAGS.output_dir, 'results.md')}", flush=True)


@dataclasses.dataclass(frozen=True)
class VisionPlan:
    """The vision half's checked settings: comparison rows, protocol and sample sizes."""

    names: list  # the --variants names
    rows: list  # their comparison.Variant rows, with the random-weight probe after `linear`
    by_name: dict
    sizes: list  # the sample-efficiency training-set sizes
    protocol: object  # comparison.Protocol
    seeds_by_size: dict = None  # sample-efficiency size -> its seeds
    schedules: dict = None  # sample-efficiency size -> extra launch flags (matched steps)
    training_epochs: list = None  # the training-length curve's epochs (empty: not run)


def _vision_plan():
    """Checks the vision flags; raises `app.UsageError` naming the first bad one."""
    from kprefix import sweep
    from kprefix.data.synthetic_images import MINIVTAB_CLASSES
    from kprefix.replicate import comparison, sample_efficiency

    unknown = [t for t in FLAGS.tasks if t not in MINIVTAB_CLASSES]
    _usage(unknown, f"--tasks: unknown {unknown}; use {', '.join(MINIVTAB_CLASSES)}.")
    by_name = {v.name: v for v in comparison.VARIANTS}
    names = FLAGS.variants or list(by_name)
    _usage(any(n not in by_name for n in names),
           f"--variants: use names from {', '.join(by_name)}.")
    _usage(any(n not in names for n in FLAGS.sample_efficiency_variants),
           "--sample_efficiency_variants must be among --variants.")
    sizes = [int(n) for n in sweep.parse_numbers(FLAGS.sample_efficiency_sizes,
                                                 "sample_efficiency_sizes")] \
        if FLAGS.sample_efficiency_sizes else []
    _usage(any(not 1 <= n < 1000 for n in sizes), "--sample_efficiency_sizes: use 1-999.")
    protocol = comparison.Protocol(
        learning_rates=tuple(sweep.parse_numbers(FLAGS.learning_rates, "learning_rates")),
        weight_decays=tuple(sweep.parse_numbers(FLAGS.weight_decays, "weight_decays")),
        seeds=tuple(int(s) for s in sweep.parse_numbers(FLAGS.seeds, "seeds")),
        grid_seed=FLAGS.grid_seed,
        launch_args=("--task=image_classification", "--noexport", *FLAGS.launch_flag),
        grid_extensions=FLAGS.grid_extensions)
    seeds = ([int(s) for s in sweep.parse_numbers(FLAGS.sample_efficiency_seeds,
                                                  "sample_efficiency_seeds")]
             if FLAGS.sample_efficiency_seeds else list(protocol.seeds))
    counts = ([int(c) for c in sweep.parse_numbers(FLAGS.sample_efficiency_seed_counts,
                                                   "sample_efficiency_seed_counts")]
              if FLAGS.sample_efficiency_seed_counts else [])
    try:
        by_size = sample_efficiency.seeds_by_size(sizes, seeds, counts)
        schedules = {size: _matched_schedule(size) if FLAGS.sample_efficiency_matched_steps
                     else {} for size in sizes}
    except ValueError as error:
        raise app.UsageError(f"--sample_efficiency_*: {error}") from None
    _usage(FLAGS.training_length_task and FLAGS.training_length_task not in FLAGS.tasks,
           "--training_length_task must be one of --tasks (or empty).")
    epochs = ([int(e) for e in sweep.parse_numbers(FLAGS.training_length_epochs,
                                                   "training_length_epochs")]
              if FLAGS.training_length_task else [])
    _usage(any(e < 1 for e in epochs), "--training_length_epochs: use whole epochs >= 1.")
    chosen = [by_name[n] for n in names]
    rows = [*chosen, comparison.RANDOM_LINEAR] if "linear" in names else chosen
    return VisionPlan(names, rows, by_name, sizes, protocol, by_size, schedules, epochs)


def _launch_flag(name):
    """The value the last `--launch_flag=--<name>=<value>` sets, or None."""
    values = [flag.split("=", 1)[1] for flag in FLAGS.launch_flag
              if flag.startswith(f"--{name}=")]
    return values[-1] if values else None


def _matched_schedule(size):
    """Launch flags that train `size` examples about as many steps as the full runs."""
    from kprefix.replicate import sample_efficiency

    epochs, batch_size = _launch_flag("epochs"), _launch_flag("batch_size")
    _usage(epochs is None or batch_size is None,
           "--sample_efficiency_matched_steps needs --launch_flag=--epochs=N and "
           "--launch_flag=--batch_size=N (or --nosample_efficiency_matched_steps).")
    warmup = _launch_flag("warmup_epochs")
    schedule = sample_efficiency.matched_schedule(
        size, sample_efficiency.FULL_SIZE, int(batch_size), int(epochs),
        0 if warmup is None else int(warmup))
    if warmup is None:
        del schedule["warmup_epochs"]  # the launch's own default warm-up stays
    return schedule


def _pretrain_vision():
    """Pretrains the ViT (or reads the finished pretraining); returns it and the presets."""
    from kprefix.replicate.pretrain_vision import (PRETRAINED, RANDOM, VisionPretraining,
                                                   pretrain_vision)

    pretraining = pretrain_vision(FLAGS.output_dir, VisionPretraining(
        steps=FLAGS.pretrain_steps, examples=FLAGS.pretrain_examples,
        batch_size=FLAGS.pretrain_batch_size, learning_rate=FLAGS.pretrain_learning_rate,
        num_layers=FLAGS.vit_layers,
        hidden_dim=FLAGS.vit_width, mlp_dim=2 * FLAGS.vit_width),
        log=lambda line: print(line, flush=True))
    return pretraining, _presets(PRETRAINED, RANDOM)


def _presets(pretrained, random):
    return {"pretrained": os.path.abspath(os.path.join(FLAGS.output_dir, pretrained)),
            "random": os.path.abspath(os.path.join(FLAGS.output_dir, random))}


def _relative_to_output(presets):
    """Preset folders as `results.json` records them: relative to --output_dir, so the
    results name no path of the machine they ran on."""
    return {name: os.path.relpath(path, FLAGS.output_dir) for name, path in presets.items()}


def _launch_pool(started):
    """The pool every launch goes through, and a counter of the launches it started."""
    from kprefix.replicate.launch_pool import LaunchPool, default_parallel_runs

    counter = {"started": 0}

    def on_run(run):
        counter["started"] += 1
        # One write per line: launches start from several threads.
        sys.stdout.write(f"[replicate] {time.time() - started:7.0f}s  run {run.workdir}\n")
        sys.stdout.flush()

    pool = LaunchPool(FLAGS.launcher, FLAGS.parallel_runs or default_parallel_runs(), on_run)
    print(f"[replicate] up to {pool.parallel} launches at once", flush=True)
    return pool, counter


def _compare_variants(runs_dir, vision, presets, pool):
    """Grid and seed runs of every task x row; returns their test summaries and selections."""
    from kprefix.replicate import comparison, results

    pairs = [(task, variant) for task in FLAGS.tasks for variant in vision.rows]
    outcomes = pool.map(lambda pair: comparison.run_variant(
        runs_dir, *pair, vision.protocol, presets, pool), pairs)
    tasks = {task: {} for task in FLAGS.tasks}
    selections = {task: {} for task in FLAGS.tasks}
    for (task, variant), outcome in zip(pairs, outcomes):
        tasks[task][variant.name] = results.finite_summary(outcome["test_accuracy"])
        selections[task][variant.name] = outcome
    return tasks, selections


def _transfer(vision, tasks):
    """Linear probe on pretrained vs random weights, per task (when `linear` runs)."""
    from kprefix.replicate import comparison
    from kprefix.replicate.statistics import paired_difference, verdict

    transfer = []
    for task in FLAGS.tasks if "linear" in vision.names else []:
        difference = paired_difference(
            tasks[task]["linear"]["values"], tasks[task][comparison.RANDOM_LINEAR.name]["values"])
        transfer.append({"task": task, "difference": difference, "sentence": verdict(
            difference, "pretrained", "random weights", f"{task}, linear probe")})
    return transfer


def _sample_efficiency(runs_dir, vision, presets, pool, tasks, selections):
    """Seed runs of the chosen variants on fewer examples, with their selected settings
    (see `kprefix.replicate.sample_efficiency`); returns task -> variant -> size label
    -> summary, the 1,000-example runs included."""
    from kprefix import sweep
    from kprefix.replicate import comparison, results

    efficiency_runs = {}
    chosen_tasks = [t for t in FLAGS.sample_efficiency_tasks if t in FLAGS.tasks]
    for task in chosen_tasks if vision.sizes else []:
        for name in FLAGS.sample_efficiency_variants:
            chosen_hp = selections[task][name]
            best = sweep.GridResult(chosen_hp["learning_rate"], chosen_hp["weight_decay"],
                                    chosen_hp["validation_accuracy"])
            for size in vision.sizes:
                plan = sweep.SplitPlan("train800", "val200", f"train{size}", "test")
                exp_dir = os.path.join(runs_dir, task, name, f"train{size}")
                schedule = tuple((k, str(v)) for k, v in vision.schedules[size].items())
                efficiency_runs[task, name, size] = [
                    dataclasses.replace(run, flags=(*run.flags, *schedule))
                    for run in sweep.final_runs(exp_dir, plan, best, vision.seeds_by_size[size])]
    pool.map(lambda key: pool.run_all(efficiency_runs[key], comparison.variant_launch_args(
        vision.protocol, vision.by_name[key[1]], key[0], presets)), list(efficiency_runs))
    sample_efficiency = {}
    for (task, name, size), finals in efficiency_runs.items():
        by_size = sample_efficiency.setdefault(task, {}).setdefault(
            name, {"1000": tasks[task][name]})
        by_size[str(size)] = results.finite_summary(
            [comparison.final_accuracy(run) for run in finals])
    return sample_efficiency


def _training_length(runs_dir, vision, presets, pool, selections):
    """Validation accuracy of the sample-efficiency variants on `--training_length_task`
    against the number of epochs, with their selected settings and the grid's seed and
    splits (train800 -> val200): does accuracy still rise at the launch flags' epochs?
    Returns `{"task", "split", "seed", "epochs", "validation_accuracy": {variant:
    {epochs: accuracy}}}`, or None when not asked for."""
    from kprefix import sweep
    from kprefix.replicate import comparison

    if not vision.training_epochs:
        return None
    task = FLAGS.training_length_task
    plan = sweep.SplitPlan("train800", "val200", "train800", "val200")
    runs = {}
    for name in FLAGS.sample_efficiency_variants:
        chosen = selections[task][name]
        best = sweep.GridResult(chosen["learning_rate"], chosen["weight_decay"], math.nan)
        for epochs in vision.training_epochs:
            run, = sweep.final_runs(os.path.join(runs_dir, task, name, f"epochs{epochs}"), plan,
                                    best, [vision.protocol.grid_seed])
            runs[name, epochs] = dataclasses.replace(
                run, flags=(*run.flags, ("epochs", str(epochs))))
    pool.map(lambda key: pool.run(runs[key], comparison.variant_launch_args(
        vision.protocol, vision.by_name[key[0]], task, presets)), list(runs))
    accuracy = {}
    for (name, epochs), run in runs.items():
        accuracy.setdefault(name, {})[str(epochs)] = comparison.final_accuracy(run)
    return {"task": task, "split": "val200", "seed": vision.protocol.grid_seed,
            "epochs": vision.training_epochs, "validation_accuracy": accuracy}


def _sample_efficiency_gaps(sample_efficiency):
    """Deep-share minus No-share per size and its trend, per task and placement."""
    from kprefix.replicate.results import PLACEMENTS
    from kprefix.replicate.sample_efficiency import gap_by_size

    gaps = [gap_by_size(sample_efficiency, task, placement)
            for task in sample_efficiency for placement in PLACEMENTS]
    return [gap for gap in gaps if gap is not None]


def _record_timings(started, runs_started, parallel):
    """Adds this invocation to `timings.json` (earlier invocations' entries stay)."""
    from kprefix.runs import files

    path = os.path.join(FLAGS.output_dir, "timings.json")
    timings = files.read_json(path) if os.path.exists(path) else {}
    timings["last_invocation_seconds"] = round(time.time() - started, 1)
    timings["last_invocation_runs_started"] = runs_started
    timings["parallel_runs"] = parallel
    files.write_json(path, timings)
    return timings


def _write_results(vision, tasks, selections, sample_efficiency, text, pretraining, presets,
                   timings, training_length):
    """Writes the plots, then `results.json` and `results.md`."""
    from kprefix.replicate import results

    sizes = [*vision.sizes, 1000] if sample_efficiency else []
    payload = {
        "command": shlex.join(["python", "-m", "kprefix.replicate", *sys.argv[1:]]),
        "seeds": list(vision.protocol.seeds),
        "metric": "test accuracy (fraction)",
        "tasks": tasks,
        "selection": {task: {name: {k: v for k, v in outcome.items() if k != "test_accuracy"}
                             for name, outcome in by_variant.items()}
                      for task, by_variant in selections.items()},
        "transfer": _transfer(vision, tasks),
        "vision_pretraining": pretraining,
        "presets": _relative_to_output(presets),
        "sample_efficiency": sample_efficiency,
        "sample_efficiency_sizes": sizes,
        "sample_efficiency_design": {
            "seeds_by_size": {str(n): seeds for n, seeds in vision.seeds_by_size.items()},
            "schedule_by_size": {str(n): schedule for n, schedule in vision.schedules.items()},
            "matched_steps": FLAGS.sample_efficiency_matched_steps},
        "sample_efficiency_gaps": _sample_efficiency_gaps(sample_efficiency),
        "training_length": training_length,
        "timings": timings,
        "text": text,
        "notes": [],
    }
    if text.get("skipped"):
        payload["notes"].append(f"E2E (the language half) was skipped: {text['skipped']}")
    if sample_efficiency:
        payload["plot"] = "sample_efficiency.png"
        results.plot_sample_efficiency(os.path.join(FLAGS.output_dir, payload["plot"]),
                                       sample_efficiency, sizes)
    if text.get("variants") and text["fractions"]:
        text["plot"] = "e2e_sample_efficiency.png"
        results.plot_text_sample_efficiency(os.path.join(FLAGS.output_dir, text["plot"]), text)
    results.write_results(FLAGS.output_dir, payload)


@dataclasses.dataclass(frozen=True)
class LanguagePlan:
    """The language half's checked settings, or why it is skipped."""

    skipped: str = None
    data_dir: str = None
    references_per_input: list = None  # E2E training references of each input
    by_name: dict = None  # the E2E comparison rows
    fractions: list = None
    protocol: object = None  # text_comparison.TextProtocol
    training_length_steps: list = None  # E2E's learning curve (empty: not run)


def _language_plan():
    """Checks the language flags and finds the data; raises `app.UsageError` on a bad flag."""
    from kprefix import sweep
    from kprefix.data import nlg
    from kprefix.replicate import text_comparison

    if not FLAGS.text_pretrain_steps:
        return LanguagePlan(skipped="--text_pretrain_steps=0")
    by_name = {v.name: v for v in (*text_comparison.TEXT_VARIANTS,
                                   text_comparison.RANDOM_DEEP_SHARE)}
    _usage(any(n not in by_name for n in FLAGS.text_variants),
           f"--text_variants: use names from {', '.join(by_name)}.")
    fractions = (sweep.parse_numbers(FLAGS.e2e_fractions, "e2e_fractions")
                 if FLAGS.e2e_fractions else [])
    _usage(any(not 0 < f <= 1 for f in fractions) or not 0 < FLAGS.e2e_grid_fraction <= 1,
           "--e2e_fractions and --e2e_grid_fraction: use fractions in (0, 1], "
           "e.g. 0.01,0.05,0.2,1.")
    curve_steps = ([int(n) for n in sweep.parse_numbers(FLAGS.e2e_training_length_steps,
                                                        "e2e_training_length_steps")]
                   if FLAGS.e2e_training_length_steps else [])
    _usage(any(n < 1 for n in curve_steps) or (curve_steps and not FLAGS.text_variants),
           "--e2e_training_length_steps: use whole numbers of steps >= 1, with --text_variants.")
    try:
        data_dir = str(nlg.shared_data_dir(FLAGS.text_data_dir))
        missing = [name for name in ("e2e", "webnlg2017", "xsum")
                   if not os.path.isdir(os.path.join(data_dir, name))]
        if missing:
            folders = ", ".join(f"{name}/" for name in missing)
            raise FileNotFoundError(f"the benchmark data folder {data_dir} has no {folders} "
                                    "(pretraining needs webnlg2017/ and xsum/, the downstream "
                                    "task e2e/)")
        references_per_input = [len(e.targets) for e in nlg.load_e2e(
            "train", data_dir, source_format="reference")]
    except (FileNotFoundError, ValueError) as error:
        print(f"[replicate] language half skipped: {error}", flush=True)
        return LanguagePlan(skipped=str(error))
    protocol = text_comparison.TextProtocol(
        learning_rates=tuple(sweep.parse_numbers(FLAGS.text_learning_rates,
                                                 "text_learning_rates")),
        weight_decays=tuple(sweep.parse_numbers(FLAGS.text_weight_decays, "text_weight_decays")),
        seeds=tuple(int(s) for s in sweep.parse_numbers(FLAGS.text_seeds, "text_seeds")),
        grid_seed=FLAGS.grid_seed, fractions=tuple(fractions),
        grid_fraction=FLAGS.e2e_grid_fraction, train_steps=FLAGS.e2e_train_steps,
        batch_size=FLAGS.e2e_batch_size, validation_examples=FLAGS.e2e_validation_examples,
        test_examples=FLAGS.e2e_test_examples,
        launch_args=("--config=nlg/table_to_text", "--dataset=e2e", "--noexport",
                     f"--text_data_dir={data_dir}", *FLAGS.text_launch_flag))
    return LanguagePlan(None, data_dir, references_per_input, by_name, fractions, protocol,
                        curve_steps)


def replicate_language(runs_dir, pool, plan):
    """The language half (see `kprefix.replicate.pretrain_text` and `text_comparison`):
    GPT-2 pretraining, then the E2E runs; returns the `text` part of the results
    (`{"skipped": reason}` when it is turned off or its data is missing)."""
    if plan.skipped:
        return {"skipped": plan.skipped}
    pretraining, presets = _pretrain_text(plan.data_dir)
    text = {"task": "e2e", "metric": "BLEU (0-1, official-faithful E2E scorer)",
            "pretraining": pretraining, "presets": _relative_to_output(presets), "seeds": [],
            "fractions": {}, "variants": {}, "selection": {}, "comparisons": [], "transfer": []}
    if not FLAGS.text_variants or not plan.fractions:
        return text
    _describe_e2e_protocol(text, plan)
    _compare_text_variants(text, runs_dir, pool, plan, presets)
    text["transfer"] = _text_transfer(text)
    if plan.training_length_steps:
        from kprefix.replicate import text_comparison

        first = FLAGS.text_variants[0]
        text["training_length"] = text_comparison.run_training_length(
            runs_dir, plan.by_name[first], plan.protocol, presets, plan.references_per_input,
            pool, text["selection"][first], plan.training_length_steps)
    return text


def _pretrain_text(data_dir):
    """Pretrains the GPT-2 (or reads the finished pretraining); returns it and the presets."""
    from kprefix.replicate.pretrain_text import (PRETRAINED, RANDOM, TextPretraining,
                                                 pretrain_text)

    width = FLAGS.gpt2_width
    pretraining = pretrain_text(FLAGS.output_dir, TextPretraining(
        steps=FLAGS.text_pretrain_steps, batch_size=FLAGS.text_pretrain_batch_size,
        sequence_length=FLAGS.text_sequence_length,
        learning_rate=FLAGS.text_pretrain_learning_rate,
        vocabulary_size=FLAGS.text_vocabulary_size, num_layers=FLAGS.gpt2_layers,
        num_heads=max(1, width // 32), hidden_dim=width, intermediate_dim=4 * width,
        max_texts=FLAGS.text_pretrain_max_texts, data_dir=data_dir),
        log=lambda line: print(line, flush=True))
    return pretraining, _presets(PRETRAINED, RANDOM)


def _describe_e2e_protocol(text, plan):
    """Seeds, budgets and, per training fraction, its inputs, pairs and schedule."""
    from kprefix.replicate import text_comparison

    protocol = plan.protocol
    text["seeds"] = list(protocol.seeds)
    text["test_examples"] = protocol.test_examples or 630
    text["validation_examples"] = protocol.validation_examples or 547
    text["train_steps"] = protocol.train_steps
    for fraction in plan.fractions:
        inputs, pairs = text_comparison.training_subset(fraction, plan.references_per_input)
        text["fractions"][text_comparison.fraction_label(fraction)] = {
            "fraction": fraction, "inputs": inputs, "pairs": pairs,
            **text_comparison.schedule(pairs, protocol.batch_size, protocol.train_steps)}


def _compare_text_variants(text, runs_dir, pool, plan, presets):
    """Grid and seed runs of every E2E row; fills the BLEU summaries and selections."""
    from kprefix.replicate import results, text_comparison

    outcomes = pool.map(lambda name: text_comparison.run_text_variant(
        runs_dir, plan.by_name[name], plan.protocol, presets, plan.references_per_input, pool),
        FLAGS.text_variants)
    for name, outcome in zip(FLAGS.text_variants, outcomes):
        text["variants"][name] = {label: results.finite_summary(values)
                                  for label, values in outcome.pop("bleu").items()}
        text["selection"][name] = outcome
    text["comparisons"] = results.text_comparison_sentences(text["variants"])


def _text_transfer(text):
    """Deep-share on the pretrained vs the random GPT-2, per fraction (when both ran)."""
    from kprefix.replicate import text_comparison
    from kprefix.replicate.statistics import paired_difference, verdict

    random_name = text_comparison.RANDOM_DEEP_SHARE.name
    if random_name not in text["variants"] or "deep_share-deep" not in text["variants"]:
        return []
    transfer = []
    for label in text["fractions"]:
        difference = paired_difference(text["variants"]["deep_share-deep"][label]["values"],
                                       text["variants"][random_name][label]["values"])
        transfer.append({"fraction": label, "difference": difference,
                         "sentence": verdict(difference, "pretrained GPT-2", "random weights",
                                             f"E2E {label}, Deep-share DEEP")})
    return transfer


if __name__ == "__main__":
    cli.run(main)
