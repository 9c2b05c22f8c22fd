"""The lease that elects one active process of a station kept in PostgreSQL (an HA pair).

One row in the store's ``lease`` table: a **term** (a number that only grows), the **holder**
(one process, named ``host:pid:random``: a restarted process is a new holder), when that term
began and when it **expires**. Every time is PostgreSQL's own ``now()``, never a process's clock,
so two hosts whose clocks disagree still agree on who holds the lease.

- ``try_acquire`` takes the lease only when it has lapsed (or was never taken), and always with
  a new term: ``term + 1``, in one statement, so two standbys racing for it get different
  answers (one row, one winner).
- ``renew`` moves the expiry forward, only for the term the caller holds; a caller whose term was
  replaced learns it is deposed (``FencedError``).
- The fence itself is in ``ledger.postgres.PgLedger``: every write transaction reads the lease row
  ``FOR SHARE`` as its first statement and goes on only if the term is the one it holds. The row
  stays locked until that transaction ends, so a takeover (an UPDATE of that row) waits for it,
  and a transaction that starts after a takeover sees the new term and is refused. Either the
  old process's transaction commits entirely before the new term exists, or it commits nothing.
  This is Kleppmann's fencing token, checked by the store itself: an advisory lock would not
  survive a database failover or a connection pooler, a term in a row does.
- A paused process can hold that row lock with a transaction open. Its connection has
  ``idle_in_transaction_session_timeout`` (the server rolls such a transaction back), and a taker
  that waits longer than ``lock_timeout`` for the row ends the old holder's connections itself
  (``pg_terminate_backend``, by application_name), which rolls back whatever they held open.

Standard SQL and psycopg only; no redline import beyond errors, so ``redline status`` of a
standby loads nothing else.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

from redline.errors import FencedError, StorageError

# Created by the first ``serve`` on the store (``ensure_table``): a store made by ``init`` or
# ``store migrate`` has no lease until a process runs it. ``id`` = 1 is the one row.
LEASE_TABLE = """
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    term BIGINT NOT NULL,
    holder TEXT NOT NULL,
    address TEXT NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    released BOOLEAN NOT NULL DEFAULT false
)"""
# How long a taker waits for the lease row before it ends the old holder's connections.
TAKEOVER_LOCK_TIMEOUT = "1s"


def new_holder() -> str:
    """This process's name in the lease: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def app_name(holder: str) -> str:
    """The application_name of the holder's store connections (63 bytes at most, PostgreSQL's limit)."""
    return f"redline {holder}"[:63]


@dataclass(frozen=True)
class LeaseState:
    """The lease row as read (times as ISO 8601 from the database's clock)."""

    term: int
    holder: str
    address: str
    since: str
    expires: str
    lapsed: bool  # expires <= now(), by the database's clock
    released: bool = False  # ended by its holder's clean stop, not by expiry

    def to_obj(self) -> dict[str, Any]:
        return asdict(self)


def _state(row: tuple[Any, ...] | None) -> LeaseState | None:
    if row is None:
        return None
    since, expires = row[3], row[4]
    return LeaseState(
        term=int(row[0]), holder=str(row[1]), address=str(row[2]),
        since=since.isoformat() if isinstance(since, datetime) else str(since),
        expires=expires.isoformat() if isinstance(expires, datetime) else str(expires),
        lapsed=bool(row[5]), released=bool(row[6]),
    )  # fmt: skip


_READ = "SELECT term, holder, address, since, expires, expires <= now(), released FROM lease WHERE id = 1"


def ensure_table(db: psycopg.Connection[Any]) -> None:
    """The lease table, made by the first process that runs the store. Only the catalog is read
    when it exists: an ALTER (even IF NOT EXISTS) would queue an exclusive lock behind the active
    process's transactions and stall them."""
    db.execute(LEASE_TABLE)
    found = db.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = 'lease'::regclass AND attname = 'released' AND NOT attisdropped"
    ).fetchone()
    if found is None:  # a lease table from the first HA builds, before ``released``
        db.execute("ALTER TABLE lease ADD COLUMN released BOOLEAN NOT NULL DEFAULT false")


def read(db: psycopg.Connection[Any]) -> LeaseState | None:
    """The lease now (None: never taken). A plain read: it never waits on the row lock."""
    return _state(db.execute(_READ).fetchone())


def try_acquire(db: psycopg.Connection[Any], holder: str, address: str, seconds: float) -> LeaseState | None:
    """Take the lease with a new term if it has lapsed (autocommit connection); None if another
    process holds it. A taker blocked on the row by a paused holder ends that holder's
    connections (which rolls back what they held open) and tries once more."""
    sql = (
        "INSERT INTO lease AS l (id, term, holder, address, since, expires) "
        "VALUES (1, 1, %(holder)s, %(address)s, now(), now() + make_interval(secs => %(secs)s)) "
        "ON CONFLICT (id) DO UPDATE SET term = l.term + 1, holder = excluded.holder, address = excluded.address, "
        "since = now(), expires = excluded.expires, released = false WHERE l.expires <= now() "
        "RETURNING term, holder, address, since, expires, false, false"
    )
    args = {"holder": holder, "address": address, "secs": seconds}
    for attempt in (1, 2):
        try:
            with db.transaction():
                db.execute(f"SET LOCAL lock_timeout = '{TAKEOVER_LOCK_TIMEOUT}'")
                return _state(db.execute(sql, args).fetchone())
        except psycopg.errors.LockNotAvailable:
            if attempt == 2:
                return None
            old = read(db)
            if old is None or not old.lapsed:
                return None
            # The old holder is paused or cut off with the row locked: end its connections. Its
            # open transaction rolls back; a process that resumes finds its connection gone.
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (app_name(old.holder),),
            )
    return None  # pragma: no cover - the loop returns


def renew(db: psycopg.Connection[Any], holder: str, term: int, seconds: float) -> LeaseState:
    """Extend the lease held at ``term`` by ``seconds`` from now (the database's now)."""
    try:
        row = db.execute(
            "UPDATE lease SET expires = now() + make_interval(secs => %s) WHERE id = 1 AND term = %s AND holder = %s "
            "RETURNING term, holder, address, since, expires, false, false",
            (seconds, term, holder),
        ).fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"the lease could not be renewed: {exc}".strip()) from exc
    state = _state(row)
    if state is None:
        now = None
        with contextlib.suppress(psycopg.Error):
            now = read(db)
        raise FencedError(deposed_message(term, now))
    return state


def release(db: psycopg.Connection[Any], holder: str, term: int) -> None:
    """End our term now (a clean stop): the standby need not wait for it to expire."""
    db.execute(
        "UPDATE lease SET expires = now(), released = true WHERE id = 1 AND term = %s AND holder = %s", (term, holder)
    )


def deposed_message(term: int, now: LeaseState | None) -> str:
    who = f"term {now.term}, held by {now.holder} at {now.address}" if now is not None else "no lease row"
    return (
        f"DEPOSED: this process held the store's lease at term {term}, the store now says {who}; "
        "it commits and sends nothing more and steps down"
    )
