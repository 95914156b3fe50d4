"""The pipeline steps on the default scenario (in-process, without papermill)."""

import pytest

from datanet_lab import pipeline


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    run = pipeline.open_run(str(tmp_path_factory.mktemp("run")))
    return run, pipeline.pay(run)  # builds, trains and attributes first


def test_honest_contributors_earn_more_per_accepted_sample_than_noisy_ones(default_run):
    _, payouts = default_run
    per_sample = (payouts["payout"] / payouts["accepted"]).groupby(payouts["behaviour"]).mean()
    assert per_sample["honest"] > per_sample["noisy"]


def test_payouts_sum_to_the_pool_and_harmful_data_earns_nothing(default_run):
    run, payouts = default_run
    # Slashed stakes join the pool (ledger.epochs): the duplicate contributor's data was all rejected.
    assert payouts["payout"].sum() == run.params["reward_pool"] + payouts["slashed"].sum()
    assert (payouts["slashed"] <= payouts["stake"] // 2)[payouts["rejected"] == 0].all()
    assert (payouts.loc[payouts["attribution"] <= 0, "payout"] == 0).all()
    duplicate = payouts[payouts["behaviour"] == "duplicate"].iloc[0]
    assert duplicate["accepted"] == 0 and duplicate["payout"] == 0
    assert duplicate["slashed"] == duplicate["stake"] == pipeline.STAKE_UNITS


def test_a_step_on_its_own_builds_what_it_needs(tmp_path):
    run = pipeline.open_run(str(tmp_path), dataset="wine", n_contributors=3, scenario="honest:3", epochs=1)
    result = pipeline.attributed(run)
    assert (tmp_path / "dataset" / "meta.json").is_file() and (tmp_path / "training" / "history.csv").is_file()
    assert result.scores.shape[0] == len(pipeline.datanet(run).train_y)
