"""Session set-up for the whole suite (tests/ and nbval over notebooks/)."""

import os
import shutil
import tempfile

from datanet_lab.pipeline.run import SHARED_RUN_DIR


def pytest_configure(config):
    """Notebooks that nbval executes share one run directory, so each step of the default batch is
    computed once per session, as in ``datanet-lab run``, instead of once per notebook."""
    if SHARED_RUN_DIR not in os.environ:
        config._shared_run_dir = tempfile.mkdtemp(prefix="nbval-run-")
        os.environ[SHARED_RUN_DIR] = config._shared_run_dir


def pytest_unconfigure(config):
    if getattr(config, "_shared_run_dir", None):
        shutil.rmtree(config._shared_run_dir, ignore_errors=True)
        os.environ.pop(SHARED_RUN_DIR, None)
