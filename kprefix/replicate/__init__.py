"""Offline replication of the paper's comparison on backbones pretrained here.

Run it with `python -m kprefix.replicate` (see `kprefix/replicate/__main__.py`):
`pretrain_vision` makes the ViT presets, `comparison` runs the launches,
`statistics` and `results` summarise them.
"""
