"""The --prefix_* flags come from PrefixConfig's fields: names, defaults, help, checks."""

import dataclasses
from typing import Optional

import pytest
from absl import flags

from kprefix.cli.option_flags import define_flags, record_from_flags
from kprefix.options import flag_name as _flag_name, flagged_fields, option
from kprefix.prefix.config import PrefixConfig


def _defined(config_class=PrefixConfig):
    values = flags.FlagValues()
    define_flags(config_class, values, flag_prefix="prefix_", module_name=__name__)
    return values


def _fields(config_class):
    return [field for _, field, _, _ in flagged_fields(config_class, "prefix_")]


def flag_name(field):
    return _flag_name(field, "prefix_")


def _from_flags(values, config_class=PrefixConfig):
    return record_from_flags(config_class, values, flag_prefix="prefix_")


def test_every_field_has_a_flag_with_its_default_and_help():
    values = _defined()
    fields = _fields(PrefixConfig)
    derived = [f.name for f in dataclasses.fields(PrefixConfig) if f not in fields]
    assert derived == ["init_token_ids"]  # from --prefix_init_text, by the launcher
    assert [f.name for f in values.flags_by_module_dict()[__name__]] == [
        flag_name(f) for f in fields]
    for field in fields:
        flag = values[flag_name(field)]
        assert flag.help.endswith(field.metadata["help"]), field.name
        values.unparse_flags()
        values(["prog"])
        assert _from_flags(values) == PrefixConfig()
    # The flag names the launcher has always had.
    assert {flag_name(f) for f in fields} >= {
        "prefix_variant", "prefix_placement", "prefix_length", "prefix_mlp_hidden",
        "prefix_mlp_activation", "prefix_share_across_layers", "prefix_embedding_dim",
        "prefix_key_activation", "prefix_value_activation", "prefix_init",
        "prefix_init_scale", "prefix_dropout"}


def test_the_launcher_defines_the_generated_flags():
    from kprefix import launch

    for field in _fields(PrefixConfig):
        flag = flags.FLAGS[flag_name(field)]
        assert flag.default == field.default, field.name
        assert flag in flags.FLAGS.get_flags_for_module(launch), field.name


def test_flags_check_values_with_the_config_rules():
    values = _defined()
    with pytest.raises(flags.IllegalFlagValueError, match="prefix_variant"):
        values(["prog", "--prefix_variant=bogus"])
    for bad, message in [("--prefix_length=0", "prefix length must be at least 1"),
                         ("--prefix_dropout=1.0", "prefix dropout must be below 1"),
                         ("--prefix_placement=middle", "prefix placement 'middle'")]:
        values.unparse_flags()
        with pytest.raises(flags.IllegalFlagValueError, match=message):
            values(["prog", bad])
    values.unparse_flags()
    values(["prog", "--prefix_placement=3,1", "--prefix_share_across_layers",
            "--prefix_embedding_dim=16", "--prefix_init=normal"])
    config = _from_flags(values)
    assert (config.placement, config.share_across_layers, config.embedding_dim,
            config.initializer) == ((3, 1), True, 16, "normal")


@dataclasses.dataclass(frozen=True)
class _GrownConfig(PrefixConfig):
    """PrefixConfig with fields added later, declared only by their metadata."""

    token_shift: int = option(0, "Shift of token ids.", minimum=0)
    seed_text: Optional[str] = option(None, "Text whose embeddings start the prefix.")
    gate_init: str = option("glorot", "MLP initializer.", choices=("glorot", "zeros"))


def test_a_new_field_gets_its_flag_help_and_checks_from_its_metadata():
    values = _defined(_GrownConfig)
    assert values["prefix_token_shift"].default == 0
    assert values["prefix_seed_text"].help == "Text whose embeddings start the prefix."
    assert values["prefix_gate_init"].parser.enum_values == ["glorot", "zeros"]
    with pytest.raises(flags.IllegalFlagValueError, match="at least 0"):
        values(["prog", "--prefix_token_shift=-1"])
    values.unparse_flags()
    values(["prog", "--prefix_token_shift=2", "--prefix_seed_text=hello",
            "--prefix_gate_init=zeros"])
    config = _from_flags(values, _GrownConfig)
    assert (config.token_shift, config.seed_text, config.gate_init) == (2, "hello", "zeros")
    with pytest.raises(ValueError, match="token shift"):
        _GrownConfig(token_shift=-1)


def test_a_field_without_flag_help_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Undocumented(PrefixConfig):
        extra: int = 3

    with pytest.raises(TypeError, match="Undocumented.extra has no flag help"):
        _defined(Undocumented)
