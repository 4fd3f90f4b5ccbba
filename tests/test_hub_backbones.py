"""Backbones from Hugging Face checkpoints and hub handles, offline.

Tiny checkpoints are written here in the Hugging Face `transformers` layout
(tensor names and shapes of `GPT2Model`, `GPT2LMHeadModel`, `ViTModel`,
`BartModel`; `config.json`; `vocab.json` + `merges.txt`). `build_backbone`
reads them through keras-hub's converters; the reference is the same keras-hub
backbone class built from the matching arguments, its weights set by hand
from the same arrays (torch `Linear` weights are `(out, in)`, GPT-2's `Conv1D`
weights are `(in, out)`).
"""

import json
import os

import keras_hub
import numpy as np
import pytest
from safetensors.numpy import save_file

from kprefix.backbones import build_backbone
from kprefix.tasks.tokenizers import _MERGES, _byte_symbols, load_tokenizer

HIDDEN, HEADS, LAYERS, VOCAB, POSITIONS = 8, 2, 2, 272, 16
HEAD_DIM = HIDDEN // HEADS


def _random(rng, *shape):
    return (0.3 * rng.standard_normal(shape)).astype("float32")


def _write(folder, tensors, config, **files):
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    for name, text in files.items():
        with open(os.path.join(folder, name.replace("_", ".")), "w", encoding="utf-8") as f:
            f.write(text)
    return str(folder)


def _bpe_files(vocabulary):
    return {"vocab_json": json.dumps(vocabulary), "merges_txt": "#version: 0.2\n" + "\n".join(_MERGES) + "\n"}


# --- GPT-2 -----------------------------------------------------------------


def gpt2_tensors(rng):
    t = {"wte.weight": _random(rng, VOCAB, HIDDEN), "wpe.weight": _random(rng, POSITIONS, HIDDEN),
         "ln_f.weight": 1 + _random(rng, HIDDEN), "ln_f.bias": _random(rng, HIDDEN)}
    for i in range(LAYERS):
        p = f"h.{i}."
        t.update({
            p + "ln_1.weight": 1 + _random(rng, HIDDEN), p + "ln_1.bias": _random(rng, HIDDEN),
            p + "ln_2.weight": 1 + _random(rng, HIDDEN), p + "ln_2.bias": _random(rng, HIDDEN),
            p + "attn.c_attn.weight": _random(rng, HIDDEN, 3 * HIDDEN),
            p + "attn.c_attn.bias": _random(rng, 3 * HIDDEN),
            p + "attn.c_proj.weight": _random(rng, HIDDEN, HIDDEN),
            p + "attn.c_proj.bias": _random(rng, HIDDEN),
            p + "mlp.c_fc.weight": _random(rng, HIDDEN, 4 * HIDDEN),
            p + "mlp.c_fc.bias": _random(rng, 4 * HIDDEN),
            p + "mlp.c_proj.weight": _random(rng, 4 * HIDDEN, HIDDEN),
            p + "mlp.c_proj.bias": _random(rng, HIDDEN),
        })
    return t


GPT2_CONFIG = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=VOCAB,
                   n_layer=LAYERS, n_head=HEADS, n_embd=HIDDEN, n_positions=POSITIONS,
                   resid_pdrop=0.0)


def gpt2_by_hand(t):
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=4 * HIDDEN, max_sequence_length=POSITIONS, dropout=0.0)
    backbone.token_embedding.embeddings.assign(t["wte.weight"])
    backbone.position_embedding.position_embeddings.assign(t["wpe.weight"])
    for i, layer in enumerate(backbone.transformer_layers):
        p = f"h.{i}."
        attention = layer._self_attention_layer
        kernel, bias = t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"]
        for n, dense in enumerate([attention.query_dense, attention.key_dense, attention.value_dense]):
            part = slice(n * HIDDEN, (n + 1) * HIDDEN)
            dense.kernel.assign(kernel[:, part].reshape(HIDDEN, HEADS, HEAD_DIM))
            dense.bias.assign(bias[part].reshape(HEADS, HEAD_DIM))
        attention.output_dense.kernel.assign(t[p + "attn.c_proj.weight"].reshape(HEADS, HEAD_DIM, HIDDEN))
        attention.output_dense.bias.assign(t[p + "attn.c_proj.bias"])
        _set_norm(layer._self_attention_layer_norm, t, p + "ln_1")
        _set_norm(layer._feedforward_layer_norm, t, p + "ln_2")
        layer._feedforward_intermediate_dense.kernel.assign(t[p + "mlp.c_fc.weight"])
        layer._feedforward_intermediate_dense.bias.assign(t[p + "mlp.c_fc.bias"])
        layer._feedforward_output_dense.kernel.assign(t[p + "mlp.c_proj.weight"])
        layer._feedforward_output_dense.bias.assign(t[p + "mlp.c_proj.bias"])
    _set_norm(backbone.layer_norm, t, "ln_f")
    return backbone


