"""Two connections opening one old (schema 1) SQLite store at the same time migrate it once.

Each open reads the schema version, then takes the write lock to migrate. The second to get the
lock read "1" before the first had committed, and ran the migration again on a store already at
schema 2: its open failed with "duplicate column name: prio". SQLite's migration now reads the
version again once it holds the lock, as PostgreSQL's always did. Real SQLite file, two real
connections: the second opens and migrates the store between the first's read and its lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from redline.ledger.model import SCHEMA_VERSION
from redline.ledger.sqlite import Ledger
from tests.test_ledger import LINE, T0, A, chain
from tests.test_startup import downgrade_to_schema_1


def test_two_opens_of_an_old_store_at_once_migrate_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, create=True, station=A)
    with ledger.batch():
        for env in chain(40):
            ledger.append(env, T0)
    root = ledger.log(LINE, A).root()
    ledger.close()
    downgrade_to_schema_1(path)

    migrate = Ledger._migrate
    others: list[Ledger] = []
    calls: list[int] = []

    def meanwhile(self: Ledger, version: int) -> None:
        """The first open has read version 1 and not yet taken the lock: a second one opens now."""
        calls.append(version)
        if len(calls) == 1:
            others.append(Ledger(path))  # read version 1 too; migrates the store and commits
            assert others[0]._check_schema() == SCHEMA_VERSION
        migrate(self, version)

    monkeypatch.setattr(Ledger, "_migrate", meanwhile)
    first = Ledger(path)  # failed before: "cannot be opened: duplicate column name: prio"
    monkeypatch.undo()
    assert calls == [1, 1]
    for led in (first, others[0]):
        assert led.log(LINE, A).root() == root
        assert led.line_bytes(LINE, A) == sum(len(e.encode()) for e in chain(40))
        led.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert db.execute("SELECT count(*) FROM chain_bytes").fetchone() == (1,)
