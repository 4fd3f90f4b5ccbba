"""The paper flagfiles' effective settings are the reference's, row by row of
`docs/reference.md` (flagfiles expanded as a launch expands them)."""

import pytest

from kprefix.sweep import launch_flag_values

# docs/reference.md row -> {flag: the reference's value}.
E2E = {
    "NLG optimiser": {"optimizer": "adamw", "weight_decay": 0.0},
    "Gradient clipping (NLG)": {"clip_norm": 1.0},
    "NLG warm-up": {"warmup_steps": 0},
    "GPT-2 dropout in training": {"backbone_dropout": False},
    "NLG MLP initialisation": {"prefix_mlp_init": "torch_linear"},
    "E2E source / targets / text framing": {"e2e_source_format": "reference"},
    "Text loss": {"text_loss": "sequence_sum"},
    "AdamW epsilon": {"adam_epsilon": 1e-8},
    "Last partial batch (text)": {"drop_remainder": False},
    "GPT-2 positions": {"prefix_position_offset": "P"},
    "Beam score length": {"length_normalization": "full"},
    "GPT-2 minimum length": {"min_new_tokens": 0},
    "GPT-2 beams and length": {"num_beams": 5, "max_new_tokens": 100,
                               "early_stopping": "heuristic"},
    "E2E recipe (Table 2)": {"prefix_length": 5, "batch_size": 10, "learning_rate": 1e-4,
                             "epochs": 5, "prefix_mlp_hidden": 512},
}
DEEP_CUB = {
    "SGD weight decay / momentum buffer": {"optimizer": "sgd", "weight_decay_mode": "coupled"},
    "Warm-up and cosine": {"schedule_unit": "epoch", "warmup_epochs": 10, "epochs": 100},
    "Last partial batch": {"drop_remainder": False},
    "Frozen ViT's dropout": {"backbone_dropout": False},
    "Prefix dropout": {"prefix_dropout": 0.1},
    "Simple-share dropout placement": {"prefix_dropout_site": "prompt"},
    "Deep-share MLP": {"prefix_mlp_hidden": 48, "prefix_mlp_activation": "tanh"},
    "Deep-share MLP initialisation": {"prefix_mlp_init": "torch_linear"},
    "P' and No-share initialisation": {"prefix_init": "xavier_uniform"},
    "Classifier head": {"head_init": "kaiming_normal_fan_out"},
    "SGD momentum, batch sizes, seeds": {"batch_size": 64, "seed": 42},
    "FGVC validation split": {"split_file": "vpt", "train_split": "train",
                              "eval_split": "test"},
    "Prefix lengths": {"prefix_length": 10, "prefix_placement": "deep",
                       "prefix_variant": "deep_share"},
}


@pytest.mark.parametrize("config, rows", [("nlg/e2e", E2E), ("fgvc/deep_cub", DEEP_CUB)])
def test_flagfile_settings_are_the_references(config, rows):
    values = launch_flag_values([f"--config={config}"])
    wrong = {(row, name): (values[name].value, expected)
             for row, settings in rows.items() for name, expected in settings.items()
             if values[name].value != expected}
    assert not wrong, f"--config={config}: (row, flag): (effective, reference) {wrong}"


def test_cars_keeps_the_hold_out_and_the_other_fgvc_files_use_vpts_split():
    for dataset in ("cub", "nabirds", "flowers", "dogs", "cars"):
        for placement in ("deep", "shallow"):
            split_file = launch_flag_values([f"--config=fgvc/{placement}_{dataset}"]).split_file
            assert split_file == ("holdout" if dataset == "cars" else "vpt"), (dataset, placement)
