"""Parameter sweeps: the sweep file, one task per parameter set, the Dask or local runner, the
report and reproduction of a recorded run."""
