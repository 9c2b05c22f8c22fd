"""The ``redline`` command, one module per area (datasette's cli.py way: thin, it builds the
objects and prints): ``common`` (shared helpers and the group), ``station`` (running a station and
its line), ``record`` (log, verify, export), ``ops`` (people, tests, FLASH, calls, notices,
translations), ``admin`` (backup, restore, doctor), ``keys`` (key rotation)."""

from __future__ import annotations

from redline.cli import admin, keys, ops, record, station, store
from redline.cli.common import console, control, emit, err, fail, json_option, main, run, station_option, when

ops.register(main)
admin.register(main)
keys.register(main)
store.register(main)

__all__ = [
    "console", "control", "emit", "err", "fail", "json_option", "main", "record", "run", "station", "station_option",
    "when",
]  # fmt: skip
