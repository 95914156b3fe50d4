"""Shared fixtures of the sweep tests: writers of sweep files and of small notebooks."""

from pathlib import Path

import nbformat
import pytest
import yaml

@pytest.fixture
def write_sweep(tmp_path):
    """Write a sweep file (a mapping) into ``tmp_path`` and return its path."""

    def write(spec: dict, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


def write_check_notebook(directory: Path, source: str) -> Path:
    """Write ``directory/notebooks/check.ipynb``: a ``parameters`` cell (``seed = 0``,
    ``run_dir = ""``) then ``source``, importing nothing heavy. Returns the notebooks directory."""
    notebooks = directory / "notebooks"
    notebooks.mkdir(exist_ok=True)
    parameters = nbformat.v4.new_code_cell('seed = 0\nrun_dir = ""')
    parameters.metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=[parameters, nbformat.v4.new_code_cell(source)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, notebooks / "check.ipynb")
    return notebooks


@pytest.fixture(scope="session")
def write_notebook_in():
    """:func:`write_check_notebook`, for fixtures of a wider scope than ``tmp_path``."""
    return write_check_notebook


@pytest.fixture
def write_notebook(tmp_path):
    """:func:`write_check_notebook` into ``tmp_path``."""
    return lambda source: write_check_notebook(tmp_path, source)
