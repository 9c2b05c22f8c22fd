"""The durable transcript in one SQLite file: WAL mode, synchronous=FULL, one writer.

"Accepted" means committed here (guarantee 1): every method that changes state either runs inside
``batch()`` — which commits once at the end, so many envelopes share one fsync (group commit) — or
commits before it returns. Only verified objects are handed to this module; it never decides
trust, it only keeps what it was given and refuses to reuse a seq.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redline import merkle
from redline.envelope import Envelope
from redline.errors import (
    EncodingError,
    EquivocationError,
    LineNotFoundError,
    NotFoundError,
    OutOfOrderError,
    SchemaVersionError,
    StorageError,
)
from redline.identity import SignedCert
from redline.ledger import integrity
from redline.ledger.model import (
    SCHEMA_VERSION,
    Equivocation,
    LineData,
    LineRecord,
    OutboxItem,
    StoredRow,
    find_line,
)
from redline.ledger.rows import blob, check_station, damaged, integer, line_record, outbox_content, schema_version
from redline.statements import Signed

_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE lines (line TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE certs (
    station TEXT NOT NULL, key_id TEXT NOT NULL, role TEXT NOT NULL, data BLOB NOT NULL, sig BLOB NOT NULL,
    PRIMARY KEY (station, key_id)
);
CREATE TABLE envelopes (
    line TEXT NOT NULL, sender TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
    kind TEXT NOT NULL, raw BLOB NOT NULL, stored_at INTEGER NOT NULL, prio TEXT,
    UNIQUE (line, sender, seq)
);
CREATE UNIQUE INDEX envelopes_id ON envelopes (line, id);
CREATE TABLE equivocations (
    line TEXT NOT NULL, sender TEXT NOT NULL, seq INTEGER NOT NULL, first BLOB NOT NULL,
    second BLOB NOT NULL, detected_at INTEGER NOT NULL
);
CREATE TABLE outbox (
    local INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL, kind TEXT NOT NULL, prio TEXT NOT NULL,
    content TEXT NOT NULL, idem TEXT, accepted_at INTEGER NOT NULL, seq INTEGER, envelope_id TEXT,
    UNIQUE (line, idem)
);
CREATE INDEX outbox_pending ON outbox (line, seq);
CREATE TABLE receipts (
    line TEXT NOT NULL, by TEXT NOT NULL, seq INTEGER NOT NULL, raw BLOB NOT NULL, stored_at INTEGER NOT NULL,
    UNIQUE (line, by, seq)
);
CREATE INDEX receipts_by ON receipts (line, by, seq);
CREATE TABLE checkpoints (
    line TEXT NOT NULL, n INTEGER NOT NULL, proposal BLOB NOT NULL, cosign BLOB NOT NULL,
    PRIMARY KEY (line, n)
);
"""
# (The envelopes table keeps its rowid: rows hold ~1.5 KB blobs, which a WITHOUT ROWID b-tree
# stores inline and rewrites on splits; the rowid also gives the true storage order. Its ``prio``
# column came with schema 2: a store migrated from schema 1 has it only where ``_migrate`` put it.)

# Schema 2: what a station needs at start without reading the whole transcript.
# - ``merkle``: every complete, aligned subtree of 2**merkle.STORED_HEIGHT leaves or more of each
#   chain's RFC 9162 tree, written in the transaction that appends the leaf completing it, so the
#   tree is opened in O(log n) (``merkle.StoredLog``) and can never disagree with the chain.
# - ``chain_bytes``: the running total of each chain's envelope bytes (the disk budget), written
#   with each commit, instead of a SUM over every row at start.
# - ``envelopes.prio`` and the partial index ``envelopes_ops``: the rows the operations engine must
#   see again at start (every kind but TEXT, and TEXT sent as FLASH), found without a scan.
_SCHEMA_2 = """
CREATE TABLE merkle (
    line TEXT NOT NULL, sender TEXT NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (line, sender, height, idx)
) WITHOUT ROWID;
CREATE TABLE chain_bytes (
    line TEXT NOT NULL, sender TEXT NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (line, sender)
) WITHOUT ROWID;
CREATE INDEX envelopes_ops ON envelopes (line) WHERE kind != 'TEXT' OR prio = 'FLASH';
"""
# Two indexes tuned for fewer pages written per commit (each is a WAL frame: two writes and CPU in
# the commit). ``receipts_by`` repeated the UNIQUE (line, by, seq) constraint's own index, one more
# page per receipt stored; ``outbox_pending`` indexed every item ever accepted to find the few
# unsigned ones, and an item signed in the batch that accepted it (nearly all) never enters it now.
# Not a schema version: the queries are the same and any redline reads a store either way (an older
# one too, so backups taken before restore and a rollback needs nothing). ``_tune_indexes`` brings a
# store made before to these at its first writable open; PostgreSQL's were these from the start.
_OUTBOX_PENDING = "CREATE INDEX outbox_pending ON outbox (line, local) WHERE seq IS NULL"  # as sqlite_master keeps it
_INDEXES = f"""
DROP INDEX IF EXISTS receipts_by;
DROP INDEX IF EXISTS outbox_pending;
{_OUTBOX_PENDING};
"""
_SCHEMA = _SCHEMA_1 + _SCHEMA_2 + _INDEXES
_OPS_ROWS = "kind != 'TEXT' OR prio = 'FLASH'"  # exactly the partial index's condition, so SQLite uses it
OUTBOX_KEPT = 4096  # outbox items kept in memory, for their sender's reply and for signing
_CLEAN = "clean_close"  # meta key: present only while no write was committed since a clean close


def _signed(item: OutboxItem, seq: int, envelope_id: str) -> OutboxItem:
    """``item`` signed at ``seq`` (not dataclasses.replace: slow)."""
    return OutboxItem(
        local=item.local, line=item.line, kind=item.kind, prio=item.prio, content=item.content, idem=item.idem,
        accepted_at=item.accepted_at, seq=seq, envelope_id=envelope_id,
    )  # fmt: skip


def _statement(raw: bytes) -> Signed:
    """A stored statement for verification. One whose lengths do not even add up is kept as a
    statement with no signature, which can never verify: ``verify_line`` then reports it where it
    is, instead of the whole verification stopping at one corrupted receipt or checkpoint."""
    try:
        return Signed.decode(raw)
    except EncodingError:
        return Signed(raw, b"")


