"""Flagfiles that travel: nested includes relative to the including file, named configs.

absl resolves a `--flagfile=` line inside a flagfile against the working
directory, so a config that includes its base file works only from one
folder. `expand_flagfiles` expands flagfiles before absl sees the command
line, with absl's rules for what a flagfile line is (blank lines and lines
starting with `#` or `//` are skipped, other lines are stripped and used as
arguments, nested `--flagfile=` lines are expanded in place), except that a
relative nested path is relative to the file that names it. On the command
line, relative paths stay relative to the working directory.

`--config=NAME` names one of the paper configs installed with kprefix
(`configs/NAME.cfg` of the repository), e.g. `--config=vtab/deep_cifar100`;
it expands like `--flagfile=` of that file (and, for a program that defines
a `--config` flag, stays in the arguments, so that the run records it).

Example:

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "base.cfg").write_text("# shared\\n--epochs=3\\n")
>>> _ = (folder / "task.cfg").write_text("--flagfile=base.cfg\\n--dataset=vtab/dtd\\n")
>>> expand_flagfiles(["prog", f"--flagfile={folder / 'task.cfg'}", "--epochs=5"])
['prog', '--epochs=3', '--dataset=vtab/dtd', '--epochs=5']
>>> config_path("vtab/deep_cifar100").name
'deep_cifar100.cfg'
"""

import os
import pathlib
from typing import List, Sequence

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]
# Installed wheel: kprefix/configs (mapped from the repository's configs/ at
# build time). Source checkout or editable install: the repository's configs/.
CONFIG_DIRS = (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs")


class FlagfileError(ValueError):
    """A flagfile or named config cannot be read; the message says which and why."""


def configs_dir() -> pathlib.Path:
    """The folder of the paper configs that came with this kprefix."""
    for folder in CONFIG_DIRS:
        if folder.is_dir():
            return folder
    raise FlagfileError(
        "kprefix's configs are not installed (looked in "
        f"{', '.join(str(f) for f in CONFIG_DIRS)}); reinstall kprefix, or pass "
        "--flagfile=PATH to a flagfile instead of --config."
    )


def available_configs() -> List[str]:
    """Names `--config` accepts, e.g. 'quickstart', 'vtab/deep_cifar100'."""
    root = configs_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.cfg"))


def config_path(name: str) -> pathlib.Path:
    """The installed flagfile of a config name (`.cfg` optional)."""
    relative = name[:-len(".cfg")] if name.endswith(".cfg") else name
    path = configs_dir() / f"{relative}.cfg"
    if not path.is_file():
        close = [c for c in available_configs() if c.split("/")[0] == relative.split("/")[0]]
        raise FlagfileError(
            f"--config={name!r}: no such config. Choose one of "
            f"{', '.join(close or available_configs())}; or pass --flagfile=PATH."
        )
    return path


def _directive(arg: str, name: str):
    """The value of `--name=value` / `-name=value`; '' for a bare `--name`; else None."""
    for dashes in ("--", "-"):
        if arg == dashes + name:
            return ""
        if arg.startswith(f"{dashes}{name}="):
            return arg[len(dashes + name) + 1:].strip()
    return None


def _file_lines(path: str, stack: List[str]) -> List[str]:
    real = os.path.realpath(path)
    if real in stack:
        raise FlagfileError(f"flagfile {path} includes itself (through {' -> '.join(stack)}).")
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as error:
        origin = f" (included by {stack[-1]})" if stack else ""
        raise FlagfileError(f"Unable to open flagfile {path}{origin}: {error.strerror}.") from None
    stack = [*stack, real]
    arguments = []
    for line in lines:
        if line.isspace() or line.startswith(("#", "//")):
            continue
        nested = _directive(line.strip(), "flagfile")
        if nested is not None:
            if nested:
                nested = os.path.expanduser(nested)
                arguments += _file_lines(os.path.join(os.path.dirname(path), nested), stack)
            continue
        arguments.append(line.strip())
    return arguments


def expand_flagfiles(argv: Sequence[str], keep_config: bool = False) -> List[str]:
    """`argv` with every `--flagfile=` / `--config=` replaced by the file's arguments.

    `argv[0]` (the program) is kept; arguments after `--` are left alone;
    `keep_config` keeps each `--config=NAME` after its file's arguments.
    Raises `FlagfileError` for a missing file or config.
    """
    argv = list(argv)
    expanded, rest = argv[:1], argv[1:]
    while rest:
        arg, rest = rest[0], rest[1:]
        if arg == "--":
            expanded += [arg, *rest]
            break
        for name in ("flagfile", "config"):
            value = _directive(arg, name)
            if value is None:
                continue
            if value == "" and "=" not in arg:  # `--flagfile PATH`
                if not rest:
                    raise FlagfileError(f"{arg} needs a value.")
                value, rest = rest[0], rest[1:]
                arg = f"--{name}={value}"
            if name == "config":
                expanded += _file_lines(str(config_path(value)), [])
                expanded += [arg] if keep_config else []
            elif value:
                expanded += _file_lines(os.path.expanduser(value), [])
            break
        else:
            expanded.append(arg)
    return expanded
