"""The lease and the fence (redline.ledger.lease, PgLedger.hold) on a real PostgreSQL server:
two handles on one store stand in for the two processes of an HA pair.

What must hold: one term per holder, only one holder at a time, the term taken only after the
lease has lapsed by the database's clock; a deposed handle's write transaction is refused inside
the transaction (nothing of it stored), and so is every later one; a paused holder that keeps a
transaction open cannot stop the takeover, and loses what it held open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from redline.errors import FencedError, StorageError
from redline.ledger import lease
from redline.ledger.postgres import PgLedger
from tests.test_ledger import T0, A, chain


def _conn(url: str) -> psycopg.Connection[tuple[object, ...]]:
    db = psycopg.connect(url, autocommit=True)
    lease.ensure_table(db)
    return db


def _take(url: str, holder: str, seconds: float = 30.0) -> tuple[PgLedger, int]:
    """A ledger handle that won the lease as ``holder`` and writes under its term."""
    led = PgLedger(url)
    with _conn(url) as db:
        sent = time.monotonic()
        state = lease.try_acquire(db, holder, f"{holder}:7401", seconds)
    assert state is not None, f"{holder} did not get the lease"
    led.hold(holder, state.term, seconds, sent)
    return led, state.term


def _lapse(url: str) -> None:
    """Let the lease lapse now (what its expiry does after a kill -9, without the wait)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE lease SET expires = now() - interval '1 second'")


@pytest.fixture
def store(pg_url: str) -> Iterator[str]:
    PgLedger(pg_url, create=True, station=A).close()
    yield pg_url


def test_one_holder_at_a_time_and_each_takeover_is_a_new_term(store: str) -> None:
    with _conn(store) as db:
        first = lease.try_acquire(db, "one", "a:1", 30)
        assert first is not None and first.term == 1
        assert lease.try_acquire(db, "two", "b:1", 30) is None  # held and not lapsed: refused
        assert lease.try_acquire(db, "one", "a:1", 30) is None  # a restarted process waits too
        _lapse(store)
        second = lease.try_acquire(db, "two", "b:1", 30)
        assert second is not None and second.term == 2 and second.holder == "two"
        with pytest.raises(FencedError, match=r"DEPOSED.*term 1.*term 2, held by two"):
            lease.renew(db, "one", 1, 30)
        assert lease.renew(db, "two", 2, 30).term == 2


def test_a_deposed_process_commits_nothing_and_stays_deposed(store: str) -> None:
    old, term = _take(store, "old")
    envs = chain(3)
    old.append(envs[0], T0)  # the active process writes under its term
    _lapse(store)
    new, new_term = _take(store, "new")
    assert new_term == term + 1
    with pytest.raises(FencedError, match=rf"DEPOSED.*term {term}.*term {new_term}, held by new"):
        old.append(envs[1], T0)
    with pytest.raises(FencedError):  # and every later write, without asking again
        old.accept(envs[0].header.line, "TEXT", "ROUTINE", {"text": "late"}, None, T0)
    assert old.deposed.startswith("DEPOSED")
    # Nothing of the refused transactions is in the store; the new holder goes on from it.
    assert new.head(envs[0].header.line, A) == (1, envs[0].id)
    assert new.pending(envs[0].header.line) == []
    new.append(envs[1], T0)
    assert new.head(envs[0].header.line, A) == (2, envs[1].id)
    with pytest.raises(FencedError):
        old.renew_lease()
    old.close()
    new.close()


def test_a_lease_not_renewed_in_time_refuses_writes_before_asking_the_store(store: str) -> None:
    # A process paused past its lease (SIGSTOP, a long GC, a VM migration) may not know it was
    # deposed: its own monotonic clock says the lease ran out, and that is enough to stop.
    led = PgLedger(store)
    with _conn(store) as db:
        state = lease.try_acquire(db, "slow", "s:1", 30)
    assert state is not None
    led.hold("slow", state.term, 30, time.monotonic())
    led.append(chain(1)[0], T0)
    # Then its last renewal is one sent 0.25 s ago for 0.2 s: the pause is stated, not slept (a 0.2 s
    # lease held from before the first write made that write race a busy machine).
    led.hold("slow", state.term, 0.2, time.monotonic() - 0.25)
    with pytest.raises(FencedError, match="not renewed in time"):
        led.append(chain(2)[1], T0)
    assert led.head(chain(1)[0].header.line, A)[0] == 1
    led.close()


def test_a_paused_holder_with_a_transaction_open_cannot_block_the_takeover(store: str) -> None:
    # The old holder began a write (row locked FOR SHARE) and then stopped answering. The taker
    # waits lock_timeout for the row, ends the old holder's connections, and takes the lease; the
    # old transaction is rolled back, so what it held open never lands.
    old = PgLedger(store)
    with _conn(store) as db:
        state = lease.try_acquire(db, "paused", "p:1", 0.5)  # lapses by the database's clock in 0.5 s
    assert state is not None
    term = state.term
    old.hold("paused", term, 30.0, time.monotonic())  # but this process still counts on it
    envs = chain(2)
    line = envs[0].header.line
    batch = old.batch()
    batch.__enter__()
    old.append(envs[0], T0)  # inside the open transaction: not committed
    time.sleep(0.6)
    got: list[lease.LeaseState | None] = []
    taker = threading.Thread(target=lambda: got.append(lease.try_acquire(_conn(store), "taker", "t:1", 30)))
    started = time.monotonic()
    taker.start()
    taker.join(timeout=20)
    assert got and got[0] is not None and got[0].term == term + 1, got
    assert time.monotonic() - started < 10
    with pytest.raises(StorageError, match="nothing from this batch was accepted: terminating connection"):
        batch.__exit__(None, None, None)
    fresh = PgLedger(store)
    assert fresh.head(line, A) == (0, None)
    fresh.close()


def test_a_clean_stop_releases_the_lease_at_once(store: str) -> None:
    led, term = _take(store, "leaving")
    led.release_lease()
    with _conn(store) as db:
        ended = lease.read(db)
        assert ended is not None and ended.released and ended.lapsed  # a switchover, not a failover
        state = lease.try_acquire(db, "next", "n:1", 30)
        assert state is not None and state.term == term + 1
        again = lease.read(db)
        assert again is not None and not again.released and not again.lapsed
    led.close()
