"""Session set-up for the whole suite (tests/ and nbval over notebooks/)."""

import os
import shutil
import tempfile

import pytest

from datanet_lab.pipeline.run import SHARED_RUN_DIR
from datanet_lab.runner import GENERATION_NOTEBOOKS, NOTEBOOKS, TEXT_NOTEBOOKS

NOTEBOOK_GROUPS = {**{name: "default-batch" for name in NOTEBOOKS}, **{name: "text-batch" for name in TEXT_NOTEBOOKS},
                   **{name: "generation-batch" for name in GENERATION_NOTEBOOKS}}
"""pytest-xdist group of each notebook's nbval items (``--dist loadgroup``): a group runs on one
worker, in order, so the default batch's notebooks reuse each other's steps in the shared run
directory while the text and generation batches run beside them."""


def pytest_configure(config):
    """Notebooks that nbval executes share one run directory, so each step of the default batch is
    computed once per session, as in ``datanet-lab run``, instead of once per notebook. Workers of
    pytest-xdist inherit the controller's directory."""
    if SHARED_RUN_DIR not in os.environ:
        config._shared_run_dir = tempfile.mkdtemp(prefix="nbval-run-")
        os.environ[SHARED_RUN_DIR] = config._shared_run_dir


def pytest_unconfigure(config):
    if getattr(config, "_shared_run_dir", None):
        shutil.rmtree(config._shared_run_dir, ignore_errors=True)
        os.environ.pop(SHARED_RUN_DIR, None)


def pytest_collection_modifyitems(items):
    for item in items:
        group = NOTEBOOK_GROUPS.get(item.path.name) if item.path.suffix == ".ipynb" else None
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
