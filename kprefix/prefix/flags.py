"""The `--prefix_*` command-line flags, generated from `PrefixConfig`'s fields.

Each field's `option(...)` metadata gives its flag's name, help text, allowed
values and parser, so a field added to `PrefixConfig` gets its flag here with
no other change.

Example:

>>> from absl import flags
>>> values = flags.FlagValues()
>>> define_prefix_flags(values)
>>> values(["prog", "--prefix_length=4", "--prefix_placement=0,2"])
['prog']
>>> config = prefix_config_from_flags(values)
>>> config.length, config.placement, config.variant
(4, (0, 2), 'deep_share')
"""

import dataclasses
import typing

from absl import flags

from kprefix.prefix.config import PrefixConfig, check_field

# Flags defined below belong to the module that calls `define_prefix_flags`
# (kprefix.launch): they are its key flags, listed with it in --helpfull and
# in its `get_flags_for_module`.
flags.disclaim_key_flags()


def flag_name(field: dataclasses.Field) -> str:
    """`--prefix_<field>` unless the field's metadata names its flag."""
    return field.metadata.get("flag") or f"prefix_{field.name}"


def flag_fields(config_class=PrefixConfig):
    """The fields that have a flag (`flag=False` marks a value derived from other flags)."""
    return [f for f in dataclasses.fields(config_class) if f.metadata.get("flag") is not False]


def _parse(field, value):
    parse = field.metadata.get("parse")
    return parse(value) if parse is not None and value is not None else value


def _field_type(config_class, field):
    """The field's type without `Optional`: int, float, bool or str."""
    annotation = typing.get_type_hints(config_class)[field.name]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, bool) else str


def _validator(field):
    def check(value):
        try:
            check_field(field, _parse(field, value))
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
        return True
    return check


def define_prefix_flags(flag_values=flags.FLAGS, config_class=PrefixConfig) -> None:
    """Defines one flag per field of `config_class`, in field order."""
    for field in flag_fields(config_class):
        help_text = field.metadata.get("help")
        if not help_text:
            raise TypeError(
                f"{config_class.__name__}.{field.name} has no flag help: declare it with "
                "kprefix.prefix.config.option(default, help, ...)."
            )
        name = flag_name(field)
        default = field.default
        if field.metadata.get("parse") is not None and not isinstance(default, (str, type(None))):
            raise TypeError(f"{config_class.__name__}.{field.name}: a parsed flag needs a "
                            "text default.")
        kind = _field_type(config_class, field)
        if field.metadata.get("choices") is not None:
            flags.DEFINE_enum(name, default, list(field.metadata["choices"]), help_text,
                              flag_values=flag_values)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
        flags.register_validator(name, _validator(field), flag_values=flag_values)


def prefix_config_from_flags(flag_values=flags.FLAGS, config_class=PrefixConfig, **derived):
    """The `config_class` instance the parsed flags describe.

    `derived` sets fields that no flag holds directly (or overrides one).
    """
    values = {field.name: _parse(field, flag_values[flag_name(field)].value)
              for field in flag_fields(config_class)}
    return config_class(**{**values, **derived})
