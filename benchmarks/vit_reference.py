"""The authors' ViT prefix model in PyTorch, and its weights mapped from kprefix.

A transcription written from the equations and shapes of ReparamPrefix
(Minhchuyentoancbn/ReparamPrefix), not a copy of its code:

- `CV/src/models/vit_backbones/vit.py`: patch embedding, class token and
  position embedding (`Embeddings`, lines 165-209); pre-LayerNorm blocks with
  eps 1e-6 (`Block`, lines 212-234); attention as plain matmul, softmax,
  matmul, with prefix keys and values concatenated in front of the projected
  ones (`Attention.forward`, lines 91-137); exact-erf GELU MLP (lines
  140-162); the final LayerNorm (`Encoder`, lines 279-296) and a linear head
  on the class token (`VisionTransformer.forward`, lines 350-356).
- `CV/src/models/vit_prompt/vit.py`: `PrefixTransformer` with `SHARE_KV` and
  `SHARE_TYPE="non-linear"` (Deep-share), lines 171-300: per layer a matrix
  P' of `P` rows x 768 (`prompt_embeddings`, lines 215-220; the authors'
  config counts `NUM_TOKENS = 2P`, line 188), through
  `Linear(768, 48) -> Tanh -> Linear(48, 2 x 768)` (lines 223-230), whose
  output is split into key and value by `reshape(P, 768, 2)` (lines
  277-286): key and value features interleave, key first. `PROJECT=-1`
  makes `prompt_proj` the identity (lines 193-202), prefix dropout is 0
  here. In training the frozen encoder and embeddings stay in eval mode
  (lines 252-265).

`load_from_kprefix` writes a kprefix `PrefixImageClassifier`'s weights into
this model (backbone, Deep-share generators, head), so that both compute the
same logits; `max_logit_difference` checks it.

Example (a tiny config, a few seconds):

>>> from vit_reference import max_logit_difference
>>> max_logit_difference("vit_tiny") < 1e-4
True
"""

import math

import numpy as np
import torch
from torch import nn

HEAD_CLASSES = 100


