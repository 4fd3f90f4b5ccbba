"""The README's library example runs as written, from the public API."""

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _python_blocks(section):
    text = open(README, encoding="utf-8").read()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_using_the_layers_runs(tmp_path, monkeypatch):
    blocks = _python_blocks("Using the layers")
    assert len(blocks) == 2 and "from kprefix import" in blocks[0]
    monkeypatch.chdir(tmp_path)  # The example writes a preset and a .keras file.
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert tuple(namespace["logits"].shape) == (2, 10)
    assert (tmp_path / "my_classifier" / "task.json").exists()
    assert (tmp_path / "lm.keras").exists()


def test_public_api_imports_lazily():
    import subprocess
    import sys

    # Configurations load without TensorFlow; the models load it when first named.
    code = ("import sys, kprefix; assert 'tensorflow' not in sys.modules; "
            "from kprefix import DecodingSettings, MethodConfig, RunConfig; "
            "RunConfig(method=MethodConfig('lora')); "
            "assert 'tensorflow' not in sys.modules; "
            "from kprefix import (PrefixConfig, PrefixTuning, PrefixImageClassifier, "
            "PrefixGPT2CausalLM, PrefixBartSeq2SeqLM, build_backbone); "
            "from kprefix.tasks import PrefixImageClassifier as direct; "
            "assert PrefixImageClassifier is direct and callable(build_backbone); "
            "assert sorted(kprefix.__all__) == sorted(['PrefixConfig', 'PrefixTuning', "
            "'PrefixImageClassifier', 'PrefixGPT2CausalLM', 'PrefixBartSeq2SeqLM', "
            "'build_backbone', 'MethodConfig', 'RunConfig', 'DecodingSettings', 'run'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=os.path.join(os.path.dirname(__file__), ".."))
    assert result.returncode == 0, result.stderr[-2000:]
