"""The paper's comparison methods on a kprefix task model: what trains, what is added.

| method | trains (besides a classifier head) | added to the backbone |
|---|---|---|
| `prefix` | the prefix generators (`PrefixConfig`) | prefix keys and values |
| `linear` | nothing: the head alone (linear probe) | nothing |
| `finetune` | every backbone weight | nothing |
| `partial` | the last k blocks of each stack and the final norm (Partial-k, FT-top-k) | nothing |
| `lora` | low-rank updates of the attention query and value projections | keras-hub's `enable_lora` |
| `vpt` | prompt tokens after the embeddings (shallow) or at every block (deep) | `VisualPrompts` |
| `adapter` | bottleneck adapters (Houlsby or Pfeiffer) | `Adapters` |

A task model is built as for prefixes (`prefix_config=None` for every method
but `prefix`, which leaves the backbone frozen and trains the head), then
`apply_method` sets what trains and installs what the method adds. The
language tasks take `prefix`, `finetune`, `partial`, `lora` and `adapter`
(their output layer is the tied embedding, so `linear` has nothing to train).

Example:

>>> from kprefix.backbones import build_backbone
>>> from kprefix.tasks import PrefixImageClassifier
>>> model = PrefixImageClassifier(build_backbone("vit_tiny"), num_classes=3)
>>> apply_method(model, MethodConfig("partial", partial_layers=1))
>>> sorted({w.path.split("/")[0] for w in model.trainable_weights})
['predictions', 'vit_encoder']
"""

import dataclasses
from typing import Optional

from kprefix.methods.adapter_styles import ADAPTER_STYLES
from kprefix.options import check_fields, option

METHODS = ("prefix", "linear", "finetune", "partial", "lora", "vpt", "adapter")
TEXT_METHODS = ("prefix", "finetune", "partial", "lora", "adapter")
# Methods that train no backbone weight and add their own float32 weights
# (adapters take the backbone's policy; LoRA merges into the frozen kernels).
FROZEN_BACKBONE_METHODS = ("prefix", "linear", "vpt")
PLACEMENTS = ("shallow", "deep")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """A method and its options (ignored by the other methods); each field is
    the launch flag of the same name (`name` is `--method`)."""

    name: str = option(
        "prefix", "What trains: 'prefix' (the --prefix_* flags), 'linear' (the head alone), "
        "'finetune' (everything), 'partial' (the top --partial_layers blocks), 'lora' "
        "(--lora_rank), 'vpt' (--vpt_length prompt tokens, --prefix_placement shallow/deep) "
        f"or 'adapter' (--adapter_dim, --adapter_style). Text tasks: {', '.join(TEXT_METHODS)}.",
        flag="method", choices=METHODS)
    partial_layers: int = option(
        1, "--method=partial: blocks trained at the top of each stack, with the final norm "
        "(VPT's Partial-1: 1; Li & Liang's FT-top2: 2).", minimum=1)
    lora_rank: int = option(
        8, "--method=lora: rank of the query and value updates (keras-hub enable_lora; alpha "
        "= rank).", minimum=1)
    vpt_length: int = option(
        50, "--method=vpt: prompt tokens per block; 0 takes --prefix_length (the paper's P, "
        "which matches VPT's prompt length).", minimum=0)
    adapter_dim: int = option(8, "--method=adapter: bottleneck width.", minimum=1)
    adapter_style: str = option(
        "pfeiffer", "--method=adapter: 'pfeiffer' after each MLP (VPT's Adapter), 'houlsby' "
        "after each attention and MLP sub-block.", choices=ADAPTER_STYLES)
    vpt_placement: Optional[str] = option(
        None, "--method=vpt: 'shallow' (first block) or 'deep' (every block); a run takes "
        "--prefix_placement.", flag=False)

    def __post_init__(self):
        check_fields(self, subject="method")
        if self.name == "vpt" and self.vpt_placement not in PLACEMENTS + (None,):
            raise ValueError(f"--prefix_placement={self.vpt_placement!r}: VPT puts its prompts "
                             "into the first block (shallow) or every block (deep).")


