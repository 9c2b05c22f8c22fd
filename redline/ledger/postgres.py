"""The durable transcript in a PostgreSQL database (psycopg 3): for a station that must survive
losing a machine. The same promises as ``ledger.sqlite`` (``ledger.interface`` lists them):

- "Accepted" means committed here: every method that changes state runs inside ``batch()`` — one
  transaction, one commit, however many envelopes it holds (group commit) — or commits before it
  returns. ``synchronous_commit`` is at least ``on`` for the session, so a commit has been
  flushed to the WAL (and, with a synchronous standby, to it) when COMMIT returns.
- The database itself refuses a second envelope at a used (line, sender, seq) and a second row
  with a used (line, id): UNIQUE constraints, so no code path can store a fork. A different valid
  envelope at a used seq is kept in ``equivocations`` as evidence.
- The schema is versioned in ``meta``; steps run at open in one transaction, and a schema newer
  than this redline's is refused before anything is written.
- Each chain's complete Merkle subtrees (``merkle.StoredLog``) and its byte total are written in
  the transaction of the envelope that completes them, as in SQLite.
- Fencing (an HA pair, ``ledger.lease``): once ``hold`` gave this handle a lease term, every
  write transaction first reads the lease row ``FOR SHARE`` and goes on only if that term is
  still the store's; otherwise it rolls back and raises ``FencedError``, and so does every later
  write. A handle whose lease ran out by its own monotonic clock (not renewed in time: paused,
  cut off from the database) refuses to write before asking the store at all.

The DSN never carries a password (``store_url`` refuses one): libpq reads it from ``PGPASSFILE``
(or ``~/.pgpass``), ``PGPASSWORD`` or a client certificate, never from the command line or
config.json.
"""

from __future__ import annotations

import contextlib
import json
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from redline import merkle
from redline.envelope import Envelope
from redline.errors import (
    EquivocationError,
    FencedError,
    LineNotFoundError,
    NotFoundError,
    OutOfOrderError,
    SchemaVersionError,
    StorageError,
)
from redline.identity import SignedCert
from redline.ledger import lease
from redline.ledger.model import SCHEMA_VERSION, Equivocation, LineRecord, OutboxItem, find_line
from redline.ledger.rows import blob, check_station, damaged, integer, line_record, outbox_content, schema_version
from redline.ledger.stores import shown_url
from redline.ledger.verify import LineData, LineSource, StoredRow
from redline.statements import Signed

# Schema steps by version: a new store runs them all from 1, an older one those above its version,
# in one transaction. PostgreSQL stores start at version 2 (what SQLite's schema 2 holds), so the
# version numbers mean the same store content on both backends.
_STEPS: dict[int, str] = {
    2: """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE lines (pos BIGINT GENERATED ALWAYS AS IDENTITY, line TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE certs (
    pos BIGINT GENERATED ALWAYS AS IDENTITY, station TEXT NOT NULL, key_id TEXT NOT NULL, role TEXT NOT NULL,
    data BYTEA NOT NULL, sig BYTEA NOT NULL, PRIMARY KEY (station, key_id)
);
CREATE TABLE envelopes (
    pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    line TEXT NOT NULL, sender TEXT NOT NULL, seq BIGINT NOT NULL CHECK (seq > 0), id TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL, raw BYTEA NOT NULL, stored_at BIGINT NOT NULL, prio TEXT,
    CONSTRAINT envelopes_one_per_seq UNIQUE (line, sender, seq),
    CONSTRAINT envelopes_one_per_id UNIQUE (line, id)
);
CREATE INDEX envelopes_ops ON envelopes (line, pos) WHERE kind <> 'TEXT' OR prio = 'FLASH';
CREATE TABLE equivocations (
    pos BIGINT GENERATED ALWAYS AS IDENTITY, line TEXT NOT NULL, sender TEXT NOT NULL, seq BIGINT NOT NULL,
    first BYTEA NOT NULL, second BYTEA NOT NULL, detected_at BIGINT NOT NULL
);
CREATE TABLE outbox (
    local BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line TEXT NOT NULL, kind TEXT NOT NULL,
    prio TEXT NOT NULL, content TEXT NOT NULL, idem TEXT, accepted_at BIGINT NOT NULL, seq BIGINT,
    envelope_id TEXT, UNIQUE (line, idem)
);
CREATE INDEX outbox_pending ON outbox (line, local) WHERE seq IS NULL;
CREATE TABLE receipts (
    pos BIGINT GENERATED ALWAYS AS IDENTITY, line TEXT NOT NULL, by_station TEXT NOT NULL, seq BIGINT NOT NULL,
    raw BYTEA NOT NULL, stored_at BIGINT NOT NULL, UNIQUE (line, by_station, seq)
);
CREATE TABLE checkpoints (
    line TEXT NOT NULL, n BIGINT NOT NULL, proposal BYTEA NOT NULL, cosign BYTEA NOT NULL, PRIMARY KEY (line, n)
);
CREATE TABLE merkle (
    line TEXT NOT NULL, sender TEXT NOT NULL, height INTEGER NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL,
    PRIMARY KEY (line, sender, height, idx)
);
CREATE TABLE chain_bytes (line TEXT NOT NULL, sender TEXT NOT NULL, bytes BIGINT NOT NULL, PRIMARY KEY (line, sender));
""",
}
_OPS_ROWS = "kind <> 'TEXT' OR prio = 'FLASH'"  # exactly the partial index's condition
_STRONG_ENOUGH = {"on", "remote_apply"}  # synchronous_commit values that flush before COMMIT returns