class Attention(nn.Module):
    """Multi-head self-attention whose keys and values take a prefix in front."""

    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value, self.out = (nn.Linear(hidden, hidden)
                                                      for _ in range(4))

    def _split_heads(self, x):
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, prefix_key=None, prefix_value=None):
        query, key, value = (self._split_heads(f(x)) for f in (self.query, self.key, self.value))
        if prefix_key is not None:  # (P, hidden) -> (B, heads, P, head_dim), in front
            batch = x.shape[0]
            key = torch.cat([self._split_heads(prefix_key.expand(batch, -1, -1)), key], dim=2)
            value = torch.cat([self._split_heads(prefix_value.expand(batch, -1, -1)), value],
                              dim=2)
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_dim)
        context = torch.matmul(scores.softmax(dim=-1), value)
        batch, _, tokens, _ = context.shape
        return self.out(context.permute(0, 2, 1, 3).reshape(batch, tokens, -1))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention, then the GELU MLP."""

    def __init__(self, hidden, heads, mlp_dim):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(hidden, mlp_dim), nn.Linear(mlp_dim, hidden)

    def forward(self, x, prefix_key=None, prefix_value=None):
        x = x + self.attn(self.attention_norm(x), prefix_key, prefix_value)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ffn_norm(x))))


class DeepSharePrefix(nn.Module):
    """One layer's P' -> Linear -> Tanh -> Linear, split into interleaved key and value."""

    def __init__(self, length, hidden, patch_size, mlp_hidden=48):
        super().__init__()
        self.length, self.hidden = length, hidden
        bound = math.sqrt(6.0 / (3 * patch_size**2 + hidden))  # the authors' line 206
        self.embedding = nn.Parameter(torch.empty(length, hidden).uniform_(-bound, bound))
        self.trans = nn.Sequential(nn.Linear(hidden, mlp_hidden), nn.Tanh(),
                                   nn.Linear(mlp_hidden, 2 * hidden))

    def forward(self):
        key_value = self.trans(self.embedding).reshape(self.length, self.hidden, 2)
        return key_value[..., 0], key_value[..., 1]


class PrefixViT(nn.Module):
    """ViT with Deep-share prefixes in every layer and a linear head on [CLS]."""

    def __init__(self, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim,
                 prefix_length, num_classes=HEAD_CLASSES, mlp_hidden=48):
        super().__init__()
        patches = (image_size // patch_size) ** 2
        self.patch_embeddings = nn.Conv2d(3, hidden_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, patches + 1, hidden_dim))
        self.blocks = nn.ModuleList(Block(hidden_dim, num_heads, mlp_dim)
                                    for _ in range(num_layers))
        self.encoder_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.prefixes = nn.ModuleList(DeepSharePrefix(prefix_length, hidden_dim, patch_size,
                                                      mlp_hidden)
                                      for _ in range(num_layers))
        self.head = nn.Linear(hidden_dim, num_classes)
        for name, parameter in self.named_parameters():
            parameter.requires_grad = name.startswith(("prefixes.", "head."))

    def forward(self, images):
        """`images`: `(B, 3, H, W)`; returns `(B, num_classes)` logits."""
        x = self.patch_embeddings(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embeddings
        for block, prefix in zip(self.blocks, self.prefixes):
            x = block(x, *prefix())
        return self.head(self.encoder_norm(x)[:, 0])


def trainable_parameter_count(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def reference_model(sizes, prefix_length, num_classes=HEAD_CLASSES):
    """A `PrefixViT` from keras-hub `ViTBackbone` arguments (`image_shape`, ...)."""
    return PrefixViT(sizes["image_shape"][0], sizes["patch_size"], sizes["num_layers"],
                     sizes["num_heads"], sizes["hidden_dim"], sizes["mlp_dim"], prefix_length,
                     num_classes)


def _linear(layer, kernel, bias):
    """Writes a Keras `(in, out)` kernel (any trailing split of `out`) into `nn.Linear`."""
    kernel = np.asarray(kernel)
    layer.weight.copy_(torch.from_numpy(kernel.reshape(layer.in_features, -1).T.copy()))
    layer.bias.copy_(torch.from_numpy(np.asarray(bias).reshape(-1)))


def _norm(layer, keras_norm):
    layer.weight.copy_(torch.from_numpy(np.asarray(keras_norm.gamma)))
    layer.bias.copy_(torch.from_numpy(np.asarray(keras_norm.beta)))


@torch.no_grad()
def load_from_kprefix(reference, classifier):
    """Copies a kprefix Deep-share `PrefixImageClassifier` into `reference`."""
    vit = classifier.backbone
    embedding = vit.get_layer("vit_patching_and_embedding")
    reference.patch_embeddings.weight.copy_(torch.from_numpy(
        np.asarray(embedding.patch_embedding.kernel).transpose(3, 2, 0, 1).copy()))
    reference.patch_embeddings.bias.copy_(torch.from_numpy(
        np.asarray(embedding.patch_embedding.bias)))
    reference.cls_token.copy_(torch.from_numpy(np.asarray(embedding.class_token)))
    reference.position_embeddings.copy_(torch.from_numpy(
        np.asarray(embedding.position_embedding.embeddings))[None])
    encoder = vit.get_layer("vit_encoder")
    for block, keras_block in zip(reference.blocks, encoder.encoder_layers):
        _norm(block.attention_norm, keras_block.layer_norm_1)
        _norm(block.ffn_norm, keras_block.layer_norm_2)
        mha = keras_block.mha
        for linear, dense in ((block.attn.query, mha.query_dense), (block.attn.key, mha.key_dense),
                              (block.attn.value, mha.value_dense)):
            _linear(linear, dense.kernel, dense.bias)
        _linear(block.attn.out, np.asarray(mha.output_dense.kernel).reshape(
            -1, block.attn.out.out_features), mha.output_dense.bias)
        _linear(block.fc1, keras_block.mlp.dense_1.kernel, keras_block.mlp.dense_1.bias)
        _linear(block.fc2, keras_block.mlp.dense_2.kernel, keras_block.mlp.dense_2.bias)
    _norm(reference.encoder_norm, encoder.layer_norm)
    for prefix, generator in zip(reference.prefixes, classifier.prefix.generators):
        prefix.embedding.copy_(torch.from_numpy(np.asarray(generator.trunk.embedding)))
        _linear(prefix.trans[0], generator.trunk.hidden.kernel, generator.trunk.hidden.bias)
        # kprefix's output is [key | value]; the reference's interleaves them, key first.
        kernel = np.asarray(generator.output_projection.kernel)
        bias = np.asarray(generator.output_projection.bias)
        hidden = prefix.hidden
        interleave = np.stack([np.arange(hidden), hidden + np.arange(hidden)], axis=1).reshape(-1)
        _linear(prefix.trans[2], kernel[:, interleave], bias[interleave])
    _linear(reference.head, classifier.head.kernel, classifier.head.bias)


def kprefix_classifier(backbone="vit_b16_random", prefix_length=10, num_classes=HEAD_CLASSES,
                       seed=0):
    """kprefix's side: a Deep-share DEEP `PrefixImageClassifier` on a built-in ViT."""
    from kprefix.backbones import build_backbone
    from kprefix.prefix import PrefixConfig
    from kprefix.tasks import PrefixImageClassifier

    return PrefixImageClassifier(build_backbone(backbone, seed=seed), num_classes,
                                 PrefixConfig("deep_share", "deep", prefix_length), seed=seed)


def max_logit_difference(backbone="vit_b16_random", prefix_length=10, batch=2, seed=0):
    """Max |logit difference| of the two sides on the same weights and random images.

    Also checks that both train the same number of parameters.
    """
    from kprefix.backbones import BUILT_IN

    classifier = kprefix_classifier(backbone, prefix_length, seed=seed)
    reference = reference_model(BUILT_IN[backbone][1], prefix_length)
    ours = sum(int(np.prod(w.shape)) for w in classifier.trainable_weights)
    theirs = trainable_parameter_count(reference)
    if ours != theirs:
        raise AssertionError(f"trainable parameters differ: kprefix {ours:,}, reference {theirs:,}")
    load_from_kprefix(reference, classifier)
    size = BUILT_IN[backbone][1]["image_shape"][0]
    images = np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")
    ours = np.asarray(classifier(images, training=False))
    with torch.no_grad():
        theirs = reference.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    return float(np.abs(ours - theirs).max())
