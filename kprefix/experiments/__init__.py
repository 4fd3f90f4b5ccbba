"""One module per kind of experiment; each has `prepare(config)`.

`kprefix.run` calls `prepare` of the experiment that `RunConfig.task` names
(`EXPERIMENTS`): it loads the data, builds and compiles the model and raises
a usage error for anything wrong, writing nothing. It returns a function
that trains, evaluates, exports and returns the results, which the run calls
once it has locked the workdir.

>>> EXPERIMENTS["summarization"]
'kprefix.experiments.text_generation'
"""

# Task -> the module whose `prepare(config)` runs it.
EXPERIMENTS = {
    "image_classification": "kprefix.experiments.image_classification",
    "table_to_text": "kprefix.experiments.text_generation",
    "summarization": "kprefix.experiments.text_generation",
}
TASKS = tuple(EXPERIMENTS)
