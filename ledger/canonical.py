"""Canonical JSON (RFC 8785, JCS): sorted keys, UTF-8, no insignificant whitespace, ES6 floats."""

from typing import Any

import rfc8785

from ledger.errors import LedgerError


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON bytes.

    Raises:
        LedgerError: the value holds something JSON cannot carry exactly (NaN, inf, an integer
            beyond ±2**53-1, a non-string key, an unknown type).
    """
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise LedgerError(f"payload is not canonical-JSON encodable: {exc}") from exc
