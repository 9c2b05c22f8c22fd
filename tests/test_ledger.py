"""The ledger: append rules, group commit, outbox, schema and Merkle log, on both backends.

Tests that take the ``store`` fixture (or ``ledger``) run twice: on a real SQLite file in a
temporary directory, and on a new database of a real PostgreSQL server the test setup started
(tests/pg.py; redline.ledger.postgres). The rest are about SQLite's file itself. Refusals assert
that the store is unchanged afterwards, both in the database (a fresh connection) and in the
ledger's in-memory caches.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from redline import identity, merkle
from redline.envelope import Envelope, open_envelope, seal
from redline.errors import (
    EquivocationError,
    MerkleError,
    NotFoundError,
    OutOfOrderError,
    SchemaVersionError,
    StorageError,
)
from redline.ledger.interface import LedgerStore
from redline.ledger.model import SCHEMA_VERSION
from redline.ledger.sqlite import Ledger, leaf_of
from redline.ledger.stores import open_store


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"redline ledger test key " + name.encode()).digest())


A_ROOT, A_SIGN, B_SIGN = _key("a root"), _key("a signing"), _key("b signing")
A = identity.fingerprint(bytes(A_ROOT.verify_key))
B = identity.fingerprint(bytes(_key("b root").verify_key))
A_KEY = identity.key_id(bytes(A_SIGN.verify_key))
B_KEY = identity.key_id(bytes(B_SIGN.verify_key))
LINE = "00112233445566778899aabbccddeeff"
OTHER_LINE = "ffeeddccbbaa99887766554433221100"
T0 = 1_700_000_000_000


def envelope(
    seq: int,
    prev: str | None,
    *,
    text: str = "",
    sender: str = A,
    signer: nacl.signing.SigningKey = A_SIGN,
    line: str = LINE,
) -> Envelope:
    key = A_KEY if sender == A else B_KEY
    return seal(
        signer, line=line, sender=sender, key=key, seq=seq, sent_at=T0 + seq, kind="TEXT", prio="ROUTINE",
        prev=prev, seen_seq=0, seen_id=None, lang="en", content={"text": text or f"message {seq}"},
        salt=hashlib.sha256(f"{sender}{seq}{text}".encode()).digest()[:16],
    )  # fmt: skip


def chain(n: int, *, sender: str = A, signer: nacl.signing.SigningKey = A_SIGN) -> list[Envelope]:
    out: list[Envelope] = []
    for seq in range(1, n + 1):
        out.append(envelope(seq, out[-1].id if out else None, sender=sender, signer=signer))
    return out


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


class Store:
    """Where a test's ledger lives (a SQLite file, or a PostgreSQL database), and what a fresh
    connection to it sees: committed state only, not the ledger's caches."""

    def __init__(self, url: str, path: Path) -> None:
        self.url, self.path = url, path  # url "" means the SQLite file at path

    def open(self, *, create: bool = False, station: str | None = None) -> LedgerStore:
        return open_store(self.url, self.path, create=create, station=station)

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        if not self.url:
            return rows_on_disk(self.path, table)
        import psycopg

        with psycopg.connect(self.url) as db:
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                    for r in db.execute(f"SELECT * FROM {table} ORDER BY 1")]  # type: ignore[arg-type]  # fmt: skip

    def seqs(self, sender: str = A) -> list[int]:
        if not self.url:
            return stored_seqs(self.path, sender)
        import psycopg

        with psycopg.connect(self.url) as db:
            return [r[0] for r in db.execute("SELECT seq FROM envelopes WHERE sender=%s ORDER BY seq", (sender,))]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, path: Path) -> Store:
    if request.param == "postgres":
        return Store(request.getfixturevalue("pg_url"), path)
    return Store("", path)


@pytest.fixture
def ledger(store: Store) -> Iterator[LedgerStore]:
    led = store.open(create=True, station=A)
    yield led
    led.close()


@pytest.fixture
def sqlite_ledger(path: Path) -> Iterator[Ledger]:
    led = Ledger(path, create=True, station=A)
    yield led
    led.close()