def leaf_of(envelope_id: str) -> bytes:
    return merkle.leaf_hash(bytes.fromhex(envelope_id))


def _statement(raw: bytes) -> Signed:
    from redline.errors import EncodingError

    try:
        return Signed.decode(raw)
    except EncodingError:
        return Signed(raw, b"")


class _ChainNodes:
    """One chain's ``merkle.NodeSource``: leaves from the envelopes' ids, subtrees from ``merkle``."""

    def __init__(self, db: psycopg.Connection[Any], shown: str, line: str, sender: str) -> None:
        self._db, self._shown, self._key = db, shown, (line, sender)

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT id FROM envelopes WHERE line=%s AND sender=%s AND seq>%s AND seq<=%s ORDER BY seq",
            (*self._key, lo, hi),
        ).fetchall()
        if len(rows) != hi - lo:
            raise StorageError(f"the store lacks envelopes {lo + 1}..{hi} of a chain it counts as held: it is damaged")
        try:
            return [leaf_of(r[0]) for r in rows]
        except (TypeError, ValueError) as exc:  # bytes.fromhex of what is not a hex string (or NULL)
            raise damaged(self._shown, f"a value of envelopes.id is not a hex id ({exc})") from exc

    def node(self, height: int, index: int) -> bytes:
        row = self._db.execute(
            "SELECT hash FROM merkle WHERE line=%s AND sender=%s AND height=%s AND idx=%s", (*self._key, height, index)
        ).fetchone()
        if row is None:
            raise StorageError(f"the store lacks the Merkle subtree {height}/{index} of a chain it holds: damaged")
        return blob(self._shown, row[0], "merkle.hash")