def _hint(exc: sqlite3.DatabaseError) -> str:
    """SQLite says "disk I/O error" when the OS refuses a write for lack of room (EFBIG, quotas)."""
    if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_IOERR"):
        return " (the disk refused a write: it may be full, over a quota or failing; check free space and system log)"
    return ""


def _close(db: sqlite3.Connection, key: tuple[int, int]) -> None:
    try:
        db.close()
    finally:
        integrity.release(key)


def leaf_of(envelope_id: str) -> bytes:
    """The Merkle leaf hash of an envelope: SHA-256(0x00 || 32-byte id)."""
    return merkle.leaf_hash(bytes.fromhex(envelope_id))


class _ChainNodes:
    """One chain's ``merkle.NodeSource``: leaves from the envelopes' ids, subtrees from ``merkle``."""

    def __init__(self, db: sqlite3.Connection, path: Path, line: str, sender: str) -> None:
        self._db, self._path, self._key = db, path, (line, sender)

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT id FROM envelopes WHERE line=? AND sender=? AND seq>? AND seq<=? ORDER BY seq", (*self._key, lo, hi)
        ).fetchall()
        if len(rows) != hi - lo:
            raise StorageError(f"the store lacks envelopes {lo + 1}..{hi} of a chain it counts as held: it is damaged")
        try:
            return [leaf_of(r[0]) for r in rows]
        except (TypeError, ValueError) as exc:  # bytes.fromhex of what is not a hex string
            raise damaged(self._path, f"a value of envelopes.id is not a hex id ({exc})") from exc

    def node(self, height: int, index: int) -> bytes:
        row = self._db.execute(
            "SELECT hash FROM merkle WHERE line=? AND sender=? AND height=? AND idx=?", (*self._key, height, index)
        ).fetchone()
        if row is None:
            raise StorageError(
                f"the store lacks the Merkle subtree {height}/{index} of a chain it holds: it is damaged "
                "('redline verify' rebuilds the trees from the envelopes and says what else is wrong)"
            )
        return blob(self._path, row[0], "merkle.hash")


class _NoNodes:
    """The source of a tree built from its first leaf on: there is nothing before it to read."""

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        raise AssertionError("an empty tree reads no leaves")

    def node(self, height: int, index: int) -> bytes:
        raise AssertionError("an empty tree reads no subtrees")


class StoredLine:
    """One line of a store as ``verify.LineSource``: everything but the chains and receipts is read
    at once (certificates, checkpoints, equivocation evidence: a few rows); the chains are read row
    by row in seq order and the receipts in the order stored, as the verification asks for them."""

    def __init__(self, ledger: Ledger, line: str, our_name: str) -> None:
        record = ledger.line(line)
        self._db, self._path, self._store = ledger._db, str(ledger.path), ledger.path
        self.line = line
        fps = [ledger.station, record.peer]
        self.names = {ledger.station: our_name, record.peer: record.peer_name}
        self.certs = {fp: [c for _, _, c in ledger.certs(fp)] for fp in fps}
        self.checkpoints = [
            (
                r[0],  # as stored, never trusted: verify compares it with the signed n
                _statement(blob(self._store, r[1], "checkpoints.proposal")),
                _statement(blob(self._store, r[2], "checkpoints.cosign")),
            )
            for r in self._db.execute("SELECT n, proposal, cosign FROM checkpoints WHERE line=? ORDER BY n", (line,))
        ]
        self.equivocations = [(e.sender, e.seq, e.first, e.second) for e in ledger.equivocations(line)]
        count = "SELECT count(*) FROM envelopes WHERE line=? AND sender=?"
        self._held = {fp: int(self._db.execute(count, (line, fp)).fetchone()[0]) for fp in fps}  # a count(*)

    def stations(self) -> list[str]:
        return sorted(self._held)

    def held(self, station: str) -> int:
        return self._held.get(station, 0)

    def chain(self, station: str) -> Iterator[StoredRow]:
        rows = self._db.execute(
            "SELECT seq, id, raw FROM envelopes WHERE line=? AND sender=? ORDER BY seq", (self.line, station)
        )
        return (_stored_row(self._store, r) for r in rows)

    def chain_parts(self, station: str, size: int) -> Iterator[StoredRange]:
        """The chain in runs of ``size`` rows (the last one open-ended), their bounds found in the
        (line, sender, seq) index alone; each run is read by the worker it is handed to."""
        lo: Any = None
        while True:
            where, args = _seq_range(self.line, station, lo, None)
            query = f"SELECT seq FROM envelopes {where} ORDER BY seq LIMIT 1 OFFSET ?"
            hi = self._db.execute(query, (*args, size - 1)).fetchone()
            if hi is None:
                yield StoredRange(self._path, self.line, station, lo, None)
                return
            # The seq column as stored, a bound in SQL only: verify compares it with the signed seq and
            # reports a stored seq that is not one (tampering) at its entry (_stored_row).
            yield StoredRange(self._path, self.line, station, lo, hi[0])
            lo = hi[0]

    def iter_receipts(self) -> Iterator[Signed]:
        rows = self._db.execute("SELECT raw FROM receipts WHERE line=? ORDER BY rowid", (self.line,))
        return (_statement(blob(self._store, r[0], "receipts.raw")) for r in rows)


