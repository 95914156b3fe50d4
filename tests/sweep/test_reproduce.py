"""``datanet-lab reproduce`` tells matching from differing metrics, hashes and notebooks
(on a small notebook; a whole-chain run reproduces in test_sweep_runs.py)."""

import json
from importlib import metadata

import pandas as pd
import pytest

from datanet_lab import provenance
from datanet_lab.sweeps import reproduce
from datanet_lab.cli import main
from datanet_lab.sweeps.sweep import run_sweep
from datanet_lab.sweeps.sweep_config import load

SOURCE = """import json, os, random
metrics = {"seed_twice": 2 * seed, "noise": random.random()}
open(os.path.join(run_dir, "metrics.json"), "w").write(json.dumps(metrics))
open(os.path.join(run_dir, "fixed.txt"), "w").write(f"seed {seed}")"""


@pytest.mark.slow  # two sweeps of one notebook each, and a reproduce: three kernel starts
def test_reproduce_reports_what_differs_and_exits_1(write_sweep, write_notebook, tmp_path, capsys):
    notebooks = write_notebook(SOURCE)
    path = write_sweep({"name": "noisy", "notebook_dir": str(notebooks), "notebooks": ["check.ipynb"],
                        "fixed": {"seed": 3}})
    result = run_sweep(load(path), out=tmp_path / "runs")
    (run,) = [p for p in result.directory.iterdir() if (p / "metrics.json").is_file()]
    (notebooks / "check.ipynb").write_text((notebooks / "check.ipynb").read_text().replace("2 * seed", "2 * seed + 0"))
    capsys.readouterr()
    assert main(["reproduce", str(run), "--out", str(tmp_path / "again")]) == 1
    out = capsys.readouterr().out
    # metrics.json is compared metric by metric, not as an output hash (provenance.SIGNED)
    assert "metric: 1/2 match" in out and "output: 2/2 match" in out and out.rstrip().endswith("NOT REPRODUCED")
    differing = {line.split()[1] for line in out.splitlines() if line.rstrip().endswith("False")}
    # the commit and source hashes are not asserted: the tree may change while the test runs
    assert differing - {"git_commit", "code_sha256"} == {"noise", "notebook"}  # "notebook check.ipynb"
    assert (tmp_path / "again" / run.name / "fixed.txt").read_text() == "seed 3"
    recorded = json.loads((run / provenance.ENVIRONMENT_FILE).read_text())
    assert recorded["packages"]["transformers"] == metadata.version("transformers")
    assert "package transformers" not in differing  # same environment: no package row differs


def test_package_differences_names_changed_added_and_removed_packages():
    recorded = {"numpy": "2.4.6", "pandas": "3.1.1", "torch": "2.13.0"}
    current = {"numpy": "2.4.6", "pandas": "3.2.0", "scipy": "1.17.0"}
    assert provenance.package_differences(recorded, current) == {
        "pandas": ("3.1.1", "3.2.0"), "scipy": (None, "1.17.0"), "torch": ("2.13.0", None)}


def test_the_environment_record_pins_every_installed_package_and_the_lock():
    record = provenance.environment_record()
    assert record["packages"]["torch"] == metadata.version("torch")
    assert len(record["packages"]) == len({d.metadata["Name"].lower() for d in metadata.distributions()})
    assert record["lock_sha256"] == provenance.file_sha256(provenance.REPO_ROOT / provenance.LOCK_FILE)


def test_reproduce_says_when_the_environment_differs(monkeypatch, tmp_path, capsys):
    rows = pd.DataFrame([["metric", "loss", 1.0, 1.0, True],
                         ["environment", "package transformers", "5.24.0", "5.25.0", False]], columns=reproduce.COLUMNS)
    monkeypatch.setattr(reproduce, "reproduce", lambda run, out: reproduce.Comparison("r1", tmp_path, rows, None))
    assert main(["reproduce", str(tmp_path)]) == 0  # the numbers match: reproduced, with a warning
    out = capsys.readouterr().out
    assert "package transformers 5.24.0 5.25.0" in " ".join(out.split())
    assert "environment differs from the recorded one in 1 package(s)" in out and out.rstrip().endswith("REPRODUCED")
