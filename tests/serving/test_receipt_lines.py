"""ReceiptWriter writes each receipt of a micro-batch as exactly the bytes of the reference path
(ledger.receipts.make_receipt, then receipt_leaf) and of rfc8785 itself, on generated batches:
tricky constant strings, contributor ids, fee splits, credit of any magnitude (floats that
ECMAScript writes otherwise than repr), ties, pools beyond int64 sub-units; json_numbers writes
floats as rfc8785 does."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import numpy as np
import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from datanet_lab.serving.batch_split import hamilton_rows
from datanet_lab.serving.receipt_lines import BATCH_ID, REQUEST_ID, ReceiptWriter, json_numbers
from ledger import LedgerError
from ledger.canonical import number_text
from ledger.fees import RESOLUTION, split_by_role
from ledger.receipts import make_receipt, receipt_leaf

FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, -2.0, 1e-4, 9.999999999999999e-5, 1e-7, 1e15, 1e16, 1e21, 1e22, 123456789012345680.0,
                     0.1, 1 / 3, 5e-324]),
)
ACTOR_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,6}", fullmatch=True)
TEXT = st.lists(st.one_of(st.sampled_from(["%", "%s", "%%d", '"', "\\", "\n", "\x00", "\x01", "é", "\u2028", "\U0001f600"]),
                          st.characters(codec="utf-8")), max_size=8).map("".join)


@given(FLOATS)
@example(1e21)
@example(-0.0)
def test_json_numbers_write_floats_as_rfc8785(value):
    (number,) = json_numbers(np.array([value]))
    assert "%r" % number == number_text(value) == rfc8785.dumps(value).decode()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_json_numbers_refuse_what_json_cannot_hold(value):
    with pytest.raises(LedgerError, match="only finite numbers"):
        json_numbers(np.array([1.0, value]))


@st.composite
def batches(draw):
    """A writer's shape and a micro-batch of values for it."""
    ids = draw(st.lists(ACTOR_IDS, min_size=1, max_size=5, unique=True))
    shares = draw(st.dictionaries(st.sampled_from(["contributors", "model_host", "stakers", "a.b"]), st.integers(0, 100),
                                  min_size=1).filter(lambda s: sum(s.values()) > 0))
    fee = draw(st.one_of(st.integers(0, 5000), st.integers(0, 2**53 - 1)))
    n = draw(st.integers(1, 6))
    credit = draw(hnp.arrays(np.float64, (n, len(ids)), elements=FLOATS.filter(lambda v: abs(v) < 1e300)))
    return {
        "ids": ids, "fee_split": split_by_role(fee, shares), "constants": (draw(TEXT), draw(TEXT), draw(TEXT)),
        "credit": credit, "probabilities": draw(hnp.arrays(np.float64, n, elements=FLOATS)),
        "classes": draw(hnp.arrays(np.int64, n, elements=st.integers(0, 2**53 - 1))),
        "top_k": draw(st.integers(1, len(ids) + 1)), "numbers": draw(st.tuples(*[st.integers(0, 10**9)] * 3)),
    }


def reference_leaves(case: dict, parts: np.ndarray, top: np.ndarray, hashes: list[str]) -> list[bytes]:
    """make_receipt + receipt_leaf of each row, checked against rfc8785 too."""
    ids, credit = case["ids"], case["credit"]
    model_version, dataset_version, method = case["constants"]
    batch, index, request = case["numbers"]
    leaves = []
    for j in range(len(credit)):
        receipt = make_receipt(
            request_id=REQUEST_ID % (request + j), batch_id=BATCH_ID % batch, index=index + j,
            model_version=model_version, dataset_version=dataset_version, input_hash=hashes[j],
            output={"class": int(case["classes"][j]), "probability": float(case["probabilities"][j])},
            fee_split=case["fee_split"], method=method,
            shares={ids[c]: Fraction(int(parts[j, c]), RESOLUTION) for c in range(len(ids)) if credit[j, c] > 0},
            top=[(ids[c], credit[j, c]) for c in top[j]])
        leaf = receipt_leaf(receipt)
        assert leaf == rfc8785.dumps(receipt)
        leaves.append(leaf)
    return leaves


@settings(max_examples=150, deadline=None)
@given(batches())
def test_each_leaf_is_the_reference_receipts_bytes(case):
    ids, credit = case["ids"], case["credit"]
    writer = ReceiptWriter(ids, case["fee_split"], *case["constants"], RESOLUTION)
    parts = hamilton_rows(case["fee_split"].get("contributors", 0) * RESOLUTION, credit, ids)
    top = np.argsort(-credit, axis=1, kind="stable")[:, : case["top_k"]]
    hashes = [hashlib.sha256(bytes([j])).hexdigest() for j in range(len(credit))]
    leaves = writer.leaves(*case["numbers"], hashes, case["classes"], case["probabilities"], credit, parts, top)
    assert leaves == reference_leaves(case, parts, top, hashes)
    batch, index, request = case["numbers"]
    writer.check_first(leaves[0], batch, index, request, hashes[0],
                       {"class": int(case["classes"][0]), "probability": float(case["probabilities"][0])},
                       credit[0].tolist(), parts[0].tolist(), top[0].tolist())


def _writer(**constants: str) -> ReceiptWriter:
    values = {"model_version": "m", "dataset_version": "d", "method": "tracin_fast"} | constants
    return ReceiptWriter(["c0", "c1"], split_by_role(1000), values["model_version"], values["dataset_version"],
                         values["method"], RESOLUTION)


def test_check_first_refuses_a_leaf_that_is_not_the_reference():
    writer, credit = _writer(), np.array([[0.5, 0.25]])
    parts = hamilton_rows(500 * RESOLUTION, credit, ["c0", "c1"])
    leaf = writer.leaves(0, 0, 0, ["0" * 64], np.array([1]), np.array([0.5]), credit, parts, np.array([[0, 1]]))[0]
    args = (0, 0, 0, "0" * 64, {"class": 1, "probability": 0.5}, credit[0].tolist())
    writer.check_first(leaf, *args, parts[0].tolist(), [0, 1])
    with pytest.raises(LedgerError, match="the reference receipt is"):
        writer.check_first(leaf, *args, [parts[0, 0] - 1, parts[0, 1] + 1], [0, 1])
    with pytest.raises(LedgerError, match="the reference receipt is"):
        writer.check_first(leaf.replace(b'"class":1', b'"class":2'), *args, parts[0].tolist(), [0, 1])


def test_a_shape_the_format_cannot_hold_is_refused():
    with pytest.raises(LedgerError, match="hold one of the placeholders"):
        _writer(method="\0shares\0")
    with pytest.raises(LedgerError, match="contributor actor must match .*, got 'not an id'"):
        ReceiptWriter(["c0", "not an id"], split_by_role(1000), "m", "d", "x", RESOLUTION)
    with pytest.raises(LedgerError, match="only finite numbers"):
        _writer().leaves(0, 0, 0, ["0" * 64], np.array([1]), np.array([np.nan]), np.array([[0.5, 0.25]]),
                         np.array([[1, 2]]), np.array([[0, 1]]))
