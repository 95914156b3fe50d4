"""Real sweeps, with real kernels, processes and ledgers, of a one-cell notebook: a kill and a
resume, Dask vs the local pool, reproduce, a failure table, and a kernel that fails to start.
(The notebook chain itself is run, and checked for determinism, by tests/test_runner.py.)"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

import ledger
from datanet_lab.cli import main
from datanet_lab.sweeps.reproduce import find_record
from datanet_lab.sweeps.sweep import KIND, run_sweep
from datanet_lab.sweeps.sweep_config import load
from datanet_lab.sweeps.sweep_task import Task, execute

RUN_ID = re.compile(r"^[0-9a-f]{12}$")


def finished_runs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if RUN_ID.match(p.name))


def sweep_records(directory: Path) -> list[dict]:
    with ledger.Ledger(directory / "ledger.sqlite") as book:
        return [e.payload for e in book.entries(KIND)]


PLUMBING = """import json, os, time
time.sleep(3)  # long enough for the kill below to find this run started and unfinished
json.dump({"seed_squared": seed * seed, "nested": {"seed": seed}}, open(os.path.join(run_dir, "metrics.json"), "w"))
open(os.path.join(run_dir, "payouts.csv"), "w").write(f"contributor,payout\\nc00,{1000 + seed}\\n")"""


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, write_notebook_in) -> Path:
    """A sweep of two runs (seeds 0 and 1) of a one-cell notebook that writes metrics and payouts."""
    directory = tmp_path_factory.mktemp("plumbing")
    notebooks = write_notebook_in(directory, PLUMBING)
    path = directory / "tiny.yaml"
    path.write_text(json.dumps({"name": "tiny", "notebook_dir": str(notebooks), "notebooks": ["check.ipynb"],
                                "grid": {"product": {"seed": [0, 1]}}}))
    return path


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, tiny_sweep):
    """The sweep killed (SIGKILL to its process group) once its first run finished and the
    second had started, then run again to the end. Returns (sweep dir, first run, its mtime)."""
    out = tmp_path_factory.mktemp("runs")
    directory = out / "tiny"
    command = [Path(sys.executable).parent / "datanet-lab", "sweep", str(tiny_sweep), "--workers", "1", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (directory.is_dir() and finished_runs(directory)) and time.monotonic() < deadline:
            assert process.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
        while not list(directory.glob(".partial-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (first,) = finished_runs(directory)
    assert list(directory.glob(".partial-*")), "the second run had not started when the sweep was killed"
    mtime = (first / "metrics.json").stat().st_mtime_ns
    result = run_sweep(load(tiny_sweep), out=out, workers=1)
    assert (result.skipped, result.done, len(result.failures)) == (1, 1, 0)
    return directory, first, mtime


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_runs_each_run_once(resumed, tiny_sweep):
    directory, first, mtime = resumed
    runs = finished_runs(directory)
    assert [r.name for r in runs] == sorted(r.run_id for r in load(tiny_sweep).runs)
    assert not list(directory.glob(".partial-*")) and not list(directory.glob("*.failed"))
    assert (first / "metrics.json").stat().st_mtime_ns == mtime  # the finished run was not executed again
    ok = [r["run_id"] for r in sweep_records(directory) if r["status"] == "ok"]
    assert sorted(ok) == [r.name for r in runs]
    assert ledger.verify(directory / "ledger.sqlite").ok
    assert pd.read_csv(directory / "failures.csv").empty


@pytest.mark.slow
def test_each_run_directory_and_record_is_complete(resumed, tiny_sweep):
    directory, _, _ = resumed
    chain = [nb.name for nb in load(tiny_sweep).notebooks]
    for record in sweep_records(directory):
        run = directory / record["run_id"]
        assert [nb["name"] for nb in record["notebooks"]] == chain
        for name in (*chain, "params.yaml", "environment.json", "metrics.json", "payouts.csv"):
            assert (run / name).is_file(), name
        assert record["metrics"] == json.loads((run / "metrics.json").read_text())
        assert record["metrics"]["seed_squared"] == record["params"]["seed"] ** 2 and record["params"]["seed"] in (0, 1)
        assert record["packages"] == json.loads((run / "environment.json").read_text())["packages"]
        assert record["executor"] == "local" and record["packages_sha256"] and record["outputs"]["payouts.csv"]


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_metrics_and_outputs(resumed, tiny_sweep, tmp_path_factory):
    directory, _, _ = resumed
    out = tmp_path_factory.mktemp("dask")
    assert main(["sweep", str(tiny_sweep), "--executor", "dask", "--workers", "2", "--out", str(out)]) == 0
    local = {r["run_id"]: r for r in sweep_records(directory) if r["status"] == "ok"}
    dask = {r["run_id"]: r for r in sweep_records(out / "tiny")}
    assert set(dask) == set(local) and all(r["executor"] == "dask" for r in dask.values())
    for run_id, record in dask.items():
        assert record["metrics"] == local[run_id]["metrics"]
        assert record["outputs"] == local[run_id]["outputs"]


@pytest.mark.slow
def test_reproduce_a_finished_run_matches_every_metric_and_hash(resumed, tmp_path, capsys):
    directory, first, _ = resumed
    record = next(r for r in sweep_records(directory) if r["run_id"] == first.name)
    capsys.readouterr()
    assert main(["reproduce", str(first), "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    n_metrics = len(pd.json_normalize(record["metrics"]).columns)
    assert f"metric: {n_metrics}/{n_metrics} match" in out
    assert f"output: {len(record['outputs'])}/{len(record['outputs'])} match" in out and "payouts.csv" in record["outputs"]
    assert out.rstrip().endswith("REPRODUCED") and "NOT REPRODUCED" not in out
    assert (tmp_path / "again" / first.name / "payouts.csv").read_bytes() == (first / "payouts.csv").read_bytes()
    assert main(["reproduce", str(first), "--out", str(tmp_path / "again")]) == 2  # not a fresh directory
    assert "is not empty" in capsys.readouterr().err
    (tmp_path / "afile").write_text("keep me")
    assert main(["reproduce", str(first), "--out", str(tmp_path / "afile")]) == 2
    assert f"reproduce directory {tmp_path / 'afile'} exists and is not a directory" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.slow
def test_reproduce_refuses_a_run_without_a_record(resumed, tmp_path):
    directory, _, _ = resumed
    with pytest.raises(Exception, match="records no finished run 'aaaaaaaaaaaa'"):
        find_record(directory / "aaaaaaaaaaaa")
    with pytest.raises(Exception, match="no sweep ledger at"):
        find_record(tmp_path / "run")


@pytest.mark.slow
def test_a_raising_notebook_goes_to_the_failure_table_and_the_others_go_on(write_sweep, write_notebook, tmp_path):
    notebooks = write_notebook("if seed == 1:\n    raise ValueError(f'planted failure at seed {seed}')")
    path = write_sweep({"name": "failing", "notebook_dir": str(notebooks), "notebooks": ["check.ipynb"],
                        "grid": {"product": {"seed": [0, 1]}}})
    out = tmp_path / "runs"
    assert main(["sweep", str(path), "--workers", "2", "--out", str(out)]) == 1
    directory = out / "failing"
    failures = pd.read_csv(directory / "failures.csv")
    (failed,) = directory.glob("*.failed")
    (done,) = finished_runs(directory)
    assert list(failures.columns) == ["run_id", "notebook", "cell_index", "ename", "evalue"]
    assert len(failures) == 1
    row = failures.iloc[0]
    assert failed.name == f"{row.run_id}.failed" and "seed: 1" in (failed / "params.yaml").read_text()
    # the raising cell is the source's second cell, third once papermill injected the parameters
    assert (row.notebook, row.cell_index, row.ename, row.evalue) == ("check.ipynb", 2, "ValueError", "planted failure at seed 1")
    executed = nbformat.read(failed / "check.ipynb", as_version=4)  # the partial output notebook is kept
    errors = [c for c in executed.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
    assert [c.source for c in errors] == ["if seed == 1:\n    raise ValueError(f'planted failure at seed {seed}')"]
    assert "seed: 0" in (done / "params.yaml").read_text()
    statuses = sorted((r["run_id"], r["status"]) for r in sweep_records(directory))
    assert statuses == sorted([(row.run_id, "failed"), (done.name, "ok")])


@pytest.mark.slow
def test_a_kernel_that_fails_to_start_is_retried(write_sweep, write_notebook, tmp_path, monkeypatch):
    """A real kernelspec whose first start exits at once; the second start runs ipykernel."""
    marker = tmp_path / "started-once"
    kernel_dir = tmp_path / "jupyter" / "kernels" / "flaky"
    kernel_dir.mkdir(parents=True)
    launcher = (f"import os, runpy, sys\nif not os.path.exists({str(marker)!r}):\n    open({str(marker)!r}, 'w').close()\n"
                "    sys.exit(1)\nsys.argv = ['ipykernel_launcher', *sys.argv[1:]]\nrunpy.run_module('ipykernel_launcher', run_name='__main__')\n")
    (kernel_dir / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-c", launcher, "-f", "{connection_file}"], "display_name": "flaky", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebooks = write_notebook("print(seed)")
    path = write_sweep({"name": "flaky", "notebook_dir": str(notebooks), "notebooks": ["check.ipynb"], "kernel": "flaky"})
    result = run_sweep(load(path), out=tmp_path / "runs")
    (record,) = sweep_records(result.directory)
    assert marker.exists() and record["status"] == "ok" and record["attempts"] == 2


def test_a_kernel_that_vanished_after_the_check_fails_the_run_without_a_partial_directory(write_notebook, tmp_path):
    notebooks = write_notebook("print(seed)")
    task = Task("aaaaaaaaaaaa", {"seed": 0}, (notebooks / "check.ipynb",), tmp_path / "runs", kernel="no-such-kernel")
    outcome = execute(task)
    assert outcome.failure["ename"] == "NoSuchKernel" and outcome.attempts == 1  # not retried
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["aaaaaaaaaaaa.failed"]
