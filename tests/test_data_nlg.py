"""Tests of the E2E / WebNLG / XSUM loaders, linearisation and tf.data pipelines."""

import json
import os

import pytest
import tensorflow as tf

from kprefix.data import nlg
from kprefix.data import nlg_e2e, nlg_webnlg
from kprefix.data.nlg_common import NLGExample, default_shared_data_dir, shared_data_dir

DATA_DIR = os.environ.get(nlg.SHARED_DATA_ENV_VAR) or str(default_shared_data_dir())
needs_data = pytest.mark.skipif(
    not os.path.isdir(DATA_DIR),
    reason=f"benchmark data folder {DATA_DIR} is absent (set ${nlg.SHARED_DATA_ENV_VAR})")


# ---------------------------------------------------------------- E2E


@needs_data
@pytest.mark.parametrize("split, rows, mrs", [("validation", 4_672, 547), ("test", 4_693, 630),
                                              ("train", 42_061, 4_862)])
def test_e2e_splits_have_the_release_counts(split, rows, mrs):
    examples = nlg.load_e2e(split, DATA_DIR)
    assert len(examples) == mrs
    assert sum(len(e.targets) for e in examples) == rows
    assert len(list(nlg.training_pairs(examples))) == rows
    assert all(e.targets for e in examples)


@needs_data
def test_e2e_groups_references_in_first_appearance_order():
    examples = nlg.load_e2e("test", DATA_DIR)
    assert examples[0].source == "name[Blue Spice], eatType[coffee shop], area[city centre]"
    assert examples[0].targets[:2] == (
        "A coffee shop in the city centre area called Blue Spice.",
        "Blue Spice is a coffee shop in city centre.")
    # Same MR order as the baseline outputs the official scorer pairs them with.
    tgen = os.path.join(DATA_DIR, "e2e", "reference_outputs", "tgen.tsv")
    with open(tgen, encoding="utf-8") as handle:
        next(handle)
        tgen_mrs = [line.split("\t")[0].strip('"') for line in handle]
    assert [e.source for e in examples] == tgen_mrs


@needs_data
def test_e2e_train_references_are_detokenized_unless_asked_not_to():
    path = os.path.join(DATA_DIR, "e2e", "trainset_tokenized.csv")
    detokenized = nlg.read_e2e_csv(path)
    raw = nlg.read_e2e_csv(path, detokenize=False)
    assert raw[0].targets[0] == ("The Vaults pub near Café Adriatic has a 5 star rating . "
                                 "Prices start at £ 30 .")
    assert detokenized[0].targets[0] == ("The Vaults pub near Café Adriatic has a 5 star rating. "
                                         "Prices start at £30.")
    assert [e.source for e in detokenized] == [e.source for e in raw]


def test_e2e_grouping_merges_non_adjacent_rows_of_one_mr(tmp_path):
    path = tmp_path / "refs.csv"
    path.write_text('mr,ref\n"name[A], food[Thai]",A one.\n"name[B]",B one.\n'
                    '"name[A], food[Thai]",A two.\n', encoding="utf-8")
    examples = nlg.read_e2e_csv(path)
    assert [(e.source, e.targets) for e in examples] == [
        ("name[A], food[Thai]", ("A one.", "A two.")), ("name[B]", ("B one.",))]


def test_e2e_mr_only_file_gives_examples_without_targets(tmp_path):
    path = tmp_path / "testset.csv"
    path.write_text('MR\n"name[A], area[riverside]"\n', encoding="utf-8")
    (example,) = nlg.read_e2e_csv(path)
    assert example.source == "name[A], area[riverside]" and example.targets == ()