def rows_on_disk(path: Path, table: str) -> list[tuple[Any, ...]]:
    """What a fresh connection sees: committed state only, not the ledger's caches."""
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        db.close()


def stored_seqs(path: Path, sender: str = A) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT seq FROM envelopes WHERE sender=? ORDER BY seq", (sender,))]
    finally:
        db.close()


def lookup(sender: str, key_id: str) -> bytes:
    return {(A, A_KEY): bytes(A_SIGN.verify_key), (B, B_KEY): bytes(B_SIGN.verify_key)}[(sender, key_id)]


# -- opening and creating ------------------------------------------------------------------------


def test_opening_a_missing_store_is_refused_and_creates_nothing(path: Path) -> None:
    with pytest.raises(StorageError, match="no store"):
        Ledger(path)
    assert not path.exists()


def test_creating_over_an_existing_store_is_refused(ledger: LedgerStore, store: Store) -> None:
    ledger.append(envelope(1, None), T0)
    with pytest.raises(StorageError, match="already exists"):
        store.open(create=True, station=B)
    assert store.seqs() == [1]
    again = store.open()
    assert again.station == A
    again.close()


def test_a_file_that_is_not_a_database_is_refused_with_a_storage_error(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database, it is a note to the duty officer\n" * 100)
    with pytest.raises(StorageError, match="cannot be opened"):
        Ledger(path)


def test_wal_mode_and_synchronous_full_are_actually_in_force(sqlite_ledger: Ledger, path: Path) -> None:
    ledger = sqlite_ledger
    # Guarantee 1 rests on these two settings: ask SQLite, not the source code.
    assert ledger._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # 2 = FULL
    reopened = Ledger(path)
    try:
        assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reopened._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        reopened.close()
    # WAL is persistent in the file header (bytes 18-19 are 2 for WAL), so any reader sees it.
    assert path.read_bytes()[18:20] == b"\x02\x02"


# -- schema version ------------------------------------------------------------------------------


def _newer_store(path: Path, journal_mode: str) -> None:
    Ledger(path, create=True, station=A).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    assert db.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
    db.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_store_from_a_newer_redline_is_refused_and_left_untouched(path: Path, journal_mode: str) -> None:
    # A newer redline may keep its store in another journal mode; refusing it must not rewrite
    # even the file header (switching it to WAL would be a write to a store we do not understand).
    _newer_store(path, journal_mode)
    before = (path.read_bytes(), os.stat(path).st_mtime_ns, sorted(os.listdir(path.parent)))
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}") as info:
        Ledger(path)
    # Still holding the exception (and its traceback): the refused store must already be released.
    assert info.value is not None
    after = (path.read_bytes(), os.stat(path).st_mtime_ns, sorted(os.listdir(path.parent)))
    assert after[0] == before[0], "the store's bytes changed although it was refused"
    assert after[1] == before[1], "the store's mtime changed although it was refused"
    assert after[2] == before[2], "opening a refused store left -wal/-shm files behind (connection not closed)"


# -- appending -----------------------------------------------------------------------------------


def test_envelopes_append_in_order_and_heads_follow(ledger: LedgerStore, store: Store) -> None:
    envs = chain(5)
    assert ledger.head(LINE, A) == (0, None)
    for env in envs:
        assert ledger.append(env, T0) is True
        assert ledger.head(LINE, A) == (env.seq, env.id)
    assert store.seqs() == [1, 2, 3, 4, 5]
    assert ledger.head(LINE, B) == (0, None)
    for env in envs:
        raw = ledger.raw_envelope(LINE, A, env.seq)
        assert raw == env.encode()
        assert open_envelope(raw, lookup).id == env.id
        assert ledger.has_id(LINE, env.id)
    assert [seq for seq, _ in ledger.raw_envelopes(LINE, A, after=2)] == [3, 4, 5]
    assert [seq for seq, _ in ledger.raw_envelopes(LINE, A, after=1, limit=2)] == [2, 3]


def test_two_chains_of_a_line_count_seq_independently(ledger: LedgerStore, store: Store) -> None:
    for env in chain(3):
        ledger.append(env, T0)
    for env in chain(2, sender=B, signer=B_SIGN):
        ledger.append(env, T0)
    assert ledger.head(LINE, A)[0] == 3
    assert ledger.head(LINE, B)[0] == 2
    assert store.seqs(B) == [1, 2]