def _set_norm(norm, t, name):
    norm.gamma.assign(t[name + ".weight"])
    norm.beta.assign(t[name + ".bias"])


def _linear(dense, t, name, shape=None):
    kernel = t[name + ".weight"].T
    dense.kernel.assign(kernel if shape is None else kernel.reshape(shape))
    bias = t[name + ".bias"]
    dense.bias.assign(bias if shape is None else bias.reshape(dense.bias.shape))


def _set_attention(attention, t, prefix, names=("q_proj", "k_proj", "v_proj", "out_proj")):
    for dense, name in zip([attention.query_dense, attention.key_dense, attention.value_dense],
                           names[:3]):
        _linear(dense, t, f"{prefix}.{name}", (HIDDEN, HEADS, HEAD_DIM))
    _linear(attention.output_dense, t, f"{prefix}.{names[3]}", (HEADS, HEAD_DIM, HIDDEN))


def _token_inputs(rng, batch=2, length=7):
    ids = rng.integers(0, VOCAB, (batch, length)).astype("int32")
    mask = np.ones((batch, length), bool)
    mask[1, 5:] = False
    return ids, mask


@pytest.mark.parametrize("saved_as", ["GPT2Model", "GPT2LMHeadModel"])
def test_gpt2_checkpoint_gives_the_logits_of_the_same_weights_set_by_hand(tmp_path, saved_as):
    rng = np.random.default_rng(0)
    tensors = gpt2_tensors(rng)
    if saved_as == "GPT2LMHeadModel":  # The task's state dict nests the base model.
        tensors = {"transformer." + k: v for k, v in tensors.items()}
        tensors["lm_head.weight"] = tensors["transformer.wte.weight"]
    vocabulary = {s: i for i, s in enumerate(_byte_symbols())}
    vocabulary["<|endoftext|>"] = len(vocabulary)
    folder = _write(tmp_path / "gpt2", tensors, dict(GPT2_CONFIG, architectures=[saved_as]),
                    **_bpe_files(vocabulary))

    loaded = build_backbone(folder)
    reference = gpt2_by_hand(gpt2_tensors(np.random.default_rng(0)))
    ids, mask = _token_inputs(rng)
    inputs = {"token_ids": ids, "padding_mask": mask}
    logits = keras_hub.models.GPT2CausalLM(loaded)(inputs)
    expected = keras_hub.models.GPT2CausalLM(reference)(inputs)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-5, rtol=1e-5)

    tokenizer = load_tokenizer(folder)
    assert isinstance(tokenizer, keras_hub.models.GPT2Tokenizer)
    # " the": "Ġ t" and "h e" merge, so two tokens.
    assert [int(i) for i in tokenizer(" the")] == [vocabulary["Ġt"], vocabulary["he"]]
    assert tokenizer.end_token_id == vocabulary["<|endoftext|>"]


# --- BART ------------------------------------------------------------------


