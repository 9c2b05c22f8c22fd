"""A byte flipped inside a stored row (SQLite keeps no checksum of a row's contents, so its
quick_check passes) gives one clear line from every command that reads it, never a traceback.

``serve``, ``log``, ``verify`` and ``doctor`` ended in JSONDecodeError/KeyError/ValueError
tracebacks; the doctor, whose job is to say what is wrong, did too. Every stored JSON document and
number is now decoded by one function per kind (redline/ledger/rows.py) that raises StorageError
naming the store, the row and the recovery. Real SQLite files, bytes flipped in the file itself."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from redline import doctor
from redline.cli import main as cli
from redline.errors import StorageError
from redline.home import StationDir
from redline.ledger import rows
from redline.ledger.sqlite import Ledger
from redline.station import Station
from redline.testing import make_station, pair_directly

DAMAGED_PAIRING = r"is damaged: the pairing record of line '[0-9a-f]{32}' is not valid JSON"


def flip(path: Path, marker: bytes) -> None:
    """Flip one bit of the first byte of ``marker`` in the raw database file (everything
    checkpointed into it first): the row's bytes only, every b-tree page stays whole."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    at = data.find(marker)
    assert at > 0 and data.find(marker, at + 1) < 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def damaged(tmp_path: Path) -> StationDir:
    a = make_station(tmp_path, "EUCOM", "en", 47511)
    pair_directly(a, make_station(tmp_path, "NDMC", "ru", 47512))
    flip(a.ledger_path, b'{"confirmed_local"')  # '{' -> 'z'
    return a


@pytest.mark.parametrize("command", [["doctor"], ["log", "NDMC"], ["verify"]])
def test_a_flipped_byte_in_a_pairing_record_gives_one_clear_line(damaged: StationDir, command: list[str]) -> None:
    res = CliRunner().invoke(cli, [*command, "--station", str(damaged.path)])
    assert res.exit_code != 0
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    assert re.search(DAMAGED_PAIRING, res.output), res.output


def test_the_doctor_reports_a_damaged_row_as_a_damaged_store(damaged: StationDir) -> None:
    facts = doctor.stopped_facts(damaged, 0, doctor.Thresholds())
    assert facts.lines == [] and len(facts.integrity) == 1
    assert re.search(DAMAGED_PAIRING, facts.integrity[0])
    [store] = [f for f in doctor.examine(damaged, facts) if f.check == "store"]
    assert store.severity == doctor.CRITICAL


def test_a_station_does_not_start_on_a_damaged_pairing_record(damaged: StationDir) -> None:
    with pytest.raises(StorageError, match=DAMAGED_PAIRING):
        Station(damaged)


def test_a_flipped_byte_in_an_outbox_item_or_the_schema_version_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, create=True, station="ab" * 32)
    with ledger.batch():
        ledger.accept("00" * 16, "TEXT", "ROUTINE", {"text": "held"}, "k", 1)
    ledger.close()
    flip(path, b'{"text": "held"}')
    reader = Ledger.open_read_only(path)
    try:
        with pytest.raises(StorageError, match=r"is damaged: the content of outbox item 1 is not valid JSON"):
            reader.pending("00" * 16)
    finally:
        reader.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value='2x' WHERE key='schema_version'")
    db.close()
    with pytest.raises(StorageError, match=r"is damaged: its schema version '2x' is not a number"):
        Ledger.open_read_only(path)


@pytest.mark.parametrize(
    ("raw", "why"),
    [(b'{"line": 1', "not valid JSON"), ("[]", "not a pairing record"), ('{"line": "x"}', "not a pairing record"),
     (None, "not valid JSON"), (b"\xff", "not valid JSON")],
)  # fmt: skip
def test_each_way_a_stored_pairing_record_can_be_wrong_is_one_storage_error(raw: object, why: str) -> None:
    with pytest.raises(
        StorageError, match=f"store postgresql://h/db is damaged: the pairing record of line 'x' is {why}"
    ):
        rows.line_record("postgresql://h/db", "x", raw)
