"""Per-platform training defaults: XLA on accelerators only, bf16 units of the CPU."""

import tensorflow as tf

from kprefix.runs import train


def test_unset_jit_compile_is_off_on_cpu_and_explicit_values_are_kept():
    strategy = tf.distribute.get_strategy()
    assert not tf.config.list_logical_devices("GPU")  # these tests run on CPUs
    assert train.jit_compile_for(strategy, None) is False
    assert train.jit_compile_for(strategy, True) is True
    assert train.jit_compile_for(strategy, False) is False


def test_bf16_units_are_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 avx512_bf16 amx_tile\n"
                       "processor\t: 1\nflags\t\t: fpu sse2 avx512f amx_bf16 avx512_bf16\n")
    assert train.cpu_bf16_units(cpuinfo) == ("avx512_bf16", "amx_bf16")
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    assert train.cpu_bf16_units(cpuinfo) == ()
    assert train.cpu_bf16_units(tmp_path / "absent") == ()


def test_mixed_bfloat16_on_cpu_reports_the_bf16_units_in_one_line():
    lines = []
    try:
        train.set_precision("mixed_bfloat16", log=lines.append)
    finally:
        train.set_precision("float32")
    assert len(lines) == 1
    units = train.cpu_bf16_units()
    if units:
        assert all(unit in lines[0] for unit in units)
    else:
        assert "will not speed training up" in lines[0]
    silent = []
    train.set_precision("float32", log=silent.append)
    assert silent == []


def test_mixed_bfloat16_gpt2_computes_its_output_layer_in_bf16():
    import keras
    import numpy as np

    from kprefix.backbones import build_backbone
    from kprefix.prefix import PrefixConfig
    from kprefix.tasks import PrefixGPT2CausalLM

    config = PrefixConfig("deep_share", length=2, share_across_layers=True)
    inputs = {"token_ids": np.array([[5, 6, 7, 0]], "int32"),
              "padding_mask": np.array([[1, 1, 1, 0]], bool)}
    full = PrefixGPT2CausalLM(build_backbone("gpt2_tiny", dropout=False), prefix_config=config,
                              seed=0)
    assert full.backbone.token_embedding.reverse_dtype is None
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        mixed = PrefixGPT2CausalLM(build_backbone("gpt2_tiny", dropout=False),
                                   prefix_config=config, seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.backbone.token_embedding.reverse_dtype == "bfloat16"
    for target, source in zip(mixed.weights, full.weights):
        target.assign(source)
    logits = mixed(inputs)
    assert logits.dtype == "bfloat16"
    expected = np.asarray(full(inputs))
    # bf16 keeps 8 significant bits: the logits agree to about 1% of their scale.
    scale = np.abs(expected).max()
    assert np.abs(np.asarray(logits, "float32") - expected).max() < 0.02 * scale


def test_tied_output_layer_multiplies_by_the_table_without_a_transposed_copy():
    import numpy as np

    from kprefix.backbones import build_backbone
    from kprefix.tasks import PrefixBartSeq2SeqLM, PrefixGPT2CausalLM

    for task, backbone in ((PrefixGPT2CausalLM, "gpt2_tiny"), (PrefixBartSeq2SeqLM, "bart_tiny")):
        embedding = task(build_backbone(backbone, seed=0)).backbone.token_embedding
        hidden = np.random.default_rng(0).normal(size=(2, 3, embedding.output_dim))
        hidden = hidden.astype("float32")
        table = embedding.embeddings.numpy()
        logits = embedding(hidden, reverse=True)
        assert logits.shape == (2, 3, embedding.input_dim)
        np.testing.assert_allclose(logits, hidden @ table.T, rtol=1e-5, atol=1e-5)
        graph = tf.function(lambda h: embedding(h, reverse=True)).get_concrete_function(
            tf.TensorSpec([None, None, embedding.output_dim])).graph
        op_types = {op.type for op in graph.get_operations()}
        assert "Transpose" not in op_types and "MatMul" in op_types, op_types
