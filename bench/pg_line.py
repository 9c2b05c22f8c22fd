"""The line with EUCOM's store on SQLite, on PostgreSQL, and on PostgreSQL with a synchronous
standby, side by side in one run (issue 14, "Measure it").

Three pairs of real ``redline serve`` processes, measured one after the other by
``bench.line_bench``'s own code (``line_bench.run``: durable send-to-receipt latency, one in
flight, p50/p99; then pipelined throughput, accepted at EUCOM, stored at NDMC, receipted back).
Only EUCOM's store changes (``redline init --store``); NDMC is on SQLite in all three:

- **SQLite**: ledger.sqlite in the station folder (WAL, synchronous=FULL).
- **PostgreSQL, local**: one server on this machine (tests/pg.py ``postgres_server``: fsync on,
  ``synchronous_commit = on``).
- **PostgreSQL + synchronous standby**: a primary and a standby made by ``pg_basebackup -R``,
  both on this machine (tests/pg.py ``pg_cluster``): ``synchronous_standby_names = 's1'`` and
  ``synchronous_commit = remote_apply``, so a COMMIT returns once the standby has flushed *and
  applied* it. The station reaches it by the multi-host URL with ``target_session_attrs=read-write``.

A PostgreSQL station is one process of an active/standby pair holding the lease: every write
transaction checks its term (the fence), as in production; no second process runs here.

Beside them, the same run's limits: a bare commit of 1 KiB on each store (the PostgreSQL ones
through psycopg, autocommit, as the ledger's commit is one round trip plus the flush), and the
line's implied limit with EUCOM's commit replaced by that store's.

Without PostgreSQL's binaries or psycopg it prints one line and measures nothing.

Run alone: ``.venv/bin/python -m bench.pg_line [--quick]``; ``bench.run_all`` runs it as part ``pg``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import limits as machine
from bench import line_bench
from bench.common import Figures, fmt, percentile

STORES = (("sqlite", "SQLite (WAL, FULL)"), ("pg", "PostgreSQL, local"),
          ("pgsync", "PostgreSQL + synchronous standby (remote_apply)"))  # fmt: skip
KIB = b"x" * 1024


class NoPostgres(RuntimeError):
    """PostgreSQL cannot run here (no binaries, no psycopg, a server that does not start): the part
    is skipped with this one line. Anything else that goes wrong is an error, not a skip."""


def missing() -> str:
    """Why PostgreSQL cannot be measured here, or "" when it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    from tests import pg

    bindir = pg._bindir()
    if bindir is None or not (bindir / "pg_basebackup").exists():
        return "PostgreSQL's binaries (initdb, pg_ctl, pg_basebackup) were not found (apt-get install postgresql)"
    return ""


@contextlib.contextmanager
def servers() -> Iterator[tuple[Callable[[str], str], Callable[[str], str]]]:
    """The tests' own servers (tests/pg.py), started outside pytest: a context manager over each
    fixture's function. Yields (database name -> URL) for the local server and for the pair; the
    databases are made here. A server that does not start raises NoPostgres with its one line."""
    import pytest

    from tests import pg

    def make(server_url: Callable[[str], str], admin: Callable[[str], None]) -> Callable[[str], str]:
        def url(name: str) -> str:
            admin(f"CREATE DATABASE {name}")
            return server_url(name)

        return url

    try:
        with contextlib.ExitStack() as stack:
            local = stack.enter_context(contextlib.contextmanager(pg.postgres_server.__wrapped__)())  # type: ignore[attr-defined]
            pair = stack.enter_context(contextlib.contextmanager(pg.pg_cluster.__wrapped__)())  # type: ignore[attr-defined]
            yield make(local.url, local.admin), make(pair.url, pair.admin)
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:  # tests/pg.py's "no server" line
        raise NoPostgres(str(exc.msg)) from None


