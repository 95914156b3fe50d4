"""The tabular run's steps: build, train, attribute and pay (re-exported by :mod:`datanet_lab.pipeline`)."""
