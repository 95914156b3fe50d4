"""Fixtures of the serving tests: a tiny finished run, and a fresh copy of it per test."""

import shutil
from pathlib import Path

import pytest

from datanet_lab import pipeline


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_params):
    """A tiny finished logreg run (never served: tests serve copies)."""
    run = pipeline.open_run(str(tmp_path_factory.mktemp("built")), **tiny_params)
    pipeline.attribute(run)
    return run.directory


@pytest.fixture
def run_dir(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "run"))
