"""Each notebook declares its parameters in a tagged cell, with the batch's defaults."""

import ast
from pathlib import Path

import nbformat
import pytest

from datanet_lab.params import DEFAULTS, RUN_DIR
from datanet_lab.batch.runner import GENERATION_NOTEBOOKS, NOTEBOOK_DIR, NOTEBOOKS, TEXT_NOTEBOOKS, declared_parameters

ALL = (*NOTEBOOKS, *TEXT_NOTEBOOKS, *GENERATION_NOTEBOOKS)


@pytest.mark.parametrize("name", ALL)
def test_parameters_cell_uses_the_batch_defaults(name):
    declared = declared_parameters(NOTEBOOK_DIR / name)
    assert RUN_DIR in declared
    defaults = {k: ast.literal_eval(v) for k, v in declared.items() if k != RUN_DIR}
    assert defaults == {k: DEFAULTS[k] for k in defaults}


@pytest.mark.parametrize("name", ALL)
def test_parameters_cell_is_the_first_code_cell(name):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", [])


def test_the_notebook_directory_holds_exactly_the_three_batches():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(ALL)


def test_every_parameter_is_declared_by_some_notebook():
    declared = set().union(*(declared_parameters(NOTEBOOK_DIR / n) for n in ALL))
    assert declared == set(DEFAULTS) | {RUN_DIR}


@pytest.mark.parametrize("name", ALL)
def test_stored_outputs_hold_no_paths_or_timings(name):
    text = Path(NOTEBOOK_DIR / name).read_text()
    for leak in ("/tmp/", "/work/", "datanet-lab-", "0x7f"):
        assert leak not in text, f"{name} stores {leak!r} in its outputs"


def test_an_empty_run_dir_opens_the_shared_directory_when_one_is_named(monkeypatch, tmp_path):
    from datanet_lab.pipeline.run import SHARED_RUN_DIR, open_run
    monkeypatch.setenv(SHARED_RUN_DIR, str(tmp_path / "shared"))
    assert open_run("").directory == tmp_path / "shared" and (tmp_path / "shared").is_dir()
    assert open_run(str(tmp_path / "own")).directory == tmp_path / "own"  # a given run_dir wins
    monkeypatch.delenv(SHARED_RUN_DIR)
    fresh = open_run("").directory
    assert fresh != tmp_path / "shared" and fresh.name.startswith("datanet-lab-")


@pytest.mark.parametrize("name", ALL)
def test_every_declared_parameter_is_used_after_the_parameters_cell(name):
    """A parameter the notebook declares but never reads would be silently ignored by a run."""
    import re
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    later = "\n".join(code[1:])
    unused = [p for p in declared_parameters(NOTEBOOK_DIR / name) if not re.search(rf"\b{p}\b", later)]
    assert unused == []
