"""How every kprefix command starts: flagfiles, TensorFlow's logs, help, then absl.

`run(main)` is what `python -m kprefix.<command>` and the console scripts
(`kprefix-launch`, `kprefix-evaluate`, `kprefix-sweep`, `kprefix-report`)
call. Before absl parses the command line it

1. expands `--flagfile=` and `--config=` (`kprefix.flagfiles`: nested
   includes relative to the including file, paper configs by name);
2. sets TensorFlow's log levels from `--verbosity` (`kprefix.logs`), before
   anything imports TensorFlow;
3. answers `--help` / `--helpfull` with the command's own flags first, in
   their source groups (`kprefix.flag_help`).
"""

import sys

from absl import app, flags

from kprefix import flag_help, flagfiles, logs


def run(main, flags_parser=None, expand_flagfiles=True, argv=None) -> None:
    """Runs `main` with absl after kprefix's command-line preparation (see module doc)."""
    argv = list(sys.argv if argv is None else argv)
    if expand_flagfiles:
        try:
            argv = flagfiles.expand_flagfiles(argv, keep_config="config" in flags.FLAGS)
        except flagfiles.FlagfileError as error:
            sys.exit(f"FATAL Flags parsing error: {error}")
    logs.configure_tensorflow_logging(argv)
    wanted = flag_help.requested_help(argv)
    if wanted:
        module = sys.modules[main.__module__]
        print(flag_help.render_help(main.__module__, full=wanted == "full",
                                    title=(module.__doc__ or "").strip()))
        sys.exit(0)
    if flags_parser is None:
        app.run(main, argv=argv)
    else:
        app.run(main, argv=argv, flags_parser=flags_parser)
