"""`PrefixConfig`: every choice of the prefix method in one validated record.

Example:

>>> from kprefix.prefix.config import PrefixConfig
>>> config = PrefixConfig(variant="deep_share", placement="deep", length=10)
>>> PrefixConfig.from_dict(config.to_dict()) == config
True
"""

import dataclasses
from typing import Optional, Sequence, Tuple, Union

from kprefix.options import check_choice, check_fields, option

VARIANTS = (
    "deep_share",
    "no_share",
    "simple_share",
    "linear_share",
    "one_layer_share",
)
PLACEMENTS = ("shallow", "deep")
ACTIVATIONS = ("tanh", "sigmoid", "relu", "gelu", "linear")
INITIALIZERS = ("xavier_uniform", "normal", "zeros", "word")
# Where GPT-2 positions of real tokens start: "0", or "P" (after the prefix).
POSITION_OFFSETS = ("0", "P")
MLP_INITIALIZERS = ("glorot", "torch_linear")
DROPOUT_SITES = ("output", "prompt")


def parse_placement(text: str) -> Union[str, Tuple[int, ...]]:
    """`--prefix_placement` text as a placement: 'shallow', 'deep' or layer indices.

    >>> parse_placement("0,3,7")
    (0, 3, 7)
    """
    if text in PLACEMENTS:
        return text
    try:
        return tuple(int(i) for i in text.split(","))
    except ValueError:
        raise ValueError(
            f"prefix placement {text!r}: use 'shallow', 'deep' or comma-separated "
            "layer indices like '0,1,5'."
        ) from None


