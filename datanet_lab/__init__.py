"""Datanet Lab's composition layer: the pipeline steps the notebooks call, the papermill batch
runner and the ``datanet-lab`` command line. Only this layer imports all of ``datanet``,
``attribution`` and ``ledger``."""