def test_heads_survive_reopening(ledger: LedgerStore, store: Store) -> None:
    envs = chain(4)
    for env in envs:
        ledger.append(env, T0)
    ledger.close()
    reopened = store.open()
    try:
        assert reopened.head(LINE, A) == (4, envs[-1].id)
        assert reopened.append(envelope(5, envs[-1].id), T0) is True
    finally:
        reopened.close()


def test_exact_duplicate_is_dropped_and_returns_false(ledger: LedgerStore, store: Store) -> None:
    envs = chain(3)
    for env in envs:
        ledger.append(env, T0)
    before = store.rows("envelopes")
    assert ledger.append(envs[1], T0 + 99) is False
    assert ledger.append(envs[2], T0 + 99) is False
    assert store.rows("envelopes") == before
    assert store.rows("equivocations") == []
    assert ledger.head(LINE, A) == (3, envs[2].id)


@pytest.mark.parametrize("at", [1, 2, 3])
def test_equivocation_is_kept_as_evidence_and_raised(ledger: LedgerStore, store: Store, at: int) -> None:
    envs = chain(3)
    for env in envs:
        ledger.append(env, T0)
    before = store.rows("envelopes")
    # The same station's key, the same seq and prev, a different body: a second history.
    fork = envelope(at, envs[at - 2].id if at > 1 else None, text="a different story")
    assert fork.id != envs[at - 1].id
    with pytest.raises(EquivocationError, match=f"two different envelopes at seq {at}") as info:
        ledger.append(fork, T0 + 5)
    assert (info.value.seq, info.value.first_id, info.value.second_id) == (at, envs[at - 1].id, fork.id)
    # The chain keeps the first; the evidence holds both, committed (a fresh connection sees it).
    assert store.rows("envelopes") == before
    assert ledger.head(LINE, A) == (3, envs[2].id)
    (evidence,) = ledger.equivocations(LINE)
    assert (evidence.sender, evidence.seq, evidence.detected_at) == (A, at, T0 + 5)
    assert evidence.first == envs[at - 1].encode()
    assert evidence.second == fork.encode()
    assert len(store.rows("equivocations")) == 1
    assert ledger.equivocations(OTHER_LINE) == []


def test_seq_gap_is_refused_and_nothing_is_stored(ledger: LedgerStore, store: Store) -> None:
    envs = chain(4)
    ledger.append(envs[0], T0)
    ledger.append(envs[1], T0)
    with pytest.raises(OutOfOrderError, match="seq 4 does not follow seq 2"):
        ledger.append(envs[3], T0)
    assert store.seqs() == [1, 2]
    assert store.rows("equivocations") == []
    assert ledger.head(LINE, A) == (2, envs[1].id)
    assert ledger.log(LINE, A).size == 2
    assert not ledger.has_id(LINE, envs[3].id)
    # The gap filled, the chain goes on.
    assert ledger.append(envs[2], T0) and ledger.append(envs[3], T0)


def test_first_envelope_must_be_seq_one(ledger: LedgerStore, store: Store) -> None:
    envs = chain(2)
    with pytest.raises(OutOfOrderError, match="seq 2 does not follow seq 0"):
        ledger.append(envs[1], T0)
    assert store.seqs() == []


def test_next_seq_with_a_wrong_prev_is_refused(ledger: LedgerStore, store: Store) -> None:
    envs = chain(2)
    ledger.append(envs[0], T0)
    bad = envelope(2, hashlib.sha256(b"not the head").hexdigest())
    with pytest.raises(OutOfOrderError, match="does not follow"):
        ledger.append(bad, T0)
    assert store.seqs() == [1]
    assert ledger.head(LINE, A) == (1, envs[0].id)


# -- group commit --------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_batch_commits_everything_once_at_the_end(ledger: LedgerStore, store: Store) -> None:
    envs = chain(3)
    with ledger.batch():
        for env in envs:
            ledger.append(env, T0)
        ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "x"}, "k", T0)
        # Inside the batch another connection sees nothing yet: one transaction, one fsync.
        assert store.seqs() == []
        assert store.rows("outbox") == []
    assert store.seqs() == [1, 2, 3]
    assert len(store.rows("outbox")) == 1


