"""The text serving function cuts each batch to a short prompt width without
changing what it generates."""

import pytest
import tensorflow as tf

from helpers import bart_lm, gpt2_lm
from kprefix.runs.export import export_text_generator, prompt_widths
from kprefix.tasks.tokenizers import load_tokenizer

SHORT = "name[A]"
LONG = "name[The Golden Palace] eatType[coffee shop] food[Thai] area[riverside]"


@pytest.mark.parametrize("task", ["gpt2", "bart"])
def test_a_source_alone_or_beside_a_much_longer_one_gives_the_same_text(task, tmp_path):
    tokenizer = load_tokenizer(f"{task}_tiny")
    source_length = 96
    if task == "gpt2":
        model = gpt2_lm()
        settings = dict(num_beams=2, max_new_tokens=5, end_token_id=tokenizer.end_token_id,
                        pad_token_id=tokenizer.end_token_id)
    else:
        model = bart_lm()
        settings = dict(num_beams=2, max_length=6, min_length=2,
                        start_token_ids=[tokenizer.end_token_id],
                        end_token_id=tokenizer.end_token_id, pad_token_id=tokenizer.pad_token_id)
    short_tokens = len(tokenizer.tokenize(SHORT)) + 2
    long_tokens = len(tokenizer.tokenize(LONG)) + 2
    widths = prompt_widths(source_length)
    # The two batches run different widths (different decoding programs).
    assert short_tokens <= widths[0] < long_tokens <= source_length
    serve = export_text_generator(model, tokenizer, str(tmp_path), source_length, settings,
                                  write=False)
    alone = serve(tf.constant([SHORT]))
    batched = serve(tf.constant([LONG, SHORT, LONG]))
    assert alone["text"].numpy()[0] == batched["text"].numpy()[1]
    assert float(alone["score"][0]) == pytest.approx(float(batched["score"][1]), abs=1e-5)
