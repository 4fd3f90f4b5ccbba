"""How a command's failure reaches the user: one line, the right exit status.

Usage errors (a bad flag, file or setting: `absl.app.UsageError`) exit with
status 2; run failures exit with status 1. Either way the user sees one
line on stderr, `Error: ...`, naming what failed and how to go on. Failures
of the environment are named as such: a full disk, a permission refused, no
network. `--verbosity` (any value) adds the traceback above that line.

>>> import errno
>>> one_line(OSError(errno.ENOSPC, "No space left on device", "/runs/a/export"))
'no space left on the device writing /runs/a/export (No space left on device). Free space and rerun the same command: it resumes from the last checkpoint.'
>>> exit_status(ValueError("x")), exit_status(UsageError("y"))
(1, 2)
"""

import errno
import re
import socket
import sys
import traceback

from absl.app import UsageError

USAGE_EXIT_STATUS = 2
FAILURE_EXIT_STATUS = 1

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
# Texts of errors that TensorFlow's C++ filesystems raise without an errno.
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")
_DENIED_TEXTS = ("Permission denied", "Read-only file system")
_NETWORK_TYPES = ("ConnectionError", "ConnectTimeout", "ReadTimeout", "NewConnectionError",
                  "MaxRetryError", "NameResolutionError", "OfflineModeIsEnabled",
                  "LocalEntryNotFoundError", "URLError")


def causes(error):
    """`error` and the errors it was raised from or during, outermost first."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _text(error):
    """The error's message without TensorFlow's op annotations."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", text)
    return text.strip()


def environment_failure(error):
    """A sentence naming the failed resource (disk, permission, network), or None."""
    for cause in causes(error):
        number = getattr(cause, "errno", None)
        text = getattr(cause, "strerror", None) or _text(cause)
        path = getattr(cause, "filename", None)
        if number in _FULL or any(t in text for t in _FULL_TEXTS):
            what = ("a file-size limit or quota was reached" if number == errno.EFBIG
                    or "too large" in text else "no space left on the device")
            return (f"{what}{f' writing {path}' if path else ''} ({text.splitlines()[0]}). "
                    "Free space and rerun the same command: it resumes from the last "
                    "checkpoint.")
        if number in _DENIED or any(t in text for t in _DENIED_TEXTS):
            return (f"permission denied{f' for {path}' if path else ''} "
                    f"({text.splitlines()[0]}). Fix the permissions or choose another path.")
        if isinstance(cause, (socket.gaierror, ConnectionError, TimeoutError)) or \
                type(cause).__name__ in _NETWORK_TYPES:
            return (f"no network: {type(cause).__name__} ({text.splitlines()[0][:200]}). Connect "
                    "to the network, or use a local preset folder.")
    return None


def one_line(error):
    """The one-line message for `error` (see the module doc)."""
    described = environment_failure(error)
    if described is None:
        described = " ".join(_text(error).split())
        if not isinstance(error, UsageError) and type(error).__module__ != "kprefix" \
                and not type(error).__module__.startswith("kprefix."):
            described = f"{type(error).__name__}: {described}"
    return described


def exit_status(error):
    """2 for a usage error, 1 for anything else."""
    return USAGE_EXIT_STATUS if isinstance(error, UsageError) else FAILURE_EXIT_STATUS


def report(error, show_traceback=False, stream=None):
    """Prints `error` as one line (after its traceback if asked); returns its exit status."""
    stream = stream or sys.stderr
    if show_traceback:
        traceback.print_exception(type(error), error, error.__traceback__, file=stream)
    hint = "" if show_traceback or isinstance(error, UsageError) or environment_failure(error) \
        else " (--verbosity=0 shows the traceback)"
    print(f"Error: {one_line(error)}{hint}", file=stream, flush=True)
    return exit_status(error)
