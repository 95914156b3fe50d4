"""Shared fixtures of the sweep tests: the shipped tiny sweep file, writers of sweep files and of
small notebooks."""

from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_sweep() -> Path:
    """The shipped tiny sweep file (2 runs of notebooks 01-04 on wine)."""
    return ROOT / "configs" / "sweeps" / "tiny.yaml"


@pytest.fixture
def write_sweep(tmp_path):
    """Write a sweep file (a mapping) into ``tmp_path`` and return its path."""

    def write(spec: dict, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


@pytest.fixture
def write_notebook(tmp_path):
    """Write ``notebooks/check.ipynb`` into ``tmp_path``: a ``parameters`` cell (``seed = 0``,
    ``run_dir = ""``) then ``source``, importing nothing heavy. Returns the notebooks directory."""

    def write(source: str) -> Path:
        notebooks = tmp_path / "notebooks"
        notebooks.mkdir(exist_ok=True)
        parameters = nbformat.v4.new_code_cell('seed = 0\nrun_dir = ""')
        parameters.metadata["tags"] = ["parameters"]
        notebook = nbformat.v4.new_notebook(cells=[parameters, nbformat.v4.new_code_cell(source)])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, notebooks / "check.ipynb")
        return notebooks

    return write
