"""The ``redline`` command, one module per area (datasette's cli.py way: thin, it builds the
objects and prints): ``common`` (shared helpers and the group), ``station`` (running a station and
its line), ``record`` (log, verify, export), ``ops`` (people, tests, FLASH, calls, notices,
translations), ``admin`` (backup, restore, doctor), ``keys`` (key rotation)."""

from __future__ import annotations

# The modules are not imported here: ``main`` (common.LazyGroup) imports the one of the command run.
from redline.cli.common import console, control, emit, err, fail, json_option, main, run, station_option, when

__all__ = ["console", "control", "emit", "err", "fail", "json_option", "main", "run", "station_option", "when"]