def test_e2e_csv_without_mr_column_names_the_problem(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("meaning,text\nx,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no MR column"):
        nlg.read_e2e_csv(path)


def test_mr_parsing_round_trips():
    mr = "name[The Eagle], eatType[coffee shop], priceRange[£20-25], near[Burger King]"
    slots = nlg.parse_mr(mr)
    assert slots[2] == ("priceRange", "£20-25")
    assert nlg.linearize_mr(slots) == mr
    with pytest.raises(ValueError, match="meaning representation"):
        nlg.parse_mr("just words")


@pytest.mark.parametrize("tokenized, expected", [
    ("It 's near the river , and kids - friendly .", "It's near the river, and kids-friendly."),
    ("Prices are £ 20- £ 25 ; rating : 5 out of 5 !", "Prices are £20-£25; rating: 5 out of 5!"),
    ("It does n't serve food", "It doesn't serve food"),
])
def test_e2e_detokenizer(tokenized, expected):
    assert nlg.detokenize_e2e(tokenized) == expected


def test_e2e_tfds_example_conversion():
    features = {"input_text": {"table": {"column_header": [b"name", b"food"],
                                         "row_number": [1, 1],
                                         "content": [b"Zizzi", b"Italian"]}},
                "target_text": b"Zizzi serves Italian food."}
    assert nlg_e2e.e2e_example_from_tfds(features) == ("name[Zizzi], food[Italian]",
                                                       "Zizzi serves Italian food.")


def test_unknown_e2e_split_is_rejected():
    with pytest.raises(ValueError, match="unknown E2E split"):
        nlg.load_e2e("holdout", DATA_DIR)


# ---------------------------------------------------------------- WebNLG


@needs_data
@pytest.mark.parametrize("split, entries, references", [("train", 6_940, 18_102),
                                                        ("dev", 872, 2_268)])
def test_webnlg_train_and_dev_counts(split, entries, references):
    examples = nlg.load_webnlg(split, DATA_DIR)
    assert len(examples) == entries
    assert sum(len(e.targets) for e in examples) == references
    assert len({e.category for e in examples}) == 10
    assert all(e.seen for e in examples)


@needs_data
def test_webnlg_test_keeps_category_and_seen_flag():
    test = nlg.load_webnlg("test", DATA_DIR)
    assert len(test) == 1_862
    assert sum(e.seen for e in test) == 971
    assert sum(not e.seen for e in test) == 891
    assert {e.category for e in test if not e.seen} == nlg.WEBNLG2017_UNSEEN_CATEGORIES
    assert [e.example_id for e in test[:3]] == ["Id1", "Id2", "Id3"]
    first = test[0]
    assert first.category == "Airport"
    assert first.triples == (("Abilene_Regional_Airport", "cityServed", "Abilene,_Texas"),)
    assert first.source == "Abilene Regional Airport : cityServed : Abilene, Texas"
    assert first.targets == ("Abilene, Texas is served by the Abilene regional airport.",
                             "Abilene Regional Airport serves the city of Abilene in Texas.")
    unseen_only = nlg.read_webnlg_xml(
        [os.path.join(DATA_DIR, "webnlg2017", "test", "testdata_unseen_with_lex.xml")])
    assert [e.source for e in unseen_only] == [e.source for e in test if not e.seen]


@needs_data
def test_webnlg_good_only_drops_lexicalisations_marked_to_fix():
    good = nlg.load_webnlg("dev", DATA_DIR, good_only=True)
    assert sum(len(e.targets) for e in good) == 2_258


def test_webnlg_linearization_joins_triples_and_replaces_underscores():
    triples = [("Aarhus_Airport", "elevationAboveTheSeaLevel_(in_metres)", "25.0"),
               ("Aarhus_Airport", "cityServed", '"Aarhus, Denmark"')]
    assert nlg.linearize_triples(triples) == (
        'Aarhus Airport : elevationAboveTheSeaLevel (in metres) : 25.0 | '
        'Aarhus Airport : cityServed : "Aarhus, Denmark"')


def test_webnlg_xml_parsing(tmp_path):
    path = tmp_path / "tiny.xml"
    path.write_text(
        '<benchmark><entries><entry category="Politician" eid="Id7" size="2">'
        "<modifiedtripleset><mtriple>A_B | party | C</mtriple><mtriple>A_B | born | D</mtriple>"
        '</modifiedtripleset><lex comment="good" lid="Id1">A B, of C, was born in D.</lex>'
        '<lex comment="toFix" lid="Id2">A  B\n born D.</lex></entry></entries></benchmark>',
        encoding="utf-8")
    (example,) = nlg.read_webnlg_xml([path])
    assert example.source == "A B : party : C | A B : born : D"
    assert example.targets == ("A B, of C, was born in D.", "A B born D.")
    assert (example.category, example.seen, example.example_id) == ("Politician", False, "Id7")
    assert nlg.read_webnlg_xml([path], good_only=True)[0].targets == ("A B, of C, was born in D.",)


def test_webnlg_malformed_triple_is_reported():
    with pytest.raises(ValueError, match="not a WebNLG triple"):
        nlg_webnlg.parse_triple("only | two")


def test_webnlg_tfds_example_conversion():
    features = {"input_text": {"table": {"column_header": [b"subject", b"predicate", b"object"] * 2,
                                         "row_number": [0, 0, 0, 1, 1, 1],
                                         "content": [b"A_B", b"party", b"C", b"A_B", b"born", b"D"]},
                               "context": b"Politician"},
                "target_text": b"A B was born in D."}
    assert nlg_webnlg.webnlg_example_from_tfds(features) == (
        "A B : party : C | A B : born : D", "A B was born in D.", "Politician")


# ---------------------------------------------------------------- XSUM


@needs_data
@pytest.mark.parametrize("split, count, empty_documents", [("test", 321, set()),
                                                           ("validation", 1_000, {"32556640"})])
def test_xsum_samples(split, count, empty_documents):
    examples = nlg.load_xsum(split, DATA_DIR)
    assert len(examples) == count
    assert all(len(e.targets) == 1 and e.targets[0] and e.example_id for e in examples)
    # XSUM has a few articles whose body is empty (a photo gallery here).
    assert {e.example_id for e in examples if not e.source} == empty_documents
    assert len({e.example_id for e in examples}) == count
    split_ids = json.load(open(os.path.join(DATA_DIR, "xsum",
                                            "XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json")))
    assert {e.example_id for e in examples} <= set(split_ids[split])


def test_xsum_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "document": "d"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field\(s\) summary"):
        nlg.read_xsum_jsonl(path)
    path.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:1: not valid JSON"):
        nlg.read_xsum_jsonl(path)


# ---------------------------------------------------------------- shared


def test_missing_files_and_folders_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="E2E CSV file not found"):
        nlg.read_e2e_csv(tmp_path / "nope.csv")
    monkeypatch.setenv(nlg.SHARED_DATA_ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"from \$KPREFIX_SHARED_DATA"):
        shared_data_dir()
    monkeypatch.setenv(nlg.SHARED_DATA_ENV_VAR, str(tmp_path))
    assert shared_data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="XSUM JSON-lines file not found"):
        nlg.load_xsum("test")


