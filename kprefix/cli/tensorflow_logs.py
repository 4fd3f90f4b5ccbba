"""What a run prints: TensorFlow's logs quiet unless asked for, plain lines when piped.

`--verbosity` (absl's flag: 1 debug, 0 info, -1 warning, -2 error) sets
TensorFlow's C++ log level (`TF_CPP_MIN_LOG_LEVEL`) and its Python logger;
without it, TensorFlow prints warnings and errors from Python and nothing
but fatal errors from C++. The C++ level is read when
TensorFlow is imported, so `configure_tensorflow_logging` runs before that.

>>> verbosity_from_argv(["prog", "--epochs=3", "--verbosity=-1"])
-1
>>> cpp_min_log_level(0), cpp_min_log_level(-1), cpp_min_log_level(-3)
(0, 1, 3)
"""

import logging
import os
import re
import sys
import tempfile
from typing import Optional, Sequence

# TF_CPP_MIN_LOG_LEVEL when --verbosity is not given: fatal errors only. No
# INFO banners about CPU instructions and oneDNN, no C++ warnings, and no
# C++ error lines either: those a run meets are benign ("oneDNN supports
# DT_INT64 only on platforms with AVX-512. Falling back to ... Eigen"), and
# real failures reach Python as exceptions, reported in one line.
QUIET_CPP_LOG_LEVEL = "3"


def verbosity_from_argv(argv: Sequence[str]) -> Optional[int]:
    """The last `--verbosity` / `-v` value on a command line, or None."""
    found = None
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for name in ("--verbosity", "-verbosity", "--v", "-v"):
            value = None
            if arg.startswith(name + "="):
                value = arg[len(name) + 1:]
            elif arg == name and i + 1 < len(args):
                value = args[i + 1]
            if value is not None:
                try:
                    found = int(value)
                except ValueError:
                    pass  # absl reports the bad value when it parses the flags
                break
    return found


def cpp_min_log_level(verbosity: int) -> int:
    """TF_CPP_MIN_LOG_LEVEL for an absl verbosity (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL)."""
    return min(3, max(0, -verbosity))


def configure_tensorflow_logging(argv: Sequence[str]) -> None:
    """Sets TensorFlow's log levels from `--verbosity` in `argv`; call before importing it.

    Without `--verbosity`, a `TF_CPP_MIN_LOG_LEVEL` already in the environment
    is respected.
    """
    verbosity = verbosity_from_argv(argv)
    if verbosity is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_CPP_LOG_LEVEL)
        # TensorFlow's Python INFO lines (e.g. SavedModel fingerprints) would
        # otherwise pass at absl's default verbosity.
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(cpp_min_log_level(verbosity))
    if verbosity > 0:
        os.environ["TF_CPP_MAX_VLOG_LEVEL"] = str(verbosity)
    level = {1: logging.DEBUG, 0: logging.INFO, -1: logging.WARNING, -2: logging.ERROR}
    logging.getLogger("tensorflow").setLevel(level.get(max(-3, min(1, verbosity)),
                                                       logging.FATAL))


# What TensorFlow's C++ code writes to stderr while it loads and looks for
# devices, whatever TF_CPP_MIN_LOG_LEVEL says (its absl logging is not set up
# yet): absl log lines (I/W/E + date) and absl's banner about them.
_STARTUP_NOISE = re.compile(r"^([IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |WARNING: All log messages before "
                            r"absl::InitializeLog\(\) is called)")


def drop_startup_noise(text: str) -> str:
    """`text` without TensorFlow's C++ start-up log lines (their continuation lines too).

    >>> drop_startup_noise("I0000 00:00:1795.8 7416 port.cc:153] oneDNN on.\\nkept\\n")
    'kept\\n'
    """
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        if _STARTUP_NOISE.match(line):
            dropping = True
        elif dropping and line.startswith("To enable the following instructions"):
            pass  # second line of the CPU feature banner
        else:
            dropping = False
            kept.append(line)
    return "".join(kept)


def import_tensorflow_quietly(verbosity: Optional[int]):
    """Imports TensorFlow and finds its devices, hiding its C++ start-up logs.

    With `verbosity` None (no `--verbosity` given), what TensorFlow's C++
    code prints meanwhile on stderr is held back and only the lines that are
    not its start-up logs are passed on, and Python log lines below WARNING
    are dropped from then on; with a verbosity, everything is shown as the
    log levels decide. Call it after absl parsed the flags. Returns the module.
    """
    if verbosity is not None:
        import tensorflow as tf

        return tf
    # TensorFlow's Python INFO lines (SavedModel export, ...) go through absl's
    # logger, whose level absl set from --verbosity's default (INFO).
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    # Download retries: a failed download is reported once, as an error.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            rest = drop_startup_noise(held.read().decode("utf-8", errors="replace"))
            sys.stderr.write(rest)
            sys.stderr.flush()
    return tf