def test_batch_rollback_leaves_nothing_and_caches_agree(ledger: LedgerStore, store: Store) -> None:
    envs = chain(6)
    ledger.append(envs[0], T0)
    ledger.append(envs[1], T0)
    root_before = ledger.log(LINE, A).root()
    with pytest.raises(Boom), ledger.batch():
        ledger.append(envs[2], T0)
        ledger.append(envs[3], T0)
        with ledger.batch():  # nested: still the same transaction
            ledger.append(envs[4], T0)
        ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "never"}, "idem-1", T0)
        assert ledger.head(LINE, A)[0] == 5
        raise Boom
    # On disk: nothing from the batch.
    assert store.seqs() == [1, 2]
    assert store.rows("outbox") == []
    # In memory: heads and the Merkle log agree with the disk, not with the rolled-back batch.
    assert ledger.head(LINE, A) == (2, envs[1].id)
    assert ledger.log(LINE, A).size == 2
    assert ledger.log(LINE, A).root() == root_before
    assert not ledger.has_id(LINE, envs[2].id)
    assert ledger.pending(LINE) == []
    # And the ledger goes on from the committed head (no "cannot start a transaction" left over).
    for env in envs[2:]:
        assert ledger.append(env, T0) is True
    assert store.seqs() == [1, 2, 3, 4, 5, 6]
    assert ledger.log(LINE, A).root() == merkle.root([leaf_of(e.id) for e in envs])


def test_refused_append_inside_a_batch_rolls_back_the_whole_batch(ledger: LedgerStore, store: Store) -> None:
    envs = chain(4)
    ledger.append(envs[0], T0)
    with pytest.raises(OutOfOrderError), ledger.batch():
        ledger.append(envs[1], T0)
        ledger.append(envs[3], T0)  # a gap: refused, and the batch with it
    assert store.seqs() == [1]
    assert ledger.head(LINE, A) == (1, envs[0].id)
    assert ledger.log(LINE, A).size == 1


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_commit_that_fails_on_a_full_disk_accepts_nothing_and_the_ledger_goes_on(
    sqlite_ledger: Ledger, path: Path
) -> None:
    ledger = sqlite_ledger
    # A file-size limit makes the WAL write at COMMIT fail the way a full disk does (EFBIG/ENOSPC).
    envs = chain(1)
    ledger.append(envs[0], T0)
    big = seal(
        A_SIGN, line=LINE, sender=A, key=A_KEY, seq=2, sent_at=T0, kind="TEXT", prio="ROUTINE", prev=envs[0].id,
        seen_seq=0, seen_id=None, lang="en", content={"text": "x" * 200_000}, salt=bytes(16),
    )  # fmt: skip
    wal = Path(f"{path}-wal")
    limit = max(wal.stat().st_size, path.stat().st_size) + 8192
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        with pytest.raises(StorageError, match="nothing from this batch was accepted"), ledger.batch():
            ledger.append(big, T0)
            ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "with it"}, "k", T0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert stored_seqs(path) == [1]
    assert rows_on_disk(path, "outbox") == []
    assert not ledger._db.in_transaction
    assert ledger.head(LINE, A) == (1, envs[0].id)
    assert ledger.log(LINE, A).size == 1
    assert ledger.pending(LINE) == []
    # Space again: the same envelope is accepted, so the peer's resend after a failed commit works.
    assert ledger.append(big, T0) is True
    assert stored_seqs(path) == [1, 2]


# -- outbox --------------------------------------------------------------------------------------


def test_outbox_accept_is_idempotent_by_key(ledger: LedgerStore, store: Store) -> None:
    first = ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "Confirm you read me."}, "key-1", T0)
    again = ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "Confirm you read me."}, "key-1", T0 + 10)
    # A retry whose content differs still returns the first acceptance unchanged: never sends twice.
    changed = ledger.accept(LINE, "FLASH", "FLASH", {"text": "something else"}, "key-1", T0 + 20)
    assert again == first and changed == first
    assert len(store.rows("outbox")) == 1
    # The key is per line; and no key means no deduplication.
    other_line = ledger.accept(OTHER_LINE, "TEXT", "ROUTINE", {"text": "Confirm you read me."}, "key-1", T0)
    n1 = ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "no key"}, None, T0)
    n2 = ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "no key"}, None, T0)
    assert len({first.local, other_line.local, n1.local, n2.local}) == 4
    assert len(store.rows("outbox")) == 4


