"""RFC 9162 Merkle trees (redline.merkle): roots, proofs, and their verification.

Our tree code is checked three ways: against a straight transcription of the RFC 9162 §2.1
definitions below (recursive MTH, PATH and PROOF), by round trip (every proof we make verifies),
and by tampering (any single flipped bit in a leaf, proof node or root is refused). The external
transparency-dev vectors are in test_external_vectors.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redline import merkle
from redline.errors import MerkleError


def leaves_of(n: int, salt: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(f"leaf {salt}/{i}".encode()) for i in range(n)]


# --- reference: RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 written as literally as possible ------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return d[0]  # leaves are already hashed: MTH({d0}) = SHA-256(0x00 || d0) was applied
    k = _k(n)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- hashing and roots ---------------------------------------------------------------------------


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert merkle.node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    # A leaf can never pose as an interior node of the same bytes.
    assert merkle.leaf_hash(b"L" * 32 + b"R" * 32) != merkle.node_hash(b"L" * 32, b"R" * 32)


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.CompactRange().root() == merkle.EMPTY_ROOT


def test_small_trees_by_hand() -> None:
    a, b, c = leaves_of(3)
    assert merkle.root([a]) == a
    assert merkle.root([a, b]) == merkle.node_hash(a, b)
    # Three leaves split at 2: the odd leaf is not paired with itself (unlike Bitcoin's tree).
    assert merkle.root([a, b, c]) == merkle.node_hash(merkle.node_hash(a, b), c)


def test_roots_match_the_rfc_definition_for_sizes_up_to_130() -> None:
    leaves = leaves_of(130)
    for n in range(131):
        assert merkle.root(leaves[:n]) == ref_mth(leaves[:n]), n


def test_compact_range_root_matches_root_at_every_size() -> None:
    leaves = leaves_of(300, salt=1)
    cr = merkle.CompactRange()
    for n, leaf in enumerate(leaves, start=1):
        cr.append(leaf)
        assert cr.size == n
        assert cr.root() == merkle.root(leaves[:n]), n


@settings(max_examples=100)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=0, max_size=300))
def test_compact_range_root_equals_root(leaves: list[bytes]) -> None:
    cr = merkle.CompactRange()
    for leaf in leaves:
        cr.append(leaf)
    assert cr.size == len(leaves)
    assert cr.root() == merkle.root(leaves) == ref_mth(leaves)


# --- inclusion proofs ----------------------------------------------------------------------------


def test_every_inclusion_proof_verifies_for_sizes_up_to_64() -> None:
    leaves = leaves_of(64, salt=2)
    for n in range(1, 65):
        tree, root = leaves[:n], merkle.root(leaves[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(i, tree)
            assert proof == ref_path(i, tree), (i, n)
            merkle.verify_inclusion(i, n, tree[i], proof, root)


@settings(max_examples=200)
@given(st.integers(1, 300), st.data())
def test_inclusion_proof_verifies(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, salt=3)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = merkle.inclusion_proof(i, leaves)
    assert proof == ref_path(i, leaves)
    merkle.verify_inclusion(i, n, leaves[i], proof, merkle.root(leaves))
    assert merkle.root_from_inclusion(i, n, leaves[i], proof) == merkle.root(leaves)


@settings(max_examples=200)
@given(st.integers(1, 300), st.data())
def test_inclusion_proof_with_any_flipped_bit_is_refused(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, salt=4)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = merkle.inclusion_proof(i, leaves)
    root = merkle.root(leaves)
    leaf = leaves[i]
    target = data.draw(st.integers(-2, len(proof) - 1), label="target")  # -2 root, -1 leaf, else proof[k]
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == -2:
        root = flip(root, bit)
    elif target == -1:
        leaf = flip(leaf, bit)
    else:
        proof[target] = flip(proof[target], bit)
    with pytest.raises(MerkleError):
        merkle.verify_inclusion(i, n, leaf, proof, root)


@settings(max_examples=100)
@given(st.integers(2, 300), st.data())
def test_inclusion_proof_for_another_leaf_is_refused(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, salt=5)
    i = data.draw(st.integers(0, n - 1), label="index")
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="other")
    proof = merkle.inclusion_proof(i, leaves)
    with pytest.raises(MerkleError):
        merkle.verify_inclusion(j, n, leaves[i], proof, merkle.root(leaves))
    with pytest.raises(MerkleError):
        merkle.verify_inclusion(i, n, leaves[j], proof, merkle.root(leaves))


@settings(max_examples=100)
@given(st.integers(2, 300), st.data())
def test_truncated_or_extended_inclusion_proof_is_refused(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, salt=6)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = merkle.inclusion_proof(i, leaves)
    root = merkle.root(leaves)
    with pytest.raises(MerkleError):
        merkle.verify_inclusion(i, n, leaves[i], proof[:-1], root)
    with pytest.raises(MerkleError):
        merkle.verify_inclusion(i, n, leaves[i], [*proof, root], root)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (5, 5), (-1, 5)])
def test_inclusion_index_outside_the_tree_is_refused(index: int, size: int) -> None:
    leaf = merkle.leaf_hash(b"x")
    with pytest.raises(MerkleError):
        merkle.verify_inclusion(index, size, leaf, [], leaf)
    with pytest.raises(MerkleError):
        merkle.inclusion_proof(index, leaves_of(size))


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_inclusion_hashes_of_wrong_length_are_refused(bad: bytes) -> None:
    leaves = leaves_of(4)
    proof = merkle.inclusion_proof(1, leaves)
    root = merkle.root(leaves)
    for args in (
        (bad, proof, root),
        (leaves[1], [bad, *proof[1:]], root),
        (leaves[1], proof, bad),
    ):
        with pytest.raises(MerkleError):
            merkle.verify_inclusion(1, 4, *args)


# --- consistency proofs --------------------------------------------------------------------------


def test_every_consistency_proof_verifies_for_sizes_up_to_40() -> None:
    leaves = leaves_of(40, salt=7)
    for n in range(1, 41):
        new_root = merkle.root(leaves[:n])
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, leaves[:n])
            assert proof == ref_subproof(m, leaves[:n], True), (m, n)
            merkle.verify_consistency(m, n, merkle.root(leaves[:m]), new_root, proof)


@settings(max_examples=200)
@given(st.integers(1, 300), st.data())
def test_consistency_proof_verifies(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, salt=8)
    m = data.draw(st.integers(1, n), label="old size")
    proof = merkle.consistency_proof(m, leaves)
    assert proof == ref_subproof(m, leaves, True)
    merkle.verify_consistency(m, n, merkle.root(leaves[:m]), merkle.root(leaves), proof)


@settings(max_examples=200)
@given(st.integers(1, 300), st.data())
def test_consistency_proof_with_any_flipped_bit_is_refused(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, salt=9)
    m = data.draw(st.integers(1, n), label="old size")
    proof = merkle.consistency_proof(m, leaves)
    old_root, new_root = merkle.root(leaves[:m]), merkle.root(leaves)
    target = data.draw(st.integers(-2, len(proof) - 1), label="target")  # -2 old root, -1 new root
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == -2:
        old_root = flip(old_root, bit)
    elif target == -1:
        new_root = flip(new_root, bit)
    else:
        proof[target] = flip(proof[target], bit)
    with pytest.raises(MerkleError):
        merkle.verify_consistency(m, n, old_root, new_root, proof)


@settings(max_examples=100)
@given(st.integers(2, 300), st.data())
def test_rewritten_history_fails_consistency(n: int, data: st.DataObject) -> None:
    # The attack a consistency proof exists for: the log at size n no longer holds the same first m
    # leaves. An honest proof over the rewritten log must not link the old root to the new one.
    leaves = leaves_of(n, salt=10)
    m = data.draw(st.integers(1, n - 1), label="old size")
    changed = data.draw(st.integers(0, m - 1), label="rewritten leaf")
    old_root = merkle.root(leaves[:m])
    forged = list(leaves)
    forged[changed] = merkle.leaf_hash(b"rewritten")
    proof = merkle.consistency_proof(m, forged)
    with pytest.raises(MerkleError):
        merkle.verify_consistency(m, n, old_root, merkle.root(forged), proof)


@settings(max_examples=100)
@given(st.integers(2, 300), st.data())
def test_truncated_or_extended_consistency_proof_is_refused(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, salt=11)
    m = data.draw(st.integers(1, n - 1), label="old size")
    proof = merkle.consistency_proof(m, leaves)
    old_root, new_root = merkle.root(leaves[:m]), merkle.root(leaves)
    with pytest.raises(MerkleError):
        merkle.verify_consistency(m, n, old_root, new_root, proof[:-1])
    with pytest.raises(MerkleError):
        merkle.verify_consistency(m, n, old_root, new_root, [*proof, new_root])


def test_consistency_between_equal_sizes() -> None:
    leaves = leaves_of(5)
    root = merkle.root(leaves)
    assert merkle.consistency_proof(5, leaves) == []
    merkle.verify_consistency(5, 5, root, root, [])
    with pytest.raises(MerkleError, match="forked"):
        merkle.verify_consistency(5, 5, root, merkle.root(leaves_of(5, salt=1)), [])
    with pytest.raises(MerkleError):
        merkle.verify_consistency(5, 5, root, root, [root])


@pytest.mark.parametrize(("m", "n"), [(0, 0), (0, 3), (4, 3), (-1, 3)])
def test_consistency_sizes_that_cannot_be_proved_are_refused(m: int, n: int) -> None:
    leaves = leaves_of(max(n, 0))
    root = merkle.root(leaves)
    with pytest.raises(MerkleError):
        merkle.verify_consistency(m, n, root, root, [root])
    with pytest.raises(MerkleError):
        merkle.verify_consistency(m, n, merkle.EMPTY_ROOT, root, [])
    with pytest.raises(MerkleError):
        merkle.consistency_proof(m, leaves)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_consistency_hashes_of_wrong_length_are_refused(bad: bytes) -> None:
    leaves = leaves_of(7)
    proof = merkle.consistency_proof(3, leaves)
    old_root, new_root = merkle.root(leaves[:3]), merkle.root(leaves)
    for args in ((bad, new_root, proof), (old_root, bad, proof), (old_root, new_root, [*proof[:-1], bad])):
        with pytest.raises(MerkleError):
            merkle.verify_consistency(3, 7, *args)


# --- MerkleLog: roots and proofs for past sizes ----------------------------------------------------


@settings(max_examples=50)
@given(st.integers(1, 200), st.data())
def test_merkle_log_answers_like_the_whole_tree_at_any_past_size(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, salt=12)
    log = merkle.MerkleLog()
    for leaf in leaves:
        log.append(leaf)
    assert log.size == n and log.root() == merkle.root(leaves)
    size = data.draw(st.integers(1, n), label="past size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old size")
    assert log.root(size) == merkle.root(leaves[:size])
    assert log.inclusion_proof(index, size) == merkle.inclusion_proof(index, leaves[:size])
    assert log.consistency_proof(old, size) == merkle.consistency_proof(old, leaves[:size])


def test_merkle_log_refuses_sizes_it_does_not_hold() -> None:
    log = merkle.MerkleLog()
    for leaf in leaves_of(5):
        log.append(leaf)
    assert log.root(0) == merkle.EMPTY_ROOT
    for call in (lambda: log.root(6), lambda: log.inclusion_proof(5, 5), lambda: log.consistency_proof(0, 5),
                 lambda: log.consistency_proof(3, 6), lambda: log.root(-1)):  # fmt: skip
        with pytest.raises(MerkleError):
            call()


# --- StoredLog: the tree kept on disk, O(log n) in memory -----------------------------------------


class _Source:
    """What the ledger keeps for a StoredLog: the leaves, and the subtrees ``append`` handed over."""

    def __init__(self) -> None:
        self.leaf_list: list[bytes] = []
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads = 0

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        self.reads += 1
        return self.leaf_list[lo:hi]

    def node(self, height: int, index: int) -> bytes:
        self.reads += 1
        return self.nodes[(height, index)]

    def add(self, log: merkle.StoredLog, leaf: bytes) -> None:
        self.leaf_list.append(leaf)
        for h, i, node in log.append(leaf):
            assert h >= merkle.STORED_HEIGHT and (h, i) not in self.nodes
            self.nodes[(h, i)] = node


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 700), st.integers(0, 700), st.data())
def test_stored_log_reopened_at_any_size_answers_like_the_whole_tree(n: int, more: int, data: st.DataObject) -> None:
    leaves = leaves_of(n + more, salt=31)
    source = _Source()
    live = merkle.StoredLog(source, 0)
    for leaf in leaves[:n]:
        source.add(live, leaf)
    reopened = merkle.StoredLog(source, n)  # what the ledger does at start: frontier and tail only
    assert reopened.frontier() == live.frontier()
    assert reopened.root() == live.root() == merkle.root(leaves[:n])
    for leaf in leaves[n:]:  # both grow on from there
        kept = live.append(leaf)
        source.add(reopened, leaf)
        assert kept == [(h, i, source.nodes[(h, i)]) for h, i, _ in kept]
    total = n + more
    assert reopened.size == total and reopened.root() == merkle.root(leaves)
    if total:
        size = data.draw(st.integers(1, total), label="past size")
        index = data.draw(st.integers(0, size - 1), label="index")
        old = data.draw(st.integers(1, size), label="old size")
        assert reopened.root(size) == merkle.root(leaves[:size])
        assert reopened.inclusion_proof(index, size) == merkle.inclusion_proof(index, leaves[:size])
        assert reopened.consistency_proof(old, size) == merkle.consistency_proof(old, leaves[:size])


def test_stored_log_keeps_little_and_reads_little() -> None:
    leaves = leaves_of(5000, salt=32)
    source = _Source()
    log = merkle.StoredLog(source, 0)
    for leaf in leaves:
        source.add(log, leaf)
    assert len(source.nodes) < 5000 // 2**merkle.STORED_HEIGHT * 2  # about one subtree per 32 leaves
    source.reads = 0
    assert log.root() == merkle.root(leaves)
    assert source.reads == 0  # the current root comes from the frontier alone
    reopened = merkle.StoredLog(source, 5000)
    assert source.reads <= 5000 .bit_length() + 1  # one read per frontier subtree, one for the tail
    source.reads = 0
    assert reopened.root(4321) == merkle.root(leaves[:4321])
    assert source.reads <= 2 * 5000 .bit_length()
    with pytest.raises(MerkleError):
        reopened.root(5001)
    with pytest.raises(MerkleError):
        reopened.append(b"short")
