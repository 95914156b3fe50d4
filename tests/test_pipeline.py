"""The pipeline steps on the default scenario (in-process, without papermill)."""

import numpy as np
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


def test_the_attribution_method_parameter_decides_the_scores_and_is_recorded(tmp_path):
    params = dict(dataset="wine", n_contributors=3, scenario="honest:3", epochs=1)
    default = pipeline.attribute(pipeline.open_run(str(tmp_path / "a"), **params))
    run = pipeline.open_run(str(tmp_path / "b"), attribution_method="grad_cosine", **params)
    cosine = pipeline.attribute(run)
    assert not np.allclose(default.scores, cosine.scores)
    assert np.abs(cosine.scores).max() <= 1 + 1e-6  # cosines of gradients
    with run.ledger() as book:
        (record,) = book.entries("attribution_run")
    assert record.payload["method"] == "grad_cosine"
