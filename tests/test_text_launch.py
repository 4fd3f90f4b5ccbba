"""Language runs through `python -m kprefix.launch`: train, decode, score, export.

Uses the real E2E and XSUM files of the shared data folder (skipped when it
is absent) with the tiny GPT-2 and BART configs.
"""

import concurrent.futures
import json
import subprocess
import sys
import textwrap

import pytest

from kprefix.data.nlg import locate_shared_data_dir

DATA, _ = locate_shared_data_dir()
needs_data = pytest.mark.skipif(
    not (DATA / "e2e").is_dir() or not (DATA / "xsum").is_dir(),
    reason=f"shared benchmark data not found at {DATA} (set KPREFIX_SHARED_DATA)",
)

COMMON = ["--epochs=1", "--batch_size=8", "--optimizer=adamw", "--learning_rate=1e-3",
          "--warmup_steps=2", "--prefix_length=3", "--num_beams=2", "--max_new_tokens=6",
          "--min_new_tokens=2", "--target_length=16", "--eval_batch_size=4", "--max_eval_examples=4"]

RUNS = {
    "gpt2_e2e": ["--task=table_to_text", "--backbone=gpt2_tiny", "--dataset=e2e",
                 "--max_train_examples=16", "--source_length=48", "--prefix_share_across_layers",
                 # Reference positions and decoding rules, through training and the export.
                 "--prefix_position_offset=P", "--length_normalization=full",
                 "--no_repeat_ngram_size=3"],
    "bart_xsum": ["--task=summarization", "--backbone=bart_tiny", "--dataset=xsum",
                  "--train_split=validation", "--max_train_examples=8", "--source_length=48",
                  "--length_penalty=0.8"],
    # Comparison methods through the same path: LoRA is merged into the export.
    "gpt2_e2e_lora": ["--task=table_to_text", "--backbone=gpt2_tiny", "--dataset=e2e",
                      "--max_train_examples=16", "--source_length=48", "--method=lora",
                      "--lora_rank=2"],
    "bart_xsum_adapter": ["--task=summarization", "--backbone=bart_tiny", "--dataset=xsum",
                          "--train_split=validation", "--max_train_examples=8",
                          "--source_length=48", "--method=adapter", "--adapter_style=houlsby"],
}


def _launch(name, workdir):
    return subprocess.run(
        [sys.executable, "-m", "kprefix.launch", *COMMON, *RUNS[name], f"--workdir={workdir}",
         f"--text_data_dir={DATA}"],
        capture_output=True, text=True, timeout=900,
    )


# Loads each export without kprefix (a fresh process that never imports it) and
# generates from the run's evaluation sources; prints {name: texts or error}.
SERVE_SCRIPT = textwrap.dedent("""
    import json, sys, tensorflow as tf
    import tensorflow_text  # registers the tokenizer ops
    served = {}
    for name, (export, sources) in json.loads(sys.argv[1]).items():
        try:
            serve = tf.saved_model.load(export).signatures["serving_default"]
            out = serve(text=tf.constant(sources))["text"].numpy()
            served[name] = [t.decode("utf-8", errors="replace") for t in out]
        except Exception as error:  # reported by the test of that run
            served[name] = repr(error)
    assert not any(m.startswith(("kprefix", "keras_hub")) for m in sys.modules)
    print(json.dumps(served))
""")


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    """Every run of RUNS, two launches at a time (each is mostly single-threaded
    tracing), then one fresh process serving every export that was written.
    Returns {name: (workdir, launch result, served texts or error)}."""
    root = tmp_path_factory.mktemp("text_runs")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        launched = dict(zip(RUNS, pool.map(lambda name: _launch(name, root / name), RUNS)))
    exports = {name: [str(root / name / "export"), _sources(name)] for name in RUNS
               if (root / name / "export").is_dir()}
    served = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, json.dumps(exports)],
                            capture_output=True, text=True, timeout=600)
    assert served.returncode == 0, served.stderr[-3000:]
    texts = json.loads(served.stdout.strip().splitlines()[-1])
    return {name: (root / name, launched[name], texts.get(name)) for name in RUNS}


@needs_data
@pytest.mark.large
@pytest.mark.parametrize("name", sorted(RUNS))
def test_text_run_trains_decodes_scores_and_exports(name, text_runs):
    workdir, result, served = text_runs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["num_eval_examples"] == 4
    assert 0 < results["trainable_percent"] < 100
    expected = {"e2e": {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}, "xsum": {
        "rouge1", "rouge2", "rougeL"}, "webnlg": {"BLEU", "METEOR"}}[name.split("_")[1]]
    assert expected <= set(results["scores"])
    predictions = (workdir / "predictions_test.txt").read_text().splitlines()
    assert len(predictions) == 4
    # The SavedModel, loaded without kprefix, generates the same text.
    assert served == predictions