def test_outbox_lookup_by_idempotency_key_sees_the_batch_the_store_and_only_that_line(ledger: LedgerStore) -> None:
    """``outbox_by_idem``: how the API finds a retried request's first acceptance, on both backends."""
    assert ledger.outbox_by_idem(LINE, "k") is None
    with ledger.batch():
        held = ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "in this batch"}, "k", T0)
        assert ledger.outbox_by_idem(LINE, "k") == held  # accepted, not committed yet
    assert ledger.outbox_by_idem(LINE, "k") == held  # committed
    ledger.mark_signed(held.local, 1, "ab" * 32)
    found = ledger.outbox_by_idem(LINE, "k")
    assert found is not None and (found.local, found.seq, found.envelope_id) == (held.local, 1, "ab" * 32)
    assert ledger.outbox_by_idem(OTHER_LINE, "k") is None and ledger.outbox_by_idem(LINE, "K") is None
    assert ledger.outbox_by_idem(LINE, "k' OR '1'='1") is None  # a key is a value, never SQL


def test_idempotency_key_survives_reopening(ledger: LedgerStore, store: Store) -> None:
    first = ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "once"}, "retry-me", T0)
    ledger.close()
    reopened = store.open()
    try:
        assert reopened.accept(LINE, "TEXT", "ROUTINE", {"text": "once"}, "retry-me", T0 + 1) == first
        assert reopened.pending_count(LINE) == 1
    finally:
        reopened.close()


def test_pending_and_mark_signed(ledger: LedgerStore, store: Store) -> None:
    items = [ledger.accept(LINE, "TEXT", "ROUTINE", {"text": f"m{i}"}, f"k{i}", T0 + i) for i in range(4)]
    ledger.accept(OTHER_LINE, "TEXT", "ROUTINE", {"text": "elsewhere"}, None, T0)
    assert [i.local for i in ledger.pending(LINE)] == [i.local for i in items]
    assert [i.content["text"] for i in ledger.pending(LINE, limit=2)] == ["m0", "m1"]
    assert ledger.pending_count(LINE) == 4
    envs = chain(2)
    with ledger.batch():
        for item, env in zip(items[:2], envs, strict=True):
            ledger.append(env, T0)
            ledger.mark_signed(item.local, env.seq, env.id)
    assert [i.local for i in ledger.pending(LINE)] == [items[2].local, items[3].local]
    assert ledger.pending_count(LINE) == 2
    signed = ledger.outbox_item(items[0].local)
    assert (signed.seq, signed.envelope_id) == (1, envs[0].id)
    # A signed item is never re-signed under another seq.
    ledger.mark_signed(items[0].local, 9, "ab" * 32)
    assert ledger.outbox_item(items[0].local) == signed
    with pytest.raises(NotFoundError, match="no outbox entry"):
        ledger.outbox_item(10_000)
    # Durable: a fresh open sees the same pending set.
    ledger.close()
    reopened = store.open()
    try:
        assert [i.local for i in reopened.pending(LINE)] == [items[2].local, items[3].local]
    finally:
        reopened.close()


