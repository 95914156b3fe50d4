"""RFC 9162 (Certificate Transparency v2.0, ex-RFC 6962) Merkle tree hashing and proofs.

Pure functions, stdlib only, no I/O:

* ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``,
  the empty tree's root is ``SHA-256(b"")`` (RFC 9162 §2.1.1).
* A tree of ``n > 1`` leaves splits at ``k``, the largest power of two
  strictly smaller than ``n``: left subtree ``D[0:k]``, right ``D[k:n]``.
* Inclusion proofs (§2.1.3) and consistency proofs (§2.1.4) are lists of
  32-byte hashes ordered from the leaf level upwards, as on the wire.

Every function taking raw entry bytes has a ``*_from_hashes`` twin taking the
already-computed leaf hashes, so a store that keeps leaf hashes never has to
re-hash entries; the raw-bytes functions just hash and delegate.

Argument conventions: indices and sizes are 0-based counts.  Nonsense
arguments (negative sizes, ``index >= size``, ``old_size > new_size``) raise
``ValueError`` naming the value, in generators *and* verifiers.  A proof that
is merely wrong (wrong length, wrong hashes, wrong root) makes ``verify_*``
return ``False``; they never raise for that.

Edge cases of consistency (RFC 9162 only defines proofs for
``0 < old_size < new_size``; we follow the behaviour of transparency-dev/merkle
and the CT reference code for the rest):

* ``old_size == new_size``: the proof is empty; it verifies iff the proof is
  empty and ``old_root == new_root``.
* ``old_size == 0``: the empty tree is a prefix of every tree, so the proof
  is empty; it verifies iff the proof is empty and ``old_root`` is the
  empty-tree root ``SHA-256(b"")`` (``new_root`` is not constrained, except
  that ``(0, 0)`` also needs ``new_root == old_root``).  Unlike
  transparency-dev, which ignores ``old_root`` here, we reject an ``old_root``
  that cannot be the root of an empty tree.

Why hand-written rather than ``pymerkle`` (checked against pymerkle 7.0.0 on
PyPI): pymerkle hashes the same way (sha256, 0x00/0x01 prefixes), but its
proofs are its own ``InclusionProof``/``ConsistencyProof`` objects (1-based
indices, a path that starts with the base hash, plus ``rule``/``subset`` bit
lists) rather than RFC 9162 hash lists, its verifier only accepts those
objects and rejects ``old_size == 0``, and generating proofs requires one of
its tree classes (in-memory or its own SQLite backend) that owns the leaves.
There is no function that checks an RFC 9162 consistency proof given as a
list of hashes against two raw roots, and it would pull in a pinned
``cachetools`` dependency.  The RFC algorithms are ~150 lines, checked below
against the published CT test vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_hashes",
    "inclusion_proof",
    "inclusion_proof_from_hashes",
    "root_from_inclusion_proof",
    "verify_inclusion",
    "consistency_proof",
    "consistency_proof_from_hashes",
    "verify_consistency",
    "inclusion_ranges",
    "consistency_ranges",
    "perfect_subtrees",
    "fold_subtrees",
    "CompactRange",
]

HASH_SIZE = 32
"""Size in bytes of every hash (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree, MTH({}) = SHA-256()."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


# --------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (requires ``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of the leaves ``hashes[lo:hi]`` (``lo < hi``), in ``hi - lo - 1`` node hashes.

    Reduces level by level, carrying an unpaired last node up unchanged; this
    builds exactly the tree of the RFC's "split at the largest power of two"
    definition, without recursion.
    """
    level = list(hashes[lo:hi])
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} {value} must be >= 0")


def _check_index(index: int, size: int) -> None:
    _check_size("size", size)
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"index must be an int, got {index!r}")
    if not 0 <= index < size:
        raise ValueError(f"index {index} out of range for tree of size {size}")


def _check_sizes(old_size: int, new_size: int) -> None:
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ValueError(f"old_size {old_size} is larger than new_size {new_size}")


def _is_hash(value: object) -> bool:
    return isinstance(value, (bytes, bytearray)) and len(value) == HASH_SIZE


# --------------------------------------------------------------------------
# Tree head
# --------------------------------------------------------------------------


def root_from_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of a tree given its leaf hashes (``n - 1`` node hashes)."""
    if len(leaf_hashes) == 0:
        return EMPTY_ROOT
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


def root(leaves: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash (MTH) of the raw entries ``leaves``."""
    return root_from_hashes([leaf_hash(d) for d in leaves])


# --------------------------------------------------------------------------
# Inclusion proofs (RFC 9162 §2.1.3)
# --------------------------------------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges ``[lo, hi)`` whose subtree roots form PATH(index, D_size), leaf level first.

    Follows RFC 9162 §2.1.3.1: descend from the root, at each split record the subtree *not*
    containing ``index``.  At most one range is not a perfect subtree (the one ending at
    ``size``), so a store of perfect-subtree hashes answers a proof in O(log n) look-ups.
    """
    _check_index(index, size)
    ranges: list[tuple[int, int]] = []  # collected root-first, returned leaf-first
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def inclusion_proof_from_hashes(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Inclusion proof PATH(index, D_n) for leaf ``index`` of the tree of ``leaf_hashes``.

    Returns at most ceil(log2 n) hashes, leaf level first.  Costs fewer than ``n`` node hashes.
    """
    return [_subtree_root(leaf_hashes, lo, hi) for lo, hi in inclusion_ranges(index, len(leaf_hashes))]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Inclusion proof for raw entry ``leaves[index]`` in the tree of ``leaves``."""
    _check_index(index, len(leaves))
    return inclusion_proof_from_hashes([leaf_hash(d) for d in leaves], index)


def _chain_inclusion(leaf_h: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2 steps 2-5 without the final root comparison.

    Returns the root implied by the proof, or ``None`` if the proof is
    malformed (wrong length or an element that is not a 32-byte hash).
    Arguments must already have been validated.
    """
    fn, sn = index, size - 1
    r = leaf_h
    for p in proof:
        if sn == 0 or not _is_hash(p):
            return None
        p = bytes(p)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Root implied by an inclusion ``proof`` for ``leaf_hash`` at ``index`` in a tree of ``size``.

    Uses the iterative RFC 9162 §2.1.3.2 algorithm (``len(proof)`` node
    hashes).  Raises ValueError on bad arguments or a proof whose length does
    not fit ``index``/``size``; compare the result with a trusted root.
    """
    _check_index(index, size)
    if not _is_hash(leaf_hash):
        raise ValueError(f"leaf_hash must be {HASH_SIZE} bytes, got {leaf_hash!r}")
    result = _chain_inclusion(bytes(leaf_hash), index, size, proof)
    if result is None:
        raise ValueError(
            f"inclusion proof of {len(proof)} hashes is malformed for index {index} "
            f"in tree of size {size}"
        )
    return result


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff ``proof`` shows raw entry ``leaf`` at ``index`` in the tree of ``size`` with ``root``.

    Raises ValueError only for nonsense arguments (``size < 0``,
    ``index`` outside ``[0, size)``); a wrong proof or root gives ``False``.
    """
    _check_index(index, size)
    computed = _chain_inclusion(leaf_hash(leaf), index, size, proof)
    return computed is not None and _is_hash(root) and computed == bytes(root)


# --------------------------------------------------------------------------
# Consistency proofs (RFC 9162 §2.1.4)
# --------------------------------------------------------------------------


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges ``[lo, hi)`` whose subtree roots form PROOF(old_size, D_new_size), in wire order.

    Follows SUBPROOF of RFC 9162 §2.1.4.1; empty when ``old_size`` is 0 or ``new_size``.  As for
    inclusion, at most one range (the one ending at ``new_size``) is not a perfect subtree.
    """
    _check_sizes(old_size, new_size)
    if old_size == 0 or old_size == new_size:
        return []
    # Iterative SUBPROOF(m, D[lo:hi], b): siblings are appended root-first.
    siblings: list[tuple[int, int]] = []
    m, lo, hi, complete = old_size, 0, new_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    ranges = [] if complete else [(lo, hi)]
    ranges.extend(reversed(siblings))
    return ranges


def consistency_proof_from_hashes(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Consistency proof PROOF(old_size, D_n) between the first ``old_size`` leaves and all of them.

    Empty when ``old_size`` is 0 or ``len(leaf_hashes)``.  Costs fewer than ``n`` node hashes.
    """
    return [_subtree_root(leaf_hashes, lo, hi) for lo, hi in consistency_ranges(old_size, len(leaf_hashes))]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Consistency proof between the tree of ``leaves[:old_size]`` and that of ``leaves``."""
    _check_sizes(old_size, len(leaves))
    return consistency_proof_from_hashes([leaf_hash(d) for d in leaves], old_size)


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """True iff ``proof`` shows the tree (``old_size``, ``old_root``) is a prefix of (``new_size``, ``new_root``).

    Iterative RFC 9162 §2.1.4.2 (at most ``2 * len(proof)`` node hashes).
    Raises ValueError for negative sizes or ``old_size > new_size``; a wrong
    proof or root gives ``False``.  See the module docstring for sizes 0 and
    ``old_size == new_size``.
    """
    _check_sizes(old_size, new_size)
    if old_size == 0 and not (_is_hash(old_root) and bytes(old_root) == EMPTY_ROOT):
        return False
    if old_size == 0 and new_size > 0:
        return len(proof) == 0
    if old_size == new_size:
        return len(proof) == 0 and _is_hash(old_root) and bytes(old_root) == bytes(new_root)
    # 0 < old_size < new_size.
    if len(proof) == 0 or not _is_hash(old_root) or not _is_hash(new_root):
        return False
    if not all(_is_hash(c) for c in proof):
        return False
    path = [bytes(c) for c in proof]
    if old_size & (old_size - 1) == 0:  # exact power of two: old root is a node of the new tree
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == bytes(old_root) and sr == bytes(new_root)


# --------------------------------------------------------------------------
# Perfect subtrees and compact ranges (what a store keeps so proofs stay O(log n))
# --------------------------------------------------------------------------


def perfect_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split the RFC subtree over leaves ``[lo, hi)`` into perfect subtrees ``(level, index)``.

    A perfect subtree ``(level, index)`` covers leaves ``[index * 2**level, (index + 1) * 2**level)``.
    The subtrees come left to right with decreasing size; :func:`fold_subtrees` of their roots
    is the root of ``[lo, hi)``.  Requires ``lo < hi`` and ``lo`` aligned as in an RFC tree (a
    multiple of the largest power of two not above ``hi - lo``), which every proof range is.
    """
    if not 0 <= lo < hi:
        raise ValueError(f"leaf range [{lo}, {hi}) is empty or negative")
    nodes = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo % (1 << level):
            raise ValueError(f"leaf range [{lo}, {hi}) is not aligned as a subtree of an RFC 9162 tree")
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def fold_subtrees(roots: Sequence[bytes]) -> bytes:
    """Root of adjacent perfect subtrees of decreasing size, given their roots left to right."""
    result = roots[-1]
    for left in reversed(roots[:-1]):
        result = node_hash(left, result)
    return result


class CompactRange:
    """The right border of a growing tree: one perfect-subtree root per set bit of its size.

    Appending a leaf costs one leaf hash plus, amortised, one node hash, and returns the perfect
    subtrees it completed (so a store can keep every perfect node); :meth:`root` costs at most
    ``log2 n`` node hashes.  Start from ``CompactRange(size, border)`` with the border roots of
    :func:`perfect_subtrees` ``(0, size)`` to continue an existing tree.
    """

    def __init__(self, size: int = 0, border: Sequence[bytes] = ()) -> None:
        _check_size("size", size)
        expected = len(perfect_subtrees(0, size)) if size else 0
        if len(border) != expected:
            raise ValueError(f"a tree of size {size} has {expected} border subtrees, got {len(border)}")
        self.size = size
        levels = [level for level, _ in perfect_subtrees(0, size)] if size else []
        self._border: list[tuple[int, bytes]] = list(zip(levels, border))

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add the leaf with hash ``leaf_hash``; return the ``(level, index, hash)`` nodes it completed, itself first."""
        return self.extend([leaf_hash])

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """:meth:`append` each of ``leaf_hashes`` in turn; return every node they completed, in order."""
        completed: list[tuple[int, int, bytes]] = []
        border = self._border
        for index, current in enumerate(leaf_hashes, self.size):
            level = 0
            completed.append((0, index, current))
            while border and border[-1][0] == level:
                current = node_hash(border.pop()[1], current)
                level += 1
                index >>= 1
                completed.append((level, index, current))
            border.append((level, current))
            self.size += 1
        return completed

    def root(self) -> bytes:
        """Root of the tree so far (the empty-tree root for size 0)."""
        if not self._border:
            return EMPTY_ROOT
        return fold_subtrees([h for _, h in self._border])
