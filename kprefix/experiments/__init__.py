"""One module per kind of experiment; each has `prepare(FLAGS, prefix_config)`.

`kprefix.launch` parses the flags and calls `prepare` of the experiment that
`--task` names: it loads the data, builds and compiles the model and raises a
usage error for anything wrong, writing nothing. It returns a function that
trains, evaluates, exports and returns the results, which the launcher calls
once it has locked the workdir.
"""