# A dead database host or a cut network must end a store call, not hang the station's one thread:
# libpq's TCP settings, each unless the URL gives its own (a connection that waited this long is of
# no use to a station whose lease lasts seconds).
_TCP_DEFAULTS: dict[str, int] = {
    "connect_timeout": 3,  # seconds to reach a host (libpq then tries the next one of a multi-host URL)
    "tcp_user_timeout": 10_000,  # ms that sent data may stay unacknowledged before the connection is dead
    "keepalives_idle": 5,  # an idle connection is probed after 5 s, every 2 s, given up after 3 probes
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def _connect(url: str) -> psycopg.Connection[Any]:
    extra: dict[str, Any] = {k: v for k, v in _TCP_DEFAULTS.items() if k not in url}
    return psycopg.connect(url, autocommit=True, application_name="redline", **extra)


def _close(db: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        db.close()


class _Batch:
    __slots__ = ("_ledger",)

    def __init__(self, ledger: PgLedger) -> None:
        self._ledger = ledger

    def __enter__(self) -> None:
        self._ledger._begin()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._ledger._end(exc)


def store_station(db: psycopg.Connection[Any]) -> str:
    """The station a store was made for (``meta``), read on any connection to it: the pair's
    standby checks it before it asks for the lease (``rows.check_station``)."""
    exists = db.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        raise StorageError(f"no store at {shown_url(db.info.dsn)}; create the station with 'redline init --store'")
    row = db.execute("SELECT value FROM meta WHERE key='station'").fetchone()
    return str(row[0]) if row else ""


class PgLedger:
    """One station's store in PostgreSQL. Not thread-safe: one writer, the station's own thread."""

    def __init__(self, url: str, *, create: bool = False, station: str | None = None, read_only: bool = False) -> None:
        if create and read_only:
            raise ValueError("a store cannot be created read-only")
        self.url = url
        self.read_only = read_only
        self._shown = shown = shown_url(url)
        try:
            self._db: psycopg.Connection[Any] = _connect(url)
        except psycopg.Error as exc:
            raise StorageError(f"store {shown} cannot be opened: {exc}".strip()) from exc
        self._depth = 0
        self._bytes: dict[tuple[str, str], int] = {}
        self._logs: dict[tuple[str, str], merkle.StoredLog] = {}
        self._heads: dict[tuple[str, str], tuple[int, str | None]] = {}
        # The lease this handle writes under (``hold``): holder, term, its length, and until when
        # (monotonic, from the send of the last renewal) it is certainly ours. None: no fencing.
        self._fence: tuple[str, int, float] | None = None
        self._valid_until = 0.0
        self._deposed = ""
        try:
            # Nothing is written before the schema is known: a store we refuse stays as it was.
            exists = self._db.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
            if create:
                if exists and exists[0]:
                    raise StorageError(f"a store already exists at {shown}")
            elif not (exists and exists[0]):
                raise StorageError(f"no store at {shown}; create the station with 'redline init --store'")
            else:
                version = self._check_schema()
                check_station(store_station(self._db), station, shown)  # before any write or migration
            self._settings()
            if create:
                self._migrate(0, station or "")
            elif version < SCHEMA_VERSION:
                self._migrate(version, None)
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, psycopg.Error):
                raise StorageError(f"store {shown} cannot be opened: {exc}") from exc
            raise
        self._closer = weakref.finalize(self, _close, self._db)

    # -- the connection -------------------------------------------------------------------------
    def _settings(self) -> None:
        """What every connection of this handle sets for its session (again after a reconnect)."""
        if self.read_only:
            self._db.execute("SET default_transaction_read_only = on")
        else:
            level = self._db.execute("SHOW synchronous_commit").fetchone()
            if level is None or level[0] not in _STRONG_ENOUGH:
                self._db.execute("SET synchronous_commit = on")
        if self._fence is not None:
            self._db.execute("SELECT set_config('application_name', %s, false)", (lease.app_name(self._fence[0]),))
            ms = max(1000, int(self._fence[2] * 1000))
            self._db.execute(f"SET idle_in_transaction_session_timeout = {ms}")

    def _reconnect_if_lost(self) -> None:
        """Between transactions, open a lost connection again: the server restarted, or the
        database failed over and a multi-host URL with ``target_session_attrs=read-write`` finds the
        new primary. The transaction that was open when it was lost was refused (StorageError)
        and rolled back; what the store holds is read again, nothing is taken from memory."""
        if self._depth or not (self._db.closed or self._db.broken):
            return
        try:
            db = _connect(self.url)
        except psycopg.Error as exc:
            raise StorageError(f"the store {shown_url(self.url)} cannot be reached: {exc}".strip()) from exc
        self._closer.detach()
        _close(self._db)
        self._db = db
        self._closer = weakref.finalize(self, _close, db)
        self._logs.clear()
        self._heads.clear()
        self._bytes.clear()
        try:
            self._settings()
        except psycopg.Error as exc:
            raise StorageError(f"the store {shown_url(self.url)} cannot be reached: {exc}".strip()) from exc

    # -- schema -------------------------------------------------------------------------------
    def _check_schema(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            raise StorageError(f"{shown_url(self.url)} is not a redline store")
        version = schema_version(shown_url(self.url), row[0])
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"store {shown_url(self.url)} has schema version {row[0]}, this redline understands "
                f"{SCHEMA_VERSION}; upgrade redline before opening it (the store was not touched)",
                newer=True,
            )
        if version < SCHEMA_VERSION and self.read_only:
            raise SchemaVersionError(
                f"store {shown_url(self.url)} has schema version {row[0]}, older than this redline's "
                f"{SCHEMA_VERSION}; start the station once to bring it up to date (the store was not touched)",
                newer=False,
            )
        return version

    def _migrate(self, version: int, station: str | None) -> None:
        """Every step above ``version`` in one transaction (all or nothing). A second process
        migrating at the same time waits on the lock and then finds the work done."""
        with self.batch():
            self._db.execute("SELECT pg_advisory_xact_lock(7469211)")  # one migrator at a time
            if version and self._check_schema() >= SCHEMA_VERSION:
                return
            for step in range(version + 1, SCHEMA_VERSION + 1):
                sql = _STEPS.get(step)
                if sql is None:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            if station is not None:
                self._db.execute("INSERT INTO meta VALUES ('station', %s)", (station,))
                self._db.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))
            else:
                self._db.execute("UPDATE meta SET value=%s WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    @property
    def station(self) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key='station'").fetchone()
        return str(row[0]) if row else ""

    @property
    def opened_clean(self) -> bool:
        return True  # PostgreSQL recovers its own WAL; there is no page check for us to skip

    def check_integrity(self) -> None:
        """PostgreSQL checks its own pages (data checksums, amcheck): nothing for redline to run."""

    @contextlib.contextmanager
    def checked_meanwhile(self) -> Iterator[None]:
        self.check_integrity()
        yield

    def close(self) -> None:
        self._closer()

    @classmethod
    def open_read_only(cls, url: str) -> PgLedger:
        return cls(url, read_only=True)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees one state of the store (one REPEATABLE READ, READ ONLY transaction)."""
        if self._depth or self._db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise StorageError("a snapshot cannot start inside a transaction")
        self._logs.clear()
        self._heads.clear()
        self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                self._db.execute("ROLLBACK")
            self._logs.clear()
            self._heads.clear()

    # -- transactions --------------------------------------------------------------------------
    def batch(self) -> _Batch:
        """Group commit: everything inside shares one transaction and one WAL flush."""
        return _Batch(self)

    def _begin(self) -> None:
        if self._depth == 0:
            if self._fence is not None:
                self._check_lease_time()
            self._reconnect_if_lost()
            try:
                self._db.execute("BEGIN")
                if self._fence is not None:
                    self._check_term()
            except psycopg.Error as exc:
                self._rollback()
                raise StorageError(f"the store cannot start a transaction, nothing was accepted: {exc}") from exc
        self._depth += 1

    # -- fencing (ledger/lease.py) -------------------------------------------------------------
    def hold(self, holder: str, term: int, seconds: float, since: float) -> None:
        """Write only under lease ``term`` from now on. ``since``: the monotonic time the request
        that won (or last renewed) the term was sent; the lease is ours until ``since + seconds``.
        The connection is named after the holder (a taker can end it) and a transaction left
        open by a paused process is rolled back by the server."""
        self._fence, self._valid_until, self._deposed = (holder, term, seconds), since + seconds, ""
        self._settings()

    @property
    def term(self) -> int | None:
        return None if self._fence is None else self._fence[1]

    @property
    def deposed(self) -> str:
        """Why this handle may no longer write ("" while it may)."""
        return self._deposed

    def renew_lease(self) -> lease.LeaseState | None:
        """Extend the held lease (between transactions only: None if one is open, try again)."""
        if self._fence is None or self._depth or self._deposed:
            if self._deposed:
                raise FencedError(self._deposed)
            return None
        holder, term, seconds = self._fence
        sent = time.monotonic()
        self._reconnect_if_lost()
        try:
            state = lease.renew(self._db, holder, term, seconds)
        except FencedError as exc:
            self._deposed = str(exc)
            raise
        self._valid_until = sent + seconds
        return state

    def read_lease(self) -> lease.LeaseState | None:
        self._reconnect_if_lost()
        try:
            return lease.read(self._db)
        except psycopg.Error as exc:
            raise StorageError(f"the lease cannot be read: {exc}") from exc

    def database_role(self) -> str:
        """"primary" or "standby" (in recovery, read-only), as the server we are connected to says."""
        row = self._q("SELECT pg_is_in_recovery()").fetchone()
        return "standby" if row and row[0] else "primary"

    def lease_still_ours(self) -> None:
        """Raise ``FencedError`` once the held lease has run out by this process's clock."""
        self._check_lease_time()

    def _check_lease_time(self) -> None:
        if not self._deposed and time.monotonic() >= self._valid_until:
            assert self._fence is not None
            self._deposed = (
                f"DEPOSED: the lease at term {self._fence[1]} was not renewed in time (this process was paused, "
                "or cut off from the database); it commits and sends nothing more and steps down"
            )
        if self._deposed:
            raise FencedError(self._deposed)

    def _check_term(self) -> None:
        """Inside the transaction just begun: the lease row, locked FOR SHARE until it ends, still
        at our term. A takeover waits for this transaction, or this one sees the new term."""
        assert self._fence is not None
        row = self._db.execute("SELECT term FROM lease WHERE id = 1 FOR SHARE").fetchone()
        if row is not None and row[0] == self._fence[1]:  # (no int(): a damaged term is not ours either)
            return
        self._rollback()
        self._deposed = lease.deposed_message(self._fence[1], self.read_lease())
        raise FencedError(self._deposed)

    def release_lease(self) -> None:
        """A clean stop: end our term now, so the standby takes over without waiting for expiry."""
        if self._fence is None or self._deposed or self._db.closed:
            return
        with contextlib.suppress(psycopg.Error):
            lease.release(self._db, self._fence[0], self._fence[1])

    def _end(self, exc: BaseException | None) -> None:
        if exc is None and self._depth == 1:
            try:
                self._write_totals()
            except BaseException as failed:
                self._abandon(failed)
                raise  # pragma: no cover - _abandon raises
        if exc is not None:
            self._abandon(exc)
            return
        self._depth -= 1
        if self._depth == 0:
            try:
                self._db.execute("COMMIT")
            except psycopg.Error as err:
                self._rollback()
                self._forget()
                # A connection lost during COMMIT leaves the outcome unknown to us: the caller treats it
                # as not accepted (nothing receipted, nothing sent), and the peer's resend or our reopen
                # finds the truth (a duplicate is dropped by (seq, id)).
                raise StorageError(f"commit failed, nothing from this batch was accepted: {err}") from err

    def _abandon(self, exc: BaseException) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._rollback()
            self._forget()
        if isinstance(exc, psycopg.Error):
            raise StorageError(f"a write failed, nothing from this batch was accepted: {exc}") from exc

    def _rollback(self) -> None:
        if self._db.closed:
            return
        if self._db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                self._db.execute("ROLLBACK")

    def _forget(self) -> None:
        self._logs.clear()
        self._heads.clear()
        self._bytes.clear()

    def _write_totals(self) -> None:
        for (line, sender), added in self._bytes.items():
            self._db.execute(
                "INSERT INTO chain_bytes VALUES (%s, %s, %s) "
                "ON CONFLICT (line, sender) DO UPDATE SET bytes = chain_bytes.bytes + excluded.bytes",
                (line, sender, added),
            )
        self._bytes.clear()

    def _write(self, sql: str, args: tuple[Any, ...]) -> psycopg.Cursor[Any]:
        with self.batch():
            return self._db.execute(sql, args)

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        self._reconnect_if_lost()
        try:
            return self._db.execute(sql, args)
        except psycopg.Error as exc:
            if self._depth == 0:
                self._rollback()
            raise StorageError(f"the store refused a read: {exc}") from exc

    # -- lines and keys ------------------------------------------------------------------------
    def put_line(self, record: LineRecord) -> None:
        self._write(
            "INSERT INTO lines (line, record) VALUES (%s, %s) ON CONFLICT (line) DO UPDATE SET record=excluded.record",
            (record.line, json.dumps(record.to_obj(), sort_keys=True)),
        )

    def line(self, line: str) -> LineRecord:
        row = self._q("SELECT line, record FROM lines WHERE line=%s", (line,)).fetchone()
        if row is None:
            known = ", ".join(r.line[:8] for r in self.lines()) or "none"
            raise LineNotFoundError(f"no line {line!r} at this station (lines: {known})")
        return line_record(shown_url(self.url), row[0], row[1])

    def find_line(self, prefix: str) -> LineRecord:
        """A line by id, id prefix (8+ hex digits) or peer station name (``model.find_line``)."""
        return find_line(self.lines(), prefix)

    def lines(self) -> list[LineRecord]:
        rows = self._q("SELECT line, record FROM lines ORDER BY pos").fetchall()
        return [line_record(shown_url(self.url), r[0], r[1]) for r in rows]

    def put_cert(self, station: str, key_id: str, role: str, cert: SignedCert) -> None:
        self._write(
            "INSERT INTO certs (station, key_id, role, data, sig) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (station, key_id, role, cert.data, cert.sig),
        )

    def certs(self, station: str) -> list[tuple[str, str, SignedCert]]:
        rows = self._q("SELECT key_id, role, data, sig FROM certs WHERE station=%s ORDER BY pos", (station,))
        s = self._shown
        return [(r[0], r[1], SignedCert(blob(s, r[2], "certs.data"), blob(s, r[3], "certs.sig"))) for r in rows]

    # -- chains --------------------------------------------------------------------------------
    def head(self, line: str, sender: str) -> tuple[int, str | None]:
        key = (line, sender)
        if key not in self._heads:
            row = self._q(
                "SELECT seq, id FROM envelopes WHERE line=%s AND sender=%s ORDER BY seq DESC LIMIT 1", key
            ).fetchone()
            self._heads[key] = (integer(self._shown, row[0], "envelopes.seq"), row[1]) if row else (0, None)
        return self._heads[key]

    def log(self, line: str, sender: str) -> merkle.StoredLog:
        key = (line, sender)
        if key not in self._logs:
            nodes = _ChainNodes(self._db, self._shown, line, sender)
            self._logs[key] = merkle.StoredLog(nodes, self.head(line, sender)[0])
        return self._logs[key]

    def envelope_id(self, line: str, sender: str, seq: int) -> str | None:
        row = self._q("SELECT id FROM envelopes WHERE line=%s AND sender=%s AND seq=%s", (line, sender, seq)).fetchone()
        return str(row[0]) if row else None

    def has_id(self, line: str, envelope_id: str) -> bool:
        return self._q("SELECT 1 FROM envelopes WHERE line=%s AND id=%s", (line, envelope_id)).fetchone() is not None

    def append(self, env: Envelope, stored_at: int) -> bool:
        """Store a verified envelope as the next in its sender's chain (``ledger.sqlite.Ledger.append``)."""
        h = env.header
        key = (h.line, h.sender)
        seq, last_id = self.head(*key)
        if h.seq <= seq:
            row = self._q(
                "SELECT id, raw FROM envelopes WHERE line=%s AND sender=%s AND seq=%s", (*key, h.seq)
            ).fetchone()
            if row is None:
                raise StorageError(f"the store lacks seq {h.seq} of a chain whose head is {seq}: it is damaged")
            if row[0] == env.id:
                return False
            with self.batch():
                self._db.execute(
                    "INSERT INTO equivocations (line, sender, seq, first, second, detected_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (h.line, h.sender, h.seq, blob(self._shown, row[1], "envelopes.raw"), env.encode(), stored_at),
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
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (h.line, h.sender, h.seq, env.id, h.kind, raw, stored_at, h.prio),
            )
            for height, index, node in log.append(leaf_of(env.id)):
                self._db.execute(
                    "INSERT INTO merkle VALUES (%s, %s, %s, %s, %s)", (h.line, h.sender, height, index, node)
                )
            self._heads[key] = (h.seq, env.id)
            self._bytes[key] = self._bytes.get(key, 0) + len(raw)
        return True

    def raw_envelope(self, line: str, sender: str, seq: int) -> bytes:
        sql = "SELECT raw FROM envelopes WHERE line=%s AND sender=%s AND seq=%s"
        row = self._q(sql, (line, sender, seq)).fetchone()
        if row is None:
            raise NotFoundError(f"no envelope seq {seq} from station {sender[:16]} on line {line[:8]}")
        return blob(self._shown, row[0], "envelopes.raw")

    def raw_of_kind(self, line: str, sender: str, kind: str) -> list[bytes]:
        rows = self._q(
            f"SELECT raw FROM envelopes WHERE line=%s AND ({_OPS_ROWS}) AND sender=%s AND kind=%s ORDER BY seq",
            (line, sender, kind),
        )
        return [blob(self._shown, r[0], "envelopes.raw") for r in rows.fetchall()]

    def raw_envelopes(self, line: str, sender: str, after: int = 0, limit: int = -1) -> Iterator[tuple[int, bytes]]:
        rows = self._q(
            "SELECT seq, raw FROM envelopes WHERE line=%s AND sender=%s AND seq>%s ORDER BY seq LIMIT %s",
            (line, sender, after, limit if limit >= 0 else None),
        ).fetchall()
        s = self._shown
        yield from ((integer(s, r[0], "envelopes.seq"), blob(s, r[1], "envelopes.raw")) for r in rows)

    def stored_for_ops(self, line: str) -> Iterator[tuple[str, int, bytes, int]]:
        rows = self._q(
            f"SELECT sender, seq, raw, stored_at FROM envelopes WHERE line=%s AND ({_OPS_ROWS}) ORDER BY pos", (line,)
        ).fetchall()
        yield from (_ops_row(self._shown, r) for r in rows)

    def stored_in_order(self, line: str) -> Iterator[tuple[str, int, bytes, int]]:
        rows = self._q("SELECT sender, seq, raw, stored_at FROM envelopes WHERE line=%s ORDER BY pos", (line,))
        yield from (_ops_row(self._shown, r) for r in rows.fetchall())

    def find_by_id_prefix(self, line: str, prefix: str, limit: int = 2) -> list[tuple[str, bytes, int]]:
        if not all(c in "0123456789abcdef" for c in prefix):
            return []
        rows = self._q(
            "SELECT sender, raw, stored_at FROM envelopes WHERE line=%s AND id >= %s AND id < %s LIMIT %s",
            (line, prefix, prefix + "g", limit),
        ).fetchall()
        s = self._shown
        return [(r[0], blob(s, r[1], "envelopes.raw"), integer(s, r[2], "envelopes.stored_at")) for r in rows]

    def stored_at(self, line: str, sender: str, seq: int) -> int:
        row = self._q(
            "SELECT stored_at FROM envelopes WHERE line=%s AND sender=%s AND seq=%s", (line, sender, seq)
        ).fetchone()
        return integer(self._shown, row[0], "envelopes.stored_at") if row else 0

    def equivocations(self, line: str | None = None) -> list[Equivocation]:
        rows = self._q(
            "SELECT line, sender, seq, first, second, detected_at FROM equivocations "
            "WHERE %s::text IS NULL OR line=%s ORDER BY pos",
            (line, line),
        ).fetchall()
        return [
            Equivocation(
                line=r[0],
                sender=r[1],
                seq=integer(self._shown, r[2], "equivocations.seq"),
                first=blob(self._shown, r[3], "equivocations.first"),
                second=blob(self._shown, r[4], "equivocations.second"),
                detected_at=integer(self._shown, r[5], "equivocations.detected_at"),
            )
            for r in rows
        ]

    def line_bytes(self, line: str, sender: str) -> int:
        row = self._q("SELECT bytes FROM chain_bytes WHERE line=%s AND sender=%s", (line, sender)).fetchone()
        return (integer(self._shown, row[0], "chain_bytes.bytes") if row else 0) + self._bytes.get((line, sender), 0)

    def size_bytes(self) -> int:
        row = self._q("SELECT pg_database_size(current_database())", ()).fetchone()
        return int(row[0]) if row else 0  # computed by the server

    def files_dir(self) -> Path | None:
        return None  # on the server: its disk is watched there

    # -- outbox --------------------------------------------------------------------------------
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
        if idem is not None:
            existing = self.outbox_by_idem(line, idem)
            if existing is not None:
                return existing
        cur = self._write(
            "INSERT INTO outbox (line, kind, prio, content, idem, accepted_at) VALUES (%s, %s, %s, %s, %s, %s) "
            "RETURNING local",
            (line, kind, prio, text or json.dumps(content, sort_keys=True, ensure_ascii=False), idem, accepted_at),
        )
        row = cur.fetchone()
        assert row is not None
        return OutboxItem(  # (int(): the number the server just gave it, not a stored value read back)
            local=int(row[0]), line=line, kind=kind, prio=prio, content=content, idem=idem, accepted_at=accepted_at
        )

    def outbox_by_idem(self, line: str, idem: str) -> OutboxItem | None:
        rows = self._outbox_rows("line=%s AND idem=%s", (line, idem), 1)  # UNIQUE (line, idem): its index
        return rows[0] if rows else None

    def _outbox_rows(self, where: str, args: tuple[Any, ...], limit: int = -1) -> list[OutboxItem]:
        rows = self._q(
            "SELECT local, line, kind, prio, content, idem, accepted_at, seq, envelope_id FROM outbox "
            f"WHERE {where} ORDER BY local LIMIT %s",
            (*args, limit if limit >= 0 else None),
        ).fetchall()
        shown = self._shown
        return [
            OutboxItem(
                local=integer(shown, r[0], "outbox.local"),
                line=r[1],
                kind=r[2],
                prio=r[3],
                content=outbox_content(shown, r[0], r[4]),
                idem=r[5],
                accepted_at=integer(shown, r[6], "outbox.accepted_at"),
                seq=None if r[7] is None else integer(shown, r[7], "outbox.seq"),
                envelope_id=r[8],
            )
            for r in rows
        ]

    def pending(self, line: str, limit: int = -1) -> list[OutboxItem]:
        return self._outbox_rows("line=%s AND seq IS NULL", (line,), limit)

    def max_outbox_local(self) -> int:
        row = self._q("SELECT COALESCE(MAX(local), 0) FROM outbox").fetchone()
        return integer(self._shown, row[0], "outbox.local") if row else 0

    def pending_count(self, line: str) -> int:
        row = self._q("SELECT COUNT(*) FROM outbox WHERE line=%s AND seq IS NULL", (line,)).fetchone()
        return int(row[0]) if row else 0  # a count: computed by the server

    def outbox_item(self, local: int) -> OutboxItem:
        items = self._outbox_rows("local=%s", (local,))
        if not items:
            raise NotFoundError(f"no outbox entry {local}")
        return items[0]

    def mark_signed(self, local: int, seq: int, envelope_id: str) -> None:
        self._write(
            "UPDATE outbox SET seq=%s, envelope_id=%s WHERE local=%s AND seq IS NULL", (seq, envelope_id, local)
        )

    # -- receipts and checkpoints --------------------------------------------------------------
    def add_receipt(self, line: str, by: str, seq: int, signed: Signed, stored_at: int = 0) -> None:
        self._write(
            "INSERT INTO receipts (line, by_station, seq, raw, stored_at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (line, by, seq, signed.encode(), stored_at),
        )

    def _receipt_seq(self, raw: object) -> int:
        return integer(self._shown, raw, "receipts.seq")

    def receipt_times(self, line: str, by: str) -> list[tuple[int, int]]:
        rows = self._q(
            "SELECT seq, stored_at FROM receipts WHERE line=%s AND by_station=%s ORDER BY pos", (line, by)
        ).fetchall()
        return [(self._receipt_seq(r[0]), integer(self._shown, r[1], "receipts.stored_at")) for r in rows]

    def receipts_covering(self, line: str, by: str, seqs: Iterable[int]) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        for seq in sorted(set(seqs)):
            if found and seq <= found[-1][0]:
                continue
            row = self._q(
                "SELECT seq, stored_at FROM receipts WHERE line=%s AND by_station=%s AND seq>=%s ORDER BY seq LIMIT 1",
                (line, by, seq),
            ).fetchone()
            if row is None:
                break
            found.append((self._receipt_seq(row[0]), integer(self._shown, row[1], "receipts.stored_at")))
        return found

    def latest_receipt(self, line: str, by: str) -> tuple[int, Signed] | None:
        row = self._q(
            "SELECT seq, raw FROM receipts WHERE line=%s AND by_station=%s ORDER BY seq DESC LIMIT 1", (line, by)
        ).fetchone()
        if row is None:
            return None
        return self._receipt_seq(row[0]), Signed.decode(blob(self._shown, row[1], "receipts.raw"))

    def receipts(self, line: str) -> list[tuple[str, Signed]]:
        rows = self._q("SELECT by_station, raw FROM receipts WHERE line=%s ORDER BY pos", (line,)).fetchall()
        return [(r[0], Signed.decode(blob(self._shown, r[1], "receipts.raw"))) for r in rows]

    def add_checkpoint(self, line: str, n: int, proposal: Signed, cosign: Signed) -> None:
        self._write("INSERT INTO checkpoints VALUES (%s, %s, %s, %s)", (line, n, proposal.encode(), cosign.encode()))

    def checkpoints(self, line: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Signed, Signed]]:
        rows = self._q(
            "SELECT n, proposal, cosign FROM checkpoints WHERE line=%s AND n>%s ORDER BY n LIMIT %s",
            (line, after, limit),  # LIMIT NULL: no limit
        ).fetchall()
        return [_checkpoint(self._shown, r) for r in rows]

    def checkpoint(self, line: str, n: int) -> tuple[int, Signed, Signed] | None:
        row = self._q("SELECT n, proposal, cosign FROM checkpoints WHERE line=%s AND n=%s", (line, n)).fetchone()
        return _checkpoint(self._shown, row) if row else None

    def last_checkpoint(self, line: str) -> tuple[int, Signed, Signed] | None:
        row = self._q(
            "SELECT n, proposal, cosign FROM checkpoints WHERE line=%s ORDER BY n DESC LIMIT 1", (line,)
        ).fetchone()
        return _checkpoint(self._shown, row) if row else None

    # -- verification input --------------------------------------------------------------------
    @contextlib.contextmanager
    def stored_line(self, line: str, our_name: str = "our station") -> Iterator[LineSource]:
        """One line as ``verify.LineSource`` inside one REPEATABLE READ snapshot; worker processes
        read their runs of a chain on connections of their own (rows are never rewritten once stored)."""
        with self.snapshot():
            yield PgStoredLine(self, line, our_name)

    def line_data(self, line: str, our_name: str = "our station") -> LineData:
        record = self.line(line)
        stations = [self.station, record.peer]
        chains = {
            fp: [
                _stored_row(self._shown, r)
                for r in self._q(
                    "SELECT seq, id, raw FROM envelopes WHERE line=%s AND sender=%s ORDER BY seq", (line, fp)
                ).fetchall()
            ]
            for fp in stations
        }
        receipts = self._q("SELECT raw FROM receipts WHERE line=%s ORDER BY pos", (line,)).fetchall()
        checkpoints = self._q(
            "SELECT n, proposal, cosign FROM checkpoints WHERE line=%s ORDER BY n", (line,)
        ).fetchall()
        return LineData(
            line=line,
            names={self.station: our_name, record.peer: record.peer_name},
            certs={fp: [c for _, _, c in self.certs(fp)] for fp in stations},
            chains=chains,
            receipts=[_statement(blob(self._shown, r[0], "receipts.raw")) for r in receipts],
            checkpoints=[_stored_checkpoint(self._shown, r) for r in checkpoints],
            equivocations=[(e.sender, e.seq, e.first, e.second) for e in self.equivocations(line)],
        )


