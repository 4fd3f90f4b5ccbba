"""`--help` / `--helpfull` that lists a command's own flags first, in their source groups.

absl sorts a module's flags by name and lists modules alphabetically, which
puts absl's and TensorFlow's flags before kprefix's when a command runs as a
console script. A module marks its groups with `group("Model")` between its
flag definitions; `render_help` lists that module's flags in definition
order under those titles, then the flags of other kprefix modules, then (for
`--helpfull`) everything else.

>>> from absl import flags
>>> values = flags.FlagValues()
>>> group("Size", flag_values=values, module="demo")
>>> _ = flags.DEFINE_integer("width", 3, "Columns.", flag_values=values, module_name="demo")
>>> print(render_help("demo", values, full=False, title="demo: a demo."))
demo: a demo.
<BLANKLINE>
<BLANKLINE>
Size:
  --width: Columns.
    (default: '3')
    (an integer)
<BLANKLINE>
Try --helpfull to see every flag.
"""

import sys
from typing import Dict, List, Optional, Tuple

from absl import flags

HELP_FLAGS = ("help", "helpfull", "helpshort", "h", "?")
# (title, flag names defined before the title) per module, in call order.
_GROUPS: Dict[str, List[Tuple[str, frozenset]]] = {}


def module_key(module: str) -> str:
    """The name absl files a module's flags under (the script path for `__main__`)."""
    return sys.argv[0] if module == "__main__" else module


def group(title: str, flag_values=flags.FLAGS, module: Optional[str] = None) -> None:
    """Starts a help group: flags the calling module defines next are listed under `title`."""
    module = module or sys._getframe(1).f_globals["__name__"]
    _GROUPS.setdefault(module_key(module), []).append((title, frozenset(flag_values)))


def requested_help(argv) -> Optional[str]:
    """'full' for --helpfull, 'short' for --help / --helpshort / -h, else None."""
    for arg in argv[1:]:
        if arg == "--":
            return None
        name = arg.lstrip("-").partition("=")[0]
        if arg.startswith("-") and name in HELP_FLAGS:
            return "full" if name == "helpfull" else "short"
    return None


def _flag_text(flag) -> str:
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = f"{name}: {flag.help}"
    if flag.default_as_str:
        text += f"\n(default: {flag.default_as_str})"
    if flag.parser.syntactic_help:
        text += f"\n({flag.parser.syntactic_help})"
    return flags.text_wrap(text, indent="    ", firstline_indent="  ")


def _grouped(module_key, module_flags) -> List[str]:
    markers = _GROUPS.get(module_key, [])
    lines, current = [], None
    for flag in module_flags:
        title = None
        for marker_title, known in markers:
            if flag.name not in known:
                title = marker_title
        if title is not None and title != current:
            lines.append(f"\n{title}:")
        current = title
        lines.append(_flag_text(flag))
    return lines


def render_help(module: str, flag_values=flags.FLAGS, full: bool = True,
                title: str = "") -> str:
    """Help text: `module`'s flags by group, other kprefix flags, then (full) the rest."""
    key = module_key(module)
    by_module = flag_values.flags_by_module_dict()
    lines = [title.rstrip(), ""] if title else []
    lines += _grouped(key, by_module.get(key, []))
    others = sorted(m for m in by_module if m != key)
    ours = [m for m in others if m.startswith("kprefix")]
    rest = [m for m in others if m not in ours] if full else []
    for other in ours + rest:
        lines.append(f"\n{other}:")
        lines += [_flag_text(f) for f in by_module[other]]
    if not full:
        lines.append("\nTry --helpfull to see every flag.")
    return "\n".join(lines)