def _sources(name):
    from kprefix.data import nlg

    dataset = next(d for d in ("e2e", "webnlg", "xsum") if d in name)
    return nlg.evaluation_sources(
        nlg.load_task(dataset, "test", DATA, source_format="reference")[:4])


def test_text_flags_are_checked(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kprefix.launch", "--task=summarization", "--backbone=gpt2_tiny",
         "--dataset=e2e", f"--workdir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "--dataset='e2e' does not fit --task=summarization" in result.stderr


def test_nlg_flagfiles_parse_with_the_paper_settings():
    script = textwrap.dedent("""
        import glob, json
        from absl import flags
        import kprefix.launch  # defines the flags
        from kprefix.cli.flagfiles import expand_flagfiles
        out = {}
        for path in sorted(glob.glob("configs/nlg/*.cfg")):
            values = flags.FlagValues()
            for flag in flags.FLAGS.get_flags_for_module("kprefix.launch"):
                values[flag.name] = flag
            values.unparse_flags()
            values(expand_flagfiles(["prog", f"--flagfile={path}"]))
            out[path] = {n: values[n].value for n in
                         ("task", "dataset", "prefix_variant", "prefix_length", "learning_rate",
                          "batch_size", "num_beams", "length_penalty", "prefix_init",
                          "prefix_init_text", "prefix_position_offset", "e2e_source_format",
                          "webnlg_source_format", "length_normalization",
                          "no_repeat_ngram_size", "early_stopping", "min_new_tokens",
                          "force_end_at_max_length")}
        print(json.dumps(out))
    """)
    root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    configs = json.loads(result.stdout.strip().splitlines()[-1])
    e2e_deep = configs["configs/nlg/e2e.cfg"]
    assert (e2e_deep["prefix_length"], e2e_deep["batch_size"], e2e_deep["learning_rate"],
            e2e_deep["num_beams"]) == (5, 10, 1e-4, 5)
    assert configs["configs/nlg/webnlg_no_share.cfg"]["learning_rate"] == 5e-2
    xsum_no = configs["configs/nlg/xsum_no_share.cfg"]
    assert (xsum_no["task"], xsum_no["prefix_variant"], xsum_no["prefix_length"],
            xsum_no["learning_rate"], xsum_no["num_beams"], xsum_no["length_penalty"]) == (
        "summarization", "no_share", 200, 5e-4, 6, 0.8)
    assert {c["prefix_variant"] for c in configs.values()} == {
        "deep_share", "no_share", "simple_share"}
    # The reference recipe (see docs/reference.md): GPT-2 runs.
    gpt2 = {path: c for path, c in configs.items() if c["task"] == "table_to_text"}
    for path, c in gpt2.items():
        assert (c["prefix_position_offset"], c["e2e_source_format"], c["webnlg_source_format"],
                c["length_normalization"], c["min_new_tokens"], c["early_stopping"]) == (
            "P", "reference", "reference", "full", 0, "heuristic"), path
        no_share = c["prefix_variant"] == "no_share"
        assert (c["prefix_init"] == "word") == no_share, path
    assert configs["configs/nlg/e2e_no_share.cfg"]["prefix_init_text"] == "summarize"
    for path, c in configs.items():
        if c["task"] == "summarization":
            assert (c["length_normalization"], c["no_repeat_ngram_size"], c["early_stopping"],
                    c["prefix_position_offset"], c["force_end_at_max_length"]) == (
                "full", 3, "first", "0", True), path


def test_word_init_flags_give_a_prefix_as_long_as_the_text(tmp_path):
    # --prefix_init=word resolves --prefix_init_text with the backbone's tokenizer.
    script = textwrap.dedent("""
        import json
        from absl import flags
        from kprefix import launch
        flags.FLAGS(["prog", "--backbone=gpt2_tiny", "--prefix_variant=no_share",
                     "--prefix_init=word", "--prefix_init_text=summarize",
                     "--prefix_length=5", "--prefix_position_offset=P"])
        config = launch.run_config_from_flags().prefix
        print(json.dumps([config.length, list(config.init_token_ids), config.position_shift]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    length, ids, shift = json.loads(result.stdout.strip().splitlines()[-1])
    from kprefix.tasks.tokenizers import load_tokenizer
    import numpy as np

    expected = [int(i) for i in np.asarray(load_tokenizer("gpt2_tiny")(" summarize"))]
    assert ids == expected and length == len(expected) == shift