class PgStoredLine:
    """One line of a PostgreSQL store as ``verify.LineSource`` (``ledger.sqlite.StoredLine``'s twin)."""

    def __init__(self, ledger: PgLedger, line: str, our_name: str) -> None:
        record = ledger.line(line)
        self._ledger, self._url, self._shown = ledger, ledger.url, ledger._shown
        self.line = line
        fps = [ledger.station, record.peer]
        self.names = {ledger.station: our_name, record.peer: record.peer_name}
        self.certs = {fp: [c for _, _, c in ledger.certs(fp)] for fp in fps}
        self.checkpoints = [
            _stored_checkpoint(self._shown, r)
            for r in ledger._q("SELECT n, proposal, cosign FROM checkpoints WHERE line=%s ORDER BY n", (line,))
        ]
        self.equivocations = [(e.sender, e.seq, e.first, e.second) for e in ledger.equivocations(line)]
        count = "SELECT count(*) FROM envelopes WHERE line=%s AND sender=%s"
        self._held = {fp: int((ledger._q(count, (line, fp)).fetchone() or (0,))[0]) for fp in fps}  # a count(*)

    def stations(self) -> list[str]:
        return sorted(self._held)

    def held(self, station: str) -> int:
        return self._held.get(station, 0)

    def chain(self, station: str) -> Iterator[StoredRow]:
        sql = "SELECT seq, id, raw FROM envelopes WHERE line=%s AND sender=%s ORDER BY seq"
        rows = self._ledger._q(sql, (self.line, station)).fetchall()
        return (_stored_row(self._shown, r) for r in rows)

    def chain_parts(self, station: str, size: int) -> Iterator[PgRange]:
        """Runs of ``size`` rows, their bounds found in the (line, sender, seq) index, the last one
        open-ended: whatever seqs the store holds (gaps included) are read exactly once."""
        lo = 0
        sql = "SELECT seq FROM envelopes WHERE line=%s AND sender=%s AND seq>%s ORDER BY seq LIMIT 1 OFFSET %s"
        while True:
            hi = self._ledger._q(sql, (self.line, station, lo, size - 1)).fetchone()
            if hi is None:
                yield PgRange(self._url, self.line, station, lo, None)
                return
            yield PgRange(self._url, self.line, station, lo, integer(self._shown, hi[0], "envelopes.seq"))
            lo = integer(self._shown, hi[0], "envelopes.seq")

    def iter_receipts(self) -> Iterator[Signed]:
        rows = self._ledger._q("SELECT raw FROM receipts WHERE line=%s ORDER BY pos", (self.line,)).fetchall()
        return (_statement(blob(self._shown, r[0], "receipts.raw")) for r in rows)


