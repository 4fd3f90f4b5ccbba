"""Command-line flags generated from records declared with `kprefix.options.option`.

`define_flags(RunConfig)` defines one absl flag per declared field (nested
records included: `RunConfig.prefix` gives the `--prefix_*` flags), with the
field's help, choices and bounds; `record_from_flags` reads the parsed flags
back into the record. The flags belong to the module that calls
`define_flags`, so its `--help` lists them first, in the declared groups.

Example:

>>> from absl import flags
>>> from kprefix.prefix import PrefixConfig
>>> values = flags.FlagValues()
>>> define_flags(PrefixConfig, values, flag_prefix="prefix_", module_name="demo")
>>> values(["prog", "--prefix_length=4", "--prefix_placement=0,2"])
['prog']
>>> config = record_from_flags(PrefixConfig, values, flag_prefix="prefix_")
>>> config.length, config.placement, config.variant
(4, (0, 2), 'deep_share')
"""

import sys
import typing

from absl import flags

from kprefix.cli import grouped_help
from kprefix.options import build, check_field, flagged_fields


def _field_type(field):
    """The field's type without `Optional`: int, float, bool or str."""
    annotation = field.type
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, bool) else str


def _validator(field, flag):
    # "prefix" for --prefix_length: the subject that the record's own checks name.
    subject = flag[:-len(field.name)].rstrip("_") if flag.endswith(field.name) else ""

    def check(value):
        parse = field.metadata.get("parse")
        try:
            check_field(field, parse(value) if parse and value is not None else value, subject)
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
        return True
    return check


def define_flags(record_class, flag_values=flags.FLAGS, flag_prefix="", module_name=None):
    """Defines one flag per declared field of `record_class`, in declaration order.

    `module_name` owns the flags (default: the calling module), for `--help`.
    """
    module_name = module_name or sys._getframe(1).f_globals["__name__"]
    for name, field, _, group in flagged_fields(record_class, flag_prefix):
        if group:
            grouped_help.group(group, flag_values, module=module_name)
        help_text = field.metadata.get("help")
        if not help_text:
            raise TypeError(f"{record_class.__name__}.{field.name} has no flag help: declare it "
                            "with kprefix.options.option(default, help, ...).")
        default = field.default
        if field.metadata.get("parse") is not None and not isinstance(default, (str, type(None))):
            raise TypeError(f"{record_class.__name__}.{field.name}: a parsed flag needs a "
                            "text default.")
        common = dict(flag_values=flag_values, module_name=grouped_help.module_key(module_name))
        kind = _field_type(field)
        if field.metadata.get("choices") is not None:
            flags.DEFINE_enum(name, default, [str(c) for c in field.metadata["choices"]],
                              help_text, **common)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, **common)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, **common)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, **common)
        else:
            flags.DEFINE_string(name, default, help_text, **common)
        flags.register_validator(name, _validator(field, name), flag_values=flag_values)


def record_from_flags(record_class, flag_values=flags.FLAGS, flag_prefix="", **derived):
    """The `record_class` instance the parsed flags describe.

    `derived` sets fields that no flag holds directly, by dotted path
    (`**{"prefix.init_token_ids": ids}`).
    """
    values = {path: flag_values[name].value
              for name, _, path, _ in flagged_fields(record_class, flag_prefix)}
    return build(record_class, values, **derived)