def bart_tensors(rng):
    t = {"shared.weight": _random(rng, VOCAB, HIDDEN)}
    t["encoder.embed_tokens.weight"] = t["decoder.embed_tokens.weight"] = t["shared.weight"]
    for side in ("encoder", "decoder"):
        # BART's learned positions carry an offset of 2 rows.
        t[f"{side}.embed_positions.weight"] = _random(rng, POSITIONS + 2, HIDDEN)
        t[f"{side}.layernorm_embedding.weight"] = 1 + _random(rng, HIDDEN)
        t[f"{side}.layernorm_embedding.bias"] = _random(rng, HIDDEN)
        attentions = ["self_attn"] + (["encoder_attn"] if side == "decoder" else [])
        for i in range(LAYERS):
            p = f"{side}.layers.{i}."
            for attention in attentions:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    t[p + f"{attention}.{proj}.weight"] = _random(rng, HIDDEN, HIDDEN)
                    t[p + f"{attention}.{proj}.bias"] = _random(rng, HIDDEN)
                t[p + f"{attention}_layer_norm.weight"] = 1 + _random(rng, HIDDEN)
                t[p + f"{attention}_layer_norm.bias"] = _random(rng, HIDDEN)
            t[p + "fc1.weight"], t[p + "fc1.bias"] = _random(rng, 4 * HIDDEN, HIDDEN), _random(rng, 4 * HIDDEN)
            t[p + "fc2.weight"], t[p + "fc2.bias"] = _random(rng, HIDDEN, 4 * HIDDEN), _random(rng, HIDDEN)
            t[p + "final_layer_norm.weight"] = 1 + _random(rng, HIDDEN)
            t[p + "final_layer_norm.bias"] = _random(rng, HIDDEN)
    return t


BART_CONFIG = dict(model_type="bart", architectures=["BartModel"], vocab_size=VOCAB,
                   num_hidden_layers=LAYERS, encoder_layers=LAYERS, decoder_layers=LAYERS,
                   encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, d_model=HIDDEN,
                   encoder_ffn_dim=4 * HIDDEN, decoder_ffn_dim=4 * HIDDEN, dropout=0.0,
                   max_position_embeddings=POSITIONS)


def bart_by_hand(t):
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=4 * HIDDEN, max_sequence_length=POSITIONS, dropout=0.0)
    backbone.token_embedding.embeddings.assign(t["shared.weight"])
    backbone.encoder_position_embedding.position_embeddings.assign(t["encoder.embed_positions.weight"][2:])
    backbone.decoder_position_embedding.position_embeddings.assign(t["decoder.embed_positions.weight"][2:])
    _set_norm(backbone.encoder_embeddings_layer_norm, t, "encoder.layernorm_embedding")
    _set_norm(backbone.decoder_embeddings_layer_norm, t, "decoder.layernorm_embedding")
    for side, layers in (("encoder", backbone.encoder_transformer_layers),
                         ("decoder", backbone.decoder_transformer_layers)):
        for i, layer in enumerate(layers):
            p = f"{side}.layers.{i}."
            _set_attention(layer._self_attention_layer, t, p + "self_attn")
            _set_norm(layer._self_attention_layer_norm, t, p + "self_attn_layer_norm")
            if side == "decoder":
                _set_attention(layer._cross_attention_layer, t, p + "encoder_attn")
                _set_norm(layer._cross_attention_layer_norm, t, p + "encoder_attn_layer_norm")
            _linear(layer._feedforward_intermediate_dense, t, p + "fc1")
            _linear(layer._feedforward_output_dense, t, p + "fc2")
            _set_norm(layer._feedforward_layer_norm, t, p + "final_layer_norm")
    return backbone


def bart_vocabulary():
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in _byte_symbols():
        vocabulary[symbol] = len(vocabulary)
    vocabulary["<mask>"] = len(vocabulary)
    assert len(vocabulary) <= VOCAB
    return vocabulary


# transformers 5 no longer writes num_hidden_layers; hub checkpoints have it.
@pytest.mark.parametrize("written_by", ["hub", "transformers_5"])
def test_bart_checkpoint_gives_the_logits_of_the_same_weights_set_by_hand(tmp_path, written_by):
    rng = np.random.default_rng(1)
    vocabulary = bart_vocabulary()
    config = dict(BART_CONFIG)
    if written_by == "transformers_5":
        del config["num_hidden_layers"]
    folder = _write(tmp_path / "bart", bart_tensors(rng), config, **_bpe_files(vocabulary))

    loaded = build_backbone(folder)
    reference = bart_by_hand(bart_tensors(np.random.default_rng(1)))
    source, source_mask = _token_inputs(rng, length=9)
    target, target_mask = _token_inputs(rng, length=6)
    inputs = {"encoder_token_ids": source, "encoder_padding_mask": source_mask,
              "decoder_token_ids": target, "decoder_padding_mask": target_mask}
    logits = keras_hub.models.BartSeq2SeqLM(loaded)(inputs)
    expected = keras_hub.models.BartSeq2SeqLM(reference)(inputs)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-5, rtol=1e-5)

    tokenizer = load_tokenizer(folder)
    assert isinstance(tokenizer, keras_hub.models.BartTokenizer)
    assert [int(i) for i in tokenizer(" the")] == [vocabulary["Ġt"], vocabulary["he"]]
    assert (tokenizer.start_token_id, tokenizer.pad_token_id, tokenizer.end_token_id) == (0, 1, 2)


