"""Largest-remainder splits of one pool over many rows of float weights at once, exactly.

:func:`hamilton_rows` gives, for each row of a ``(n, m)`` weight matrix, what
``ledger.fees.hamilton(units, ledger.fees.integer_weights(positive weights of the row))`` gives
(its reference in the tests, and the path of the rows it does not take): each positive weight's
floor of ``units * w / W`` (``W`` the row's positive total), plus one unit to each of the largest
remainders until the row sums to ``units``, ties to the id that sorts first. The scalar reference
costs ~20 us a row in Python integers; here a micro-batch of rows is one set of numpy operations.

Why hand-written: the integers do not fit a machine word. A positive float is
``mantissa * 2**e``; scaled by ``2**(53 - e_min)`` over its row (the ratios of
``integer_weights``), every weight is an integer, below ``2**120`` while the row's weights span
less than ~2**60, and ``units * w`` reaches ~2**180. So numbers are held exactly as base-2**30
limbs in int64 arrays, most significant limb last and signed (a product of two limbs, and a sum of
three such, stays below ``2**63``). The quotient is estimated in long double, then the exact
residual ``units * w - q * W`` is brought into ``[0, W)`` by adding or subtracting ``W``: the
estimate only decides how many corrections run (at most a few), never the result. Rows outside the
limb range (weights spanning ~2**60 or more, or ``units`` above :data:`MAX_FAST_UNITS`), and any
row not settled after :data:`_FIXES` corrections, are split by the scalar reference itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ledger.fees import hamilton, integer_weights

LIMB = 30
"""Bits per limb."""
_MASK = (1 << LIMB) - 1
MAX_FAST_UNITS = 2**62 - 1
"""The largest ``units`` split in limbs (three limbs; every part fits int64)."""
_MAX_TOTAL = 2.0**119
"""A row's scaled positive total (summed as floats) must stay below this, so that it is exactly
below ``2**120`` (four limbs); else the row goes to the scalar reference."""
_FIXES = 8
"""Corrections of the quotient estimate tried before a row goes to the scalar reference."""


def hamilton_rows(units: int, weights: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Split ``units`` (an integer >= 0) over each row of ``weights`` ``(n, m)`` (finite floats;
    column ``j`` belongs to ``ids[j]``, all distinct) in proportion to the row's positive weights,
    by largest remainders, ties to the id that sorts first.

    Returns ``(n, m)`` parts: int64 when ``units <= MAX_FAST_UNITS``, else Python integers
    (object). A row with a positive weight sums to ``units``; a row without one is all zero (its
    pool is the caller's to leave unallocated); a weight <= 0 gets 0.

    Raises:
        ValueError: ``weights`` not finite or not 2-D, ids not one distinct id per column, or
            ``units`` not an integer >= 0.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or len(ids) != weights.shape[1] or len(set(ids)) != len(ids):
        raise ValueError(f"weights must be (n, m) with m distinct ids, got shape {weights.shape} and {len(ids)} ids "
                         f"({len(set(ids))} distinct)")
    if not np.isfinite(weights).all():
        raise ValueError("weights must be finite")
    if type(units) is not int or units < 0:
        raise ValueError(f"units must be an integer >= 0, got {units!r}")
    positive = weights > 0
    live = positive.any(axis=1)
    if units > MAX_FAST_UNITS:
        parts = np.zeros(weights.shape, dtype=object)
        fast = np.zeros(len(weights), dtype=bool)
    else:
        parts = np.zeros(weights.shape, dtype=np.int64)
        scaled = _scaled(weights, positive, live)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing row's sum is inf: not fast
            fast = live & (scaled.sum(axis=1) < _MAX_TOTAL)
        rows = np.flatnonzero(fast)
        if len(rows):
            settled = _split_rows(units, scaled[rows], ids, parts, rows)
            fast[rows[~settled]] = False
    for row in np.flatnonzero(live & ~fast):
        split = hamilton(units, integer_weights({ids[j]: weights[row, j] for j in np.flatnonzero(positive[row])}))
        parts[row] = [split.get(i, 0) for i in ids]
    return parts


def _scaled(weights: np.ndarray, positive: np.ndarray, live: np.ndarray) -> np.ndarray:
    """``(n, m)`` each positive weight times ``2**(53 - e_min)`` of its row (``e_min``: the
    smallest binary exponent of the row's positive weights), 0 elsewhere: integers, exactly
    represented as floats (a power-of-two scaling of a 53-bit mantissa), in the ratios of
    ``integer_weights``; ``inf`` where the scaling overflows."""
    exponents = np.where(positive, np.frexp(weights)[1], np.iinfo(np.int32).max)
    shift = 53 - np.where(live, exponents.min(axis=1), 0)
    with np.errstate(over="ignore"):
        return np.where(positive, np.ldexp(weights, shift[:, None].astype(np.int32)), 0.0)


def _split_rows(units: int, scaled: np.ndarray, ids: Sequence[str], parts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Write the parts of ``rows`` (``scaled`` ``(k, m)`` their scaled weights, each row's total
    below ``2**120``) into ``parts``; return ``(k,)`` which rows settled (the others are left to
    the reference). Works on the positive entries only, flattened row by row."""
    row_of, column = np.nonzero(scaled)
    weight = scaled[row_of, column]  # (p,)
    totals = scaled.sum(axis=1)  # (k,) float: estimates only
    n_units, n_weight = _limb_count(units), _limb_count(int(totals.max()))
    starts = np.flatnonzero(np.diff(row_of, prepend=-1))
    total = _normalize(np.add.reduceat(_limbs(weight, n_weight), starts, axis=1))[:, row_of]  # (n_weight, p)
    estimate = np.floor(units * weight / totals[row_of])
    quotient = np.clip(estimate, 0, units).astype(np.int64)  # (p,), within ~2**13 of the floor
    product = np.zeros((n_units + n_weight, len(weight)), dtype=np.int64)
    for i, limb in enumerate(_int_limbs(units, n_units)):
        product[i : i + n_weight] += limb * _limbs(weight, n_weight)
    residual = _normalize(product - _times(quotient, total, n_units))
    # one step by the residual's float quotient (within one of its floor), bounded so k * total fits
    step = np.clip(np.floor(_float(residual) / totals[row_of]), -(2**30), 2**30).astype(np.int64)
    quotient += step
    residual = _normalize(residual - _pad(_times(step, total, 1, signed=True), len(residual)))
    off = np.ones(len(weight), dtype=bool)  # residual not (known to be) in [0, total)
    for _ in range(_FIXES):
        low = residual[-1] < 0
        above = _normalize(residual - _pad(total, len(residual)))
        high = above[-1] >= 0
        off = low | high
        if not off.any():
            break
        residual = np.where(low, _normalize(residual + _pad(total, len(residual))), np.where(high, above, residual))
        quotient += high.astype(np.int64) - low
    settled = np.ones(len(scaled), dtype=bool)  # a row corrected in the last round was not checked again
    settled[row_of[off]] = False
    # remainders (below the total, so below 2**120) as two 60-bit keys, 0 where the weight is not
    # positive (such an entry never gets a unit: the row's remainders sum to `left` whole totals,
    # so more than `left` of them are positive); largest first, ties to the first id
    remainder = _pad(residual, 4)
    keys = np.zeros((2, *scaled.shape), dtype=np.int64)
    keys[0][row_of, column] = -((remainder[3] << LIMB) | remainder[2])
    keys[1][row_of, column] = -((remainder[1] << LIMB) | remainder[0])
    rank = np.argsort(np.argsort(np.array(ids, dtype=object), kind="stable"))
    order = np.lexsort((np.broadcast_to(rank, scaled.shape), keys[1], keys[0]), axis=1)
    left = units - np.add.reduceat(quotient, starts)  # per row (each has a positive weight)
    result = np.zeros(scaled.shape, dtype=np.int64)
    result[row_of, column] = quotient
    np.put_along_axis(result, order, np.take_along_axis(result, order, axis=1) + (np.arange(len(ids)) < left[:, None]),
                      axis=1)
    parts[rows[settled]] = result[settled]
    return settled


def _limb_count(value: int) -> int:
    """Limbs for integers up to ``value`` (at least one)."""
    return max(1, -(-value.bit_length() // LIMB))


def _limbs(values: np.ndarray, count: int) -> np.ndarray:
    """``(count, *values.shape)`` int64 base-2**30 limbs of non-negative integer-valued floats
    below ``2**(30 * count)``: every step is exact (power-of-two scalings, floors, and differences
    that are representable)."""
    scale = np.ldexp(1.0, -LIMB * np.arange(count)).reshape(-1, *([1] * values.ndim))
    floors = np.floor(values * scale)  # floors[i] = values // 2**(30 i)
    limbs = floors.copy()
    limbs[:-1] -= floors[1:] * 2.0**LIMB
    return limbs.astype(np.int64)


def _int_limbs(value: int, count: int) -> list[int]:
    """The base-2**30 limbs of a Python integer below ``2**(30 * count)``."""
    return [(value >> (LIMB * i)) & _MASK for i in range(count)]


def _times(factor: np.ndarray, total: np.ndarray, count: int, signed: bool = False) -> np.ndarray:
    """``(count + len(total), p)`` limbs (not normalized) of ``factor`` ``(p,)`` times ``total``
    ``(t, p)`` (normalized limbs): ``factor`` below ``2**(30 * count + 1)``, or with ``signed``
    one limb of at most ``2**30`` in magnitude."""
    product = np.zeros((count + len(total), len(factor)), dtype=np.int64)
    for i in range(count):
        limb = factor if signed else (factor >> (LIMB * i)) if i == count - 1 else (factor >> (LIMB * i)) & _MASK
        product[i : i + len(total)] += limb * total
    return product


def _pad(limbs: np.ndarray, count: int) -> np.ndarray:
    """``limbs`` with zero limbs added (or, when ``count`` is smaller, the upper ones dropped)."""
    if count <= len(limbs):
        return limbs[:count]
    return np.concatenate([limbs, np.zeros((count - len(limbs), limbs.shape[1]), dtype=np.int64)])


def _float(limbs: np.ndarray) -> np.ndarray:
    """The integers of ``limbs`` as floats (rounded)."""
    return sum(limbs[i].astype(np.float64) * 2.0 ** (LIMB * i) for i in range(len(limbs)))


def _normalize(limbs: np.ndarray) -> np.ndarray:
    """The same signed integers with every limb but the last in ``[0, 2**30)`` (carries moved
    up; the last limb keeps the sign)."""
    limbs = limbs.copy()
    for i in range(len(limbs) - 1):
        limbs[i + 1] += limbs[i] >> LIMB  # arithmetic shift: floor division, negatives too
        limbs[i] &= _MASK
    return limbs
