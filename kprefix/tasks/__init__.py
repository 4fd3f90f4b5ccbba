"""Task models: image classifier, causal LM (GPT-2), seq2seq LM (BART)."""

from kprefix.tasks.image_classifier import PrefixImageClassifier
from kprefix.tasks.language_models import PrefixBartSeq2SeqLM, PrefixGPT2CausalLM

__all__ = ["PrefixImageClassifier", "PrefixGPT2CausalLM", "PrefixBartSeq2SeqLM"]
