"""Tests for ledger.merkle: published RFC 6962 vectors, an RFC-text reference, properties."""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import (
    consistency_proof,
    consistency_proof_from_hashes,
    inclusion_proof,
    inclusion_proof_from_hashes,
    leaf_hash,
    node_hash,
    root,
    root_from_hashes,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# ---------------------------------------------------------------------------
# 1. Published test vectors.
#
# Copied verbatim (hex) from the reference implementations, NOT computed here:
#   * transparency-dev/merkle  testonly/constants.go  (LeafInputs, NodeHashes,
#     RootHashes, EmptyRootHash) and proof/verify_test.go (inclusionProofs,
#     consistencyProofs; leaf numbers there are 1-based, converted to 0-based
#     below);
#   * google/certificate-transparency  cpp/merkletree/merkle_tree_test.cc
#     (kInputs, kSHA256Roots, kSHA256EmptyTreeHash - the same values) and
#     python/ct/crypto/merkle_test.py (sha256_leaves, sha256_nodes,
#     sha256_proofs, and the real-log inclusion proof sha256_audit_path /
#     raw_hex_leaf / leaf_index / tree_size / expected_root_hash).
# ---------------------------------------------------------------------------

EMPTY_TREE_HASH = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

LEAF_INPUTS = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]

# NodeHashes(): [level][index] for all complete subtrees of the 8-leaf tree.
NODE_HASHES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [
        h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
    ],
]

# RootHashes(): index = tree size (0..8).
ROOTS = [
    EMPTY_TREE_HASH,
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# proof/verify_test.go inclusionProofs (leaf converted to 0-based index), also
# kPathTestVector in merkle_tree_test.cc.  (index, size, proof)
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        3,
        [
            h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        ],
    ),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

# proof/verify_test.go consistencyProofs (also python/ct/crypto/merkle_test.py
# sha256_proofs).  (old_size, new_size, proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

