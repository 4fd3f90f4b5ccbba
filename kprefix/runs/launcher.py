"""One run from a `RunConfig`: check, lock, train, evaluate, export, record.

`run(config)` is `kprefix.run`: what `python -m kprefix.launch` does with
the config its flags describe, from Python and without absl's flag parsing.
The data, the backbone, the cluster and the workdir are checked before the
first write; then the chief holds `run.lock` while it runs, records the
run's settings in `run_config.json` (a restart must use the same settings;
a larger `epochs` is allowed) and writes `results.json` last. Problems with
the settings raise `absl.app.UsageError` before anything is written; a run
that diverges records `"status": "diverged"` and raises
`kprefix.runs.train.Diverged`.

Example (the Python entry point; see `run`):

>>> from kprefix.runs.config import RunConfig
>>> check_cluster(RunConfig())   # the default strategy needs no TF_CONFIG
"""

import importlib
import os

from absl import app

from kprefix.experiments import EXPERIMENTS


def run(config, verbose=True, config_name=None):
    """Trains, evaluates and exports as `config` says; returns the results dictionary.

    Writes under `config.workdir`: `checkpoints/` (a rerun resumes from the
    newest good one), `tensorboard/`, `export/` (the folded SavedModel) and
    `results.json` (these results, with `config.flag_values()` under
    "flags" and `config_name`, the flagfile config it came from, if any).
    `verbose=False` leaves out the closing summary of where everything went.
    """
    from kprefix.runs import cluster, multi_worker, workdir

    check_cluster(config)
    role = cluster.cluster_role()
    check_workdir(config, role)
    experiment = importlib.import_module(EXPERIMENTS[config.task])

    def prepare_and_run():
        train_evaluate_export = experiment.prepare(config)
        # Everything is checked: from here on the run writes.
        try:
            workdir.check_writable(config.workdir)
        except OSError as error:
            raise app.UsageError(f"--workdir={config.workdir!r}: {error}") from None
        lock = workdir.WorkdirLock(config.workdir) if role.is_chief else None
        if lock is not None:
            lock.acquire()
            if lock.took_over:
                print(f"Took over the stale lock of pid {lock.took_over.get('pid')} on "
                      f"{lock.took_over.get('host')} (that run is gone).", flush=True)
        try:
            return _train_and_record(config, role, train_evaluate_export, verbose, config_name)
        finally:
            if lock is not None:
                lock.release()

    if config.strategy == "multi_worker_mirrored":
        return multi_worker.as_one_of_several_workers(prepare_and_run)
    return prepare_and_run()


def check_cluster(config):
    """A usage error for a missing or malformed `TF_CONFIG` where the strategy needs one."""
    if config.strategy == "multi_worker_mirrored":
        from kprefix.runs import multi_worker

        try:
            multi_worker.cluster_from_tf_config()
        except ValueError as error:
            raise app.UsageError(str(error)) from None


def check_workdir(config, role):
    """Read-only checks of the workdir by the chief.

    Refuses a workdir that a live run holds, settings that differ from the
    ones the run started with, and checkpoint files that no manifest vouches
    for (unless `resume_from_unverified`). Writes nothing.
    """
    from kprefix.runs import checkpoints, workdir

    if not role.is_chief:
        return
    workdir.WorkdirLock(config.workdir).check_free()
    try:
        workdir.check_run_config(config.workdir, config.recorded_flags(), record=False)
    except workdir.ChangedRunConfig as error:
        raise app.UsageError(str(error)) from None
    folder = os.path.join(config.workdir, "checkpoints")
    unverified = checkpoints.CheckpointStore(folder).unverified()
    if unverified and not config.resume_from_unverified:
        names = ", ".join(unverified[:4]) + (f" and {len(unverified) - 4} more"
                                             if len(unverified) > 4 else "")
        raise app.UsageError(
            f"{folder} holds checkpoint files without a readable manifest ({names}); they are "
            "not overwritten. Move them away to start over, or add --resume_from_unverified to "
            "verify them by loading.")


def _train_and_record(config, role, train_evaluate_export, verbose, config_name):
    from kprefix.runs import files, train, workdir

    flag_values = {"config": config_name, **config.flag_values()}
    results_path = os.path.join(config.workdir, "results.json")
    if role.is_chief and workdir.check_run_config(config.workdir, config.recorded_flags()):
        print(f"Continuing with more --epochs ({config.epochs}); the learning-rate schedule "
              "now spans the new total.", flush=True)
    try:
        results, summary = train_evaluate_export()
    except train.Diverged as error:
        if role.is_chief:
            files.write_json(results_path, {"status": "diverged", "error": str(error),
                                            "diverged_at_step": error.step,
                                            "flags": flag_values})
        raise
    if not role.is_chief:
        print(f"Done ({role.name}); the chief wrote the results.", flush=True)
        return results
    results["status"] = "completed"
    results["flags"] = flag_values
    files.write_json(results_path, results)  # last: its presence means the run finished
    if verbose:
        print(
            "\nDone.\n"
            + "".join(f"  {line}\n" for line in summary)
            + f"  results:     {results_path}\n"
            f"  checkpoints: {os.path.join(config.workdir, 'checkpoints')}\n"
            f"  tensorboard: {os.path.join(config.workdir, 'tensorboard')}\n"
            + (f"  SavedModel:  {results['export_dir']}\n" if "export_dir" in results else ""),
            flush=True,
        )
    return results
