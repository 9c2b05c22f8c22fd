"""A stored whole number or byte string that a flipped byte changed is refused in one line naming
its column, never a traceback and never taken as something else.

SQLite keeps each cell's type in the row's own header, which no checksum covers: one flipped bit
there turns an INTEGER cell into text, a blob or NULL, and a BLOB cell into text or a number.
The reads behind start, ``log`` and ``verify`` then ended in ``int('x')`` / ``bytes('text')``
tracebacks, handed text on as a seq, or (``bytes(5)``) made a stored number five zero bytes.
PostgreSQL keeps the type in its catalogue, but a flipped bit of a row's null bitmap reads a NOT
NULL column as NULL (``int(None)``). Every such read now goes through ``redline/ledger/rows.py``
(``integer``, ``blob``). Real SQLite files, the damaged cell written by a second connection (the
value a flipped type byte leaves); real PostgreSQL with the NOT NULL dropped to hold the NULL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redline.errors import EquivocationError, StorageError
from redline.ledger.interface import LedgerStore
from redline.ledger.sqlite import Ledger
from redline.statements import Signed
from tests.test_ledger import LINE, T0, A, chain, envelope

Read = Callable[[LedgerStore], object]


def _fill(ledger: LedgerStore) -> None:
    """Three envelopes, an outbox item, a checkpoint and one equivocation: a row in each table read below."""
    envs = chain(3)
    with ledger.batch():
        for env in envs:
            ledger.append(env, T0)
        ledger.accept(LINE, "TEXT", "ROUTINE", {"text": "held"}, "k", T0)
        ledger.add_checkpoint(LINE, 1, Signed(b'{"n":1}', bytes(64)), Signed(b'{"n":1}', bytes(64)))
    with pytest.raises(EquivocationError):
        ledger.append(envelope(2, envs[0].id, text="other"), T0)


# (table, column, the damaged value as SQL, a read that meets it)
SQLITE_CASES: list[tuple[str, str, str, Read]] = [
    ("envelopes", "seq", "'x' WHERE seq=3", lambda led: led.head(LINE, A)),
    ("envelopes", "stored_at", "x'00'", lambda led: list(led.stored_in_order(LINE))),
    ("envelopes", "raw", "'text'", lambda led: led.raw_envelope(LINE, A, 1)),
    ("envelopes", "raw", "5", lambda led: list(led.raw_envelopes(LINE, A))),  # was 5 zero bytes
    ("chain_bytes", "bytes", "'x'", lambda led: led.line_bytes(LINE, A)),
    ("outbox", "accepted_at", "'x'", lambda led: led.outbox_item(1)),
    ("equivocations", "detected_at", "1.5", lambda led: led.equivocations(LINE)),
    ("checkpoints", "n", "'x'", lambda led: led.last_checkpoint(LINE)),
    ("checkpoints", "cosign", "'text'", lambda led: led.checkpoints(LINE)),
]


@pytest.mark.parametrize(("table", "column", "value", "read"), SQLITE_CASES, ids=lambda c: str(c)[:24])
def test_a_damaged_number_or_byte_string_in_sqlite_is_one_storage_error(
    tmp_path: Path, table: str, column: str, value: str, read: Read
) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, create=True, station=A)
    _fill(ledger)
    ledger.close()
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE {table} SET {column}={value}")
    ledger = Ledger(path)
    try:
        with pytest.raises(StorageError, match=rf"store {path} is damaged: a value of {table}\.{column} is .*, not "):
            read(ledger)
    finally:
        ledger.close()


PG_CASES: list[tuple[str, str, Read]] = [
    ("envelopes", "seq", lambda led: led.head(LINE, A)),
    ("envelopes", "stored_at", lambda led: list(led.stored_in_order(LINE))),
    ("envelopes", "raw", lambda led: led.raw_envelope(LINE, A, 1)),
    ("chain_bytes", "bytes", lambda led: led.line_bytes(LINE, A)),
    ("outbox", "accepted_at", lambda led: led.outbox_item(1)),
    ("equivocations", "detected_at", lambda led: led.equivocations(LINE)),
    ("checkpoints", "proposal", lambda led: led.checkpoint(LINE, 1)),
]


@pytest.mark.parametrize(("table", "column", "read"), PG_CASES, ids=lambda c: str(c)[:24])
def test_a_null_where_postgres_keeps_a_number_or_bytes_is_one_storage_error(
    pg_url: str, table: str, column: str, read: Read
) -> None:
    import psycopg

    from redline.ledger.postgres import PgLedger

    ledger: Any = PgLedger(pg_url, create=True, station=A)
    try:
        _fill(ledger)
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute(f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL")  # type: ignore[arg-type]
            db.execute(f"UPDATE {table} SET {column}=NULL")  # type: ignore[arg-type]
        ledger._heads.clear()
        with pytest.raises(StorageError, match=rf"is damaged: a value of {table}\.{column} is None, not "):
            read(ledger)
    finally:
        ledger.close()


def test_an_envelope_id_that_is_not_hex_stops_the_migration_in_one_line(tmp_path: Path) -> None:
    from tests.test_startup import downgrade_to_schema_1

    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, create=True, station=A)
    _fill(ledger)
    ledger.close()
    downgrade_to_schema_1(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE envelopes SET id='not hex' WHERE seq=2")
    with pytest.raises(StorageError, match=r"is damaged: a value of envelopes\.id is not a hex id"):
        Ledger(path)
    with sqlite3.connect(path) as db:  # the migration's one transaction was rolled back
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