@dataclass(frozen=True)
class PgRange:
    """Rows ``lo < seq <= hi`` of one chain, read by a worker process on a read-only connection of its own."""

    url: str
    line: str
    sender: str
    lo: int
    hi: int | None  # None: to the end of the chain

    def rows(self) -> list[StoredRow]:
        hi = 2**63 - 1 if self.hi is None else self.hi
        with psycopg.connect(self.url, autocommit=True, application_name="redline verify") as db:
            db.execute("SET default_transaction_read_only = on")
            rows = db.execute(
                "SELECT seq, id, raw FROM envelopes WHERE line=%s AND sender=%s AND seq>%s AND seq<=%s ORDER BY seq",
                (self.line, self.sender, self.lo, hi),
            ).fetchall()
        shown = shown_url(self.url)
        return [_stored_row(shown, r) for r in rows]


def _stored_row(shown: str, r: tuple[Any, ...]) -> StoredRow:
    """An envelopes row (seq, id, raw) as read for verification: seq and id as stored, never trusted
    (verify compares them with the signed envelope and reports a difference at its entry), as the
    SQLite ledger reads them."""
    return StoredRow(r[0], r[1], blob(shown, r[2], "envelopes.raw"))


# Every table of a store (schema 2), for a check or a drop of the whole store.
TABLES = "meta, lines, certs, envelopes, equivocations, outbox, receipts, checkpoints, merkle, chain_bytes"


