"""A sybil gain is a ratio to what the copied data earns alone: undefined, and refused, when that is not positive."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from datanet.training import TrainConfig
from datanet_lab import pipeline
from datanet_lab.experiments import compare_text, sybil


def _built_text() -> SimpleNamespace:
    """A text Datanet's bookkeeping alone: sybil c02 copied two rows of c00, one of them accepted."""
    truth = pd.DataFrame({"sample_id": ["a", "b", "c", "d"], "contributor": ["c00", "c00", "c02", "c02"],
                          "behaviour": ["honest", "honest", "paraphrase_sybil", "paraphrase_sybil"],
                          "source": ["", "", "a", "b"]})
    decisions = pd.DataFrame({"sample_id": ["a", "b", "c", "d"], "accepted": [True, True, True, False]})
    return SimpleNamespace(ground_truth=truth, datanet=SimpleNamespace(decisions=decisions))


def test_the_text_sybil_gain_is_a_ratio_to_the_copied_contributors_credit():
    gain = compare_text.sybil_gain(_built_text(), pd.Series({"c00": 2.0, "c01": 5.0, "c02": 1.0}))
    assert gain.to_dict("records") == [{"sybil": "c02", "copied": "c00", "accepted_copies": 1, "gain": 1.5}]


@pytest.mark.parametrize("copied_credit, sybil_credit", [(0.0, 1.0), (0.0, 0.0), (-1.0, 0.5), (np.nan, 1.0), (1.0, np.inf)])
def test_the_text_sybil_gain_is_refused_when_undefined(copied_credit, sybil_credit):
    credit = pd.Series({"c00": copied_credit, "c02": sybil_credit})
    with pytest.raises(ValueError, match=r"the sybil gain of 'c02' is undefined: it copied 'c00', whose credit is"):
        compare_text.sybil_gain(_built_text(), credit)


def test_the_study_refuses_a_contributor_without_positive_credit_before_scoring_any_copy(monkeypatch, tmp_path):
    dn = pipeline.planted_datanet("wine", "", "honest:2,noisy:1", 3, 0.2, 0).datanet
    monkeypatch.setattr(sybil, "score", lambda *args, **kwargs: None)
    monkeypatch.setattr(sybil, "credit", lambda dn, scored, rollup: pd.Series(
        {"c00": 0.0 if rollup == "gradient" else -1.0, "c01": 1.0, "c02": 1.0}))
    copied = []
    monkeypatch.setattr(sybil, "with_copies", lambda *args, **kwargs: copied.append(args))
    with pytest.raises(ValueError, match=r"the sybil gain of 'c00' is undefined for tracin with the summed roll-up, "
                                         r"tracin with the radius roll-up, tracin with the gradient roll-up: 'c00' has "
                                         r"no positive credit without the copies"):
        sybil.study(dn, "c00", TrainConfig(model="logreg", epochs=1, seed=0), 1e-2, tmp_path, methods=("tracin",))
    assert not copied