# python/ct/crypto/merkle_test.py TreeHasherTest: (input, hash) pairs.
CT_LEAF_HASHES = [
    (h(""), h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")),
    (
        h("101112131415161718191a1b1c1d1e1f"),
        h("3bfb960453ebaebf33727da7a1f4db38acc051d381b6da20d6d4e88f0eabfd7a"),
    ),
]
CT_NODE_HASHES = [
    (
        h("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        h("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"),
        h("1a378704c17da31e2d05b6d121c2bb2c7d76f6ee6fa8f983e596c2d034963c57"),
    )
]

# python/ct/crypto/merkle_test.py MerkleVerifierTest: a real CT log entry
# (0-based leaf_index 848049 in a tree of 3630887 leaves).
CT_LOG_RAW_LEAF = h(
    "00000000013de9d2b29b000000055b308205573082043fa00302010202072b777b56df"
    "7bc5300d06092a864886f70d01010505003081ca310b30090603550406130255533110"
    "300e060355040813074172697a6f6e61311330110603550407130a53636f7474736461"
    "6c65311a3018060355040a1311476f44616464792e636f6d2c20496e632e3133303106"
    "0355040b132a687474703a2f2f6365727469666963617465732e676f64616464792e63"
    "6f6d2f7265706f7369746f72793130302e06035504031327476f204461646479205365"
    "637572652043657274696669636174696f6e20417574686f726974793111300f060355"
    "040513083037393639323837301e170d3133303131343038353035305a170d31353031"
    "31343038353035305a305331163014060355040a130d7777772e69646e65742e6e6574"
    "3121301f060355040b1318446f6d61696e20436f6e74726f6c2056616c696461746564"
    "311630140603550403130d7777772e69646e65742e6e657430820122300d06092a8648"
    "86f70d01010105000382010f003082010a0282010100d4e4a4b1bbc981c9b8166f0737"
    "c113000aa5370b21ad86a831a379de929db258f056ba0681c50211552b249a02ec00c5"
    "37e014805a5b5f4d09c84fdcdfc49310f4a9f9004245d119ce5461bc5c42fd99694b88"
    "388e035e333ac77a24762d2a97ea15622459cc4adcd37474a11c7cff6239f810120f85"
    "e014d2066a3592be604b310055e84a74c91c6f401cb7f78bdb45636fb0b1516b04c5ee"
    "7b3fa1507865ff885d2ace21cbb28fdaa464efaa1d5faab1c65e4c46d2139175448f54"
    "b5da5aea956719de836ac69cd3a74ca049557cee96f5e09e07ba7e7b4ebf9bf167f4c3"
    "bf8039a4cab4bec068c899e997bca58672bd7686b5c85ea24841e48c46f76830390203"
    "010001a38201b6308201b2300f0603551d130101ff04053003010100301d0603551d25"
    "0416301406082b0601050507030106082b06010505070302300e0603551d0f0101ff04"
    "04030205a030330603551d1f042c302a3028a026a0248622687474703a2f2f63726c2e"
    "676f64616464792e636f6d2f676473312d38332e63726c30530603551d20044c304a30"
    "48060b6086480186fd6d010717013039303706082b06010505070201162b687474703a"
    "2f2f6365727469666963617465732e676f64616464792e636f6d2f7265706f7369746f"
    "72792f30818006082b0601050507010104743072302406082b06010505073001861868"
    "7474703a2f2f6f6373702e676f64616464792e636f6d2f304a06082b06010505073002"
    "863e687474703a2f2f6365727469666963617465732e676f64616464792e636f6d2f72"
    "65706f7369746f72792f67645f696e7465726d6564696174652e637274301f0603551d"
    "23041830168014fdac6132936c45d6e2ee855f9abae7769968cce730230603551d1104"
    "1c301a820d7777772e69646e65742e6e6574820969646e65742e6e6574301d0603551d"
    "0e041604144d3ae8a87ddcf046764021b87e7d8d39ddd18ea0300d06092a864886f70d"
    "01010505000382010100ad651b199f340f043732a71178c0af48e22877b9e5d99a70f5"
    "d78537c31d6516e19669aa6bfdb8b2cc7a145ba7d77b35101f9519e03b58e692732314"
    "1383c3ab45dc219bd5a584a2b6333b6e1bbef5f76e89b3c187ef1d3b853b4910e895a4"
    "57dbe7627e759f56c8484c30b22a74fb00f7b1d7c41533a1fd176cd2a2b06076acd7ca"
    "ddc6ca6d0c2a815f9eb3ef0d03d27e7eebd7824c78fdb51679c03278cfbb2d85ae65a4"
    "7485cb733fc1c7407834f7471ababd68f140983817c6f388b2f2e2bfe9e26608f9924f"
    "16473462d136427d1f2801e4b870b078c20ec4ba21e22ab32a00b76522d523825bcabb"
    "8c7b6142d624be8d2af69ecc36fb5689572a0f59c00000"
)
CT_LOG_LEAF_HASH = h("7a395c866d5ecdb0cccb623e011dbc392cd348d1d1d72776174e127a24b09c78")
CT_LOG_LEAF_INDEX = 848049
CT_LOG_TREE_SIZE = 3630887
CT_LOG_ROOT = h("78316a05c9bcf14a3a4548f5b854a9adfcd46a4c034401b3ce7eb7ac2f1d0ecb")
CT_LOG_AUDIT_PATH = [
    h("1a208aeebcd1b39fe2de247ee8db9454e1e93a312d206b87f6ca9cc6ec6f1ddd"),
    h("0a1b78b383f580856f433c01a5741e160d451c185910027f6cc9f828687a40c4"),
    h("3d1745789bc63f2da15850de1c12a5bf46ed81e1cc90f086148b1662e79aab3d"),
    h("9095b61e14d8990acf390905621e62b1714fb8e399fbb71de5510e0aef45affe"),
    h("0a332b91b8fab564e6afd1dd452449e04619b18accc0ff9aa8393cd4928451f2"),
    h("2336f0181d264aed6d8f3a6507ca14a8d3b3c3a23791ac263e845d208c1ee330"),
    h("b4ce56e300590500360c146c6452edbede25d4ed83919278749ee5dbe178e048"),
    h("933f6ddc848ea562e4f9c5cfb5f176941301dad0c6fdb9d1fbbe34fac1be6966"),
    h("b95a6222958a86f74c030be27c44f57dbe313e5e7c7f4ffb98bcbd3a03bb52f2"),
    h("daeeb3ce5923defd0faeb8e0c210b753b85b809445d7d3d3cd537a9aabaa9c45"),
    h("7fadd0a13e9138a2aa6c3fdec4e2275af233b94812784f66bcca9aa8e989f2bc"),
    h("1864e6ba3e32878610546539734fb5eeae2529991f130c575c73a7e25a2a7c56"),
    h("12842d1202b1dc6828a17ab253c02e7ce9409b5192430feba44189f39cc02d66"),
    h("29af64b16fa3053c13d02ac63aa75b23aa468506e44c3a2315edc85d2dc22b11"),
    h("b527b99934a0bd9edd154e449b0502e2c499bba783f3bc3dfe23364b6b532009"),
    h("4584db8ae8e351ace08e01f306378a92bfd43611714814f3d834a2842d69faa8"),
    h("86a9a41573b0d6e4292f01e93243d6cc65b30f06606fc6fa57390e7e90ed580f"),
    h("a88b98fbe84d4c6aae8db9d1605dfac059d9f03fe0fcb0d5dff1295dacba09e6"),
    h("06326dc617a6d1f7021dc536026dbfd5fffc6f7c5531d48ef6ccd1ed1569f2a1"),
    h("f41fe8fdc3a2e4e8345e30216e7ebecffee26ff266eeced208a6c2a3cf08f960"),
    h("40cf5bde8abb76983f3e98ba97aa36240402975674e120f234b3448911090f8d"),
    h("b3222dc8658538079883d980d7fdc2bef9285344ea34338968f736b04aeb387a"),
]


def test_empty_tree_root():
    assert root([]) == EMPTY_TREE_HASH
    assert root_from_hashes([]) == EMPTY_TREE_HASH
    assert merkle.EMPTY_ROOT == EMPTY_TREE_HASH


def test_vector_leaf_and_node_hashes():
    for data, expected in CT_LEAF_HASHES:
        assert leaf_hash(data) == expected
    for left, right, expected in CT_NODE_HASHES:
        assert node_hash(left, right) == expected
    for i, data in enumerate(LEAF_INPUTS):
        assert leaf_hash(data) == NODE_HASHES[0][i]


def test_vector_complete_subtree_hashes():
    # Every complete subtree's hash is the root of that leaf range.
    for level, hashes in enumerate(NODE_HASHES):
        width = 1 << level
        for i, expected in enumerate(hashes):
            assert root(LEAF_INPUTS[i * width : (i + 1) * width]) == expected


@pytest.mark.parametrize("size", range(9))
def test_vector_roots(size):
    assert root(LEAF_INPUTS[:size]) == ROOTS[size]
    assert root_from_hashes([leaf_hash(d) for d in LEAF_INPUTS[:size]]) == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_vector_inclusion(index, size, proof):
    leaves = LEAF_INPUTS[:size]
    assert inclusion_proof(leaves, index) == proof
    assert inclusion_proof_from_hashes([leaf_hash(d) for d in leaves], index) == proof
    assert verify_inclusion(LEAF_INPUTS[index], index, size, proof, ROOTS[size])
    assert root_from_inclusion_proof(leaf_hash(LEAF_INPUTS[index]), index, size, proof) == ROOTS[size]


@pytest.mark.parametrize(("old_size", "new_size", "proof"), CONSISTENCY_VECTORS)
def test_vector_consistency(old_size, new_size, proof):
    leaves = LEAF_INPUTS[:new_size]
    assert consistency_proof(leaves, old_size) == proof
    assert consistency_proof_from_hashes([leaf_hash(d) for d in leaves], old_size) == proof
    assert verify_consistency(old_size, new_size, ROOTS[old_size], ROOTS[new_size], proof)


def test_vector_real_ct_log_inclusion():
    assert leaf_hash(CT_LOG_RAW_LEAF) == CT_LOG_LEAF_HASH
    assert (
        root_from_inclusion_proof(
            CT_LOG_LEAF_HASH, CT_LOG_LEAF_INDEX, CT_LOG_TREE_SIZE, CT_LOG_AUDIT_PATH
        )
        == CT_LOG_ROOT
    )
    assert verify_inclusion(
        CT_LOG_RAW_LEAF, CT_LOG_LEAF_INDEX, CT_LOG_TREE_SIZE, CT_LOG_AUDIT_PATH, CT_LOG_ROOT
    )
    # Same corruptions as merkle_test.py: wrong root, index moved past the proof's reach.
    assert not verify_inclusion(
        CT_LOG_RAW_LEAF, CT_LOG_LEAF_INDEX, CT_LOG_TREE_SIZE, CT_LOG_AUDIT_PATH, b"\x00" * 32
    )
    moved = CT_LOG_LEAF_INDEX + 2 ** (len(CT_LOG_AUDIT_PATH) + 1)
    assert moved >= CT_LOG_TREE_SIZE  # so it is an argument error, not a wrong proof
    with pytest.raises(ValueError, match=str(moved)):
        verify_inclusion(CT_LOG_RAW_LEAF, moved, CT_LOG_TREE_SIZE, CT_LOG_AUDIT_PATH, CT_LOG_ROOT)
    assert not verify_inclusion(
        CT_LOG_RAW_LEAF, CT_LOG_LEAF_INDEX - 1, CT_LOG_TREE_SIZE, CT_LOG_AUDIT_PATH, CT_LOG_ROOT
    )


def test_vector_consistency_corruptions_from_ct_python():
    # python/ct/crypto/merkle_test.py: proof too short, bad second / first / both hashes.
    _, _, proof = CONSISTENCY_VECTORS[2]  # 6 -> 8
    bad8 = h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604329")
    bad6 = h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ee")
    assert not verify_consistency(6, 8, ROOTS[6], ROOTS[8], proof[:2])
    assert not verify_consistency(6, 8, ROOTS[6], bad8, proof)
    assert not verify_consistency(6, 8, bad6, ROOTS[8], proof)
    assert not verify_consistency(6, 8, bad6, bad8, proof)
    with pytest.raises(ValueError, match="old_size 5"):
        verify_consistency(5, 2, ROOTS[5], ROOTS[2], CONSISTENCY_VECTORS[3][2])


def test_consistency_edge_cases():
    some = hashlib.sha256(b"some").digest()
    # Equal sizes: empty proof, roots must match.
    assert verify_consistency(3, 3, ROOTS[3], ROOTS[3], [])
    assert not verify_consistency(3, 3, ROOTS[3], ROOTS[2], [])
    assert not verify_consistency(3, 3, ROOTS[3], ROOTS[3], [ROOTS[3]])
    assert consistency_proof(LEAF_INPUTS, 8) == []
    # From the empty tree: empty proof and the empty-tree root (our documented choice).
    assert consistency_proof(LEAF_INPUTS, 0) == []
    assert verify_consistency(0, 8, EMPTY_TREE_HASH, ROOTS[8], [])
    assert verify_consistency(0, 0, EMPTY_TREE_HASH, EMPTY_TREE_HASH, [])
    assert not verify_consistency(0, 8, EMPTY_TREE_HASH, ROOTS[8], [some])
    assert not verify_consistency(0, 8, some, ROOTS[8], [])
    assert not verify_consistency(0, 0, EMPTY_TREE_HASH, some, [])
    # 0 < old < new needs a non-empty proof.
    assert not verify_consistency(1, 2, ROOTS[1], ROOTS[2], [])


def test_single_leaf_tree():
    assert verify_inclusion(b"data", 0, 1, [], leaf_hash(b"data"))
    assert not verify_inclusion(b"data", 0, 1, [], b"")
    assert not verify_inclusion(b"data", 0, 1, [], EMPTY_TREE_HASH)
    assert not verify_inclusion(b"data", 0, 1, [leaf_hash(b"data")], leaf_hash(b"data"))


# ---------------------------------------------------------------------------
# 2. Slow, obviously correct reference: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1
#    transcribed literally (recursion over list slices).
# ---------------------------------------------------------------------------


def _sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _k(n: int) -> int:
    """Largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + d[0])
    k = _k(n)
    return _sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    if m == 0 or m == len(d):
        return []
    return ref_subproof(m, d, True)


def test_reference_matches_published_vectors():
    # Guard the reference itself before trusting it below.
    for size in range(9):
        assert ref_mth(LEAF_INPUTS[:size]) == ROOTS[size]
    for index, size, proof in INCLUSION_VECTORS:
        assert ref_path(index, LEAF_INPUTS[:size]) == proof
    for old, new, proof in CONSISTENCY_VECTORS:
        assert ref_proof(old, LEAF_INPUTS[:new]) == proof


REF_LEAVES = [i.to_bytes(2, "big") * (i % 5) for i in range(71)]  # includes b"" leaves


@pytest.mark.parametrize("size", range(71))
def test_against_reference(size):
    leaves = REF_LEAVES[:size]
    hashes = [leaf_hash(d) for d in leaves]
    expected_root = ref_mth(leaves)
    assert root(leaves) == expected_root
    assert root_from_hashes(hashes) == expected_root
    for index in range(size):
        proof = inclusion_proof_from_hashes(hashes, index)
        assert proof == ref_path(index, leaves)
        assert verify_inclusion(leaves[index], index, size, proof, expected_root)
    for old in range(size + 1):
        proof = consistency_proof_from_hashes(hashes, old)
        assert proof == ref_proof(old, leaves)
        old_root = root_from_hashes(hashes[:old])
        assert verify_consistency(old, size, old_root, expected_root, proof)


# ---------------------------------------------------------------------------
# 3. Properties.  Leaves are unique so that a different index really is a
#    different claim (with duplicate leaves, [a, a] legitimately proves a at
#    both 0 and 1).
# ---------------------------------------------------------------------------

# Expected proof lengths, from transparency-dev/merkle proof/verify.go
# (decompInclProof / RootFromConsistencyProof), as an independent check.


def expected_inclusion_len(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def expected_consistency_len(old: int, new: int) -> int:
    if old == 0 or old == new:
        return 0
    inner = ((old - 1) ^ (new - 1)).bit_length()
    border = bin((old - 1) >> inner).count("1")
    shift = (old & -old).bit_length() - 1
    start = 0 if old == 1 << shift else 1
    return start + inner - shift + border


leaves_st = st.lists(st.binary(max_size=12), min_size=1, max_size=200, unique=True)
fast = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@fast
@given(leaves=leaves_st, data=st.data())
def test_property_inclusion(leaves, data):
    n = len(leaves)
    hashes = [leaf_hash(d) for d in leaves]
    tree_root = root_from_hashes(hashes)
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof_from_hashes(hashes, index)

    assert proof == inclusion_proof(leaves, index)
    assert len(proof) <= math.ceil(math.log2(n)) if n > 1 else proof == []
    assert len(proof) == expected_inclusion_len(index, n)
    assert verify_inclusion(leaves[index], index, n, proof, tree_root)
    assert root_from_inclusion_proof(hashes[index], index, n, proof) == tree_root

    def bad(p=proof, i=index, size=n, r=tree_root, leaf=leaves[index]):
        assert not verify_inclusion(leaf, i, size, p, r)

    # Tampered proof contents / length.
    if proof:
        pos = data.draw(st.integers(0, len(proof) - 1), label="pos")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad(p=proof[:pos] + [_flip(proof[pos], bit)] + proof[pos + 1 :])
        bad(p=proof[:pos] + proof[pos + 1 :])
        bad(p=proof[:pos] + [proof[pos][:-1]] + proof[pos + 1 :])  # truncated hash
    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra")
    at = data.draw(st.integers(0, len(proof)), label="at")
    bad(p=proof[:at] + [extra] + proof[at:])
    bad(p=proof + [tree_root])
    bad(p=[b""] + proof)
    # Wrong leaf, index, root.
    bad(leaf=leaves[index] + b"x")
    if n > 1:
        other = data.draw(st.integers(0, n - 2), label="other")
        bad(i=other if other < index else other + 1)
    bad(r=_flip(tree_root, data.draw(st.integers(0, 255), label="rbit")))
    bad(r=EMPTY_TREE_HASH)
    # Wrong size: the root does not commit to the size, so only sizes that
    # change the proof's shape must fail (e.g. index 0 proves the same chain
    # in trees of 3 and 4 leaves).  2n and n//2 always change it.
    bad(size=2 * n)
    if n // 2 > index:
        bad(size=n // 2)
    wrong_size = data.draw(st.integers(index + 1, 2 * n + 2), label="wrong_size")
    if expected_inclusion_len(index, wrong_size) != len(proof):
        bad(size=wrong_size)


@fast
@given(leaves=leaves_st, data=st.data())
def test_property_consistency(leaves, data):
    n = len(leaves)
    hashes = [leaf_hash(d) for d in leaves]
    old = data.draw(st.integers(0, n), label="old")
    old_root, new_root = root_from_hashes(hashes[:old]), root_from_hashes(hashes)
    proof = consistency_proof_from_hashes(hashes, old)

    assert proof == consistency_proof(leaves, old)
    assert len(proof) == expected_consistency_len(old, n)
    assert len(proof) <= math.ceil(math.log2(n)) + 1
    assert verify_consistency(old, n, old_root, new_root, proof)

    if old in (0, n):
        assert proof == []
        return

    def bad(p=proof, m=old, size=n, r1=old_root, r2=new_root):
        assert not verify_consistency(m, size, r1, r2, p)

    pos = data.draw(st.integers(0, len(proof) - 1), label="pos")
    bit = data.draw(st.integers(0, 255), label="bit")
    bad(p=proof[:pos] + [_flip(proof[pos], bit)] + proof[pos + 1 :])
    bad(p=proof[:pos] + proof[pos + 1 :])
    bad(p=proof[:pos] + [proof[pos][:-1]] + proof[pos + 1 :])
    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra")
    at = data.draw(st.integers(0, len(proof)), label="at")
    bad(p=proof[:at] + [extra] + proof[at:])
    bad(p=[proof[0]] + proof)
    bad(p=[old_root] + proof)
    bad(p=proof + [new_root])
    bad(p=[])
    bad(r1=_flip(old_root, bit))
    bad(r2=_flip(new_root, bit))
    bad(r1=new_root, r2=old_root)
    # Wrong sizes: as for inclusion, only shape-changing sizes must fail.
    for m, size in [(old - 1, n), (old + 1, n), (old ^ 2, n), (old, 2 * n), (old, n // 2)]:
        if 0 < m < size and expected_consistency_len(m, size) != len(proof):
            bad(m=m, size=size)
    m = data.draw(st.integers(1, n), label="m")
    size = data.draw(st.integers(m, 2 * n), label="size")
    if (m, size) != (old, n) and expected_consistency_len(m, size) != len(proof):
        bad(m=m, size=size)


# ---------------------------------------------------------------------------
# 4. Preconditions.
# ---------------------------------------------------------------------------


def test_inclusion_preconditions():
    leaves = LEAF_INPUTS[:3]
    hashes = [leaf_hash(d) for d in leaves]
    with pytest.raises(ValueError, match="index 5 out of range for tree of size 3"):
        inclusion_proof(leaves, 5)
    with pytest.raises(ValueError, match="index 3 out of range for tree of size 3"):
        inclusion_proof_from_hashes(hashes, 3)
    with pytest.raises(ValueError, match="index -1 out of range"):
        inclusion_proof(leaves, -1)
    with pytest.raises(ValueError, match="index 0 out of range for tree of size 0"):
        inclusion_proof([], 0)
    with pytest.raises(ValueError, match="index 3 out of range for tree of size 3"):
        verify_inclusion(b"x", 3, 3, [], ROOTS[3])
    with pytest.raises(ValueError, match="size -2"):
        verify_inclusion(b"x", 0, -2, [], ROOTS[3])
    with pytest.raises(ValueError, match="index 0 out of range for tree of size 0"):
        root_from_inclusion_proof(NODE_HASHES[0][0], 0, 0, [])
    with pytest.raises(ValueError, match="leaf_hash must be 32 bytes"):
        root_from_inclusion_proof(b"short", 0, 1, [])
    with pytest.raises(ValueError, match="index 1 in tree of size 8"):
        root_from_inclusion_proof(NODE_HASHES[0][1], 1, 8, INCLUSION_VECTORS[1][2][:2])
    with pytest.raises(ValueError, match="must be an int"):
        inclusion_proof(leaves, 1.0)


def test_consistency_preconditions():
    leaves = LEAF_INPUTS[:3]
    with pytest.raises(ValueError, match="old_size 4 is larger than new_size 3"):
        consistency_proof(leaves, 4)
    with pytest.raises(ValueError, match="old_size -1"):
        consistency_proof_from_hashes([leaf_hash(d) for d in leaves], -1)
    with pytest.raises(ValueError, match="old_size 5 is larger than new_size 2"):
        verify_consistency(5, 2, ROOTS[5], ROOTS[2], [])
    with pytest.raises(ValueError, match="old_size -1"):
        verify_consistency(-1, 2, ROOTS[1], ROOTS[2], [])
    with pytest.raises(ValueError, match="new_size -3"):
        verify_consistency(0, -3, ROOTS[0], ROOTS[0], [])


def test_wrong_proofs_return_false_not_raise():
    # Garbage proof elements are a wrong proof, not an argument error.
    assert not verify_inclusion(LEAF_INPUTS[0], 0, 8, [b"", None, 3], ROOTS[8])
    assert not verify_consistency(6, 8, ROOTS[6], ROOTS[8], [b"", None, 3])
    assert not verify_consistency(6, 8, b"", ROOTS[8], CONSISTENCY_VECTORS[2][2])
    assert not verify_inclusion(LEAF_INPUTS[0], 0, 8, INCLUSION_VECTORS[1][2], b"")


@given(st.integers(0, 40), st.lists(st.integers(0, 30), max_size=4))
def test_a_compact_range_continued_and_extended_in_chunks_completes_every_perfect_subtree_once(start, chunks):
    """Reference: each perfect subtree's root from :func:`root_from_hashes` of its leaves."""
    n = start + sum(chunks)
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(n)]
    border = [root_from_hashes(leaves[i << lv : (i + 1) << lv]) for lv, i in merkle.perfect_subtrees(0, start)] if start else []
    compact = merkle.CompactRange(start, border)
    completed, at = [], start
    for size in chunks:
        completed += compact.extend(leaves[at : at + size]) if size != 1 else compact.append(leaves[at])
        at += size
        assert compact.size == at and compact.root() == root_from_hashes(leaves[:at])
    expected = sorted((lv, i, root_from_hashes(leaves[i << lv : (i + 1) << lv]))
                      for lv in range(n.bit_length()) for i in range(n >> lv) if (i + 1) << lv > start)
    assert sorted(completed) == expected and len(completed) == len(expected)