@pytest.mark.parametrize("loader, name", [(nlg.load_e2e_tfds, "e2e_cleaned"),
                                          (nlg.load_webnlg_tfds, "web_nlg"),
                                          (nlg.load_xsum_tfds, "xsum")])
def test_unprepared_tfds_data_names_the_build_command(tmp_path, loader, name):
    with pytest.raises(FileNotFoundError, match=f"tfds build {name} --data_dir={tmp_path}"):
        loader("train", data_dir=tmp_path)


def test_training_and_evaluation_datasets():
    examples = [NLGExample("name[A]", ("A is nice.", "Try A.")), NLGExample("name[B]", ("B.",))]
    pairs = [(s.numpy().decode(), t.numpy().decode()) for s, t in nlg.training_dataset(examples)]
    assert pairs == [("name[A]", "A is nice."), ("name[A]", "Try A."), ("name[B]", "B.")]
    evaluation = list(nlg.evaluation_dataset(examples))
    assert [s.numpy().decode() for s, _ in evaluation] == ["name[A]", "name[B]"]
    assert [[r.decode() for r in refs.numpy()] for _, refs in evaluation] == [
        ["A is nice.", "Try A."], ["B."]]
    assert nlg.training_dataset(examples).element_spec == (
        tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string))
    assert nlg.evaluation_sources(examples) == ["name[A]", "name[B]"]
    with pytest.raises(ValueError, match="no \\(source, target\\) pairs"):
        nlg.training_dataset([NLGExample("name[C]", ())])


def test_load_task_dispatches_and_rejects_unknown_tasks():
    with pytest.raises(ValueError, match="unknown task"):
        nlg.load_task("dart", "test")


