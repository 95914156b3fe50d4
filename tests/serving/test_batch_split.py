"""hamilton_rows splits a pool over every row of a weight matrix exactly as the scalar reference
(ledger.fees.hamilton over integer_weights of the row's positive weights) splits each row: on
random weights, ties, exact ratios, subnormal, tiny and huge weights (which leave the limb range),
pools around the limb range's end, and with the quotient's corrections cut short."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from datanet_lab.serving import batch_split
from datanet_lab.serving.batch_split import MAX_FAST_UNITS, hamilton_rows
from ledger.fees import RESOLUTION, hamilton, integer_weights

IDS = ["c09", "a.1", "b@x", "c00", "Z:9", "c-1"]  # not in sorted order: ties go to the id that sorts first
WEIGHT = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 0.1, 0.2, 0.3, 1 / 3, 5e-324, 2.2250738585072014e-308, 1e-300, 1e300]),
    st.floats(1e-20, 1e20),
)
UNITS = st.one_of(st.integers(0, 10), st.integers(0, 2**40), st.sampled_from([500 * RESOLUTION, 3869 * RESOLUTION]),
                  st.integers(MAX_FAST_UNITS - 3, MAX_FAST_UNITS + 3), st.integers(2**62, 2**95))


def reference(units: int, weights: np.ndarray, ids: list[str]) -> list[list[int]]:
    """Each row split by ledger.fees.hamilton over its positive weights (all zero without one)."""
    rows = []
    for row in weights.tolist():
        positive = {i: w for i, w in zip(ids, row) if w > 0}
        split = hamilton(units, integer_weights(positive)) if positive else {}
        rows.append([split.get(i, 0) for i in ids])
    return rows


def matrices(columns: int = len(IDS)) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.just(columns)), elements=WEIGHT)


@settings(max_examples=300, deadline=None)
@given(UNITS, matrices())
@example(500 * RESOLUTION, np.array([[0.1, 0.2, 0.3, 0.0, -1.0, 0.1]]))
@example(7, np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]))  # all tied: the units go by id order
@example(10, np.array([[1e-300, 1e300, 1.0, 0.0, 0.0, 0.0]]))  # spans far beyond the limbs: the reference
@example(MAX_FAST_UNITS, np.array([[1 / 3, 2 / 3, 5e-324, 1e-3, 7.0, 0.25]]))
def test_each_row_is_the_scalar_reference(units, weights):
    parts = hamilton_rows(units, weights, IDS)
    assert parts.tolist() == reference(units, weights, IDS)
    live = (weights > 0).any(axis=1)
    assert [sum(row) for row in parts.tolist()] == [units if alive else 0 for alive in live]
    assert parts.dtype == (np.int64 if units <= MAX_FAST_UNITS else object)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([0, 1, 2]), UNITS, matrices())
def test_rows_whose_corrections_are_cut_short_go_to_the_reference(fixes, units, weights):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_split, "_FIXES", fixes)
        assert hamilton_rows(units, weights, IDS).tolist() == reference(units, weights, IDS)


def test_a_micro_batch_of_real_looking_credit_is_the_reference():
    rng = np.random.default_rng(0)
    credit = rng.normal(size=(256, 10)) * np.exp(rng.normal(size=(256, 10)) * 3)
    ids = [f"c{i:02d}" for i in range(10)]
    assert hamilton_rows(500 * RESOLUTION, credit, ids).tolist() == reference(500 * RESOLUTION, credit, ids)


@pytest.mark.parametrize("units, weights, ids, message", [
    (5, np.array([[1.0, np.nan]]), ["a", "b"], "finite"),
    (5, np.array([[1.0, np.inf]]), ["a", "b"], "finite"),
    (5, np.array([1.0, 2.0]), ["a", "b"], r"shape \(2,\)"),
    (5, np.array([[1.0, 2.0]]), ["a", "a"], "1 distinct"),
    (5, np.array([[1.0, 2.0]]), ["a"], "1 ids"),
    (-1, np.array([[1.0, 2.0]]), ["a", "b"], "units must be an integer >= 0"),
    (2.0, np.array([[1.0, 2.0]]), ["a", "b"], "units must be an integer >= 0"),
])
def test_bad_input_is_refused(units, weights, ids, message):
    with pytest.raises(ValueError, match=message):
        hamilton_rows(units, weights, ids)