def test_items_written_in_one_batch_and_signed_in_a_later_one_read_back_signed_and_roll_back_unsigned(
    ledger: LedgerStore, store: Store
) -> None:
    """Under load the outbox backs up: items are written by one commit and signed by a later one.
    Inside that later batch they read back as signed everywhere (pending, count, by number, by
    idempotency key) before anything is written; a rollback leaves them unsigned, a commit signed."""
    items = [ledger.accept(LINE, "TEXT", "ROUTINE", {"text": f"m{i}"}, f"k{i}", T0 + i) for i in range(3)]
    envs = chain(2)
    with pytest.raises(RuntimeError, match="abandoned"), ledger.batch():
        ledger.append(envs[0], T0)
        ledger.mark_signed(items[0].local, 1, envs[0].id)
        assert [i.local for i in ledger.pending(LINE)] == [items[1].local, items[2].local]
        assert [i.local for i in ledger.pending(LINE, 1)] == [items[1].local]
        assert ledger.pending_count(LINE) == 2
        assert ledger.outbox_item(items[0].local).seq == 1
        by_key = ledger.outbox_by_idem(LINE, "k0")
        assert by_key is not None and by_key.envelope_id == envs[0].id
        raise RuntimeError("abandoned")
    assert [i.local for i in ledger.pending(LINE)] == [i.local for i in items]
    assert ledger.outbox_item(items[0].local).seq is None
    with ledger.batch():
        for item, env in zip(items[:2], envs, strict=True):
            ledger.append(env, T0)
            ledger.mark_signed(item.local, env.seq, env.id)
    ledger.close()
    reopened = store.open()
    try:
        assert [i.local for i in reopened.pending(LINE)] == [items[2].local]
        assert [(i.seq, i.envelope_id) for i in map(reopened.outbox_item, (items[0].local, items[1].local))] == [
            (1, envs[0].id), (2, envs[1].id)
        ]  # fmt: skip
    finally:
        reopened.close()


def test_pending_hands_out_every_item_in_order_past_what_the_ledger_keeps_in_memory(ledger: LedgerStore) -> None:
    from redline.ledger.sqlite import OUTBOX_KEPT

    with ledger.batch():
        n = OUTBOX_KEPT + 10
        for i in range(n):
            ledger.accept(LINE, "TEXT", "ROUTINE", {"text": f"m{i}"}, None, T0)
    first = ledger.pending(LINE, 20)
    assert [i.content["text"] for i in first] == [f"m{i}" for i in range(20)]
    assert len(ledger.pending(LINE)) == n and ledger.pending(LINE)[-1].content == {"text": f"m{n - 1}"}


# -- Merkle log ----------------------------------------------------------------------------------


def test_merkle_log_rebuilt_after_reopen_equals_the_live_one(ledger: LedgerStore, store: Store) -> None:
    envs = chain(37)
    live = ledger.log(LINE, A)  # built empty, then grown by appends
    roots_live = []
    for env in envs:
        ledger.append(env, T0)
        roots_live.append(live.root())
    assert live is ledger.log(LINE, A)
    assert live.size == 37
    leaves = [leaf_of(e.id) for e in envs]
    assert live.leaves == leaves
    old_roots = [live.root(size) for size in range(0, 38)]
    ledger.close()
    reopened = store.open()
    try:
        rebuilt = reopened.log(LINE, A)  # read back from the stored subtrees, not rebuilt from every id
        assert rebuilt.leaves == leaves
        for size in range(0, 38):
            assert rebuilt.root(size) == old_roots[size] == merkle.root(leaves[:size])
        assert roots_live == [merkle.root(leaves[: n + 1]) for n in range(37)]
    finally:
        reopened.close()


def test_inclusion_and_consistency_proofs_from_the_ledger_verify(ledger: LedgerStore, store: Store) -> None:
    envs = chain(21)
    for env in envs:
        ledger.append(env, T0)
    ledger.close()
    reopened = store.open()
    try:
        log = reopened.log(LINE, A)
        for size in range(1, 22):
            root = log.root(size)
            for index in range(size):
                merkle.verify_inclusion(index, size, leaf_of(envs[index].id), log.inclusion_proof(index, size), root)
            for old in range(1, size + 1):
                merkle.verify_consistency(old, size, log.root(old), root, log.consistency_proof(old, size))
        # The checks can fail: a proof for another leaf, or against a rewritten history, is refused.
        with pytest.raises(MerkleError):
            merkle.verify_inclusion(3, 21, leaf_of(envs[4].id), log.inclusion_proof(3, 21), log.root(21))
        with pytest.raises(MerkleError):
            merkle.verify_consistency(5, 21, log.root(6), log.root(21), log.consistency_proof(5, 21))
    finally:
        reopened.close()