def pg_commit(url: str, commits: int, warmup: int) -> tuple[float, float]:
    """Median and p99 µs of one INSERT of 1 KiB and its COMMIT (autocommit) on ``url``."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, body bytea NOT NULL)")
        samples: list[float] = []
        for i in range(warmup + commits):
            start = time.perf_counter_ns()
            db.execute("INSERT INTO bench_commit (body) VALUES (%s)", (KIB,))
            if i >= warmup:
                samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples), percentile(samples, 0.99)


def measure(lim: Figures, *, quick: bool = False) -> Figures:
    """Every store's figures as ``STORE_FIGURE`` (e.g. ``pgsync_durable_p50_us``): the median over
    the rounds, and ``STORE_FIGURE_min``/``_max`` for the spread. Raises NoPostgres when
    PostgreSQL cannot run here."""
    why = missing()
    if why:
        raise NoPostgres(why)
    # The box is shared: three rounds, each store once a round, the order turned by one each round
    # (so a slow minute does not land on one store), rather than one long run per store.
    rounds, n_latency, warmup, n_tput = (1, 50, 10, 300) if quick else (3, 1000, 100, 7000)
    commits, commit_warmup = (50, 10) if quick else (500, 100)
    per: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="redline-pg-line-") as tmp, servers() as (local, pair):
        root = Path(tmp)
        for r in range(rounds):
            urls = {"sqlite": "", "pg": local(f"line_{uuid.uuid4().hex[:12]}"),
                    "pgsync": pair(f"line_{uuid.uuid4().hex[:12]}")}  # fmt: skip
            keys = [k for k, _ in STORES]
            keys = keys[r % len(keys) :] + keys[: r % len(keys)]
            for key in keys:
                if key == "sqlite":  # the same bare commit as bench.limits, here beside PostgreSQL's
                    (root / f"commit{r}").mkdir()
                    p50, p99, _ = machine.sqlite_full_commit(root / f"commit{r}", commits, commit_warmup)
                else:
                    p50, p99 = pg_commit(urls[key], commits, commit_warmup)
                got = asyncio.run(
                    line_bench.run(root / f"{key}{r}", n_latency=n_latency, warmup=warmup, n_tput=n_tput, prof=None,
                                   store=urls[key])
                )  # fmt: skip
                got |= {"commit_p50_us": p50, "commit_p99_us": p99}
                # LIMITS.md's path (bench.limits.implied_latency_us) with EUCOM's commit on this
                # store: two commits, two signs, two verifies and a TLS round trip
                got["implied_us"] = (p50 + lim["sqlite_full_p50_us"] + 2 * lim["sign_us"] + 2 * lim["verify_us"]
                                     + lim["tls_rtt_p50_us"])  # fmt: skip
                for k, v in got.items():
                    per.setdefault(f"{key}_{k}", []).append(v)
    f: Figures = {"rounds": float(rounds), "n_latency": float(n_latency), "n_tput": float(n_tput)}
    for k, vs in per.items():
        f[k], f[f"{k}_min"], f[f"{k}_max"] = statistics.median(vs), min(vs), max(vs)
    return f


FIGURES = (
    ("bare commit of 1 KiB on EUCOM's store, median", "commit_p50_us", "µs"),
    ("line's implied limit (EUCOM's commit on this store)", "implied_us", "µs"),
    ("control round trip (status), median", "control_p50_us", "µs"),
    ("local accept (send, no wait), median", "accept_p50_us", "µs"),
    ("durable send-to-receipt latency, p50", "durable_p50_us", "µs"),
    ("durable send-to-receipt latency, p99", "durable_p99_us", "µs"),
    ("throughput: accepted at EUCOM (pipelined)", "tput_accept_per_s", "/s"),
    ("throughput: stored at NDMC", "tput_stored_per_s", "/s"),
    ("throughput: all receipted back at EUCOM", "tput_receipted_per_s", "/s"),
    ("CPU per message at EUCOM", "tput_cpu_a_us", "µs"),
    ("CPU per message at NDMC", "tput_cpu_b_us", "µs"),
)


SPREAD = (("durable p50", "durable_p50_us", "µs"), ("durable p99", "durable_p99_us", "µs"),
          ("stored at NDMC", "tput_stored_per_s", "/s"))  # fmt: skip


def ratios(f: Figures) -> dict[str, float]:
    """Each PostgreSQL figure over SQLite's, as ``pg_line.FIGURE_STORE_vs_sqlite_ratio``."""
    out: dict[str, float] = {}
    for _, key, _ in FIGURES:
        for store in ("pg", "pgsync"):
            base = f.get(f"sqlite_{key}", float("nan"))
            if base:
                out[f"pg_line.{key}_{store}_vs_sqlite_ratio"] = f.get(f"{store}_{key}", float("nan")) / base
    return out


def report(f: Figures) -> str:
    """The side-by-side table: one column per store, then PostgreSQL over SQLite."""
    head = ["figure", *(name for _, name in STORES), "PG local / SQLite", "PG + standby / SQLite"]
    rounds = f"median of {f['rounds']:.0f} rounds" if f["rounds"] > 1 else "one round"
    lines = ["## The line with EUCOM's store on SQLite and PostgreSQL, same run (issue 14; NDMC on SQLite; "
             f"{rounds} of {f['n_latency']:,.0f} one-in-flight sends and {f['n_tput']:,.0f} pipelined)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    r = ratios(f)
    for what, key, unit in FIGURES:
        cells = [fmt(f.get(f"{s}_{key}", float("nan")), unit) for s, _ in STORES]
        rel = [r.get(f"pg_line.{key}_{s}_vs_sqlite_ratio", float("nan")) for s in ("pg", "pgsync")]
        lines.append(f"| {what} | " + " | ".join(cells) + " | " + " | ".join(fmt(x, "x") for x in rel) + " |")
    for what, key, unit in SPREAD if f["rounds"] > 1 else ():
        lines.append(f"\n{what}, lowest to highest round: " + "; ".join(
            f"{name.split(' (')[0]} {fmt(f[f'{s}_{key}_min'], unit)} to {fmt(f[f'{s}_{key}_max'], unit)}"
            for s, name in STORES) + ".")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loops: a smoke run, not figures")
    args = parser.parse_args(argv)
    why = missing()
    if why:
        print(f"pg_line skipped: {why}")
        return
    from bench.run_all import busy_elsewhere, describe  # the same run conditions as the whole suite prints

    info = describe()
    info["busy_before"] = f"{100 * busy_elsewhere():.0f}%"
    print("  ".join(f"{k}: {v}" for k, v in info.items()))
    before = machine.measure(quick=args.quick)
    try:
        f = measure(before, quick=args.quick)
    except NoPostgres as exc:
        print(f"pg_line skipped: {exc}")
        return
    after = machine.measure(quick=args.quick)
    print(machine.report(before).replace("Machine limits (this run)", "Machine limits, measured before"))
    print()
    print(machine.report(after).replace("Machine limits (this run)", "Machine limits, measured after"))
    print()
    print(report(f))
    load = os.getloadavg()
    print(f"\n(load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")


if __name__ == "__main__":
    main()
