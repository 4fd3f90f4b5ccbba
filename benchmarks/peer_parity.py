"""Checks that a kprefix GPT-2 and its Hugging Face PEFT twin compute the same function.

The benchmark against PEFT (`peer_peft.py`) compares speeds only after this
check: the same backbone weights (the keras-hub GPT-2 written into a
`transformers.GPT2LMHeadModel`), prefixes of the same values (Deep-share's
trunk and output projections written into PEFT's `prefix_projection=True`
encoder, embedding -> Linear -> Tanh -> Linear; No-share's keys and values
into PEFT's plain prefix table), and logits equal within 1e-4.

PEFT hands the prefix to GPT-2 as past keys and values, so Hugging Face
numbers the real tokens from position P; the kprefix model is built with
`position_offset="P"` to match.

Needs the optional extra: `pip install -e ".[peer]"`.

Example (a tiny config, a few seconds):

>>> from peer_parity import max_logit_difference
>>> max_logit_difference("deep_share", backbone="gpt2_tiny", mlp_hidden=8) < 1e-4
True
"""

import numpy as np

INSTALL_HINT = 'pip install -e ".[peer]"  (torch CPU, transformers, peft)'


def peer_missing():
    """None when torch, transformers and peft import; else what is missing."""
    missing = []
    for module in ("torch", "transformers", "peft"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return ", ".join(missing) or None


def kprefix_lm(variant, backbone="gpt2_small_random", length=10, mlp_hidden=512,
               position_offset="0", seed=0, folded=False):
    """A `PrefixGPT2CausalLM` in the benchmark's configuration.

    Deep-share shares P' and the first MLP layer across layers, as Li &
    Liang's language setting and PEFT's `prefix_projection=True` do.
    """
    from kprefix.backbones import build_backbone
    from kprefix.prefix import PrefixConfig
    from kprefix.tasks import PrefixGPT2CausalLM

    config = PrefixConfig(variant, "deep", length, mlp_hidden=mlp_hidden,
                          share_across_layers=variant == "deep_share",
                          position_offset=position_offset)
    lm = PrefixGPT2CausalLM(build_backbone(backbone, seed=seed, frozen=True), prefix_config=config,
                            seed=seed)
    return lm.fold() if folded else lm


def gpt2_sizes(backbone):
    """The sizes of a keras-hub `GPT2Backbone`, as `hf_gpt2_config` takes them."""
    return dict(vocabulary_size=backbone.vocabulary_size, num_layers=backbone.num_layers,
                num_heads=backbone.num_heads, hidden_dim=backbone.hidden_dim,
                intermediate_dim=backbone.intermediate_dim,
                max_sequence_length=backbone.max_sequence_length, dropout=backbone.dropout)


def hf_gpt2_config(vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                   max_sequence_length, dropout):
    """The `transformers.GPT2Config` of a keras-hub `GPT2Backbone` of these sizes."""
    import transformers

    end = min(50256, vocabulary_size - 1)
    return transformers.GPT2Config(
        vocab_size=vocabulary_size, n_positions=max_sequence_length, n_embd=hidden_dim,
        n_layer=num_layers, n_head=num_heads, n_inner=intermediate_dim,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=dropout,
        embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=end, eos_token_id=end)


def hf_gpt2_state(backbone):
    """The weights of a keras-hub `GPT2Backbone` as a Hugging Face GPT-2 state dict
    (NumPy arrays; GPT-2's Conv1D stores kernels as (in, out), as Keras does)."""
    hidden = backbone.hidden_dim

    def array(variable):
        return np.asarray(variable.numpy(), "float32")

    state = {"transformer.wte.weight": array(backbone.token_embedding.embeddings),
             "transformer.wpe.weight": array(backbone.position_embedding.position_embeddings)}
    for i, layer in enumerate(backbone.transformer_layers):
        p = f"transformer.h.{i}."
        attention = layer._self_attention_layer
        dense = [attention.query_dense, attention.key_dense, attention.value_dense]
        state[p + "attn.c_attn.weight"] = np.concatenate(
            [array(d.kernel).reshape(hidden, hidden) for d in dense], axis=1)
        state[p + "attn.c_attn.bias"] = np.concatenate([array(d.bias).reshape(-1) for d in dense])
        state[p + "attn.c_proj.weight"] = array(attention.output_dense.kernel).reshape(hidden, hidden)
        state[p + "attn.c_proj.bias"] = array(attention.output_dense.bias)
        for name, norm in (("ln_1", layer._self_attention_layer_norm),
                           ("ln_2", layer._feedforward_layer_norm)):
            state[p + name + ".weight"], state[p + name + ".bias"] = array(norm.gamma), array(norm.beta)
        for name, d in (("c_fc", layer._feedforward_intermediate_dense),
                        ("c_proj", layer._feedforward_output_dense)):
            state[p + f"mlp.{name}.weight"], state[p + f"mlp.{name}.bias"] = (array(d.kernel),
                                                                             array(d.bias))
    state["transformer.ln_f.weight"] = array(backbone.layer_norm.gamma)
    state["transformer.ln_f.bias"] = array(backbone.layer_norm.beta)
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied, as in GPT-2
    return state


def peft_config(variant, length=10, mlp_hidden=512):
    """PEFT's counterpart of a kprefix variant: Deep-share -> `prefix_projection=True`
    (hidden width `mlp_hidden`), No-share -> plain prefixes."""
    import peft

    if variant not in ("deep_share", "no_share"):
        raise ValueError(f"PEFT has counterparts of deep_share and no_share only; got {variant!r}.")
    return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=length,
                                   prefix_projection=variant == "deep_share",
                                   encoder_hidden_size=mlp_hidden)