class FakeBuilder:
    """Stands in for a prepared TFDS builder serving a few examples."""

    def __init__(self, examples, signature):
        self.examples, self.signature, self.requested_split = examples, signature, None

    def is_prepared(self):
        return True

    def as_dataset(self, split):
        self.requested_split = split
        return tf.data.Dataset.from_generator(lambda: iter(self.examples),
                                              output_signature=self.signature)


def _table_signature(with_context):
    table = {"column_header": tf.TensorSpec([None], tf.string),
             "row_number": tf.TensorSpec([None], tf.int16),
             "content": tf.TensorSpec([None], tf.string)}
    input_text = {"table": table}
    if with_context:
        input_text["context"] = tf.TensorSpec([], tf.string)
    return {"input_text": input_text, "target_text": tf.TensorSpec([], tf.string)}


def _fake_tfds(monkeypatch, examples, signature):
    import tensorflow_datasets as tfds

    fake = FakeBuilder(examples, signature)
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: fake)
    return fake


def test_e2e_tfds_loader_groups_by_mr(monkeypatch):
    def row(name, text):
        return {"input_text": {"table": {"column_header": ["name", "area"], "row_number": [1, 1],
                                         "content": [name, "riverside"]}},
                "target_text": text}

    fake = _fake_tfds(monkeypatch, [row("A", "A one."), row("B", "B one."), row("A", "A two.")],
                      _table_signature(with_context=False))
    examples = nlg.load_e2e_tfds("dev")
    assert fake.requested_split == "validation"
    assert [(e.source, e.targets) for e in examples] == [
        ("name[A], area[riverside]", ("A one.", "A two.")),
        ("name[B], area[riverside]", ("B one.",))]


def test_webnlg_tfds_loader_groups_lexicalisations_of_one_entry(monkeypatch):
    def row(subject, text, category):
        return {"input_text": {"table": {"column_header": ["subject", "predicate", "object"],
                                         "row_number": [0, 0, 0],
                                         "content": [subject, "country", "France"]},
                               "context": category},
                "target_text": text}

    fake = _fake_tfds(monkeypatch, [row("Paris", "Paris is in France.", "City"),
                                    row("Ariane_5", "Ariane 5 is French.", "MeanOfTransportation"),
                                    row("Paris", "France has Paris.", "City")],
                      _table_signature(with_context=True))
    examples = nlg.load_webnlg_tfds("test")
    assert fake.requested_split == "test_all"
    assert [(e.source, e.targets, e.seen) for e in examples] == [
        ("Paris : country : France", ("Paris is in France.", "France has Paris."), True),
        ("Ariane 5 : country : France", ("Ariane 5 is French.",), False)]


def test_xsum_tfds_loader(monkeypatch):
    signature = {"document": tf.TensorSpec([], tf.string), "summary": tf.TensorSpec([], tf.string)}
    _fake_tfds(monkeypatch, [{"document": "Long article.", "summary": "Short."}], signature)
    (example,) = nlg.load_xsum_tfds("test")
    assert (example.source, example.targets) == ("Long article.", ("Short.",))



# ------------------------------------------------ reference input form (Li & Liang)
# Expected strings are the lines of Li & Liang's data/e2e_data/src1_{test,valid}.txt
# and data/webnlg_challenge_2017/dev.json for the same rows, written out by hand.


