r"""Scores generated text with the official metrics of E2E, WebNLG 2017 or XSUM.

Prints one JSON object with the scores.

    python -m kprefix.evaluate --task=e2e \
        --references=../shared/data/e2e/testset_w_refs.csv \
        --predictions=../shared/data/e2e/reference_outputs/tgen.tsv

Inputs per task:

* e2e: ``--references`` is an E2E CSV (``mr``, ``ref``; several rows per MR).
  ``--predictions`` is either one output per line, in the order each MR first
  appears in the references, or a TSV with a header naming an MR column and an
  output column (like the challenge's ``tgen.tsv``), matched by MR.
* webnlg: ``--references`` is the official ``eval_references`` folder (or the
  WebNLG 2017 folder that contains it); seen/unseen comes from the test XML
  (``--webnlg_test_xml``, found next to it by default). ``--predictions`` has
  one output per test entry, in test order.
* xsum: ``--references`` is a JSON-lines file with a ``summary`` field (or one
  reference summary per line); ``--predictions`` one summary per line.

Without Java, METEOR is reported as ``"unavailable: <reason>"`` and the other
metrics are still computed.
"""

from __future__ import annotations

import csv
import json
import pathlib
import re
import sys
from typing import Dict, List, Optional, Sequence

from absl import app, flags

from kprefix import cli
from kprefix.data.nlg_e2e import read_e2e_csv
from kprefix.data.nlg_webnlg import WEBNLG_TEST_FILE, read_webnlg_xml
from kprefix.data.nlg_xsum import read_xsum_jsonl
from kprefix.metrics.e2e import score_e2e
from kprefix.metrics.rouge import rouge_f1
from kprefix.metrics.webnlg import read_text_lines, read_webnlg_references, score_webnlg