def peft_lm(backbone_config, variant, length=10, mlp_hidden=512, state=None):
    """A PEFT prefix-tuned `GPT2LMHeadModel` (weights from `state` if given)."""
    import peft
    import torch
    import transformers

    model = transformers.GPT2LMHeadModel(backbone_config)
    if state is not None:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return peft.get_peft_model(model, peft_config(variant, length, mlp_hidden))


def copy_prefix_to_peft(lm, peft_model):
    """Writes the prefix generators of kprefix `lm` into `peft_model`'s prompt encoder.

    PEFT's encoder output, per virtual token, is `num_layers * 2` blocks of
    `hidden` values: layer i's key, then its value, each `(heads, head_dim)`.
    """
    import torch

    encoder = peft_model.prompt_encoder["default"]
    generators = lm.prefix.generators

    def put(parameter, value):
        with torch.no_grad():
            parameter.copy_(torch.from_numpy(np.ascontiguousarray(value, "float32")))

    if lm.prefix_config.variant == "no_share":
        blocks = []
        for generator in generators:
            for weight in (generator.prefix_key, generator.prefix_value):
                value = weight.numpy()
                blocks.append(value.reshape(value.shape[0], -1))
        put(encoder.embedding.weight, np.concatenate(blocks, axis=1))
        return
    trunk = generators[0].trunk
    if any(g.trunk is not trunk for g in generators):
        raise ValueError("PEFT's prefix_projection shares P' and the first layer across layers; "
                         "build the Deep-share prefix with share_across_layers=True.")
    put(encoder.embedding.weight, trunk.embedding.numpy())
    put(encoder.transform[0].weight, trunk.hidden.kernel.numpy().T)
    put(encoder.transform[0].bias, trunk.hidden.bias.numpy())
    # Each kprefix output projection maps to [key | value] of its layer:
    # the rows of PEFT's wide output layer for that layer, in order.
    put(encoder.transform[2].weight,
        np.concatenate([g.output_projection.kernel.numpy().T for g in generators], axis=0))
    put(encoder.transform[2].bias,
        np.concatenate([g.output_projection.bias.numpy() for g in generators]))


def twin_models(variant, backbone="gpt2_small_random", length=10, mlp_hidden=512, seed=0,
                position_offset="P"):
    """`(kprefix lm, peft model)` with the same weights and prefixes; positions are
    aligned with the default `position_offset="P"` (`"0"` misaligns them)."""
    lm = kprefix_lm(variant, backbone, length, mlp_hidden, position_offset=position_offset,
                    seed=seed)
    twin = peft_lm(hf_gpt2_config(**gpt2_sizes(lm.backbone)), variant, length, mlp_hidden,
                   state=hf_gpt2_state(lm.backbone))
    copy_prefix_to_peft(lm, twin)
    return lm, twin.eval()


def max_logit_difference(variant, backbone="gpt2_small_random", length=10, mlp_hidden=512,
                         batch=2, tokens=12, seed=0, position_offset="P"):
    """Largest |kprefix logit - PEFT logit| over the real tokens of a random batch
    (the second input right-padded), both models in inference mode."""
    import torch

    lm, twin = twin_models(variant, backbone, length, mlp_hidden, seed, position_offset)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, lm.backbone.vocabulary_size, (batch, tokens)).astype("int32")
    mask = np.ones((batch, tokens), bool)
    mask[1:, tokens // 2:] = False
    ours = np.asarray(lm({"token_ids": ids, "padding_mask": mask}, training=False))
    with torch.no_grad():
        theirs = twin(input_ids=torch.from_numpy(ids.astype("int64")),
                      attention_mask=torch.from_numpy(mask.astype("int64"))).logits.numpy()
    return float(np.max(np.abs(ours - theirs)[mask]))
