"""Command plumbing shared by every kprefix command.

- `command.run(main)`: how a command starts (flagfiles, logs, help, absl)
  and how its errors end it (one line, exit status 2 or 1).
- `flagfiles`: `--flagfile=` includes and `--config=NAME` for the configs
  installed with kprefix.
- `grouped_help`: `--help` with the command's own flags first, in groups.
- `tensorflow_logs`: TensorFlow's log level from `--verbosity`, set before
  TensorFlow is imported.
- `errors`: the one-line message and exit status of a failure.

Example:

>>> from kprefix.cli import flagfiles
>>> "quickstart" in flagfiles.available_configs()
True
"""

from kprefix.cli.command import run

__all__ = ["run"]
