"""How every kprefix command starts: flagfiles, TensorFlow's logs, help, then absl.

`run(main)` is what `python -m kprefix.<command>` and the console scripts
(`kprefix-launch`, `kprefix-evaluate`, `kprefix-sweep`, `kprefix-report`)
call. Before absl parses the command line it

1. expands `--flagfile=` and `--config=` (`kprefix.cli.flagfiles`: nested
   includes relative to the including file, paper configs by name);
2. sets TensorFlow's log levels from `--verbosity` (`kprefix.cli.tensorflow_logs`), before
   anything imports TensorFlow;
3. answers `--help` / `--helpfull` with the command's own flags first, in
   their source groups (`kprefix.cli.grouped_help`);
4. turns every error, found while parsing the flags or later, into one line
   on stderr with exit status 2 (usage) or 1 (run failure) (`kprefix.cli.errors`);
   with `--verbosity` the traceback comes first.
"""

import functools
import sys

from absl import app, flags

from kprefix.cli import errors, flagfiles, grouped_help, tensorflow_logs


def run(main, flags_parser=None, expand_flagfiles=True, argv=None) -> None:
    """Runs `main` with absl after kprefix's command-line preparation (see module doc)."""
    argv = list(sys.argv if argv is None else argv)
    if expand_flagfiles:
        try:
            argv = flagfiles.expand_flagfiles(argv, keep_config="config" in flags.FLAGS)
        except flagfiles.FlagfileError as error:
            _exit_with(app.UsageError(str(error)), argv)
    tensorflow_logs.configure_tensorflow_logging(argv)
    wanted = grouped_help.requested_help(argv)
    if wanted:
        module = sys.modules[main.__module__]
        print(grouped_help.render_help(main.__module__, full=wanted == "full",
                                    title=(module.__doc__ or "").strip()))
        sys.exit(0)
    app.run(_one_line_errors(main, argv), argv=argv,
            flags_parser=_one_line_errors(flags_parser or flags.FLAGS, argv))


def _exit_with(error, argv):
    sys.exit(errors.report(error, show_traceback=tensorflow_logs.verbosity_from_argv(argv) is not None))


def _one_line_errors(function, argv):
    """`function`, whose exceptions end the process with one line (see module doc)."""
    @functools.wraps(function)
    def guarded(*args):
        try:
            return function(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except flags.Error as error:  # a flag value absl refused while parsing
            _exit_with(app.UsageError(f"{error} (--help lists the flags)"), argv)
        except Exception as error:  # noqa: BLE001 - every failure becomes one line
            _exit_with(error, argv)
    return guarded