def apply_method(model, config, seed=None):
    """Makes `config`'s method train in `model`, a kprefix task.

    `model` comes with its backbone frozen (as every kprefix task builds
    it); for `prefix` it already holds its prefixes. Call this in the
    distribution strategy's scope, before compiling.
    """
    backbone = model.backbone
    name = config.name
    if name in ("prefix", "linear"):
        return
    if name == "finetune":
        backbone.trainable = True
    elif name == "partial":
        train_top_blocks(backbone, config.partial_layers)
    elif name == "lora":
        backbone.enable_lora(config.lora_rank)
        # enable_lora leaves the projections' biases trainable; LoRA trains A and B only.
        for layer in backbone._flatten_layers(include_self=False):
            if getattr(layer, "lora_enabled", False) and getattr(layer, "bias", None) is not None:
                layer.bias.trainable = False
    elif name == "vpt":
        from kprefix.methods.visual_prompts import VisualPrompts

        if getattr(model, "pooling", "token") != "token":
            raise ValueError("VPT leaves its prompts out of the pooled feature by pooling the "
                             f"class token; this classifier pools {model.pooling!r}.")
        if config.vpt_length < 1:
            raise ValueError("--vpt_length=0 takes --prefix_length in a run; give "
                             "MethodConfig a prompt count of at least 1.")
        model.visual_prompts = VisualPrompts(
            backbone, config.vpt_length, deep=config.vpt_placement != "shallow", seed=seed,
            name="visual_prompts")
    elif name == "adapter":
        from kprefix.methods.adapters import Adapters

        model.adapters = Adapters(backbone, config.adapter_dim, config.adapter_style,
                                  seed=seed, name="adapters")


def train_top_blocks(backbone, count):
    """Freezes `backbone` but its last `count` blocks of each stack and its final norm."""
    from kprefix.backbones import final_norms, transformer_blocks

    blocks = transformer_blocks(backbone)
    backbone.trainable = False
    for kind in dict.fromkeys(block.kind for block in blocks):
        of_kind = [block for block in blocks if block.kind == kind]
        if count > len(of_kind):
            raise ValueError(f"--partial_layers={count}: the backbone's {kind} has only "
                             f"{len(of_kind)} blocks.")
        for block in of_kind[-count:]:
            block.layer.trainable = True
    for norm in final_norms(backbone):
        norm.trainable = True


def parameter_accounting(model, backbone_parameters):
    """`{trainable_parameters, backbone_parameters, trainable_percent}` as the
    paper's tables count them: trained weights (head included) against the
    pretrained backbone's size (counted before any method was added)."""
    trainable = count_parameters(model.trainable_weights)
    return {"trainable_parameters": trainable, "backbone_parameters": backbone_parameters,
            "trainable_percent": round(100.0 * trainable / backbone_parameters, 4)}


def count_parameters(weights):
    import keras

    return sum(int(keras.ops.size(w)) for w in weights)


def lora_enabled(model):
    """Whether any layer of `model`'s backbone carries LoRA weights."""
    return any(getattr(layer, "lora_enabled", False)
               for layer in model.backbone._flatten_layers(include_self=False))


def folded_for_export(model):
    """The model to serve: prefixes folded into constants, LoRA merged into
    the kernels (a copy without LoRA weights), any other method as is."""
    if getattr(model, "prefix", None) is not None:
        return model.fold()
    if lora_enabled(model):
        return merge_lora(model)
    return model


def merge_lora(model):
    """A copy of `model` without LoRA: each kernel is `W + (alpha/r) A B`.

    The copy is built from `model`'s config (so it has no LoRA weights) and
    takes every layer's variables as Keras saves them, LoRA kernels merged
    (`save_own_variables`).
    """
    copy = type(model).from_config(model.get_config())
    sources, targets = list(model._flatten_layers()), list(copy._flatten_layers())
    if [type(layer) for layer in sources] != [type(layer) for layer in targets]:
        raise RuntimeError("The LoRA-free copy does not mirror the model's layers.")
    for source, target in zip(sources, targets):
        store = {}
        source.save_own_variables(store)
        target.load_own_variables(store)
    return copy


def run_family(flag_values):
    """`(name, placement)` a run's flags belong to in sweeps and reports:
    the prefix variant and placement, `('vpt', placement)`,
    `('partial', k)`, or `(method, '')`.

    >>> run_family({"method": "partial", "partial_layers": 2})
    ('partial', '2')
    >>> run_family({"prefix_variant": "no_share", "prefix_placement": "shallow"})
    ('no_share', 'shallow')
    """
    method = flag_values.get("method", "prefix")
    if method == "prefix":
        return (flag_values.get("prefix_variant", "deep_share"),
                str(flag_values.get("prefix_placement", "deep")))
    if method == "vpt":
        return "vpt", str(flag_values.get("prefix_placement", "deep"))
    if method == "partial":
        return "partial", str(flag_values.get("partial_layers", 1))
    return method, ""
