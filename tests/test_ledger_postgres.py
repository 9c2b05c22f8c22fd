"""The PostgreSQL ledger (redline.ledger.postgres) on a real server (tests/pg.py), where it differs
from SQLite or where the database itself must hold a guarantee: the UNIQUE constraints that make
a fork impossible in storage, synchronous_commit, a newer schema refused untouched, kill -9 of a
writer in the middle of group commits, and ``redline store migrate`` from a SQLite station.

The behaviour both backends share is tested once for both in tests/test_ledger.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from redline.errors import ConfigError, SchemaVersionError, StorageError
from redline.home import StationDir
from redline.ledger.migrate import migrate_to_postgres
from redline.ledger.model import SCHEMA_VERSION
from redline.ledger.postgres import PgLedger
from redline.ledger.sqlite import Ledger
from redline.ledger.verify import verify_line
from redline.testing import StationPair, make_station, pair_directly
from tests.pg import PgServer
from tests.procs import kill_9_and_read
from tests.test_ledger import LINE, T0, A, chain, envelope

HELPER = Path(__file__).parent / "helpers" / "crash_writer.py"


def in_loop(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


@pytest.fixture
def pg(pg_url: str) -> Iterator[PgLedger]:
    led = PgLedger(pg_url, create=True, station=A)
    yield led
    led.close()


def everything(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the database, from a fresh connection."""
    with psycopg.connect(url) as db:
        tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1")]
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}  # type: ignore[arg-type]


# -- the database itself -------------------------------------------------------------------------