@needs_data
def test_e2e_reference_sources_and_tokenized_targets_match_li_and_liang_rows():
    test = nlg.load_e2e("test", DATA_DIR, source_format="reference")
    assert test[0].source == "name : Blue Spice | Type : coffee shop | area : city centre"
    assert test[0].targets[:2] == ("A coffee shop in the city centre area called Blue Spice .",
                                   "Blue Spice is a coffee shop in city centre .")
    cricketers = test[122]
    assert cricketers.source == (
        "name : The Cricketers | Type : restaurant | food : Chinese | price : £ 20 - 25 | "
        "customer rating : high | area : city centre | family friendly : no | near : All Bar One")
    assert cricketers.targets[1] == (
        "The Cricketers is a restaurant that serves Chinese food for a price range £ 20 - 25 . "
        "It is located in the city center . , close to All Bar One , is not children friendly "
        ", and has a high customer rating .")
    dev = nlg.load_e2e("validation", DATA_DIR, source_format="reference")
    assert dev[0].source == "name : Alimentum | area : city centre | family friendly : no"
    assert dev[0].targets[0] == ("There is a place in the city centre , Alimentum , that is not "
                                 "family - friendly .")
    # Training targets are the training file's own tokens.
    train = nlg.load_e2e("train", DATA_DIR, source_format="reference")
    assert train[0].source == ("name : The Vaults | Type : pub | price : more than £ 30 | "
                               "customer rating : 5 out of 5 | near : Café Adriatic")
    assert train[0].targets[0] == ("The Vaults pub near Café Adriatic has a 5 star rating . "
                                   "Prices start at £ 30 .")
    # The raw form stays available.
    raw = nlg.load_e2e("test", DATA_DIR, source_format="raw")
    assert raw[0].source == "name[Blue Spice], eatType[coffee shop], area[city centre]"
    assert raw[0].targets[0] == "A coffee shop in the city centre area called Blue Spice."


@needs_data
def test_webnlg_reference_sources_keep_underscores_and_train_on_good_lexicalisations():
    dev = nlg.load_webnlg("dev", DATA_DIR, source_format="reference")
    assert dev[0].source == " | Aarhus : leaderName : Jacob_Bundsgaard"
    assert dev[0].targets == ("The leader of Aarhus is Jacob Bundsgaard.",)
    test = nlg.load_webnlg("test", DATA_DIR, source_format="reference")
    assert test[0].source == " | Abilene_Regional_Airport : cityServed : Abilene,_Texas"
    train = nlg.load_webnlg("train", DATA_DIR, source_format="reference")
    raw_train = nlg.load_webnlg("train", DATA_DIR, source_format="raw")
    assert train[0].source == ' | Aarhus_Airport : cityServed : "Aarhus, Denmark"'
    assert raw_train[0].source == 'Aarhus Airport : cityServed : "Aarhus, Denmark"'
    assert sum(len(e.targets) for e in train) == 18_025  # the 77 marked toFix are dropped
    assert sum(len(e.targets) for e in raw_train) == 18_102


def test_e2e_tokenizer_by_hand():
    assert nlg_e2e.tokenize_e2e("It's £20-25, isn't it?") == "It 's £ 20 - 25 , is n't it ?"
    assert nlg_e2e.reference_source([("familyFriendly", "yes"), ("eatType", "pub"),
                                     ("customer rating", "1 out of 5")]) == (
        "family friendly : yes | Type : pub | customer rating : 1 out of 5")


def test_unknown_source_format_is_rejected():
    with pytest.raises(ValueError, match="source format"):
        nlg.load_e2e("test", DATA_DIR, source_format="tokens")


def test_reference_framing_tokenizes_like_li_and_liang():
    # ' {src} <eos> {tgt} <eos>': both sides with a leading and a trailing space.
    import numpy as np
    from kprefix.tasks.text_features import causal_lm_features, prompt_features
    from kprefix.tasks.tokenizers import load_tokenizer

    tokenizer = load_tokenizer("gpt2_tiny")
    end = tokenizer.end_token_id
    src, tgt = "name : A", "A ."
    expected = (list(np.asarray(tokenizer(" name : A "))) + [end]
                + list(np.asarray(tokenizer(" A . "))) + [end])
    # The feature functions run in a graph (tf.data map, tf.function).
    x, labels, weights = tf.function(lambda s, t: causal_lm_features(
        tokenizer, s, t, 32, reference_framing=True))(tf.constant([src]), tf.constant([tgt]))
    n = len(expected)
    assert list(np.asarray(x["token_ids"])[0, :n - 1]) == expected[:-1]
    assert list(np.asarray(labels)[0, :n - 1]) == expected[1:]
    source_tokens = len(np.asarray(tokenizer(" name : A ")))
    assert list(np.asarray(weights)[0, :n - 1]) == ([0.0] * source_tokens
                                                    + [1.0] * (n - 1 - source_tokens))
    prompt, lengths = tf.function(lambda s: prompt_features(
        tokenizer, s, 24, reference_framing=True))(tf.constant([src]))
    assert list(np.asarray(prompt)[0, :int(lengths[0])]) == expected[:source_tokens + 1]
