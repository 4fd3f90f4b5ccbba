"""kprefix: prefix-tuning with shared key/value structure for Keras 3."""

from setuptools import find_packages, setup

setup(
    name="kprefix",
    version="0.1.0",
    description=(
        "Prefix-tuning with shared key/value structure (Deep-share, Simple-share, "
        "No-share) for keras-hub ViT, GPT-2 and BART on TensorFlow 2 + Keras 3."
    ),
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["kprefix", "kprefix.*"]),
    python_requires=">=3.10",
    install_requires=[
        # CPU wheel here; on GPUs install tensorflow[and-cuda]==2.21.*, on TPU
        # VMs tensorflow-tpu==2.21.* (see README).
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "keras>=3.10,<4",
        "keras-hub>=0.32,<0.33",
        "safetensors>=0.4",  # Hugging Face checkpoints (keras-hub converts them)
        "tensorflow-datasets>=4.9.10,<5",
        "tensorboard>=2.20",
        "absl-py>=2.1",
        "importlib_resources>=6",  # TFDS needs it to build custom datasets (NABirds)
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
        # NLG scorers: mteval tokenizer, ROUGE, coco-caption (METEOR 1.5 and
        # PTB tokenizer jars, run with Java), WebNLG normalization, TER.
        "sacrebleu>=2.0,<3",
        "rouge-score>=0.1.2,<0.2",
        "pycocoevalcap==1.2",
        "unidecode>=1.3,<2",
        "rapidfuzz>=3.0,<4",
    ],
    extras_require={"test": ["pytest>=8"]},
)