def test_the_database_itself_refuses_a_second_envelope_at_a_used_seq_or_id(pg: PgLedger, pg_url: str) -> None:
    # Whatever the application does (a bug, a second process that missed the head): the store
    # cannot hold two envelopes at one (line, sender, seq), nor one id twice on a line.
    envs = chain(2)
    for env in envs:
        pg.append(env, T0)
    fork = envelope(2, envs[0].id, text="another story")
    insert = (
        "INSERT INTO envelopes (line, sender, seq, id, kind, raw, stored_at, prio) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    before = everything(pg_url)
    with psycopg.connect(pg_url) as db, pytest.raises(psycopg.errors.UniqueViolation, match="envelopes_one_per_seq"):
        db.execute(insert, (LINE, A, 2, fork.id, "TEXT", fork.encode(), T0, "ROUTINE"))
    with psycopg.connect(pg_url) as db, pytest.raises(psycopg.errors.UniqueViolation, match="envelopes_one_per_id"):
        db.execute(insert, (LINE, A, 3, envs[1].id, "TEXT", envs[1].encode(), T0, "ROUTINE"))
    assert everything(pg_url) == before
    # Through the ledger, the fork is evidence and the chain keeps the first.
    with pytest.raises(Exception, match="two different envelopes at seq 2"):
        pg.append(fork, T0)
    assert [e.second for e in pg.equivocations(LINE)] == [fork.encode()]
    assert pg.head(LINE, A) == (2, envs[1].id)


def test_a_commit_is_flushed_before_it_returns_even_if_the_server_default_is_off(
    postgres_server: PgServer, pg_url: str
) -> None:
    # An administrator's synchronous_commit=off would make a returned COMMIT losable: the ledger
    # sets it back to on for its own session.
    name = pg_url.rsplit("/", 1)[1]
    postgres_server.admin(f"ALTER DATABASE {name} SET synchronous_commit = off")
    led = PgLedger(pg_url, create=True, station=A)
    try:
        assert led._db.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert led._db.execute("SHOW fsync").fetchone() == ("on",)
    finally:
        led.close()
    with psycopg.connect(pg_url) as db:
        assert db.execute("SHOW synchronous_commit").fetchone() == ("off",)  # others keep the default


def test_group_commit_is_one_transaction(pg: PgLedger, pg_url: str) -> None:
    envs = chain(5)
    with psycopg.connect(pg_url, autocommit=True) as db:
        with pg.batch():
            for env in envs:
                pg.append(env, T0)
            pg.accept(LINE, "TEXT", "ROUTINE", {"text": "x"}, "k", T0)
            xids = pg._db.execute("SELECT txid_current()").fetchone()
            assert db.execute("SELECT count(*) FROM envelopes").fetchone() == (0,)  # nothing seen before COMMIT
        assert db.execute("SELECT count(*) FROM envelopes").fetchone() == (5,)
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
        # Every row of the batch was written by one transaction.
        assert db.execute("SELECT DISTINCT xmin::text::bigint FROM envelopes").fetchall() == [xids]


def test_opening_an_empty_database_is_refused_and_creates_nothing(pg_url: str) -> None:
    with pytest.raises(StorageError, match="no store"):
        PgLedger(pg_url)
    assert everything(pg_url) == {}


def test_store_from_a_newer_redline_is_refused_and_left_untouched(pg_url: str) -> None:
    led = PgLedger(pg_url, create=True, station=A)
    for env in chain(3):
        led.append(env, T0)
    led.close()
    with psycopg.connect(pg_url) as db:
        db.execute("UPDATE meta SET value=%s WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    before = everything(pg_url)
    with psycopg.connect(pg_url) as db:
        commits = db.execute("SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname='meta'")
        writes_before = commits.fetchone()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        PgLedger(pg_url)
    with pytest.raises(SchemaVersionError):
        PgLedger(pg_url, read_only=True)
    assert everything(pg_url) == before
    with psycopg.connect(pg_url) as db:
        commits = db.execute("SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname='meta'")
        assert commits.fetchone() == writes_before


def test_a_read_only_ledger_cannot_write(pg: PgLedger, pg_url: str) -> None:
    reader = PgLedger.open_read_only(pg_url)
    try:
        with pytest.raises(StorageError, match="read-only"):
            reader.append(chain(1)[0], T0)
        assert reader.head(LINE, A) == (0, None)
    finally:
        reader.close()


def test_a_store_url_with_a_password_is_refused_and_nothing_is_created(tmp_path: Path, pg_url: str) -> None:
    with_password = pg_url.replace("@", ":secret@", 1)
    with pytest.raises(ConfigError, match="password"):
        StationDir(tmp_path / "s").init(name="EUCOM", lang="en", listen=["127.0.0.1:7001"], store=with_password)
    assert not (tmp_path / "s").exists()
    assert everything(pg_url) == {}


def test_a_station_on_postgres_records_its_store_and_opens_it(tmp_path: Path, pg_url: str) -> None:
    home = StationDir(tmp_path / "s")
    keys = home.init(name="EUCOM", lang="en", listen=["127.0.0.1:7001"], store=pg_url)
    assert json.loads(home.config_path.read_text())["store"] == pg_url
    assert not home.ledger_path.exists()
    led = home.open_ledger()
    try:
        assert isinstance(led, PgLedger)
        assert led.station == keys.fingerprint
        assert [role for _, role, _ in led.certs(keys.fingerprint)] == ["signing", "tls"]
    finally:
        led.close()


# -- kill -9 -------------------------------------------------------------------------------------

BATCH = 50
ROUNDS = 10


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_minus_nine_during_group_commits_on_postgres_loses_nothing_reported(tmp_path: Path, pg_url: str) -> None:
    """tests/test_crash.py's writer (it opens whatever store the station's config names), killed
    with SIGKILL at random moments: every seq it reported after COMMIT returned is in the database,
    whole batches only, the outbox agrees, and the store verifies."""
    a = StationDir(tmp_path / "EUCOM")
    a.init(name="EUCOM", lang="en", listen=["127.0.0.1:7401"], store=pg_url)
    b = make_station(tmp_path, "NDMC", "ru", 7501)
    line = pair_directly(a, b)
    keys_a, keys_b = a.load_keys(), b.load_keys()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    reported, progressed = 0, 0
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, str(HELPER), str(a.path), line, str(BATCH)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if not ready.startswith("ready "):
                proc.kill()
                raise AssertionError(f"writer did not start (seed {seed}): {ready!r} {proc.communicate()[1]}")
            head = int(ready.split()[1])
            assert head >= reported, f"round {round_no} (seed {seed}): reopened at {head} but {reported} was reported"
            assert head % BATCH == 0, f"round {round_no} (seed {seed}): reopened at {head}, inside a batch"
            time.sleep(rng.uniform(0.05, 0.5))
            out, err = kill_9_and_read(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"writer died on its own (seed {seed}): {err}"
        seqs = [int(s) for s in out.split()]
        assert seqs == sorted(seqs) and all(s % BATCH == 0 for s in seqs), seqs
        if seqs:
            assert seqs[0] == head + BATCH
            reported = seqs[-1]
            progressed += 1
    assert progressed >= ROUNDS // 2, f"the writer rarely got to commit (seed {seed}); the test proved little"

    with psycopg.connect(pg_url) as db:
        ours = (keys_a.fingerprint,)
        held = [r[0] for r in db.execute("SELECT seq FROM envelopes WHERE sender=%s ORDER BY seq", ours)]
        outbox = db.execute("SELECT idem, seq, envelope_id FROM outbox ORDER BY local").fetchall()
        ids = dict(db.execute("SELECT seq, id FROM envelopes WHERE sender=%s", (keys_a.fingerprint,)).fetchall())
    assert held, "nothing was stored"
    top = held[-1]
    assert top >= reported, f"seq {reported} was reported committed but the store ends at {top} (seed {seed})"
    assert held == list(range(1, top + 1)), f"the chain has gaps (seed {seed})"
    assert top % BATCH == 0, f"a partial group commit survived the crash: head {top} (seed {seed})"
    assert [tuple(r) for r in outbox] == [(f"m{n}", n, ids[n]) for n in range(1, top + 1)]
    ledger = a.open_ledger()
    try:
        assert ledger.head(line, keys_a.fingerprint)[0] == top
        assert ledger.pending_count(line) == 0
        report = verify_line(
            ledger.line_data(line, "EUCOM"),
            {keys_a.fingerprint: keys_a.root_public, keys_b.fingerprint: keys_b.root_public},
        )
        assert report.ok, [str(p) for p in report.problems]
        assert ledger.log(line, keys_a.fingerprint).size == top
    finally:
        ledger.close()


# -- migrate -------------------------------------------------------------------------------------


def _held(led: Ledger | PgLedger, line: str, fps: list[str]) -> dict[str, Any]:
    return {
        "chains": {fp: list(led.raw_envelopes(line, fp)) for fp in fps},
        "roots": {fp: led.log(line, fp).root() for fp in fps},
        "receipts": [(by, s.encode()) for by, s in led.receipts(line)],
        "checkpoints": [(n, p.encode(), c.encode()) for n, p, c in led.checkpoints(line)],
        "pending": led.pending(line),
        "bytes": {fp: led.line_bytes(line, fp) for fp in fps},
    }


@pytest.mark.timeout(120)
@in_loop
async def test_migrate_moves_a_sqlite_station_to_postgres_byte_for_byte_and_it_carries_on(
    tmp_path: Path, pg_url: str
) -> None:
    async with StationPair(tmp_path) as sp:
        for i in range(6):
            await sp.send("a", f"EUCOM {i}")
            await sp.send("b", f"NDMC {i}")
        await sp.advance(130)  # checkpoints co-signed
        await sp.a.close()
        fps = [sp.a.keys.fingerprint, sp.b.keys.fingerprint]
        before = Ledger(sp.dir_a.ledger_path)
        held_before = _held(before, sp.line, fps)
        before.close()
        assert held_before["checkpoints"], "the test needs checkpoints to move"

        report = migrate_to_postgres(sp.dir_a, pg_url)

        assert report.envelopes == sum(len(c) for c in held_before["chains"].values())
        assert json.loads(sp.dir_a.config_path.read_text())["store"] == pg_url
        after = sp.dir_a.open_ledger()
        assert isinstance(after, PgLedger)
        try:
            assert _held(after, sp.line, fps) == held_before  # byte-equal, nothing re-signed
            roots = {fp: bytes.fromhex(r) for fp, r in [(fps[0], sp.a.keys.root_public.hex()),
                                                          (fps[1], sp.b.keys.root_public.hex())]}  # fmt: skip
            assert verify_line(after.line_data(sp.line), roots).ok
        finally:
            after.close()
        # The station starts on PostgreSQL and the line goes on, both ways.
        sp.a = sp._new("a")
        await sp.a.start()
        await sp.synced()
        assert isinstance(sp.a.ledger, PgLedger)
        await sp.send("a", "EUCOM from PostgreSQL")
        await sp.send("b", "NDMC to PostgreSQL")
        await sp.advance(130)
        assert sp.a.ledger.head(sp.line, fps[0])[0] == len(held_before["chains"][fps[0]]) + 1
        roots = {fps[0]: sp.a.keys.root_public, fps[1]: sp.b.keys.root_public}
        assert verify_line(sp.a.ledger.line_data(sp.line), roots).ok
    # What 'redline verify' reads: the line streamed from one snapshot, chains read by worker
    # processes on connections of their own; the same verdict.
    led = sp.dir_a.open_ledger()
    try:
        with led.stored_line(sp.line, "EUCOM") as held:
            streamed = verify_line(held, roots, workers=2)
        assert streamed.ok, [str(p) for p in streamed.problems]
        assert streamed.chain_sizes == verify_line(led.line_data(sp.line), roots).chain_sizes
    finally:
        led.close()
    # Migrating again is refused: the station is already on PostgreSQL.
    with pytest.raises(ConfigError, match="already keeps its ledger"):
        migrate_to_postgres(sp.dir_a, pg_url)


def test_migrate_refuses_a_database_that_already_holds_a_store_and_switches_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    a = make_station(tmp_path, "EUCOM", "en", 7401)
    b = make_station(tmp_path, "NDMC", "ru", 7501)
    pair_directly(a, b)
    PgLedger(pg_url, create=True, station="someone else").close()
    config = a.config_path.read_bytes()
    with pytest.raises(StorageError, match="already exists"):
        migrate_to_postgres(a, pg_url)
    assert a.config_path.read_bytes() == config
    led = PgLedger(pg_url)
    assert led.station == "someone else"
    led.close()


# -- the command line ----------------------------------------------------------------------------


def test_cli_init_store_and_store_migrate(tmp_path: Path, postgres_server: PgServer, pg_url: str) -> None:
    from click.testing import CliRunner

    from redline.cli import main

    cli = CliRunner()
    # A password on the command line is refused before anything is created.
    refused = cli.invoke(main, ["init", "--station", str(tmp_path / "p"), "--name", "EUCOM", "--lang", "en",
                                "--listen", "127.0.0.1:7001", "--store", pg_url.replace("@", ":pw@", 1)])  # fmt: skip
    assert refused.exit_code == 1 and "password" in refused.output, refused.output
    assert not (tmp_path / "p").exists()
    made = cli.invoke(main, ["init", "--station", str(tmp_path / "s"), "--name", "EUCOM", "--lang", "en",
                             "--listen", "127.0.0.1:7001", "--store", pg_url, "--json"])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert json.loads((tmp_path / "s" / "config.json").read_text())["store"] == pg_url
    # A SQLite station moved by 'redline store migrate' into another empty database.
    name = "t_cli_" + os.urandom(6).hex()
    postgres_server.admin(f"CREATE DATABASE {name}")
    a = make_station(tmp_path, "EUCOM", "en", 7401)
    pair_directly(a, make_station(tmp_path, "NDMC", "ru", 7501))
    target = postgres_server.url(name)
    moved = cli.invoke(main, ["store", "migrate", "--station", str(a.path), "--to", target, "--json"])
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output)["lines"] == 1
    assert a.config().store == postgres_server.url(name)
    postgres_server.admin(f"DROP DATABASE {name} WITH (FORCE)")