@dataclass(frozen=True)
class StoredRange:
    """The rows ``lo < seq <= hi`` of one chain (``None``: no bound), in seq order, read by whichever
    process holds this (a worker of ``redline verify``) through a read-only SQLite connection of
    its own: SQLite only, never the store's files, so no lock of the station's is at risk. The
    rows are never rewritten once stored, so the worker reads what the verifier's snapshot holds."""

    path: str
    line: str
    sender: str
    lo: Any
    hi: Any

    def rows(self) -> list[StoredRow]:
        db = _READERS.get(self.path)
        if db is None:
            db = sqlite3.connect(Path(self.path).resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
            db.execute("PRAGMA query_only=ON")
            _READERS[self.path] = db
        where, args = _seq_range(self.line, self.sender, self.lo, self.hi)
        rows = db.execute(f"SELECT seq, id, raw FROM envelopes {where} ORDER BY seq", args)
        store = Path(self.path)
        return [_stored_row(store, r) for r in rows]


def _stored_row(store: Path, r: tuple[Any, ...]) -> StoredRow:
    """An envelopes row (seq, id, raw) as read for verification: the seq and id columns as they are
    stored, never trusted (verify compares them with the signed envelope and reports a difference,
    a seq stored as text included, at its entry: tests/test_verify_parallel.py), the bytes checked."""
    return StoredRow(r[0], r[1], blob(store, r[2], "envelopes.raw"))


def _ops_row(store: Path, r: tuple[Any, ...]) -> tuple[str, int, bytes, int]:
    """An envelopes row (sender, seq, raw, stored_at) as the operations engine reads it."""
    return (
        r[0], integer(store, r[1], "envelopes.seq"), blob(store, r[2], "envelopes.raw"),
        integer(store, r[3], "envelopes.stored_at"),
    )  # fmt: skip


def _checkpoint(store: Path, r: tuple[Any, ...]) -> tuple[int, Signed, Signed]:
    """A checkpoints row (n, proposal, cosign) for the session (a statement that does not decode
    raises EncodingError, as before)."""
    return (
        integer(store, r[0], "checkpoints.n"),
        Signed.decode(blob(store, r[1], "checkpoints.proposal")),
        Signed.decode(blob(store, r[2], "checkpoints.cosign")),
    )


def _seq_range(line: str, sender: str, lo: Any, hi: Any) -> tuple[str, tuple[Any, ...]]:
    """WHERE clause for ``lo < seq <= hi`` of one chain, each bound left out when None (not an OR
    with NULL, which would keep SQLite from seeking in the index)."""
    where, args = "WHERE line=? AND sender=?", [line, sender]
    if lo is not None:
        where, args = where + " AND seq>?", [*args, lo]
    if hi is not None:
        where, args = where + " AND seq<=?", [*args, hi]
    return where, tuple(args)


_READERS: dict[str, sqlite3.Connection] = {}  # a worker's read-only connection, per store


class _Batch:
    """``Ledger.batch()``: a plain object rather than a generator, since it is entered for every
    write (a generator-based context manager cost more than the row it wrapped)."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __enter__(self) -> None:
        self._ledger._begin()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._ledger._end(exc)


class Ledger:
    """One station's store. Not thread-safe: one writer, the station's own thread.

    ``Ledger.open_read_only(path)`` is for readers (the console's verify, reports): a connection
    that cannot write, safe beside the station's own in the same process. Every Ledger registers
    its store with ``integrity`` while open, because nothing may then open the store's files by any
    means but SQLite (module ``integrity`` says why)."""

    def __init__(
        self, path: Path, *, create: bool = False, station: str | None = None, read_only: bool = False,
        raw_check: bool = True,
    ) -> None:  # fmt: skip
        """``raw_check=False``: another process (a running station) holds the store, which checked its
        files when it opened them: read it through SQLite only, never its raw bytes. ``station``: the
        fingerprint recorded in a store created here, and required of one opened (None: not checked)."""
        if not create and not path.exists():
            raise StorageError(f"no store at {path}; create the station with 'redline init'")
        if create and read_only:
            raise ValueError("a store cannot be created read-only")
        self.path = path
        self.read_only = read_only
        with integrity.opening():  # no other thread of ours opens or raw-reads the store meanwhile
            # A store this process already holds was checked when it was opened, and its raw files
            # must not be read again (that would drop the holder's locks): SQLite only, from here.
            held = integrity.is_open_here(path)
            sidecars = integrity.sidecars(path)
            if not create and not held and raw_check:
                integrity.check_files(path)  # truncation, a WAL that would lose commits: before SQLite reads it
            try:
                if read_only:
                    uri = path.resolve().as_uri() + "?mode=ro"
                    self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                else:
                    self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"store {path} cannot be opened: {exc}") from exc
            self._depth = 0
            self._clean = False  # the clean-close marker is in the store (no write committed since)
            self._wrote = False  # this connection committed a write: it marks a clean close at close()
            self._opened_clean = False
            self._checked = False  # PRAGMA quick_check ran when this ledger opened the store
            self._bytes: dict[tuple[str, str], int] = {}  # envelope bytes appended in the open batch
            # The last OUTBOX_KEPT outbox items this connection accepted, as they now are (signed or
            # not): the reply to a send (``outbox_item``) and the items ``pending`` hands out for
            # signing, without a query and a JSON parse each. The same content object the sender
            # gave, so the session's encoding of it is used again when it is sealed.
            self._outbox: dict[int, OutboxItem] = {}
            # Outbox items accepted in the open batch, with their content's JSON: written when it commits.
            self._unwritten: dict[int, tuple[OutboxItem, str]] = {}
            # Written outbox items signed in the open batch: (seq, envelope id), set when it commits.
            self._signed_later: dict[int, tuple[str, int, str]] = {}
            self._next_local: int | None = None  # the next outbox number, read once per batch
            # (before the schema is brought up to date: a migration that fails forgets these too)
            self._logs: dict[tuple[str, str], merkle.StoredLog] = {}
            self._heads: dict[tuple[str, str], tuple[int, str | None]] = {}
            try:
                if not create:
                    # Before any PRAGMA that writes (journal_mode=WAL rewrites the file header): a store
                    # we refuse must be left exactly as it was.
                    self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    self._clean = self._marked_clean()
                    self._opened_clean = self._clean
                    # The page-by-page check reads the whole store (a minute at a million envelopes):
                    # only after an unclean shutdown, when the store may hold what a crash left; after
                    # a clean close nothing was written since that store was last whole. Not for a
                    # reader either ('redline log' beside a running station): a read-only connection
                    # never checkpoints, so it can neither make damage permanent nor lose evidence, and
                    # SQLite reports a damaged page it reads; the readers that owe an answer about the
                    # whole store check it themselves (verify, doctor, backup). The raw checks above
                    # (truncation, a WAL that would lose commits) always run: they cost no more than
                    # the WAL holds, and nothing at all after a clean close.
                    if not held and not self._clean and not read_only:
                        integrity.quick_check(path, self._db, sidecars)  # zeroed or overwritten pages
                        self._checked = True
                    version = self._check_schema()
                    check_station(self._recorded_station(), station, str(path))  # before any write
                if read_only:
                    self._db.execute("PRAGMA query_only=ON")
                else:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=FULL")
                    self._db.execute("PRAGMA foreign_keys=ON")
                if create:
                    self._create(station)
                    self._check_schema()
                elif version < SCHEMA_VERSION:
                    self._migrate(version)
                if not read_only:
                    self._tune_indexes()
                key = integrity.hold(path)
            except BaseException as exc:
                self._db.close()  # a refused store is released at once, not whenever the GC runs
                if isinstance(exc, sqlite3.DatabaseError):
                    raise StorageError(f"store {path} cannot be opened: {exc}") from exc
                raise
        # Closed by close(), or by the garbage collector if a caller forgets: either way the
        # connection is closed before the store stops counting as open here.
        self._closer = weakref.finalize(self, _close, self._db, key)

    # -- schema -------------------------------------------------------------------------------
    def _create(self, station: str | None) -> None:
        if self._db.execute("SELECT name FROM sqlite_master WHERE name='meta'").fetchone():
            raise StorageError(f"a store already exists at {self.path}")
        self._db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self._db.execute("INSERT INTO meta VALUES ('station', ?)", (station or "",))
        self._db.execute("COMMIT")
        self._wrote = True

    def _check_schema(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            raise StorageError(f"{self.path} is not a redline store")
        version = schema_version(self.path, row[0])
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"store {self.path} has schema version {row[0]}, this redline understands {SCHEMA_VERSION}; "
                "upgrade redline before opening it (the store was not touched)",
                newer=True,
            )
        if version < SCHEMA_VERSION and self.read_only:
            raise SchemaVersionError(
                f"store {self.path} has schema version {row[0]}, older than this redline's {SCHEMA_VERSION}; "
                "start the station once to bring it up to date (the store was not touched)",
                newer=False,
            )
        return version

    def _migrate(self, version: int) -> None:
        """Bring an older store up to ``SCHEMA_VERSION`` in one transaction (all or nothing). From
        1 to 2 this reads the whole transcript once: each chain's ids for its Merkle subtrees, every
        row's size for the byte totals.

        ``version`` was read before the write lock was taken: another process opening the same old
        store at the same time (a station starting while an older tool still opens stores writable)
        may have migrated it meanwhile. The version is read again under the lock, and what is found
        done is not done twice (it failed with "duplicate column name: prio")."""
        with self.batch():  # BEGIN IMMEDIATE: the write lock, held to the commit
            version = self._check_schema()
            if version >= SCHEMA_VERSION:
                return
            if version < 2:
                self._db.execute("ALTER TABLE envelopes ADD COLUMN prio TEXT")
                # TEXT sent as FLASH is the one TEXT the operations engine must see again. The search
                # runs in SQLite over the raw bytes: the header comes first and none of its other
                # fields can hold a quotation mark, so every FLASH header matches; a body that
                # happens to hold the same bytes only makes one more row replayed, never one fewer.
                self._db.execute(
                    "UPDATE envelopes SET prio='FLASH' WHERE kind='TEXT' AND instr(raw, ?) > 0",
                    (b'"prio":"FLASH"',),
                )
                for statement in _SCHEMA_2.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO chain_bytes SELECT line, sender, SUM(length(raw)) FROM envelopes GROUP BY line, sender"
                )
                chains = self._db.execute("SELECT DISTINCT line, sender FROM envelopes").fetchall()
                for line, sender in chains:
                    log = merkle.StoredLog(_NoNodes(), 0)
                    rows = self._db.execute(
                        "SELECT id FROM envelopes WHERE line=? AND sender=? ORDER BY seq", (line, sender)
                    )
                    for (eid,) in rows:
                        try:
                            leaf = leaf_of(eid)
                        except (TypeError, ValueError) as exc:  # bytes.fromhex of what is not a hex string
                            raise damaged(self.path, f"a value of envelopes.id is not a hex id ({exc})") from exc
                        for h, i, node in log.append(leaf):
                            self._db.execute("INSERT INTO merkle VALUES (?, ?, ?, ?, ?)", (line, sender, h, i, node))
            self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def _tune_indexes(self) -> None:
        """A store made before the indexes were tuned gets them (``_INDEXES``), once, in one
        transaction: the new outbox index is built in one pass over the outbox."""
        indexes = dict(self._db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"))
        if "receipts_by" in indexes or indexes.get("outbox_pending") != _OUTBOX_PENDING:
            with self.batch():
                for statement in _INDEXES.split(";"):
                    if statement.strip():
                        self._db.execute(statement)

    def _marked_clean(self) -> bool:
        try:
            return self._db.execute("SELECT 1 FROM meta WHERE key=?", (_CLEAN,)).fetchone() is not None
        except sqlite3.DatabaseError:
            return False  # not a store of ours, or its meta table is damaged: the full checks say which

    @property
    def opened_clean(self) -> bool:
        """Whether the store was closed cleanly before this open (so the full check was skipped)."""
        return self._opened_clean

    def check_integrity(self) -> None:
        """The full page-by-page check (``PRAGMA quick_check``) whatever the clean-close mark says,
        unless it already ran when this ledger opened the store: what ``redline verify`` runs.
        Raises ``StorageError`` naming the damage; the ledger is then closed."""
        if not self._checked:
            integrity.quick_check(self.path, self._db, integrity.sidecars(self.path))
            self._checked = True

    @contextlib.contextmanager
    def checked_meanwhile(self) -> Iterator[None]:
        """``check_integrity``, run in a thread while the block reads the store; on leaving, wait
        for it. A damaged store raises its ``StorageError`` in preference to whatever the block
        raised (damage explains it), and the ledger is then closed."""
        if self._checked:
            yield
            return
        check = integrity.BackgroundCheck(self.path, integrity.sidecars(self.path))
        try:
            yield
        except BaseException:
            check.result(self._db)
            raise
        check.result(self._db)
        self._checked = True

    @property
    def station(self) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key='station'").fetchone()
        return str(row[0])

    def _recorded_station(self) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key='station'").fetchone()
        return str(row[0]) if row else ""

    def close(self) -> None:
        """Close the store; if this connection wrote anything, mark the close clean first, so the
        next open skips the full integrity check. A crash, or a ledger never closed, leaves no mark."""
        if self._wrote and not self._clean and not self.read_only and not self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # no mark: the next open checks everything
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (_CLEAN,))
                self._db.execute("COMMIT")
                self._clean = True
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
        self._closer()

    @classmethod
    def open_read_only(cls, path: Path, *, raw_check: bool = True, station: str | None = None) -> Ledger:
        """A reader's connection: refuses writes, and never touches the files but through SQLite
        once open (``raw_check``: the files' raw check before, when no running station holds them).
        ``station``: the fingerprint the store must have been made for (``rows.check_station``)."""
        return cls(path, read_only=True, raw_check=raw_check, station=station)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees one state of the store (one read transaction; WAL keeps it whole
        while the station commits meanwhile). Nothing inside may write."""
        if self._db.in_transaction:
            raise StorageError("a snapshot cannot start inside a transaction")
        self._logs.clear()  # caches may be older or newer than the snapshot
        self._heads.clear()
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("ROLLBACK")
            self._logs.clear()
            self._heads.clear()

    # -- transactions --------------------------------------------------------------------------
    def batch(self) -> _Batch:
        """Group commit: everything inside shares one transaction and one fsync. Batches nest: only
        the outermost one begins and commits."""
        return _Batch(self)

    def _begin(self) -> None:
        if self._depth == 0:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                # Every write takes the clean-close mark away, atomically with what it writes (another
                # process may have closed cleanly meanwhile); deleting a row that is not there is free.
                self._db.execute("DELETE FROM meta WHERE key=?", (_CLEAN,))
            except sqlite3.DatabaseError as exc:
                self._rollback()
                why = f"{exc}{_hint(exc)}"
                raise StorageError(f"the store cannot start a transaction, nothing was accepted: {why}") from exc
        self._depth += 1

    def _end(self, exc: BaseException | None) -> None:
        """Leave a batch: commit the outermost one, or roll everything back if ``exc`` ended it."""
        if exc is None and self._depth == 1:
            try:
                self._write_outbox()
                self._write_signed()
                self._write_totals()
            except BaseException as failed:
                self._abandon(failed)
                raise  # pragma: no cover - _abandon raises
        if exc is not None:
            self._abandon(exc)
            return
        self._depth -= 1
        if self._depth == 0:
            self._next_local = None  # another connection may write between our batches
            try:
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                self._rollback()
                self._forget()
                raise StorageError(f"commit failed, nothing from this batch was accepted: {err}{_hint(err)}") from err
            self._clean, self._wrote = False, True

    def _abandon(self, exc: BaseException) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._rollback()
            self._forget()  # caches may hold rows that were rolled back
        if isinstance(exc, sqlite3.DatabaseError):
            # A write failed before COMMIT (disk full, I/O error): same promise as a failed commit.
            raise StorageError(f"a write failed, nothing from this batch was accepted: {exc}{_hint(exc)}") from exc

    def _forget(self) -> None:
        """Drop every cache that may hold what a rolled-back transaction wrote."""
        self._logs.clear()
        self._heads.clear()
        self._bytes.clear()
        self._outbox.clear()
        self._unwritten.clear()
        self._signed_later.clear()
        self._next_local = None

    def _write_totals(self) -> None:
        """The batch's envelope bytes onto each chain's running total, in the batch's transaction."""
        for (line, sender), added in self._bytes.items():
            self._db.execute(
                "INSERT INTO chain_bytes VALUES (?, ?, ?) "
                "ON CONFLICT (line, sender) DO UPDATE SET bytes = bytes + excluded.bytes",
                (line, sender, added),
            )
        self._bytes.clear()

    def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (a full disk, an I/O error), and a ROLLBACK
        # that fails leaves nothing committed either: either way the batch is gone, say why it failed.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.DatabaseError):
                self._db.execute("ROLLBACK")

    def _write(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        with self.batch():
            return self._db.execute(sql, args)

    # -- lines and keys ------------------------------------------------------------------------
    def put_line(self, record: LineRecord) -> None:
        self._write(
            "INSERT INTO lines VALUES (?, ?) ON CONFLICT(line) DO UPDATE SET record=excluded.record",
            (record.line, json.dumps(record.to_obj(), sort_keys=True)),
        )

    def line(self, line: str) -> LineRecord:
        row = self._db.execute("SELECT line, record FROM lines WHERE line=?", (line,)).fetchone()
        if row is None:
            known = ", ".join(r.line[:8] for r in self.lines()) or "none"
            raise LineNotFoundError(f"no line {line!r} at this station (lines: {known})")
        return line_record(self.path, row[0], row[1])

    def find_line(self, prefix: str) -> LineRecord:
        """A line by id, id prefix (8+ hex digits) or peer station name (``model.find_line``)."""
        return find_line(self.lines(), prefix)

    def lines(self) -> list[LineRecord]:
        rows = self._db.execute("SELECT line, record FROM lines ORDER BY rowid").fetchall()
        return [line_record(self.path, r[0], r[1]) for r in rows]

    def put_cert(self, station: str, key_id: str, role: str, cert: SignedCert) -> None:
        self._write(
            "INSERT OR IGNORE INTO certs VALUES (?, ?, ?, ?, ?)", (station, key_id, role, cert.data, cert.sig)
        )

    def certs(self, station: str) -> list[tuple[str, str, SignedCert]]:
        rows = self._db.execute(
            "SELECT key_id, role, data, sig FROM certs WHERE station=? ORDER BY rowid", (station,)
        ).fetchall()
        return [
            (r[0], r[1], SignedCert(blob(self.path, r[2], "certs.data"), blob(self.path, r[3], "certs.sig")))
            for r in rows
        ]

    # -- chains --------------------------------------------------------------------------------
    def head(self, line: str, sender: str) -> tuple[int, str | None]:
        """(seq, id) of the last envelope held in ``sender``'s chain; (0, None) when empty."""
        key = (line, sender)
        if key not in self._heads:
            row = self._db.execute(
                "SELECT seq, id FROM envelopes WHERE line=? AND sender=? ORDER BY seq DESC LIMIT 1", key
            ).fetchone()
            self._heads[key] = (integer(self.path, row[0], "envelopes.seq"), row[1]) if row else (0, None)
        return self._heads[key]

    def log(self, line: str, sender: str) -> merkle.StoredLog:
        """The chain's Merkle tree: its frontier read back from the stored subtrees on first use
        (O(log n), whatever the chain's length), older roots and proofs read as they are asked for."""
        key = (line, sender)
        if key not in self._logs:
            nodes = _ChainNodes(self._db, self.path, line, sender)
            self._logs[key] = merkle.StoredLog(nodes, self.head(line, sender)[0])
        return self._logs[key]

    def envelope_id(self, line: str, sender: str, seq: int) -> str | None:
        row = self._db.execute("SELECT id FROM envelopes WHERE line=? AND sender=? AND seq=?", (line, sender, seq))
        found = row.fetchone()
        return str(found[0]) if found else None

    def has_id(self, line: str, envelope_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM envelopes WHERE line=? AND id=?", (line, envelope_id)).fetchone()
        return row is not None

    def append(self, env: Envelope, stored_at: int) -> bool:
        """Store a verified envelope as the next in its sender's chain.

        Returns False for an exact duplicate. A different envelope at a used seq is stored as
        equivocation evidence and raises EquivocationError. A seq that skips ahead or a prev that
        does not match our head is refused (the protocol must fill gaps first).
        """
        h = env.header
        key = (h.line, h.sender)
        seq, last_id = self.head(*key)
        if h.seq <= seq:
            row = self._db.execute(
                "SELECT id, raw FROM envelopes WHERE line=? AND sender=? AND seq=?", (*key, h.seq)
            ).fetchone()
            if row[0] == env.id:
                return False
            with self.batch():
                self._db.execute(
                    "INSERT INTO equivocations VALUES (?, ?, ?, ?, ?, ?)",
                    (h.line, h.sender, h.seq, row[1], env.encode(), stored_at),
                )
            raise EquivocationError(
                f"station {h.sender[:16]} signed two different envelopes at seq {h.seq} on line {h.line[:8]}: "
                "both are kept as evidence and this direction is halted",
                seq=h.seq, first_id=row[0], second_id=env.id,
            )  # fmt: skip
        if h.seq != seq + 1 or h.prev != last_id:
            raise OutOfOrderError(
                f"envelope seq {h.seq} does not follow seq {seq} of station {h.sender[:16]}; it was not stored"
            )
        log = self.log(*key)
        raw = env.encode()
        with self.batch():
            self._db.execute(
                "INSERT INTO envelopes (line, sender, seq, id, kind, raw, stored_at, prio) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (h.line, h.sender, h.seq, env.id, h.kind, raw, stored_at, h.prio),
            )
            for height, index, node in log.append(leaf_of(env.id)):
                self._db.execute("INSERT INTO merkle VALUES (?, ?, ?, ?, ?)", (h.line, h.sender, height, index, node))
            self._heads[key] = (h.seq, env.id)
            self._bytes[key] = self._bytes.get(key, 0) + len(raw)
        return True

    def raw_envelope(self, line: str, sender: str, seq: int) -> bytes:
        row = self._db.execute(
            "SELECT raw FROM envelopes WHERE line=? AND sender=? AND seq=?", (line, sender, seq)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no envelope seq {seq} from station {sender[:16]} on line {line[:8]}")
        return blob(self.path, row[0], "envelopes.raw")

    def raw_of_kind(self, line: str, sender: str, kind: str) -> list[bytes]:
        """``sender``'s envelopes of one operational ``kind`` (KEY: the gate's key windows at start),
        in seq order, found through the operational-kinds index. Named (INDEXED BY): for the ORDER BY,
        SQLite would otherwise walk the sender's whole chain by its primary key (0.18 s a query at
        200,000 envelopes, against 36 us; start-up asks this for four kinds of both chains)."""
        rows = self._db.execute(
            f"SELECT raw FROM envelopes INDEXED BY envelopes_ops WHERE line=? AND ({_OPS_ROWS}) AND sender=? "
            "AND kind=? ORDER BY seq",
            (line, sender, kind),
        )
        return [blob(self.path, r[0], "envelopes.raw") for r in rows]

    def raw_envelopes(self, line: str, sender: str, after: int = 0, limit: int = -1) -> Iterator[tuple[int, bytes]]:
        yield from (
            (integer(self.path, r[0], "envelopes.seq"), blob(self.path, r[1], "envelopes.raw"))
            for r in self._db.execute(
                "SELECT seq, raw FROM envelopes WHERE line=? AND sender=? AND seq>? ORDER BY seq LIMIT ?",
                (line, sender, after, limit),
            )
        )

    def stored_for_ops(self, line: str) -> Iterator[tuple[str, int, bytes, int]]:
        """What the operations engine must see again at start, as (sender, seq, raw, stored_at) in
        the order stored: every envelope but plain TEXT (TEXT sent as FLASH included). Read through
        the partial index ``envelopes_ops``: the TEXT rows, nearly all of a line, are not touched."""
        yield from (
            _ops_row(self.path, r)
            for r in self._db.execute(
                "SELECT sender, seq, raw, stored_at FROM envelopes INDEXED BY envelopes_ops "
                f"WHERE line=? AND ({_OPS_ROWS}) ORDER BY rowid",
                (line,),
            )
        )

    def stored_in_order(self, line: str) -> Iterator[tuple[str, int, bytes, int]]:
        """Both chains of a line as (sender, seq, raw, stored_at), in the order they were stored."""
        yield from (
            _ops_row(self.path, r)
            for r in self._db.execute(
                "SELECT sender, seq, raw, stored_at FROM envelopes WHERE line=? ORDER BY rowid",
                (line,),
            )
        )

    def find_by_id_prefix(self, line: str, prefix: str, limit: int = 2) -> list[tuple[str, bytes, int]]:
        """(sender, raw, stored_at) of envelopes whose id starts with ``prefix`` (hex)."""
        if not all(c in "0123456789abcdef" for c in prefix):
            return []
        rows = self._db.execute(
            "SELECT sender, raw, stored_at FROM envelopes WHERE line=? AND id >= ? AND id < ? LIMIT ?",
            (line, prefix, prefix + "g", limit),
        ).fetchall()
        return [
            (r[0], blob(self.path, r[1], "envelopes.raw"), integer(self.path, r[2], "envelopes.stored_at"))
            for r in rows
        ]

    def stored_at(self, line: str, sender: str, seq: int) -> int:
        row = self._db.execute(
            "SELECT stored_at FROM envelopes WHERE line=? AND sender=? AND seq=?", (line, sender, seq)
        ).fetchone()
        return integer(self.path, row[0], "envelopes.stored_at") if row else 0

    def equivocations(self, line: str | None = None) -> list[Equivocation]:
        rows = self._db.execute(
            "SELECT line, sender, seq, first, second, detected_at FROM equivocations "
            "WHERE ? IS NULL OR line=? ORDER BY rowid",
            (line, line),
        ).fetchall()
        return [
            Equivocation(
                line=r[0],
                sender=r[1],
                seq=integer(self.path, r[2], "equivocations.seq"),
                first=blob(self.path, r[3], "equivocations.first"),
                second=blob(self.path, r[4], "equivocations.second"),
                detected_at=integer(self.path, r[5], "equivocations.detected_at"),
            )
            for r in rows
        ]

    def line_bytes(self, line: str, sender: str) -> int:
        """Disk the envelopes ``sender`` signed on ``line`` take (one direction's budget): the running
        total kept with each commit, plus what the open batch appended."""
        row = self._db.execute("SELECT bytes FROM chain_bytes WHERE line=? AND sender=?", (line, sender)).fetchone()
        return (integer(self.path, row[0], "chain_bytes.bytes") if row else 0) + self._bytes.get((line, sender), 0)

    def size_bytes(self) -> int:
        size = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(p).st_size
        return size

    def files_dir(self) -> Path | None:
        return self.path.parent

    # -- outbox --------------------------------------------------------------------------------
    # An item accepted inside a batch is written when the batch commits, once, as it then is: a
    # message accepted and signed in one batch (the line is up) costs one INSERT, not an INSERT and
    # an UPDATE. Until then ``_unwritten`` holds it (and its content's JSON, fixed at acceptance),
    # and every read of the outbox answers with it as if it were written. An item written in an
    # earlier batch and signed in this one (the outbox backs up under load) is marked in one
    # ``executemany`` when the batch commits (``_signed_later``), read back as signed meanwhile.
    def accept(
        self,
        line: str,
        kind: str,
        prio: str,
        content: dict[str, Any],
        idem: str | None,
        accepted_at: int,
        *,
        text: str | None = None,
    ) -> OutboxItem:
        """Make a message durable before it is signed. An idempotency key already used returns the
        first acceptance unchanged, so a retried API call never sends twice. The content is kept as
        given until the batch commits: the caller does not change it afterwards."""
        if idem is not None:
            existing = self.outbox_by_idem(line, idem)
            if existing is not None:
                return existing
        text = text or json.dumps(content, sort_keys=True, ensure_ascii=False)
        with self.batch():
            if self._next_local is None:  # once per batch: the batch holds the store's write lock
                row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
                self._next_local = (integer(self.path, row[0], "sqlite_sequence.seq") if row else 0) + 1
            item = OutboxItem(
                local=self._next_local, line=line, kind=kind, prio=prio, content=content, idem=idem,
                accepted_at=accepted_at,
            )  # fmt: skip
            self._next_local += 1
            self._unwritten[item.local] = (item, text)
            self._keep(item)
        return item

    def _keep(self, item: OutboxItem) -> None:
        """Hold ``item`` in memory, forgetting the one held longest when OUTBOX_KEPT are (the
        store has it: it is read again if it is asked for)."""
        if item.local not in self._outbox and len(self._outbox) >= OUTBOX_KEPT:
            del self._outbox[next(iter(self._outbox))]
        self._outbox[item.local] = item

    def _write_signed(self) -> None:
        """The batch's signing of items written before it, in the batch's transaction."""
        if self._signed_later:
            self._db.executemany(
                "UPDATE outbox SET seq=?, envelope_id=? WHERE local=? AND seq IS NULL",
                [(seq, envelope_id, local) for local, (_, seq, envelope_id) in self._signed_later.items()],
            )
            self._signed_later.clear()

    def _now(self, item: OutboxItem) -> OutboxItem:
        """``item`` as read from the store, with this batch's signing of it (not written yet)."""
        later = self._signed_later.get(item.local)
        return item if later is None or item.seq is not None else _signed(item, later[1], later[2])

    def _write_outbox(self) -> None:
        """The batch's accepted items, as they are now (signed or not), in the batch's transaction."""
        if self._unwritten:
            self._db.executemany(
                "INSERT INTO outbox (local, line, kind, prio, content, idem, accepted_at, seq, envelope_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i.local, i.line, i.kind, i.prio, text, i.idem, i.accepted_at, i.seq, i.envelope_id)
                 for i, text in self._unwritten.values()],
            )  # fmt: skip
            self._unwritten.clear()

    def outbox_by_idem(self, line: str, idem: str) -> OutboxItem | None:
        for held, _ in self._unwritten.values():  # accepted in this batch, not written yet
            if held.line == line and held.idem == idem:
                return held
        rows = self._outbox_rows("line=? AND idem=?", (line, idem), 1)  # UNIQUE (line, idem): its index
        return self._now(rows[0]) if rows else None

    def _outbox_rows(self, where: str, args: tuple[Any, ...], limit: int = -1) -> list[OutboxItem]:
        rows = self._db.execute(
            "SELECT local, line, kind, prio, content, idem, accepted_at, seq, envelope_id FROM outbox "
            f"WHERE {where} ORDER BY local LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [
            OutboxItem(
                local=r[0],
                line=r[1],
                kind=r[2],
                prio=r[3],
                content=outbox_content(self.path, r[0], r[4]),
                idem=r[5],
                accepted_at=integer(self.path, r[6], "outbox.accepted_at"),
                seq=None if r[7] is None else integer(self.path, r[7], "outbox.seq"),
                envelope_id=r[8],
            )
            for r in rows
        ]

    def pending(self, line: str, limit: int = -1) -> list[OutboxItem]:
        """The line's unsigned items in the order accepted: their numbers from the index of
        unsigned items, each item from memory where this connection holds it, else from its row."""
        later = sum(1 for held, _, _ in self._signed_later.values() if held == line)
        rows = self._db.execute(
            "SELECT local FROM outbox WHERE line=? AND seq IS NULL ORDER BY local LIMIT ?",
            (line, limit if limit < 0 else limit + later),
        ).fetchall()
        numbers = [r[0] for r in rows if r[0] not in self._signed_later]
        numbers = numbers if limit < 0 else numbers[:limit]
        missing = [n for n in numbers if n not in self._outbox]
        read: dict[int, OutboxItem] = {}
        for start in range(0, len(missing), 500):  # under SQLite's limit of bound parameters
            part = missing[start : start + 500]
            read.update((i.local, i) for i in self._outbox_rows(f"local IN ({','.join('?' * len(part))})", tuple(part)))
        items = [self._outbox[n] if n in self._outbox else read[n] for n in numbers]
        for item in read.values():  # about to be signed: ``mark_signed`` finds them here
            self._keep(item)
        if self._unwritten and (limit < 0 or len(items) < limit):  # numbered after every written item
            held = [i for i, _ in self._unwritten.values() if i.line == line and i.seq is None]
            items += held if limit < 0 else held[: limit - len(items)]
        return items

    def max_outbox_local(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(local), 0) FROM outbox").fetchone()
        return max(int(row[0]), *self._unwritten) if self._unwritten else int(row[0])  # a rowid: always a number

    def pending_count(self, line: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE line=? AND seq IS NULL", (line,)).fetchone()
        later = sum(1 for held, _, _ in self._signed_later.values() if held == line)
        # (int(): SQLite's count, always a number)
        return int(row[0]) - later + sum(1 for i, _ in self._unwritten.values() if i.line == line and i.seq is None)

    def outbox_item(self, local: int) -> OutboxItem:
        kept = self._outbox.get(local)
        if kept is not None:
            return kept
        if local in self._unwritten:
            return self._unwritten[local][0]
        items = self._outbox_rows("local=?", (local,))
        if not items:
            raise NotFoundError(f"no outbox entry {local}")
        return self._now(items[0])

    def mark_signed(self, local: int, seq: int, envelope_id: str) -> None:
        held = self._unwritten.get(local)
        if held is not None:
            if held[0].seq is not None:
                return
            signed = _signed(held[0], seq, envelope_id)
            self._unwritten[local] = (signed, held[1])
            if local in self._outbox:
                self._outbox[local] = signed
            return
        if local in self._signed_later:
            return
        with self.batch():
            item = self.outbox_item(local)
            if item.seq is not None:
                return  # signed already (the UPDATE's ``seq IS NULL`` would not match either)
            self._signed_later[local] = (item.line, seq, envelope_id)
            if local in self._outbox:
                self._outbox[local] = _signed(item, seq, envelope_id)

    # -- receipts and checkpoints --------------------------------------------------------------
    def add_receipt(self, line: str, by: str, seq: int, signed: Signed, stored_at: int = 0) -> None:
        # One receipt per seq is enough evidence: copies that came over another path are not kept.
        row = (line, by, seq, signed.encode(), stored_at)
        self._write("INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?, ?)", row)

    def _receipt_seq(self, raw: object) -> int:
        return integer(self.path, raw, "receipts.seq")

    def receipt_times(self, line: str, by: str) -> list[tuple[int, int]]:
        """(seq, stored_at) of every receipt ``by`` gave on ``line``, in the order stored."""
        rows = self._db.execute(
            "SELECT seq, stored_at FROM receipts WHERE line=? AND by=? ORDER BY rowid", (line, by)
        ).fetchall()
        return [(self._receipt_seq(r[0]), integer(self.path, r[1], "receipts.stored_at")) for r in rows]

    def receipts_covering(self, line: str, by: str, seqs: Iterable[int]) -> list[tuple[int, int]]:
        """(seq, stored_at) of the first receipt ``by`` gave that covers each of ``seqs``, once each,
        in seq order: what a replay of every receipt would tell about those seqs, in O(log n) each
        (receipts are cumulative and stored in rising seq order)."""
        found: list[tuple[int, int]] = []
        for seq in sorted(set(seqs)):
            if found and seq <= found[-1][0]:
                continue  # the receipt found last covers it too
            row = self._db.execute(
                "SELECT seq, stored_at FROM receipts WHERE line=? AND by=? AND seq>=? ORDER BY seq LIMIT 1",
                (line, by, seq),
            ).fetchone()
            if row is None:
                break  # later seqs are not receipted either
            found.append((self._receipt_seq(row[0]), integer(self.path, row[1], "receipts.stored_at")))
        return found

    def latest_receipt(self, line: str, by: str) -> tuple[int, Signed] | None:
        row = self._db.execute(
            "SELECT seq, raw FROM receipts WHERE line=? AND by=? ORDER BY seq DESC LIMIT 1", (line, by)
        ).fetchone()
        return (self._receipt_seq(row[0]), Signed.decode(blob(self.path, row[1], "receipts.raw"))) if row else None

    def receipts(self, line: str) -> list[tuple[str, Signed]]:
        rows = self._db.execute("SELECT by, raw FROM receipts WHERE line=? ORDER BY rowid", (line,)).fetchall()
        return [(r[0], Signed.decode(blob(self.path, r[1], "receipts.raw"))) for r in rows]

    def add_checkpoint(self, line: str, n: int, proposal: Signed, cosign: Signed) -> None:
        self._write("INSERT INTO checkpoints VALUES (?, ?, ?, ?)", (line, n, proposal.encode(), cosign.encode()))

    def checkpoints(self, line: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Signed, Signed]]:
        rows = self._db.execute(
            "SELECT n, proposal, cosign FROM checkpoints WHERE line=? AND n>? ORDER BY n LIMIT ?",
            (line, after, -1 if limit is None else limit),
        ).fetchall()
        return [_checkpoint(self.path, r) for r in rows]

    def checkpoint(self, line: str, n: int) -> tuple[int, Signed, Signed] | None:
        row = self._db.execute("SELECT n, proposal, cosign FROM checkpoints WHERE line=? AND n=?", (line, n)).fetchone()
        return _checkpoint(self.path, row) if row else None

    def last_checkpoint(self, line: str) -> tuple[int, Signed, Signed] | None:
        row = self._db.execute(
            "SELECT n, proposal, cosign FROM checkpoints WHERE line=? ORDER BY n DESC LIMIT 1", (line,)
        ).fetchone()
        return _checkpoint(self.path, row) if row else None

    # -- verification input --------------------------------------------------------------------
    @contextlib.contextmanager
    def stored_line(self, line: str, our_name: str = "our station") -> Iterator[StoredLine]:
        """One line as ``verify.LineSource``, read in one read transaction (one state of the store,
        however long the verification takes and whatever the station commits meanwhile): the
        chains and receipts are streamed, never loaded whole."""
        with self.snapshot():
            yield StoredLine(self, line, our_name)

    def line_data(self, line: str, our_name: str = "our station") -> LineData:
        """Everything held for one line, as bytes, for ``ledger.verify.verify_line``."""
        record = self.line(line)
        stations = [self.station, record.peer]
        chains = {
            fp: [
                _stored_row(self.path, r)
                for r in self._db.execute(
                    "SELECT seq, id, raw FROM envelopes WHERE line=? AND sender=? ORDER BY seq", (line, fp)
                )
            ]
            for fp in stations
        }
        receipts = self._db.execute("SELECT raw FROM receipts WHERE line=? ORDER BY rowid", (line,)).fetchall()
        checkpoints = self._db.execute(
            "SELECT n, proposal, cosign FROM checkpoints WHERE line=? ORDER BY n", (line,)
        ).fetchall()
        return LineData(
            line=line,
            names={self.station: our_name, record.peer: record.peer_name},
            certs={fp: [c for _, _, c in self.certs(fp)] for fp in stations},
            chains=chains,
            receipts=[_statement(blob(self.path, r[0], "receipts.raw")) for r in receipts],
            checkpoints=[
                (
                    r[0],  # as stored, never trusted: verify compares it with the signed n
                    _statement(blob(self.path, r[1], "checkpoints.proposal")),
                    _statement(blob(self.path, r[2], "checkpoints.cosign")),
                )
                for r in checkpoints
            ],
            equivocations=[(e.sender, e.seq, e.first, e.second) for e in self.equivocations(line)],
        )
