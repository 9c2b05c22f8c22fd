"""Stored values decoded back, one function per kind, for both ledgers (SQLite and PostgreSQL).

SQLite keeps no checksum of what a row holds: a byte flipped inside a row (a bad sector, a bit
flip in memory before the write) passes ``PRAGMA quick_check``, and PostgreSQL without data
checksums is no different. Such a row must not end ``serve``, ``log``, ``verify`` or ``doctor`` in
a traceback: every stored JSON document, whole number and byte string is read back through one of
these functions, which refuse what does not decode with one ``StorageError`` line naming the store, the
row or column and what is wrong with it, and how to recover. (Envelopes and statements are bytes whose
signatures ``verify`` checks; only their type is checked here.)

Whole numbers and bytes are checked for their type alone: SQLite keeps each cell's type in the row
itself, so a flipped byte of a row's header turns an INTEGER or BLOB cell into text, a float or NULL
(``int('x')``, ``bytes('x')``, ``int(None)`` were tracebacks, and ``bytes(n)`` of a number read where
bytes belong silently made ``n`` zero bytes); PostgreSQL keeps the type in its catalogue, but a flipped
bit of a row's null bitmap reads a NOT NULL column as NULL. The common case costs one ``type()`` test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redline.errors import StorageError, WrongStoreError
from redline.ledger.model import LineRecord

_SHOWN = 60  # characters of a damaged value quoted in the message


def damaged(store: Path | str, what: str) -> StorageError:
    """The store (a SQLite file, or a PostgreSQL URL as shown) is damaged: ``what``, and the recovery."""
    if isinstance(store, Path):
        from redline.ledger.integrity import recovery

        return StorageError(f"store {store} is damaged: {what}. {recovery(store)}")
    return StorageError(
        f"store {store} is damaged: {what}. Restore the database from its backup (docs/OPERATIONS.md section 12); "
        "the station then re-fetches from the peer whatever the backup lacks of both chains"
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _json(raw: object) -> Any:
    if isinstance(raw, memoryview):
        raw = bytes(raw)
    if not isinstance(raw, str | bytes):
        raise ValueError(f"a {type(raw).__name__}, not text")
    return json.loads(raw)


def line_record(store: Path | str, line: object, raw: object) -> LineRecord:
    """The pairing record of ``line`` (the ``lines`` table's ``record``)."""
    what = f"the pairing record of line {_shown(line)}"
    try:
        obj = _json(raw)
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise damaged(store, f"{what} is not valid JSON ({exc})") from exc
    try:
        if not isinstance(obj, dict):
            raise TypeError(f"a JSON {type(obj).__name__}, not an object")
        record = LineRecord.from_obj(obj)
        if record.line != line:
            raise ValueError(f"it names line {_shown(record.line)}")
    except (TypeError, KeyError, ValueError) as exc:
        raise damaged(store, f"{what} is not a pairing record ({exc})") from exc
    return record


def outbox_content(store: Path | str, local: object, raw: object) -> dict[str, Any]:
    """The content of the outbox item numbered ``local`` (the ``outbox`` table's ``content``)."""
    what = f"the content of outbox item {_shown(local)}"
    try:
        obj = _json(raw)
    except ValueError as exc:
        raise damaged(store, f"{what} is not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise damaged(store, f"{what} is a JSON {type(obj).__name__}, not an object")
    return obj


def schema_version(store: Path | str, raw: object) -> int:
    """The schema version the ``meta`` table records."""
    try:
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ValueError(raw)
        return int(raw)
    except ValueError as exc:
        raise damaged(store, f"its schema version {_shown(raw)} is not a number") from exc


def integer(store: Path | str, raw: object, column: str) -> int:
    """A whole number stored in ``column`` (``table.column``, as the message names it)."""
    if type(raw) is int:
        return raw
    raise damaged(store, f"a value of {column} is {_shown(raw)}, not a whole number")


def blob(store: Path | str, raw: object, column: str) -> bytes:
    """A byte string stored in ``column`` (``table.column``, as the message names it)."""
    if type(raw) is bytes:
        return raw
    if type(raw) is memoryview:
        return bytes(raw)
    raise damaged(store, f"a value of {column} is {_shown(raw)}, not bytes")


def check_station(recorded: str, expected: str | None, shown: str) -> None:
    """The one rule that a store is the station's own: the station recorded in its ``meta`` at
    ``init`` is the fingerprint of the root key of the folder opening it. A config that names
    another station's database, or another station's ledger.sqlite put in the folder, would be
    served as ours, and what it accepts signed with our keys (or a foreign pair's lease taken).
    Checked before anything is written or migrated. ``expected`` None: a caller without a station
    (a backup folder, tests)."""
    if expected is not None and recorded != expected:
        raise WrongStoreError(
            f"store {shown} was made for station {recorded[:16] or '(none)'}, but this station's root key is "
            f"{expected[:16]}: the config points at another station's store; nothing was changed (point "
            "config.json's store, or the folder's ledger.sqlite, at this station's own)"
        )