def made_and_left_empty(url: str, station: str, *, may_hold: tuple[str, ...] = ("meta",)) -> bool:
    """The store at ``url`` was made for ``station``, no process ever took its lease, and it holds
    nothing beyond the tables ``may_hold``: what an unfinished ``init`` (its certificates) or a
    ``store migrate`` killed mid-copy (nothing) leaves behind, which running it again may take over.
    Any other store, or a database that cannot be read, is not (False)."""
    try:
        with psycopg.connect(url, autocommit=True) as db:
            row = db.execute("SELECT value FROM meta WHERE key='station'").fetchone()
            if row is None or row[0] != station or db.execute("SELECT to_regclass('lease')").fetchone() != (None,):
                return False
            return all(
                table in may_hold or db.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone() == (False,)
                for table in TABLES.split(", ")
            )
    except psycopg.Error:
        return False


def drop_left_by_init(url: str, station: str) -> bool:
    """Drop the store an unfinished ``redline init`` made for ``station`` (``home.StationDir.init``):
    only one ``made_and_left_empty`` but for init's certificates; anything else stays, and False.
    ``station`` is the fingerprint of a root key no station ever served with (init was killed before
    its folder held config.json)."""
    if not made_and_left_empty(url, station, may_hold=("meta", "certs")):
        return False
    try:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP TABLE {TABLES}")
        return True
    except psycopg.Error:
        return False