TASKS = ("e2e", "webnlg", "xsum")

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags; defined only when it runs, so importing stays free of them
    (`kprefix.launch` has a `--task` of its own)."""
    flags.DEFINE_enum("task", None, list(TASKS), "Benchmark whose official metrics to compute.")
    flags.DEFINE_string("references", None,
                        "Reference file or folder (see the module docstring).")
    flags.DEFINE_string("predictions", None, "File with the system outputs, one per line.")
    flags.DEFINE_string("webnlg_test_xml", None,
                        "WebNLG 2017 test XML giving each entry's category (seen/unseen); "
                        f"default: {WEBNLG_TEST_FILE} in the WebNLG folder the references "
                        "belong to.")
    flags.DEFINE_bool("meteor", True, "Compute METEOR (needs Java; ~30-40 s).")
    flags.DEFINE_bool("java", True,
                      "Use Java where available (METEOR, exact PTB tokenisation).")


class InputError(Exception):
    """A problem with the command-line inputs; the message names the flag and the fix."""


_MR_HEADER = re.compile(r"^(mr|src|source|meaning[_ .-]?rep(resentation)?)s?$", re.IGNORECASE)
_OUTPUT_HEADER = re.compile(r"^(out(put)?|sys(tem)?([_ .-]out(put)?)?|pred(iction)?|hyp(othesis)?)s?$",
                            re.IGNORECASE)


def _existing(path: Optional[str], flag: str, what: str, folder: bool = False) -> pathlib.Path:
    if not path:
        raise InputError(f"--{flag} is required: {what}")
    candidate = pathlib.Path(path)
    if folder and not candidate.exists():
        raise InputError(f"--{flag}: no such file or folder: {candidate} ({what})")
    if not folder and not candidate.is_file():
        raise InputError(f"--{flag}: file not found: {candidate} ({what})")
    return candidate


def read_e2e_predictions(path: pathlib.Path, sources: Sequence[str]) -> List[str]:
    """Outputs in the order of ``sources``: from a plain file, or an MR/output TSV matched by MR."""
    lines = read_text_lines(path)
    header = lines[0].split("\t") if lines else []
    if len(header) == 2 and _MR_HEADER.match(header[0].strip()) and _OUTPUT_HEADER.match(header[1].strip()):
        by_mr: Dict[str, str] = {}
        for row in csv.reader(lines[1:], delimiter="\t"):
            if row:
                by_mr[row[0]] = row[1] if len(row) > 1 else ""
        missing = [mr for mr in sources if mr not in by_mr]
        if missing:
            raise InputError(f"--predictions: {path} has no output for {len(missing)} MR(s) of "
                             f"--references, e.g. {missing[0]!r}")
        return [by_mr[mr] for mr in sources]
    if len(lines) != len(sources):
        raise InputError(
            f"--predictions has {len(lines)} lines but --references has {len(sources)} distinct "
            "MRs; write one output per MR, in the order the MRs first appear in the references")
    return lines


def evaluate_e2e(references_path: pathlib.Path, predictions_path: pathlib.Path,
                 with_meteor: bool, use_java: Optional[bool]) -> Dict:
    examples = read_e2e_csv(references_path)
    if not examples or any(not e.targets for e in examples):
        raise InputError(f"--references: {references_path} needs mr and ref columns with at least "
                         "one reference per MR")
    predictions = read_e2e_predictions(predictions_path, [e.source for e in examples])
    scores = score_e2e(predictions, [list(e.targets) for e in examples], use_java=use_java,
                       with_meteor=with_meteor)
    return {"num_segments": len(examples), **scores.as_dict()}


def _webnlg_locations(references: pathlib.Path, test_xml: Optional[str]):
    eval_references = references / "eval_references" if (references / "eval_references").is_dir() \
        else references
    if test_xml:
        xml_path = _existing(test_xml, "webnlg_test_xml", "the WebNLG 2017 test XML with lexicalisations")
    else:
        candidates = [eval_references.parent / WEBNLG_TEST_FILE, references / WEBNLG_TEST_FILE]
        xml_path = next((c for c in candidates if c.is_file()), None)
        if xml_path is None:
            raise InputError(f"cannot find {WEBNLG_TEST_FILE} next to --references {references}; "
                             "pass it with --webnlg_test_xml")
    return eval_references, xml_path


def evaluate_webnlg(references_path: pathlib.Path, predictions_path: pathlib.Path,
                    test_xml: Optional[str], with_meteor: bool, use_java: Optional[bool]) -> Dict:
    eval_references, xml_path = _webnlg_locations(references_path, test_xml)
    seen = [bool(example.seen) for example in read_webnlg_xml([xml_path])]
    references = read_webnlg_references(eval_references, seen)
    predictions = read_text_lines(predictions_path)
    if len(predictions) != len(references):
        raise InputError(f"--predictions has {len(predictions)} lines but the WebNLG test set has "
                         f"{len(references)} entries; write one output per entry, in test order")
    return score_webnlg(predictions, references, use_java=use_java, with_meteor=with_meteor)


def evaluate_xsum(references_path: pathlib.Path, predictions_path: pathlib.Path) -> Dict:
    if references_path.suffix == ".jsonl":
        references = [example.targets[0] for example in read_xsum_jsonl(references_path)]
    else:
        references = read_text_lines(references_path)
    predictions = read_text_lines(predictions_path)
    if len(predictions) != len(references):
        raise InputError(f"--predictions has {len(predictions)} lines but --references has "
                         f"{len(references)} summaries; write one summary per line, in order")
    return {"num_segments": len(references), **rouge_f1(predictions, references)}


def run(task: str, references: Optional[str], predictions: Optional[str],
        webnlg_test_xml: Optional[str] = None, with_meteor: bool = True, use_java: bool = True) -> Dict:
    """Computes the scores dict that the command prints."""
    references_path = _existing(references, "references", f"the {task} references",
                                folder=(task == "webnlg"))
    predictions_path = _existing(predictions, "predictions", "the system outputs")
    java_choice = None if use_java else False
    if task == "e2e":
        scores = evaluate_e2e(references_path, predictions_path, with_meteor, java_choice)
    elif task == "webnlg":
        scores = evaluate_webnlg(references_path, predictions_path, webnlg_test_xml, with_meteor,
                                 java_choice)
    elif task == "xsum":
        scores = evaluate_xsum(references_path, predictions_path)
    else:
        raise InputError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
    return {"task": task, "references": str(references_path), "predictions": str(predictions_path),
            **scores}


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.task is None:
        raise app.UsageError("--task is required (e2e, webnlg or xsum)")
    try:
        scores = run(FLAGS.task, FLAGS.references, FLAGS.predictions, FLAGS.webnlg_test_xml,
                     FLAGS.meteor, FLAGS.java)
    except (InputError, FileNotFoundError, ValueError) as error:
        print(f"kprefix.evaluate: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(scores, indent=2))


def console_main():
    """The `kprefix-evaluate` console script."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    console_main()
