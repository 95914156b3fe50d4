"""``datanet-lab report``: the table of runs and mean ± 95% CI figures, on hand-made run directories."""

import json

import pandas as pd
import pytest
import yaml

from datanet import DatanetError
from datanet_lab.cli import main
from datanet_lab.sweeps.report import collect, mean_ci

ACCURACY = {("logreg", 0): 0.5, ("logreg", 1): 0.6, ("logreg", 2): 0.7, ("mlp", 0): 0.8, ("mlp", 1): 0.8, ("mlp", 2): 0.9}


@pytest.fixture
def sweep_dir(tmp_path):
    """Six finished runs (2 models x 3 seeds), one failed run and a half-built one."""
    directory = tmp_path / "runs" / "hand"
    for (model, seed), accuracy in ACCURACY.items():
        run = directory / f"{model}-{seed}"
        run.mkdir(parents=True)
        (run / "params.yaml").write_text(yaml.safe_dump({"model": model, "seed": seed, "reward_pool": 100, "dataset": "wine"}))
        (run / "metrics.json").write_text(json.dumps({
            "test_accuracy": accuracy, "attribution": {"c00": 1.5, "c01": -0.5}, "payout": {"c00": 100, "c01": 0},
            "ledger": {"entries": 7, "head_hash": "ab" * 32, "verified": True},
        }))
        pd.DataFrame({"contributor": ["c00", "c01", "c02"], "behaviour": ["honest", "noisy", "honest"],
                      "payout": [60, 10, 30]}).to_csv(run / "payouts.csv", index=False)
    (directory / "x.failed").mkdir()
    (directory / ".partial-y").mkdir()
    (directory / ".partial-y" / "params.yaml").write_text("seed: 9\n")
    return directory


def test_the_table_has_a_row_per_finished_run_with_payout_shares(sweep_dir):
    table, params, metrics = collect(sweep_dir)
    assert sorted(table["run_id"]) == sorted(f"{m}-{s}" for m, s in ACCURACY)
    assert params == ["dataset", "model", "reward_pool", "seed"]
    assert set(metrics) == {"test_accuracy", "ledger.entries", "ledger.head_hash", "ledger.verified",
                            "payout_share.honest", "payout_share.noisy"}
    row = table.set_index("run_id").loc["mlp-2"]
    assert (row["test_accuracy"], row["payout_share.honest"], row["payout_share.noisy"]) == (0.9, 0.9, 0.1)


def test_mean_and_95_percent_interval_over_seeds():
    summary = mean_ci(pd.Series([0.5, 0.6, 0.7]))
    # t(0.975, 2 d.f.) = 4.302652729911275; sample sd = 0.1
    assert summary["mean"] == pytest.approx(0.6)
    assert summary["ci95"] == pytest.approx(4.302652729911275 * 0.1 / 3**0.5)
    assert summary["n"] == 3
    assert pd.isna(mean_ci(pd.Series([0.5]))["ci95"])


def test_report_writes_the_csv_and_a_figure_per_metric_and_axis(sweep_dir, capsys):
    assert main(["report", str(sweep_dir)]) == 0
    out = sweep_dir / "report"
    assert f"report written to {out}" in capsys.readouterr().out
    assert len(pd.read_csv(out / "metrics.csv")) == len(ACCURACY)
    # model is the only swept axis (seed is averaged over); ledger bookkeeping gets no figure
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "payout_share.honest_vs_model.png", "payout_share.noisy_vs_model.png", "test_accuracy_vs_model.png"]
    assert main(["report", str(sweep_dir)]) == 0  # a second report replaces the first
    assert not [p for p in sweep_dir.iterdir() if p.name.startswith(".report")]


def test_report_of_a_directory_without_finished_runs_is_refused(tmp_path, capsys):
    with pytest.raises(DatanetError, match="no finished run"):
        collect(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err
