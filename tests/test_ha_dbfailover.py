"""The database itself fails over (tests/pg.py ``pg_cluster``: a primary and a synchronous standby
made by ``pg_basebackup -R``, ``synchronous_commit = remote_apply``). The store is opened with a
multi-host URL and ``target_session_attrs=read-write``; the primary is stopped at once (its
machine dies) under a stream of commits, the standby is promoted (``pg_ctl promote``, then the
inherited ``synchronous_standby_names`` reset), and the ledger reconnects to it by itself.

What must hold: every commit that returned (acknowledged) before the primary died is on the
promoted node, byte for byte; the one in flight is either there whole or not at all; the chain
goes on from the store, not from memory.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from redline.envelope import Envelope
from redline.errors import StorageError
from redline.ledger.postgres import PgLedger
from tests.pg import PgCluster, pg_cluster  # noqa: F401  (a primary and its synchronous standby)
from tests.procs import wait_until
from tests.test_ledger import LINE, T0, A, chain

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster_url(pg_cluster: PgCluster) -> Iterator[str]:  # noqa: F811
    pg_cluster.admin("CREATE DATABASE ha_store")
    url = pg_cluster.url("ha_store")
    PgLedger(url, create=True, station=A).close()
    yield url


def test_promotion_of_the_synchronous_standby_under_commits_loses_nothing_acknowledged(
    pg_cluster: PgCluster,  # noqa: F811
    cluster_url: str,
) -> None:
    envs: list[Envelope] = chain(400)
    acknowledged: list[int] = []  # seqs whose append returned (committed, replicated, applied)
    refused = 0
    stop = threading.Event()
    led = PgLedger(cluster_url)

    def writer() -> None:
        nonlocal refused
        i = 0
        while i < len(envs) and not stop.is_set():
            try:
                led.append(envs[i], T0)  # one commit per envelope: each return is an acknowledgement
            except StorageError:
                refused += 1  # nothing of it is taken as accepted; the next try reads the store again
                time.sleep(0.05)
                continue
            acknowledged.append(envs[i].header.seq)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    before = len(acknowledged)
    pg_cluster.fail_primary()
    time.sleep(0.5)  # the writer meets a dead primary, and no read-write server at all
    pg_cluster.promote()
    while len(acknowledged) < before + 50 and time.monotonic() < deadline + 60 and thread.is_alive():
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=30)
    led.close()
    assert refused >= 1, "the writer never met the failover"
    assert len(acknowledged) >= before + 50, f"the writer did not go on after the promotion ({len(acknowledged)})"
    # Everything acknowledged is on the promoted node, the one the multi-host URL now reaches.
    fresh = PgLedger(pg_cluster.url("ha_store"))
    held = dict(fresh.raw_envelopes(LINE, A))
    fresh.close()
    assert acknowledged == list(range(1, len(acknowledged) + 1))
    for seq in acknowledged:
        assert held[seq] == envs[seq - 1].encode()
    assert sorted(held) == list(range(1, len(held) + 1))  # no gap, nothing half-written
    assert len(held) in (len(acknowledged), len(acknowledged) + 1)  # at most the one in flight, whole


def test_a_promoted_node_waits_on_the_synchronous_standby_it_inherited_until_that_is_reset(
    pg_cluster: PgCluster,  # noqa: F811
    cluster_url: str,
) -> None:
    # The trap the promotion step handles: the promoted node still names 's1' (itself, gone) as
    # its synchronous standby, so a commit waits (SyncRep) and the station would hang in COMMIT.
    import psycopg

    led = PgLedger(cluster_url)
    env = chain(1)[0]
    pg_cluster.fail_primary()
    pg_cluster.promote(reset=False)
    done = threading.Event()

    def write() -> None:
        for _ in range(100):
            try:
                led.append(env, T0)  # the first try finds the old primary's connection dead
            except StorageError:
                time.sleep(0.05)
                continue
            done.set()
            return

    thread = threading.Thread(target=write)
    thread.start()
    with psycopg.connect(pg_cluster.node_url(1), autocommit=True) as db:
        deadline = time.monotonic() + 20
        waiting = False
        while not waiting and time.monotonic() < deadline:
            waiting = db.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'").fetchone() is not None
            time.sleep(0.05)
    assert waiting and not done.is_set(), "the commit did not wait on the inherited synchronous standby"
    pg_cluster.reset_synchronous_standby_names()
    thread.join(timeout=20)
    assert done.is_set()
    assert led.head(LINE, A) == (1, env.id)
    led.close()


def test_promotion_of_the_database_standby_under_two_way_traffic_loses_nothing(
    pg_cluster: PgCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    # The whole station: EUCOM's two processes on the multi-host URL, NDMC on SQLite, traffic both
    # ways; the primary dies and the standby is promoted. The active process loses its store,
    # and the pair (lease, fence) and the ledger's reconnect bring the line back on the new primary.
    from tests.test_ha import active, check, converge, running_pair, traffic

    pg_cluster.admin("CREATE DATABASE ha_line")
    with running_pair(tmp_path, pg_cluster.url("ha_line")) as pair:

        async def run() -> float:
            stop = asyncio.Event()
            senders = [asyncio.ensure_future(traffic(pair, side, stop)) for side in ("eucom", "ndmc")]
            try:
                await asyncio.sleep(1.0)
                before = (await pair.ndmc.status_line())["their_seq"]
                t0 = time.monotonic()
                pg_cluster.fail_primary()
                await asyncio.sleep(0.5)
                await asyncio.to_thread(pg_cluster.promote)

                async def flowing() -> bool:
                    act = await active(pair)
                    return act is not None and (await pair.ndmc.status_line())["their_seq"] > before + 10

                await wait_until(flowing, "traffic on the promoted database", 60)
                took = time.monotonic() - t0
                await asyncio.sleep(1.0)
            finally:
                stop.set()
                await asyncio.gather(*senders)
            await converge(pair)
            return took

        took = asyncio.run(run())
        for proc in pair.procs():
            proc.stop()
        print(f"\ndatabase failover (primary stopped, standby promoted 0.5 s later) to traffic: {took:.2f} s")
        problems = check(pair)
        assert not problems, "\n".join(problems)
        # The storage failure names the database, not the local disk (it is not this host's disk).
        logs = " ".join((pair.a.log.read_text(errors="replace") + pair.b.log.read_text(errors="replace")).split())
        assert "STORAGE FAILURE" in logs and "check that the database answers and takes writes" in logs
        assert "free disk space" not in logs