def test_the_store_says_how_much_it_takes_and_it_grows_with_what_is_stored(ledger: LedgerStore) -> None:
    """``redline_store_bytes``: the SQLite files, or the PostgreSQL database (was 0 for PostgreSQL:
    the metric looked for SQLite's file names); the free-space gauges only where its files are."""
    before = ledger.size_bytes()
    with ledger.batch():
        for env in chain(300):
            ledger.append(env, T0)
    assert 0 < before < ledger.size_bytes()
    where = ledger.files_dir()
    assert (where is None) == (not isinstance(ledger, Ledger))
    assert where is None or where.is_dir()


def test_checkpoints_are_read_by_number_and_in_pages_not_only_all_at_once(ledger: LedgerStore) -> None:
    """A peer's replayed proposal is answered from one row by its key, and a restored peer's
    catch-up reads one page past what it holds: neither loads the line's whole history."""
    from redline.statements import Signed

    def signed(n: int, what: str) -> Signed:
        return Signed(f"{what} {n}".encode(), bytes([n]) * 64)

    with ledger.batch():
        for n in range(1, 8):
            ledger.add_checkpoint(LINE, n, signed(n, "proposal"), signed(n, "cosign"))
        ledger.add_checkpoint(OTHER_LINE, 3, signed(9, "proposal"), signed(9, "cosign"))
    assert ledger.checkpoint(LINE, 3) == (3, signed(3, "proposal"), signed(3, "cosign"))
    assert ledger.checkpoint(LINE, 8) is None and ledger.checkpoint(OTHER_LINE, 1) is None
    assert [c[0] for c in ledger.checkpoints(LINE, after=2, limit=3)] == [3, 4, 5]
    assert [c[0] for c in ledger.checkpoints(LINE, after=5)] == [6, 7]
    assert [c[0] for c in ledger.checkpoints(LINE, after=7, limit=3)] == []
    assert ledger.checkpoints(LINE) == [(n, signed(n, "proposal"), signed(n, "cosign")) for n in range(1, 8)]


def test_a_store_made_before_gets_the_tuned_indexes_at_its_first_writable_open(path: Path) -> None:
    """Fewer index pages per commit: the receipts index that repeated the UNIQUE constraint's own is
    gone, and the outbox index holds only unsigned items. Not a schema version (any redline reads a
    store either way): a reader leaves a store made before as it is, and reads it; the first
    writable open brings it to the new indexes, and what was pending is still pending, in order,
    found through the new index."""
    ledger = Ledger(path, create=True, station=A)
    signed_item = ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "signed"}, None, T0)
    env = chain(1)[0]
    ledger.append(env, T0)
    ledger.mark_signed(signed_item.local, env.seq, env.id)
    waiting = [ledger.accept(LINE, "TEXT", "ROUTINE", {"text": f"waits {i}"}, None, T0) for i in range(3)]
    fresh = _indexes(ledger._db)
    ledger.close()
    assert "receipts_by" not in fresh and fresh["outbox_pending"].endswith("WHERE seq IS NULL")
    db = sqlite3.connect(path)
    db.executescript(  # what every store had before
        "DROP INDEX outbox_pending; CREATE INDEX outbox_pending ON outbox (line, seq); "
        "CREATE INDEX receipts_by ON receipts (line, by, seq);"
    )
    before = _indexes(db)
    db.close()
    reader = Ledger.open_read_only(path)
    try:
        assert [i.local for i in reader.pending(LINE)] == [i.local for i in waiting]
        assert _indexes(reader._db) == before  # a reader changes nothing
    finally:
        reader.close()
    ledger = Ledger(path)
    try:
        assert _indexes(ledger._db) == fresh
        assert [i.local for i in ledger.pending(LINE)] == [i.local for i in waiting]
        assert ledger.pending_count(LINE) == 3
        version = ledger._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert version == str(SCHEMA_VERSION)
        query = "EXPLAIN QUERY PLAN SELECT local FROM outbox WHERE line=? AND seq IS NULL ORDER BY local"
        plan = " ".join(str(r) for r in ledger._db.execute(query, (LINE,)))
        assert "outbox_pending" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        ledger.close()


def _indexes(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"))