def test_bart_with_unequal_encoder_and_decoder_depths_is_refused(tmp_path):
    config = {key: value for key, value in BART_CONFIG.items() if key != "num_hidden_layers"}
    config["decoder_layers"] = LAYERS + 1
    folder = _write(tmp_path / "bart", bart_tensors(np.random.default_rng(1)), config,
                    **_bpe_files(bart_vocabulary()))
    with pytest.raises(ValueError, match="encoder and .* decoder layers; keras-hub's BartBack"):
        build_backbone(folder)


# --- ViT -------------------------------------------------------------------

IMAGE, PATCH, MLP = 8, 4, 16


def vit_tensors(rng):
    patches = (IMAGE // PATCH) ** 2
    t = {"embeddings.cls_token": _random(rng, 1, 1, HIDDEN),
         "embeddings.position_embeddings": _random(rng, 1, patches + 1, HIDDEN),
         "embeddings.patch_embeddings.projection.weight": _random(rng, HIDDEN, 3, PATCH, PATCH),
         "embeddings.patch_embeddings.projection.bias": _random(rng, HIDDEN),
         "layernorm.weight": 1 + _random(rng, HIDDEN), "layernorm.bias": _random(rng, HIDDEN),
         # ViTModel's pooler: saved with the model, unused by the backbone.
         "pooler.dense.weight": _random(rng, HIDDEN, HIDDEN), "pooler.dense.bias": _random(rng, HIDDEN)}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            t[p + f"attention.attention.{name}.weight"] = _random(rng, HIDDEN, HIDDEN)
            t[p + f"attention.attention.{name}.bias"] = _random(rng, HIDDEN)
        t[p + "attention.output.dense.weight"] = _random(rng, HIDDEN, HIDDEN)
        t[p + "attention.output.dense.bias"] = _random(rng, HIDDEN)
        t[p + "intermediate.dense.weight"] = _random(rng, MLP, HIDDEN)
        t[p + "intermediate.dense.bias"] = _random(rng, MLP)
        t[p + "output.dense.weight"] = _random(rng, HIDDEN, MLP)
        t[p + "output.dense.bias"] = _random(rng, HIDDEN)
        for name in ("layernorm_before", "layernorm_after"):
            t[p + name + ".weight"] = 1 + _random(rng, HIDDEN)
            t[p + name + ".bias"] = _random(rng, HIDDEN)
    return t


VIT_CONFIG = dict(model_type="vit", architectures=["ViTModel"], image_size=IMAGE, patch_size=PATCH,
                  num_hidden_layers=LAYERS, num_attention_heads=HEADS, hidden_size=HIDDEN,
                  intermediate_size=MLP, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, qkv_bias=True)


def vit_by_hand(t):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(IMAGE, IMAGE, 3), patch_size=PATCH, num_layers=LAYERS, num_heads=HEADS,
        hidden_dim=HIDDEN, mlp_dim=MLP)
    embedding = backbone.get_layer("vit_patching_and_embedding")
    # torch Conv2d (out, in, h, w) -> Keras (h, w, in, out).
    embedding.patch_embedding.kernel.assign(
        t["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0))
    embedding.patch_embedding.bias.assign(t["embeddings.patch_embeddings.projection.bias"])
    embedding.class_token.assign(t["embeddings.cls_token"].reshape(embedding.class_token.shape))
    embedding.position_embedding.embeddings.assign(t["embeddings.position_embeddings"][0])
    encoder = backbone.get_layer("vit_encoder")
    for i, block in enumerate(encoder.encoder_layers):
        p = f"encoder.layer.{i}."
        _set_attention(block.mha, t, p + "attention",
                       names=("attention.query", "attention.key", "attention.value", "output.dense"))
        _set_norm(block.layer_norm_1, t, p + "layernorm_before")
        _set_norm(block.layer_norm_2, t, p + "layernorm_after")
        _linear(block.mlp.dense_1, t, p + "intermediate.dense")
        _linear(block.mlp.dense_2, t, p + "output.dense")
    _set_norm(encoder.layer_norm, t, "layernorm")
    return backbone


@pytest.mark.parametrize("saved_as", ["ViTModel", "ViTForImageClassification"])
def test_vit_checkpoint_gives_the_features_of_the_same_weights_set_by_hand(tmp_path, saved_as):
    rng = np.random.default_rng(2)
    tensors = vit_tensors(rng)
    if saved_as == "ViTForImageClassification":
        tensors = {"vit." + k: v for k, v in tensors.items() if not k.startswith("pooler.")}
        tensors["classifier.weight"], tensors["classifier.bias"] = _random(rng, 3, HIDDEN), _random(rng, 3)
    folder = _write(tmp_path / "vit", tensors, dict(VIT_CONFIG, architectures=[saved_as]))

    loaded = build_backbone(folder)
    reference = vit_by_hand(vit_tensors(np.random.default_rng(2)))
    images = rng.standard_normal((2, IMAGE, IMAGE, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(reference(images)),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not a language model"):
        load_tokenizer(folder)


# --- Hub handles and clear errors ------------------------------------------


def test_hf_handle_reads_the_hugging_face_cache(tmp_path, monkeypatch):
    """`hf://owner/name` goes to `huggingface_hub`; offline it reads the cache."""
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--tiny-vit" / "snapshots" / ("0" * 40)
    _write(snapshot, vit_tensors(np.random.default_rng(3)), VIT_CONFIG)
    (tmp_path / "hub" / "models--someone--tiny-vit" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-vit" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    loaded = build_backbone("hf://someone/tiny-vit")
    reference = vit_by_hand(vit_tensors(np.random.default_rng(3)))
    images = np.ones((1, IMAGE, IMAGE, 3), "float32")
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(reference(images)),
                               atol=1e-5, rtol=1e-5)


def test_kaggle_handle_reads_the_kagglehub_cache(tmp_path, monkeypatch):
    """`kaggle://...` goes to `kagglehub`; a cached version needs no network."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kaggle"))
    for variable in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    handle = parse_model_handle("someone/gpt2/keras/tiny/1")
    preset = tmp_path / "preset"
    build_backbone("gpt2_tiny", seed=5).save_to_preset(str(preset))
    cache = Cache()
    for name in os.listdir(preset):
        target = cache.get_path(handle, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(preset / name, "rb") as source, open(target, "wb") as copy:
            copy.write(source.read())
        cache.mark_as_complete(handle, name)

    loaded = build_backbone("kaggle://someone/gpt2/keras/tiny/1")
    reference = build_backbone("gpt2_tiny", seed=5)
    ids, mask = _token_inputs(np.random.default_rng(4))
    inputs = {"token_ids": ids, "padding_mask": mask}
    np.testing.assert_array_equal(np.asarray(loaded(inputs)), np.asarray(reference(inputs)))


def test_unsupported_checkpoints_name_their_family(tmp_path):
    bert = _write(tmp_path / "bert", {"x": np.zeros(1, "float32")},
                  dict(model_type="bert", architectures=["BertModel"]))
    with pytest.raises(ValueError, match=r"'bert'.*BertBackbone.*prefixes only"):
        build_backbone(bert)
    unknown = _write(tmp_path / "unknown", {"x": np.zeros(1, "float32")},
                     dict(model_type="my_transformer"))
    with pytest.raises(ValueError, match=r"'my_transformer'.*no converter"):
        build_backbone(unknown)
    with pytest.raises(ValueError, match="no converter"):
        load_tokenizer(unknown)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(GPT2_CONFIG))
    (no_weights / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="model.safetensors"):
        build_backbone(str(no_weights))
    with pytest.raises(ValueError, match="hf://owner/name"):
        build_backbone("gpt3_tiny")
