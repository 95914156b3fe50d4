"""Canonical JSON (RFC 8785, JCS): sorted keys, UTF-8, no insignificant whitespace, ES6 floats.

``rfc8785`` is the reference encoder, but it is pure Python and was the largest cost of a signed
append after the signature itself. Most payloads are *plain* (see :func:`plain_json`), and for those
the standard library's C encoder writes the same bytes: strings escape exactly ``"``, ``\\`` and the
controls below U+0020 (``\\b \\t \\n \\f \\r`` short, the rest ``\\u00xx`` in lower-case hex), all
else (U+007F, U+2028, non-BMP, ...) goes out verbatim as UTF-8; integers print in decimal; and
key order by code point equals RFC 8785's order by UTF-16 code units as long as no key leaves the
BMP. Floats are left to ``rfc8785``: their ES6 form differs from ``repr`` (:func:`number_text`
writes it for one finite float).
"""

import json
from typing import Any

import rfc8785

from ledger.errors import LedgerError

_SAFE_INT = 2**53 - 1
"""RFC 8785 (I-JSON) integers: ``|n| <= 2**53 - 1``; ``rfc8785`` refuses the others."""
_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), check_circular=False).encode
_BMP_END = "\U00010000"


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON bytes.

    Raises:
        LedgerError: the value holds something JSON cannot carry exactly (NaN, inf, an integer
            beyond ±2**53-1, a non-string key, a lone surrogate, an unknown type).
    """
    fast = plain_json(value)
    if fast is not None:
        return fast
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise LedgerError(f"payload is not canonical-JSON encodable: {exc}") from exc


def plain_json(value: Any) -> bytes | None:
    """The RFC 8785 bytes of a *plain* value, or ``None`` when ``value`` is not plain.

    Plain: built from exactly ``dict`` (string keys within the BMP), ``list``, ``str``, ``int``
    within ±2**53-1, ``bool`` and ``None``; no floats, no subclasses, no other types. Strings
    holding a lone surrogate (not UTF-8 encodable) are not plain either.
    """
    if not _plain(value):
        return None
    try:
        return _ENCODE(value).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: canonical_json lets rfc8785 refuse it
        return None


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_SAFE_INT <= value <= _SAFE_INT
    if kind is dict:
        return all(type(k) is str and (k.isascii() or max(k) < _BMP_END) and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return False


def number_text(number: float) -> str:
    """A finite float as ECMAScript's Number::toString writes it (RFC 8785 §3.2.2.3), from the
    same shortest round-trip digits as ``repr`` (which ``rfc8785`` also starts from; its own
    function is private): integers up to 21 digits in full, down to 1e-6 as decimals, the rest as
    ``d.ddde±x``."""
    if number == 0:
        return "0"
    mantissa, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole) + len(fraction) - len(digits))  # value = 0.digits * 10**point
    digits = digits.rstrip("0")
    sign = "-" if number < 0 else ""
    if len(digits) <= point <= 21:
        text = digits + "0" * (point - len(digits))
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        rest = f".{digits[1:]}" if len(digits) > 1 else ""
        text = f"{digits[0]}{rest}e{'+' if point > 0 else '-'}{abs(point - 1)}"
    return sign + text
