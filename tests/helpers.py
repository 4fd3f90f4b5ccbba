"""Small shared builders for the tests."""

import numpy as np

from kprefix.backbones import build_backbone
from kprefix.prefix import PrefixConfig
from kprefix.tasks import PrefixBartSeq2SeqLM, PrefixGPT2CausalLM, PrefixImageClassifier

VARIANTS = ("deep_share", "no_share", "simple_share", "linear_share", "one_layer_share")


def prefix_config(variant, **overrides):
    return PrefixConfig(variant=variant, placement="deep", length=3, mlp_hidden=8, **overrides)


def image_classifier(variant="deep_share", seed=0, num_classes=4, **overrides):
    config = None if variant is None else prefix_config(variant, **overrides)
    return PrefixImageClassifier(build_backbone("vit_tiny", seed=seed), num_classes=num_classes,
                                 prefix_config=config, seed=seed)


def gpt2_lm(variant="deep_share", **overrides):
    config = None if variant is None else prefix_config(variant, **overrides)
    return PrefixGPT2CausalLM(build_backbone("gpt2_tiny"), prefix_config=config, seed=0)


def bart_lm(variant="deep_share", **overrides):
    config = None if variant is None else prefix_config(variant, **overrides)
    return PrefixBartSeq2SeqLM(build_backbone("bart_tiny"), prefix_config=config, seed=0)


def images(batch=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 16, 16, 3)).astype("float32")


def gpt2_inputs(batch=2, length=7, seed=0):
    rng = np.random.default_rng(seed)
    return {"token_ids": rng.integers(1, 64, size=(batch, length)).astype("int32"),
            "padding_mask": np.ones((batch, length), "int32")}


def bart_inputs(batch=2, source=8, target=6, seed=0):
    rng = np.random.default_rng(seed)
    encoder_mask = np.ones((batch, source), "int32")
    encoder_mask[1, -3:] = 0
    return {
        "encoder_token_ids": rng.integers(1, 64, size=(batch, source)).astype("int32"),
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": rng.integers(1, 64, size=(batch, target)).astype("int32"),
        "decoder_padding_mask": np.ones((batch, target), "int32"),
    }


def assert_one_line_error(result, status, *texts):
    """`result` (a finished process) failed with `status` and one `Error:` line
    holding `texts`: no traceback, no flag dump, fewer than 5 lines on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and len(lines) < 5, result.stderr[-3000:]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, lines
    for text in texts:
        assert text in errors[0], (text, errors[0])


def file_digests(folder):
    """{relative path: SHA-256} of every file under `folder`, to show nothing changed."""
    import hashlib
    from pathlib import Path

    folder = Path(folder)
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}