def _check_placement(placement):
    if isinstance(placement, str):
        check_choice("prefix", "placement", placement, PLACEMENTS)
    elif not placement or min(placement) < 0:
        raise ValueError(
            "prefix placement must be 'shallow', 'deep' or a non-empty "
            f"list of layer indices >= 0; got {placement!r}."
        )


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    """How prefixes are generated and where they enter the backbone.

    Attributes:
        variant: the reparameterization (key/value sharing structure):
            `deep_share` (a small matrix through an MLP, Li & Liang),
            `no_share` (independent key and value prefixes),
            `simple_share` (one prompt through the layer's frozen LayerNorm
            and key/value projections), `linear_share` (the paper's simple
            linear setting, key prefix = value prefix = one parameter) and
            `one_layer_share` (key = s1(W1 p), value = s2(W2 p)).
        placement: `shallow` (first layer of each attention kind), `deep`
            (all layers) or an explicit tuple of layer indices.
        length: number of prefix vectors P per attention layer.
        mlp_hidden: hidden width of the Deep-share MLP.
        mlp_activation: activation between the two Deep-share linear maps.
        share_across_layers: Deep-share only. One P' and first MLP layer for
            all layers (the language setting of Li & Liang); otherwise each
            layer has its own P' and MLP (the vision setting).
        embedding_dim: width of P' (Deep-share) or of p (one-layer share);
            `None` means the backbone's hidden size.
        key_activation, value_activation: s1 and s2 of `one_layer_share`.
        initializer: initializer of the learned prefix parameters. `word`
            (No-share on GPT-2 only) starts the prefix from the frozen
            backbone's own per-layer keys and values for the tokens
            `init_token_ids`, as Li & Liang's `init_shallow` does; the
            prefix length is then the number of those tokens.
        init_scale: standard deviation for `normal`; ignored otherwise.
        dropout: dropout applied to the generated prefixes in training.
        mlp_init: initializer of the Deep-share MLP's linear maps: `glorot`
            (Keras's Dense: Glorot-uniform kernel, zero bias) or
            `torch_linear` (PyTorch's `nn.Linear` default: kernel and bias
            uniform in +-1/sqrt(fan_in)).
        dropout_site: where prefix dropout acts: `output` (on the generated
            key and value prefixes, one mask each) or `prompt` (Simple-share
            drops its prompt before the LayerNorm, one mask for key and
            value, as the reference; the other variants have no prompt
            ahead of a frozen map and drop their outputs as with `output`).
        init_token_ids: the token ids behind the `word` initializer.
        position_offset: `"0"` (real tokens take positions 0, 1, ...) or
            `"P"` (they start at position `length`, as when Hugging Face
            GPT-2 counts the prefix as past keys and values). GPT-2 only.

    Each field is declared with `option(...)`, whose metadata also defines
    its `--prefix_*` flag of `python -m kprefix.launch` (`kprefix.options`).
    """

    variant: str = option("deep_share", "Key/value sharing structure.", choices=VARIANTS)
    placement: Union[str, Tuple[int, ...]] = option(
        "deep", "'shallow' (first layer), 'deep' (all layers) or comma-separated layer indices.",
        check=_check_placement, parse=parse_placement)
    length: int = option(10, "Prefix vectors per attention layer.", minimum=1)
    mlp_hidden: int = option(48, "Deep-share MLP hidden width.", minimum=1)
    mlp_activation: str = option("tanh", "Deep-share MLP activation.", choices=ACTIVATIONS)
    share_across_layers: bool = option(
        False, "Deep-share: one P' and first MLP layer for all layers.")
    embedding_dim: Optional[int] = option(
        None, "Width of P' (Deep-share) or p (one-layer share); default hidden size.", minimum=1)
    key_activation: str = option("tanh", "one_layer_share s1.", choices=ACTIVATIONS)
    value_activation: str = option("sigmoid", "one_layer_share s2.", choices=ACTIVATIONS)
    initializer: str = option("xavier_uniform", "Prefix initializer.", flag="prefix_init",
                              choices=INITIALIZERS)
    init_scale: float = option(0.02, "Std of the 'normal' prefix initializer.")
    dropout: float = option(0.0, "Dropout on generated prefixes in training.", minimum=0.0,
                            below=1.0)
    mlp_init: str = option(
        "glorot", "Deep-share MLP initializer: 'glorot' (Keras Dense) or 'torch_linear' "
        "(PyTorch nn.Linear default: kernel and bias uniform +-1/sqrt(fan_in)).",
        choices=MLP_INITIALIZERS)
    dropout_site: str = option(
        "output", "Where prefix dropout acts: 'output' (on the key and value prefixes, one mask "
        "each) or 'prompt' (Simple-share: on the prompt before the LayerNorm, one mask for key "
        "and value, as the reference; other variants as 'output').", choices=DROPOUT_SITES)
    init_token_ids: Tuple[int, ...] = option(
        (), "Token ids behind --prefix_init=word; filled from --prefix_init_text.", flag=False)
    position_offset: str = option(
        "0", "GPT-2: '0' real tokens take positions 0, 1, ...; 'P' they start at the prefix "
        "length, as in Li & Liang's code (the prefix is Hugging Face past).",
        choices=POSITION_OFFSETS)

    def __post_init__(self):
        if not isinstance(self.placement, str):
            object.__setattr__(self, "placement", tuple(int(i) for i in self.placement))
        object.__setattr__(self, "init_token_ids", tuple(int(i) for i in self.init_token_ids))
        object.__setattr__(self, "position_offset", str(self.position_offset))
        self.validate()

    def validate(self):
        """Raises `ValueError` naming the bad field and its allowed values."""
        check_fields(self, subject="prefix")
        if self.initializer == "word":
            if self.variant != "no_share":
                raise ValueError(
                    f"the 'word' prefix initializer fits the no_share variant only (the prefix "
                    f"is the backbone's own keys and values); got variant {self.variant!r}.")
            if not self.init_token_ids:
                raise ValueError(
                    "the 'word' prefix initializer needs init_token_ids (the tokens of "
                    "--prefix_init_text); the text launcher fills them in from the tokenizer.")
            if len(self.init_token_ids) != int(self.length):
                raise ValueError(
                    f"with the 'word' initializer the prefix length is the number of init "
                    f"tokens ({len(self.init_token_ids)}); got length {self.length}.")

    @property
    def position_shift(self) -> int:
        """How many positions real tokens are shifted by (0, or the prefix length)."""
        return int(self.length) if self.position_offset == "P" else 0

    def layer_indices(self, num_layers: int) -> Sequence[int]:
        """The indices, among `num_layers` attention layers, that get prefixes."""
        if self.placement == "shallow":
            return [0]
        if self.placement == "deep":
            return list(range(num_layers))
        bad = [i for i in self.placement if i >= num_layers]
        if bad:
            raise ValueError(
                f"prefix placement names layers {bad}, but the backbone has "
                f"only {num_layers} layers (indices 0..{num_layers - 1})."
            )
        return sorted(set(self.placement))

    def to_dict(self) -> dict:
        config = dataclasses.asdict(self)
        if not isinstance(self.placement, str):
            config["placement"] = list(self.placement)
        config["init_token_ids"] = list(self.init_token_ids)
        return config

    @classmethod
    def from_dict(cls, config: dict) -> "PrefixConfig":
        return cls(**config)

