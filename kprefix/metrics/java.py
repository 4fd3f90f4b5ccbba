"""Finding a Java runtime and the jars that ship inside the pycocoevalcap package.

METEOR 1.5 and the Stanford PTB tokenizer used by coco-caption are Java
programs; pycocoevalcap ships both jars. Nothing here hard-codes a path: Java is
taken from ``$KPREFIX_JAVA`` if set, else from ``PATH`` (``shutil.which``).

Example:
    >>> reason = java_unavailable_reason()
    >>> reason is None or isinstance(reason, str)
    True
"""

from __future__ import annotations

import doctest
import functools
import importlib.util
import os
import pathlib
import shutil
import subprocess
from typing import Optional, Sequence

JAVA_ENV_VAR = "KPREFIX_JAVA"

# Marks a docstring example that runs Java (`# doctest: +REQUIRES_JAVA`); the
# test suite leaves such examples out, with the reason, where Java cannot run.
REQUIRES_JAVA = doctest.register_optionflag("REQUIRES_JAVA")


class JavaUnavailableError(RuntimeError):
    """Raised when a Java-based metric cannot run; the message says why and how to fix it."""


def find_java() -> Optional[str]:
    """Returns the java executable to use, or None when there is none."""
    configured = os.environ.get(JAVA_ENV_VAR)
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
    return shutil.which("java")


@functools.lru_cache(maxsize=None)
def _probe_java(java: str) -> Optional[str]:
    try:
        completed = subprocess.run([java, "-version"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"'{java} -version' could not run: {error}"
    if completed.returncode != 0:
        return f"'{java} -version' failed: {completed.stderr.decode(errors='replace').strip()}"
    return None


def java_unavailable_reason() -> Optional[str]:
    """None when Java works; otherwise a sentence saying what is missing and the fix."""
    java = find_java()
    if java is None:
        configured = os.environ.get(JAVA_ENV_VAR)
        where = f"at ${JAVA_ENV_VAR}={configured}" if configured else "on PATH"
        return (f"no Java runtime found {where}; install one (e.g. 'apt-get install "
                f"default-jre-headless') or point ${JAVA_ENV_VAR} at a java executable")
    return _probe_java(java)


def require_java() -> str:
    """Returns the java executable or raises :class:`JavaUnavailableError`."""
    reason = java_unavailable_reason()
    if reason is not None:
        raise JavaUnavailableError(reason)
    java = find_java()
    assert java is not None
    return java


def pycocoevalcap_file(*relative_parts: str) -> pathlib.Path:
    """Path of a file shipped in the pycocoevalcap package, e.g. ``("meteor", "meteor-1.5.jar")``."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise JavaUnavailableError(
            "the pycocoevalcap package is not installed; run 'pip install pycocoevalcap==1.2'")
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location, *relative_parts)
        if candidate.is_file():
            return candidate
    raise JavaUnavailableError(
        f"{'/'.join(relative_parts)} is missing from the installed pycocoevalcap; "
        "reinstall it with 'pip install --force-reinstall pycocoevalcap==1.2'")


def run_java(arguments: Sequence[str], *, stdin_text: Optional[str] = None,
             cwd: Optional[str] = None, timeout_s: float = 1800) -> str:
    """Runs ``java <arguments>`` and returns its standard output as text.

    Raises:
      JavaUnavailableError: no usable Java.
      RuntimeError: the program failed; the message carries its error output.
    """
    java = require_java()
    completed = subprocess.run(
        [java, *arguments], input=None if stdin_text is None else stdin_text.encode("utf-8"),
        capture_output=True, cwd=cwd, timeout=timeout_s, check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"java {' '.join(arguments[:3])} ... exited with {completed.returncode}: "
            f"{completed.stderr.decode('utf-8', errors='replace').strip()[-2000:]}")
    return completed.stdout.decode("utf-8")
