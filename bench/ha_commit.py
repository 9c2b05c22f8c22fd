"""What a commit costs on each store of issue 14, side by side in one run (docs/BENCHMARKS.md):
SQLite, PostgreSQL on this machine, and PostgreSQL with a synchronous standby (``remote_apply``,
tests/pg.py ``pg_cluster``), each without and with the lease fence (one ``SELECT … FOR SHARE`` of
the lease row per transaction). One envelope per commit, and 50 (group commit); the median commit
of each, over interleaved rounds. The ledger's own ``batch()`` and ``append``, 1.5 KB envelopes.

Without PostgreSQL's binaries or psycopg it prints one line and measures nothing.

Run alone: ``.venv/bin/python -m bench.ha_commit [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import pg_line
from bench.ledger_bench import append_batches
from redline.envelope import Envelope
from redline.ledger.interface import LedgerStore
from tests.test_ledger import A, chain

ROUNDS = 5
GROUPS = (1, 50)


def median_commit_ms(led: LedgerStore, envs: list[Envelope], group: int) -> float:
    return statistics.median(append_batches(led, envs, group)) * 1000


def fenced(url: str) -> LedgerStore:
    """A PostgreSQL ledger holding the lease, so that every transaction checks its term."""
    import psycopg

    from redline.ledger import lease
    from redline.ledger.postgres import PgLedger

    led = PgLedger(url)
    with psycopg.connect(url, autocommit=True) as db:
        lease.ensure_table(db)
        state = lease.try_acquire(db, "bench", "bench", 600)
    if state is None:
        raise RuntimeError("the bench could not take the lease of a database it just made")
    led.hold("bench", state.term, 600, time.monotonic())
    return led


def measure(rounds: int = ROUNDS) -> dict[tuple[str, int], list[float]]:
    """(store, envelopes per commit) -> the median commit of each round, ms."""
    from redline.ledger.postgres import PgLedger
    from redline.ledger.sqlite import Ledger

    results: dict[tuple[str, int], list[float]] = {}
    n = 0
    with tempfile.TemporaryDirectory(prefix="redline-ha-commit-") as tmp, pg_line.servers() as (local, pair):
        stores: list[tuple[str, Callable[[str], str]]] = [
            ("PostgreSQL, local", local), ("PostgreSQL + synchronous standby", pair),
        ]  # fmt: skip
        for _ in range(rounds):
            for group in GROUPS:
                envs = chain(400 if group == 1 else 2000)
                n += 1
                led: LedgerStore = Ledger(Path(tmp) / f"s{n}.sqlite", create=True, station=A)
                results.setdefault(("SQLite", group), []).append(median_commit_ms(led, envs, group))
                led.close()
                for name, url_of in stores:
                    for fence in (False, True):
                        n += 1
                        url = url_of(f"bench_{n}")
                        PgLedger(url, create=True, station=A).close()
                        led = fenced(url) if fence else PgLedger(url)
                        key = (name + (", fenced" if fence else ""), group)
                        results.setdefault(key, []).append(median_commit_ms(led, envs, group))
                        led.close()
    return results


def report(results: dict[tuple[str, int], list[float]]) -> str:
    lines = ["| store | 1 envelope per commit | 50 envelopes per commit |", "| --- | --- | --- |"]
    for name in dict.fromkeys(k[0] for k in results):
        one, fifty = statistics.median(results[(name, 1)]), statistics.median(results[(name, 50)])
        lines.append(f"| {name} | {one:.2f} ms ({1000 / one:,.0f}/s) | {fifty:.2f} ms ({50_000 / fifty:,.0f}/s) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"interleaved rounds (default {ROUNDS})")
    args = parser.parse_args(argv)
    why = pg_line.missing()
    if why:
        print(f"ha_commit skipped: {why}")
        return
    try:
        print(report(measure(args.rounds)))
    except pg_line.NoPostgres as exc:
        print(f"ha_commit skipped: {exc}")


if __name__ == "__main__":
    main()
