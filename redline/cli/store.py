"""``redline store``: where the ledger lives. ``migrate --to postgresql://…`` moves a stopped
station's SQLite ledger into an empty PostgreSQL database (redline/ledger/migrate.py says what it
checks), re-signing nothing. The password is never an argument: libpq reads it from PGPASSFILE,
~/.pgpass or PGPASSWORD."""

from __future__ import annotations

from typing import Any

import click

from redline.cli.common import console, emit, json_option, run, station_option
from redline.display import styled
from redline.home import StationDir, station_path


def register(main: click.Group) -> None:
    main.add_command(store)


@click.group()
def store() -> None:
    """Where the station's ledger lives (SQLite file or PostgreSQL database)."""


@store.command()
@station_option
@click.option("--to", "to", required=True, help="postgresql://USER@HOST:PORT/DB of an empty database (no password).")
@json_option
def migrate(station: str | None, to: str, as_json: bool) -> None:
    """Move a stopped station's SQLite ledger to PostgreSQL: verified before and after, byte for byte."""
    from redline.ledger.migrate import migrate_to_postgres  # psycopg loads only here

    home = StationDir(station_path(station))
    report = run(lambda: migrate_to_postgres(home, to))
    data = {"station": str(home.path), "store": report.to, "lines": report.lines, "envelopes": report.envelopes,
            "receipts": report.receipts, "checkpoints": report.checkpoints, "outbox": report.outbox,
            "roots": report.roots}  # fmt: skip

    def human(d: dict[str, Any]) -> None:
        console.print(styled("Ledger moved to ", (d["store"], "bold")))
        console.print(f"{d['envelopes']} envelopes, {d['receipts']} receipts, {d['checkpoints']} checkpoints, "
                      f"{d['outbox']} outbox entries on {d['lines']} line(s); every line verified before and after, "
                      "byte-equal, same Merkle roots.")  # fmt: skip
        console.print(f"config.json now names it; {home.ledger_path} is left as it was (remove it once satisfied).")

    emit(as_json, data, human)
