"""What a commit costs on each store of issue 14, side by side in one run (docs/BENCHMARKS.md):
SQLite, PostgreSQL on this machine, and PostgreSQL with a synchronous standby
(``remote_apply``, tests/pg.py ``pg_cluster``), each without and with the lease fence (one
``SELECT … FOR SHARE`` of the lease row per transaction). One envelope per commit, and 50 (group
commit); the median commit of each, over interleaved rounds.

Not collected by the suite (the name does not start with ``test_``); run it by name:

    .venv/bin/python -m pytest tests/bench_ha_commit.py -s -q
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from redline.envelope import Envelope
from redline.ledger import lease
from redline.ledger.interface import LedgerStore
from redline.ledger.postgres import PgLedger
from redline.ledger.sqlite import Ledger
from tests.pg import PgCluster, PgServer, pg_cluster  # noqa: F401
from tests.test_ledger import T0, A, chain

ROUNDS = 5


def median_commit_ms(led: LedgerStore, envs: list[Envelope], group: int) -> float:
    times = []
    for i in range(0, len(envs), group):
        start = time.perf_counter()
        with led.batch():
            for env in envs[i : i + group]:
                led.append(env, T0)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def fenced(url: str) -> PgLedger:
    led = PgLedger(url)
    with psycopg.connect(url, autocommit=True) as db:
        lease.ensure_table(db)
        state = lease.try_acquire(db, "bench", "bench", 600)
    assert state is not None
    led.hold("bench", state.term, 600, time.monotonic())
    return led


def test_commit_cost_side_by_side(tmp_path: Path, postgres_server: PgServer, pg_cluster: PgCluster) -> None:  # noqa: F811
    results: dict[tuple[str, int], list[float]] = {}
    n = 0
    servers: list[tuple[str, Callable[[str], str], Callable[[str], None]]] = [
        ("PostgreSQL, local", postgres_server.url, postgres_server.admin),
        ("PostgreSQL + synchronous standby", pg_cluster.url, pg_cluster.admin),
    ]
    for _ in range(ROUNDS):
        for group in (1, 50):
            envs = chain(400 if group == 1 else 2000)
            n += 1
            led: LedgerStore = Ledger(tmp_path / f"s{n}.sqlite", create=True, station=A)
            results.setdefault(("SQLite", group), []).append(median_commit_ms(led, envs, group))
            led.close()
            for name, url_of, admin in servers:
                for fence in (False, True):
                    n += 1
                    admin(f"CREATE DATABASE bench_{n}")
                    PgLedger(url_of(f"bench_{n}"), create=True, station=A).close()
                    led = fenced(url_of(f"bench_{n}")) if fence else PgLedger(url_of(f"bench_{n}"))
                    key = (name + (", fenced" if fence else ""), group)
                    results.setdefault(key, []).append(median_commit_ms(led, envs, group))
                    led.close()
    print("\n| store | 1 envelope per commit | 50 envelopes per commit |\n| --- | --- | --- |")
    for name in dict.fromkeys(k[0] for k in results):
        one, fifty = statistics.median(results[(name, 1)]), statistics.median(results[(name, 50)])
        print(f"| {name} | {one:.2f} ms ({1000 / one:,.0f}/s) | {fifty:.2f} ms ({50_000 / fifty:,.0f}/s) |")
