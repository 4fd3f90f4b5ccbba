"""Official-compatible scorers for the text-generation benchmarks.

* :mod:`kprefix.metrics.e2e` -- E2E: BLEU, NIST (:mod:`~kprefix.metrics.mteval`),
  METEOR, ROUGE_L, CIDEr (:mod:`~kprefix.metrics.coco_caption`).
* :mod:`kprefix.metrics.webnlg` -- WebNLG 2017: BLEU (:mod:`~kprefix.metrics.multi_bleu`),
  METEOR (:mod:`~kprefix.metrics.meteor`), TER (:mod:`~kprefix.metrics.ter`) on
  seen / unseen / all categories.
* :mod:`kprefix.metrics.rouge` -- XSUM: ROUGE-1/2/L F-measure.

``python -m kprefix.evaluate`` runs them on files and prints JSON.
"""