def _checkpoint(shown: str, r: tuple[Any, ...]) -> tuple[int, Signed, Signed]:
    """A checkpoints row (n, proposal, cosign) for the session (a statement that does not decode
    raises EncodingError, as before)."""
    return (
        integer(shown, r[0], "checkpoints.n"),
        Signed.decode(blob(shown, r[1], "checkpoints.proposal")),
        Signed.decode(blob(shown, r[2], "checkpoints.cosign")),
    )


def _stored_checkpoint(shown: str, r: tuple[Any, ...]) -> tuple[int, Signed, Signed]:
    """A checkpoints row (n, proposal, cosign) as read for verification: n as stored, never trusted
    (verify compares it with the signed n and reports a difference at that checkpoint)."""
    return (
        r[0],
        _statement(blob(shown, r[1], "checkpoints.proposal")),
        _statement(blob(shown, r[2], "checkpoints.cosign")),
    )


def _ops_row(shown: str, r: tuple[Any, ...]) -> tuple[str, int, bytes, int]:
    """An envelopes row (sender, seq, raw, stored_at) as the operations engine reads it."""
    return (
        r[0],
        integer(shown, r[1], "envelopes.seq"),
        blob(shown, r[2], "envelopes.raw"),
        integer(shown, r[3], "envelopes.stored_at"),
    )
