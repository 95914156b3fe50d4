"""The fast path of ledger.canonical writes exactly ``rfc8785.dumps``'s bytes, or stands aside.

Hypothesis draws JSON-like values with tricky strings (controls, DEL, U+2028/U+2029, BOM, lone
surrogates, non-BMP) and tricky keys (U+E000-U+FFFF against non-BMP, where code-point order and
RFC 8785's UTF-16 order disagree), floats and integers around ±2**53; ``rfc8785`` is the reference.
"""

from __future__ import annotations

import enum
import types

import pytest
import rfc8785
from hypothesis import example, given
from hypothesis import strategies as st

from ledger import LedgerError, canonical_json
from ledger.canonical import plain_json
from ledger.encoding import entry_bytes, signed_entry_bytes, statement_bytes

TRICKY = ["\x00", "\x08", "\t", "\n", "\x0b", "\x0c", "\r", "\x1f", " ", '"', "\\", "/", "\x7f", "\x80", "é",
          "\u2028", "\u2029", "\ufeff", "\ue000", "\uffff", "\ud800", "\udbff", "\udc00", "\udfff",
          "\U00010000", "\U0001f600", "\U0010ffff"]
SAFE = 2**53 - 1

chars = st.one_of(st.sampled_from(TRICKY), st.characters(codec=None, exclude_categories=()))
text = st.text(chars, max_size=6)
scalars = st.one_of(
    st.none(), st.booleans(), text,
    st.integers(-SAFE - 2, SAFE + 2), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=12)

plain_text = st.text(st.characters(codec="utf-8"), max_size=6)  # no lone surrogates
bmp_keys = st.text(st.characters(codec="utf-8", max_codepoint=0xFFFF), max_size=6)
plain_values = st.recursive(
    st.none() | st.booleans() | plain_text | st.integers(-SAFE, SAFE),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(bmp_keys, inner, max_size=4),
    max_leaves=12,
)


def _reference(value) -> bytes | type[Exception]:
    """rfc8785's bytes, or the fact that it refuses ``value``."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return LedgerError


@given(values)
@example({"\ue000": 1, "\U00010000": 2})  # UTF-16 puts the non-BMP key first, code points last
@example({"a": "\ud800"})
@example({"\udfff": 0})
@example([SAFE, -SAFE, SAFE + 1])
@example({"k": 1.0, "j": 1e21})
def test_the_fast_path_writes_rfc8785_bytes_or_stands_aside(value):
    fast = plain_json(value)
    reference = _reference(value)
    assert fast is None or fast == reference
    if reference is LedgerError:
        with pytest.raises(LedgerError, match="canonical"):
            canonical_json(value)
    else:
        assert canonical_json(value) == reference


@given(plain_values)
@example({"\uffff": "\U0001f600", "\ue000": "\u2028\x00\x7f", "": ["\x1f", '"\\']})
def test_plain_values_take_the_fast_path(value):
    assert plain_json(value) == rfc8785.dumps(value)


class Level(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    "value",
    [
        {"x": 0.5},
        [1.0],
        (1, 2),
        {"a": (1,)},
        {"\U0001f600": 1},
        {"s": "\udc00"},
        [2**53],
        {"n": -(2**53)},
        {1: "a"},
        {"x": Level.ONE},
        types.MappingProxyType({"a": 1}),
        {"x": {1, 2}},
    ],
)
def test_what_the_fast_path_leaves_to_rfc8785(value):
    assert plain_json(value) is None
    reference = _reference(value)
    if reference is LedgerError:
        with pytest.raises(LedgerError, match="canonical"):
            canonical_json(value)
    else:
        assert canonical_json(value) == reference


fields = plain_text | st.sampled_from(["ab" * 32, "c0", "1970-01-01T00:00:00+00:00", "é", "Ａ１"])


@given(st.integers(0, SAFE), fields, fields, fields, fields, fields, st.dictionaries(bmp_keys, plain_values, max_size=3))
def test_entry_bytes_are_the_entrys_rfc8785_bytes_also_from_its_statement(seq, kind, actor, timestamp, prev_hash, signature, payload):
    text = rfc8785.dumps(payload).decode()
    expected = rfc8785.dumps({"actor": actor, "kind": kind, "payload": payload, "prev_hash": prev_hash, "seq": seq,
                              "signature": signature, "timestamp": timestamp})
    assert entry_bytes(seq, kind, actor, timestamp, text, prev_hash, signature) == expected
    assert signed_entry_bytes(statement_bytes(kind, actor, text), seq, timestamp, prev_hash, signature) == expected
    assert statement_bytes(kind, actor, text) == rfc8785.dumps({"actor": actor, "kind": kind, "payload": payload})
