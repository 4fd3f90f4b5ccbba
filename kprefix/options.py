"""Declared options: dataclass fields that carry their flag, help, choices and bounds.

Every configuration record of kprefix (`RunConfig`, `PrefixConfig`,
`MethodConfig`, `DecodingSettings`) declares its fields with `option(...)`.
The metadata is the one place that says a field's help text, allowed
values and command-line flag; the records validate themselves from it
(`check_fields`), and `kprefix.cli.option_flags` defines their flags from
it, so a new field gets its flag, help and validation from its declaration
alone. Nothing here imports TensorFlow or absl.

Example:

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Shape:
...     width: int = option(3, "Columns.", minimum=1)
...     def __post_init__(self):
...         check_fields(self, subject="shape")
>>> Shape(width=0)
Traceback (most recent call last):
...
ValueError: shape width must be at least 1; got 0.
"""

import dataclasses


def option(default, help, *, flag=None, choices=None, minimum=None, below=None,
           check=None, parse=None, group=None, default_factory=None):
    """A dataclass field with everything its command-line flag needs.

    Args:
        default: the value when nothing sets it.
        help: the flag's help text.
        flag: the flag's name when it is not the field's (with the record's
            flag prefix, e.g. `prefix_<field>`); `False`: no flag (a value
            derived from other options).
        choices: the allowed values; the flag is an enum.
        minimum, below: inclusive lower and exclusive upper bounds.
        check: a callable that raises `ValueError` for a bad value.
        parse: text -> value, for flags whose text is not the value itself.
        group: the `--help` group that starts at this field.
        default_factory: for a nested record, its class (its fields become
            flags too; see `nested`).
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "minimum": minimum,
                "below": below, "check": check, "parse": parse, "group": group}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def nested(record_class, flag_prefix="", group=None):
    """A field holding a whole record whose own fields become flags (named
    `flag_prefix + field`), e.g. `RunConfig.prefix` and the `--prefix_*` flags."""
    return dataclasses.field(default_factory=record_class, metadata={
        "nested": record_class, "flag_prefix": flag_prefix, "group": group})


def check_choice(subject, name, value, choices):
    """Raises `ValueError` naming `subject name` when `value` is not one of `choices`."""
    if value not in choices:
        label = f"{subject} {name}".strip()
        raise ValueError(f"Unknown {label} {value!r}; choose one of "
                         f"{', '.join(str(c) for c in choices)}.")


def check_field(field: dataclasses.Field, value, subject="") -> None:
    """Raises `ValueError` naming the field when `value` breaks its metadata's rules."""
    rules = field.metadata
    label = f"{subject} {field.name.replace('_', ' ')}".strip()
    if value is None and field.default is None:
        return
    if rules.get("choices") is not None:
        check_choice(subject, field.name, value, rules["choices"])
    if rules.get("minimum") is not None and value < rules["minimum"]:
        raise ValueError(f"{label} must be at least {rules['minimum']}; got {value}.")
    if rules.get("below") is not None and not value < rules["below"]:
        raise ValueError(f"{label} must be below {rules['below']}; got {value}.")
    if rules.get("check") is not None:
        rules["check"](value)


def check_fields(record, subject="") -> None:
    """`check_field` for every declared field of the dataclass instance `record`."""
    for field in dataclasses.fields(record):
        if "help" in field.metadata:
            check_field(field, getattr(record, field.name), subject)


def flag_name(field: dataclasses.Field, flag_prefix="") -> str:
    """`flag_prefix + field name` unless the field's metadata names its flag."""
    return field.metadata.get("flag") or f"{flag_prefix}{field.name}"


def flagged_fields(record_class, flag_prefix=""):
    """`(flag name, field, path, group)` of every field of `record_class` that
    has a flag, nested records' fields included, in declaration order.

    `path` is the tuple of attribute names that reaches the value from a
    record; `group` is the `--help` group that starts at that flag, or None.
    """
    for field in dataclasses.fields(record_class):
        nested_class = field.metadata.get("nested")
        if nested_class is not None:
            inner = flagged_fields(nested_class, field.metadata.get("flag_prefix", ""))
            for index, (name, leaf, path, group) in enumerate(inner):
                yield name, leaf, (field.name, *path), group or (
                    field.metadata.get("group") if index == 0 else None)
        elif field.metadata.get("flag") is not False:
            yield flag_name(field, flag_prefix), field, (field.name,), field.metadata.get("group")


def build(record_class, values, **derived):
    """A `record_class` from `{path: value}` (see `flagged_fields`); `derived`
    maps dotted paths (`"prefix.length"`) to values no flag holds directly."""
    values = {**values, **{tuple(k.split(".")): v for k, v in derived.items()}}
    kwargs = {}
    for field in dataclasses.fields(record_class):
        nested_class = field.metadata.get("nested")
        if nested_class is not None:
            inner = {path[1:]: v for path, v in values.items() if path[0] == field.name}
            kwargs[field.name] = build(nested_class, inner)
        elif (field.name,) in values:
            value, parse = values[(field.name,)], field.metadata.get("parse")
            kwargs[field.name] = parse(value) if parse and isinstance(value, str) else value
    return record_class(**kwargs)


def flag_dict(record) -> dict:
    """`{flag name: value}` of a record, as its command-line flags would hold it."""
    result = {}
    for name, field, path, _ in flagged_fields(type(record)):
        value = record
        for attribute in path:
            value = getattr(value, attribute)
        if field.metadata.get("parse") and isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        result[name] = value
    return result
