"""'redline verify' is a check, so a reader: it opens the store read-only and never migrates it.

It opened the store writable (``home.open_ledger()``): a verify run by a newer redline, from cron
between the package upgrade and the station's restart, brought the store to the new schema under
the still-running older station (which then wrote rows the new layout lacks). Now an older store
is refused in one line, untouched, as every reader refuses it (docs/OPERATIONS.md section 8); the
full integrity check still runs on the read-only connection (tests/test_startup.py
``test_damage_after_a_clean_close_is_found_by_verify``). Real SQLite files, a real PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import psycopg
from click.testing import CliRunner

from redline.cli import main as cli
from redline.home import StationDir
from redline.testing import make_station, pair_directly
from tests.test_startup import downgrade_to_schema_1

OLDER = r"has schema version 1, older than this redline's \d+; start the station once"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_does_not_migrate_or_write_an_older_store(tmp_path: Path) -> None:
    a = make_station(tmp_path, "EUCOM", "en", 47611)
    pair_directly(a, make_station(tmp_path, "NDMC", "ru", 47612))
    downgrade_to_schema_1(a.ledger_path)
    before = digest(a.ledger_path)
    res = CliRunner().invoke(cli, ["verify", "--station", str(a.path)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert re.search(OLDER, " ".join(res.output.split())), res.output
    assert digest(a.ledger_path) == before  # (a reader of a WAL store may leave an empty -wal and its -shm)
    db = sqlite3.connect(f"file:{a.ledger_path}?mode=ro", uri=True)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    db.close()


def test_verify_reads_a_postgresql_store_without_migrating_it(tmp_path: Path, pg_url: str) -> None:
    a = StationDir(tmp_path / "EUCOM")
    a.init(name="EUCOM", lang="en", listen=["127.0.0.1:47621"], store=pg_url)
    pair_directly(a, make_station(tmp_path, "NDMC", "ru", 47622))
    res = CliRunner().invoke(cli, ["verify", "--station", str(a.path)])
    assert res.exit_code == 0 and "VERIFIED" in res.output, res.output
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    res = CliRunner().invoke(cli, ["verify", "--station", str(a.path)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert re.search(OLDER, " ".join(res.output.split())), res.output
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
