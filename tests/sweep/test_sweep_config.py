"""Sweep files: grid expansion, stable run ids, and strict parameter checks before anything runs."""

import hashlib
from pathlib import Path

import pytest
import rfc8785

from datanet_lab.cli import main
from datanet_lab.params import DEFAULTS, RUN_DIR, ParameterError
from datanet_lab.batch.runner import NOTEBOOK_DIR, NOTEBOOKS, declared_parameters
from datanet_lab.sweeps.sweep_config import load

FIXED = {"dataset": "wine", "n_contributors": 5, "scenario": "honest:5"}


def test_product_and_zip_axes_expand_in_order(write_sweep):
    path = write_sweep({"fixed": FIXED, "grid": {
        "product": {"model": ["logreg", "mlp"], "seed": [0, 1]},
        "zip": [{"epochs": [1, 2], "noise_rate": [0.1, 0.2]}],
    }})
    sweep = load(path)
    points = [{k: r.params[k] for k in ("model", "seed", "epochs", "noise_rate")} for r in sweep.runs]
    expected = [
        {"model": m, "seed": s, "epochs": e, "noise_rate": n}
        for m in ("logreg", "mlp") for s in (0, 1) for e, n in ((1, 0.1), (2, 0.2))
    ]
    assert points == expected
    assert sweep.name == "sweep" and [nb.name for nb in sweep.notebooks] == list(NOTEBOOKS)
    assert all(r.params["dataset"] == "wine" and r.params["reward_pool"] == DEFAULTS["reward_pool"] for r in sweep.runs)


def test_run_ids_are_hashes_of_the_full_parameters(write_sweep):
    path = write_sweep({"name": "ids", "fixed": FIXED, "grid": {"product": {"seed": [0, 1]}}})
    runs = load(path).runs
    chain = set().union(*(declared_parameters(NOTEBOOK_DIR / n) for n in NOTEBOOKS)) - {RUN_DIR}
    full = {k: v for k, v in {**DEFAULTS, **FIXED, "seed": 0}.items() if k in chain}  # the default batch's parameters
    assert runs[0].params == full
    assert runs[0].run_id == hashlib.sha256(rfc8785.dumps(full)).hexdigest()[:12]
    assert runs[0].run_id != runs[1].run_id
    assert [r.run_id for r in load(path).runs] == [r.run_id for r in runs]


def test_an_int_for_a_float_parameter_is_the_same_run(write_sweep):
    as_int = load(write_sweep({"fixed": {**FIXED, "noise_rate": 0}}, "a.yaml")).runs[0]
    as_float = load(write_sweep({"fixed": {**FIXED, "noise_rate": 0.0}}, "b.yaml")).runs[0]
    assert as_int.run_id == as_float.run_id and isinstance(as_int.params["noise_rate"], float)


BAD_SWEEPS = {
    "unknown parameter": ({"fixed": {**FIXED, "learning_rate": 0.1}},
                          "unknown parameter 'learning_rate' (value 0.1): declared by no notebook of ['01_build_datanet.ipynb'"),
    "str for int": ({"fixed": {**FIXED, "epochs": "2"}},
                    "parameter 'epochs' = '2' is str, but 02_train.ipynb declares int (default 10)"),
    "float for int": ({"fixed": FIXED, "grid": {"product": {"seed": [0, 1.5]}}},
                      "parameter 'seed' = 1.5 is float, but 01_build_datanet.ipynb declares int (default 0)"),
    "bool for int": ({"fixed": {**FIXED, "reward_pool": True}},
                     "parameter 'reward_pool' = True is bool, but 04_ledger_and_payouts.ipynb declares int"),
    "bad value": ({"fixed": {**FIXED, "dataset": "mnist"}}, "unknown dataset 'mnist'"),
    "zip lengths": ({"fixed": FIXED, "grid": {"zip": [{"seed": [0, 1], "epochs": [1]}]}},
                    "grid.zip[0] zips lists of different lengths {'seed': 2, 'epochs': 1}"),
    "set twice": ({"fixed": {**FIXED, "seed": 0}, "grid": {"product": {"seed": [1, 2]}}},
                  "parameter(s) ['seed'] set in more than one place"),
    "repeated value": ({"fixed": FIXED, "grid": {"product": {"seed": [0, 0]}}}, "grid.product.seed lists 0 more than once"),
    "empty axis": ({"fixed": FIXED, "grid": {"product": {"seed": []}}}, "grid.product.seed must be a non-empty list"),
    "unknown key": ({"fixed": FIXED, "axes": {}}, "unknown key(s) ['axes']"),
    "unknown grid key": ({"fixed": FIXED, "grid": {"cartesian": {}}}, "unknown key(s) ['grid.cartesian']"),
    "missing notebook": ({"notebooks": ["99_nothing.ipynb"]}, "99_nothing.ipynb"),
}


@pytest.mark.parametrize("case", BAD_SWEEPS)
def test_bad_sweep_is_refused_naming_the_problem_and_writes_nothing(case, write_sweep, tmp_path, capsys):
    spec, message = BAD_SWEEPS[case]
    path = write_sweep(spec)
    with pytest.raises(ParameterError) as raised:
        load(path)
    assert message in str(raised.value) and str(path) in str(raised.value)
    out = tmp_path / "runs"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler 'tcp://127.0.0.1:8786' needs --executor dask"),
])
def test_bad_executor_options_are_refused_before_anything_is_written(args, message, write_sweep, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["sweep", str(write_sweep({"fixed": FIXED})), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unreadable_sweep_file_is_refused(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("fixed: [unclosed\n")
    with pytest.raises(ParameterError, match=f"cannot read sweep file {broken}"):
        load(broken)
    with pytest.raises(ParameterError, match="cannot read sweep file"):
        load(tmp_path / "absent.yaml")


@pytest.mark.parametrize("name", ["tiny.yaml", "methods_vs_scenarios.yaml"])
def test_the_shipped_sweep_files_load_and_name_the_batch_notebooks(name):
    sweep = load(Path(__file__).resolve().parents[2] / "configs" / "sweeps" / name)
    assert sweep.runs and {nb.name for nb in sweep.notebooks} <= set(NOTEBOOKS)
    assert all(nb.is_file() for nb in sweep.notebooks)
