"""RFC 9162 (Certificate Transparency v2) Merkle trees: hashes, roots, proofs and their checks.

Leaf hash = SHA-256(0x00 || data), node hash = SHA-256(0x01 || left || right); the tree over n
leaves splits at the largest power of two below n (RFC 9162 §2.1.1). Verification follows the
algorithms of §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) literally, so the external
transparency-dev vectors can be checked against them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from redline.errors import MerkleError

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash (MTH) over already-hashed leaves."""
    if not leaves:
        return EMPTY_ROOT
    # Iterative bottom-up build gives the same tree as the recursive split definition:
    # pair left to right, carry an odd last node up unchanged.
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Audit path for leaf ``index`` in the tree over ``leaves`` (RFC 9162 §2.1.3.1)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise MerkleError(f"leaf {index} is not in a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Proof that the tree of size ``old_size`` is a prefix of the tree over ``leaves`` (§2.1.4.1)."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise MerkleError(f"no consistency proof from size {old_size} to size {n}")
    return _subproof(old_size, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Recompute the root from an audit path (RFC 9162 §2.1.3.2); raise if the path is malformed."""
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} is outside a tree of size {size}")
    _check_hashes(leaf, *proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise MerkleError("inclusion proof is longer than the tree allows")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("inclusion proof is shorter than the tree requires")
    return r


def _check_hashes(*hashes: bytes) -> None:
    for h in hashes:
        if len(h) != 32:
            raise MerkleError(f"a tree hash must be 32 bytes, got {len(h)}")


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes) -> None:
    _check_hashes(expected_root)
    if root_from_inclusion(index, size, leaf, proof) != expected_root:
        raise MerkleError(f"leaf {index} is not in the tree of size {size} with the given root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that tree (size1, root1) is a prefix of tree (size2, root2) (RFC 9162 §2.1.4.2)."""
    if size1 < 0 or size2 < 0 or size1 > size2:
        raise MerkleError(f"size {size1} cannot be a prefix of size {size2}")
    if size1 == 0:
        # RFC 9162 defines proofs only for 0 < size1; the empty tree proves nothing about a log.
        raise MerkleError("no consistency proof exists from the empty tree")
    if size1 == size2:
        if proof:
            raise MerkleError("a proof between equal sizes must be empty")
        if root1 != root2:
            raise MerkleError("same tree size but different roots: the histories have forked")
        return
    if not proof:
        raise MerkleError("consistency proof is empty")
    _check_hashes(root1, root2, *proof)
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MerkleError("consistency proof is longer than the trees allow")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("consistency proof is shorter than the trees require")
    if fr != root1:
        raise MerkleError(f"the proof does not lead to the old root at size {size1}")
    if sr != root2:
        raise MerkleError(f"the proof does not lead to the new root at size {size2}: the log was rewritten")


class CompactRange:
    """Running root of an append-only tree in O(log n) memory: the roots of its perfect subtrees."""

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[tuple[int, bytes]] = []  # (height, hash), left to right

    def append(self, leaf: bytes) -> None:
        h, node = 0, leaf
        while self._peaks and self._peaks[-1][0] == h:
            _, left = self._peaks.pop()
            node = node_hash(left, node)
            h += 1
        self._peaks.append((h, node))
        self.size += 1

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        node = self._peaks[-1][1]
        for _, left in reversed(self._peaks[:-1]):
            node = node_hash(left, node)
        return node


class _TreeHashes:
    """Roots and proofs for any past size of an append-only tree, over ``_node(height, index)``:
    the hash of the complete, aligned subtree of ``2**height`` leaves starting at leaf
    ``index * 2**height`` (RFC 9162 splits any range into such subtrees). Subclasses say where
    those hashes come from."""

    @property
    def size(self) -> int:
        raise NotImplementedError

    def _node(self, height: int, index: int) -> bytes:
        raise NotImplementedError

    def range_hash(self, lo: int, hi: int) -> bytes:
        """MTH of leaves[lo:hi]."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            return self._node(n.bit_length() - 1, lo // n)
        k = _split(n)
        return node_hash(self.range_hash(lo, lo + k), self.range_hash(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise MerkleError(f"no tree of size {size}: only {self.size} leaves are held")
        return self.range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise MerkleError(f"leaf {index} is not in a tree of size {size}")
        proof: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self.range_hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.range_hash(lo, lo + k))
                lo += k
        return proof[::-1]

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        if not 0 < old_size <= size <= self.size:
            raise MerkleError(f"no consistency proof from size {old_size} to size {size}")
        proof: list[bytes] = []
        lo, hi, m, complete = 0, size, old_size, True
        while True:
            n = hi - lo
            if m == n:
                if not complete:
                    proof.append(self.range_hash(lo, hi))
                break
            k = _split(n)
            if m <= k:
                proof.append(self.range_hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.range_hash(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        return proof[::-1]


class MerkleLog(_TreeHashes):
    """An append-only tree that answers roots and proofs for any past size in O(log n) hashes.

    It keeps the hash of every complete, aligned subtree as appends create it, level by level in
    flat byte arrays (about 64 bytes per leaf in all), so a checkpoint at an older size is checked
    without rehashing the chain and a million-envelope chain costs about 64 MB. For a tree whose
    subtrees are kept on disk, see ``StoredLog``.
    """

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]  # level h holds the complete 2**h-leaf subtrees

    @property
    def size(self) -> int:
        return len(self._levels[0]) // 32

    @property
    def leaves(self) -> list[bytes]:
        level = self._levels[0]
        return [bytes(level[i : i + 32]) for i in range(0, len(level), 32)]

    def append(self, leaf: bytes) -> None:
        if len(leaf) != 32:
            raise MerkleError("a leaf hash is 32 bytes")
        index = self.size
        self._levels[0] += leaf
        node, h = leaf, 0
        while index & 1:  # this leaf completes a subtree at each trailing one bit
            node = node_hash(self._node(h, index - 1), node)
            index >>= 1
            h += 1
            if len(self._levels) == h:
                self._levels.append(bytearray())
            self._levels[h] += node

    def _node(self, height: int, index: int) -> bytes:
        return bytes(self._levels[height][index * 32 : index * 32 + 32])


class NodeSource(Protocol):
    """Where a ``StoredLog`` reads what it does not hold in memory (the ledger, in one store)."""

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        """Leaf hashes ``lo`` to ``hi - 1`` (0-based, as in RFC 9162)."""
        ...

    def node(self, height: int, index: int) -> bytes:
        """A complete, aligned subtree of height ``STORED_HEIGHT`` or more, as ``StoredLog.append``
        handed it over for keeping."""
        ...


# Subtrees of 2**STORED_HEIGHT leaves and up are kept on disk: about one row per 32 leaves, and any
# subtree below that height is rehashed from at most 64 leaf ids.
STORED_HEIGHT = 6


class StoredLog(_TreeHashes):
    """An append-only tree kept mostly outside memory: O(log n) in memory, O(log n) to open.

    In memory: the frontier (the roots of the perfect subtrees that make up the whole tree, left
    to right) and the leaves of the last, incomplete block of ``2**STORED_HEIGHT``. Everything else
    is read from ``source``: each complete, aligned subtree of ``STORED_HEIGHT`` levels or more is
    handed to the caller by ``append`` (to be stored in the same transaction as the leaf, so the
    kept tree can never disagree with the chain after a crash), and lower subtrees are rehashed
    from their leaves. So the root at the current size costs no I/O, and a root or proof for an
    older size costs O(log n) reads and at most a few hundred hashes.
    """

    def __init__(self, source: NodeSource, size: int) -> None:
        self._source = source
        self._size = size
        self._peaks: dict[tuple[int, int], bytes] = {}  # (height, index) -> hash; the frontier
        self._order: list[tuple[int, int]] = []  # the frontier's keys, left to right
        block = 1 << STORED_HEIGHT
        self._tail_lo = size - size % block
        self._tail = source.leaves(self._tail_lo, size) if size % block else []
        start = 0
        for h in reversed(range(size.bit_length())):
            if size >> h & 1:
                key = (h, start >> h)
                if h >= STORED_HEIGHT:
                    self._peaks[key] = source.node(*key)
                else:
                    self._peaks[key] = root(self._tail[start - self._tail_lo : start - self._tail_lo + (1 << h)])
                self._order.append(key)
                start += 1 << h

    @property
    def size(self) -> int:
        return self._size

    @property
    def leaves(self) -> list[bytes]:
        return self._source.leaves(0, self._size)

    def frontier(self) -> list[tuple[int, int, bytes]]:
        """(height, index, hash) of the perfect subtrees that make up the tree, left to right."""
        return [(h, i, self._peaks[(h, i)]) for h, i in self._order]

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf; return the subtrees it completed that the caller must keep (height, index, hash)."""
        if len(leaf) != 32:
            raise MerkleError("a leaf hash is 32 bytes")
        keep: list[tuple[int, int, bytes]] = []
        h, index, node = 0, self._size, leaf
        while self._order and self._order[-1][0] == h:
            node = node_hash(self._peaks.pop(self._order.pop()), node)
            h, index = h + 1, index >> 1
            if h >= STORED_HEIGHT:
                keep.append((h, index, node))
        self._peaks[(h, index)] = node
        self._order.append((h, index))
        self._size += 1
        self._tail.append(leaf)
        if self._size % (1 << STORED_HEIGHT) == 0:
            self._tail, self._tail_lo = [], self._size
        return keep

    def _node(self, height: int, index: int) -> bytes:
        found = self._peaks.get((height, index))
        if found is not None:
            return found
        if height >= STORED_HEIGHT:
            return self._source.node(height, index)
        lo = index << height
        hi = lo + (1 << height)
        if lo >= self._tail_lo:
            return root(self._tail[lo - self._tail_lo : hi - self._tail_lo])
        return root(self._source.leaves(lo, hi))
