"""The papermill batch end to end: outputs, determinism, failures, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

import ledger
from datanet_lab.cli import main
from datanet_lab.params import ParameterError
from datanet_lab.batch.runner import NOTEBOOK_DIR, NOTEBOOKS, RunFailed, run_batch


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_params):
    """The tiny batch, run once (determinism is checked on its steps in tests/test_determinism.py)."""
    return run_batch(dict(tiny_params), out=tmp_path_factory.mktemp("results"))


@pytest.mark.slow
def test_run_writes_every_output(tiny_run):
    run = tiny_run
    for name in (*NOTEBOOKS, "params.yaml", "environment.json", "metrics.json", "payouts.csv", "ledger.sqlite"):
        assert (run / name).is_file(), name
    figures = {p.stem for p in (run / "figures").glob("*.png")}
    assert figures == {"training_curves", "contributor_credit", "top_influential_samples", "integrated_gradients", "payouts",
                       "lds_by_method", "removal_curves", "cost_vs_lds", "mlp_lds_by_method", "mlp_removal_curves",
                       "rounds_earnings"}
    assert {p.name for p in (run / "inference" / "figures").glob("*.png")} == {"earnings.png", "dust.png"}
    assert (run / "comparison" / "comparison.csv").is_file()
    assert (run / "comparison_mlp" / "comparison.csv").is_file()
    assert (run.parent / "latest").resolve() == run.resolve()
    assert not list(run.parent.glob(".partial-*"))


@pytest.mark.slow
def test_metrics_and_payouts_agree_with_the_ledger(tiny_run, tiny_params):
    run = tiny_run
    metrics = json.loads((run / "metrics.json").read_text())
    payouts = pd.read_csv(run / "payouts.csv", keep_default_na=False)
    assert {"contributor", "behaviour", "accepted", "rejected", "attribution", "payout"} <= set(payouts.columns)
    assert payouts["payout"].sum() == tiny_params["reward_pool"] + payouts["slashed"].sum()  # slashed stakes join the pool
    report = ledger.verify(run / "ledger.sqlite")
    assert report.ok and metrics["ledger"]["verified"]
    with ledger.Ledger(run / "ledger.sqlite") as book:
        # metrics.json records the ledger when epoch 1 was paid; notebook 09's inference epoch extends it
        assert book.entry(metrics["ledger"]["entries"]).hash == metrics["ledger"]["head_hash"]
        assert report.entries > metrics["ledger"]["entries"]
        paid = {e.payload["contributor"]: e.payload["amount"] for e in book.entries("payout") if e.payload["epoch"] == 1}
        kinds = {e.kind for e in book.entries()}
    assert paid == dict(zip(payouts["contributor"], payouts["payout"]))
    # sweep_run entries go to a sweep's ledger, generation payments to a generation run's
    assert kinds == ledger.KINDS - {"sweep_run", "generation_payment"}
    assert 0.5 < metrics["test_accuracy"] <= 1.0


@pytest.mark.slow
def test_parameters_reach_the_notebooks(tiny_run):
    executed = nbformat.read(tiny_run / "02_train.ipynb", as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "epochs = 2" in injected.source and 'dataset = "wine"' in injected.source
    assert "reward_pool" not in injected.source  # 02 does not declare it


@pytest.mark.slow
def test_a_failing_notebook_keeps_its_output_and_no_run_directory(tmp_path, tiny_params):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in NOTEBOOKS:
        notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        if name == NOTEBOOKS[1]:
            notebook.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('planted failure')"))
        nbformat.write(notebook, notebooks / name)
    out = tmp_path / "results"
    with pytest.raises(RunFailed, match="02_train.ipynb failed in cell .*planted failure"):
        run_batch(dict(tiny_params), out=out, notebook_dir=notebooks)
    (failed,) = out.iterdir()
    assert failed.name.endswith(".failed")
    assert (failed / NOTEBOOKS[1]).is_file() and not (failed / NOTEBOOKS[2]).exists()


BAD_INPUTS = {
    "missing file": (["-p", "dataset", "no/such/file.csv", "-p", "label_column", "y"], "not found: no/such/file.csv"),
    "unknown dataset": (["-p", "dataset", "mnist"], "unknown dataset 'mnist'"),
    "unknown scenario": (["-p", "scenario", "honest:8,lazy:2"], "unknown behaviour 'lazy'"),
    "unknown model": (["-p", "model", "resnet"], "unknown model 'resnet'"),
    "negative pool": (["-p", "reward_pool", "-5"], "reward_pool must be >= 0 units, got -5"),
    "non-integer pool": (["-p", "reward_pool", "1.5"], "reward_pool' must be int, got '1.5'"),
    "unknown parameter": (["-p", "learning_rate", "0.1"], "unknown parameter 'learning_rate'"),
    "unknown attribution method": (["-p", "attribution_method", "magic"], "unknown attribution_method 'magic'"),
    "one MLP retrain seed": (["-p", "mlp_seeds", "1"], "mlp_seeds must be >= 2"),
    "empty MLP ensemble": (["-p", "mlp_models", "0"], "mlp_models must be >= 1, got 0"),
    "too many contributors": (["-p", "n_contributors", "2000", "-p", "scenario", "honest:2000"], "n_contributors=2000"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_before_anything_is_written(case, tmp_path, capsys):
    args, message = BAD_INPUTS[case]
    out = tmp_path / "results"
    assert main(["run", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture
def labelled_csv(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.0], "label": ["x", "y", "x"]})
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def test_missing_label_column_and_unreadable_file_are_refused(labelled_csv, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", "-p", "dataset", str(labelled_csv), "-p", "label_column", "target", "--out", str(out)]) == 2
    assert "label column 'target' not in" in capsys.readouterr().err
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"\x00\x01 not parquet")
    assert main(["run", "-p", "dataset", str(garbage), "-p", "label_column", "y", "--out", str(out)]) == 2
    assert f"cannot read dataset file {garbage}" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_parameter_errors_in_the_runner_too():
    with pytest.raises(ParameterError, match="no notebook declares"):
        run_batch({"nonsense": 1}, out="never-written")
    assert not Path("never-written").exists()


@pytest.mark.slow
def test_console_script_exit_code_on_bad_input(tmp_path):
    script = Path(sys.executable).parent / "datanet-lab"
    done = subprocess.run([script, "run", "-p", "model", "resnet", "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown model 'resnet'" in done.stderr
