"""Prefix-tuned keras-hub language models: GPT-2 causal LM and BART seq2seq.

They are keras-hub's own `GPT2CausalLM` and `BartSeq2SeqLM` with prefixes
installed in the backbone's attention, so keras-hub's cached generation and
samplers (greedy, beam, ...) run unchanged: the cache holds the sequence,
the prefix is added in attention at every step, for any batch or beam size.

Example:

>>> import numpy as np
>>> from kprefix.backbones import build_backbone
>>> from kprefix.prefix import PrefixConfig
>>> from kprefix.tasks.language_models import PrefixGPT2CausalLM
>>> lm = PrefixGPT2CausalLM(build_backbone("gpt2_tiny"),
...     prefix_config=PrefixConfig("deep_share", length=3, share_across_layers=True))
>>> lm.compile(sampler="greedy")
>>> prompt = {"token_ids": np.array([[5, 6, 0, 0]], "int32"),
...           "padding_mask": np.array([[1, 1, 0, 0]], "bool")}
>>> lm.generate(prompt, stop_token_ids=None)["token_ids"].shape
(1, 4)
"""

import keras
import keras_hub

from kprefix.tasks.prefixed import PrefixedKerasHubTask
from kprefix.tasks.target_logits import TargetLogitsTraining


@keras.saving.register_keras_serializable(package="kprefix")
class PrefixGPT2CausalLM(TargetLogitsTraining, PrefixedKerasHubTask,
                         keras_hub.models.GPT2CausalLM):
    """`GPT2CausalLM` with prefixes in its decoder self-attention; trained with
    logits only at the target positions (`kprefix.tasks.target_logits`)."""


@keras.saving.register_keras_serializable(package="kprefix")
class PrefixBartSeq2SeqLM(PrefixedKerasHubTask, keras_hub.models.BartSeq2SeqLM):
    """`BartSeq2SeqLM` with encoder, decoder and cross-attention prefixes."""
