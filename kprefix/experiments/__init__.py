"""One module per kind of experiment; each has `run(FLAGS, prefix_config)`.

`kprefix.launch` parses the flags and calls the experiment that `--task`
names; the experiment trains, evaluates, exports and returns its results.
"""
