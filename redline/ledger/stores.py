"""Which ledger a station uses: its SQLite file, or the PostgreSQL database its config names.

``open_store`` is the one place that chooses; everything else holds a ``LedgerStore``. Because
both branches return one, mypy checks here that each backend satisfies the interface.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from redline.errors import ConfigError
from redline.ledger.interface import LedgerStore
from redline.ledger.sqlite import Ledger


def is_url(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def store_url(url: str) -> str:
    """The DSN to record in config.json: refused if it carries a password (libpq finds that in
    ``PGPASSFILE``, ``~/.pgpass`` or ``PGPASSWORD``, never on a command line or in a config)."""
    if not is_url(url):
        raise ConfigError(f"--store takes a postgresql:// URL, not {url!r}")
    parts = urlsplit(url)
    if parts.password is not None or "password=" in parts.query:
        raise ConfigError(
            "the store URL holds a password: give it in a password file (PGPASSFILE or ~/.pgpass, mode 0600) "
            "or PGPASSWORD instead, never on the command line"
        )
    return url


def shown_url(url: str) -> str:
    """The URL for messages and status: never a password, even one given by mistake."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def open_store(
    store: str, path: Path, *, create: bool = False, station: str | None = None, read_only: bool = False,
    raw_check: bool = True,
) -> LedgerStore:  # fmt: skip
    """``store``: "" for the SQLite file at ``path``, or a postgresql:// URL (no password in it).
    ``raw_check=False`` when a running station holds the SQLite files: SQLite only (``Ledger``).
    ``station``: recorded in a store created, required of one opened (``rows.check_station``)."""
    if store:
        from redline.ledger.postgres import PgLedger  # psycopg loads only for a station that uses it

        return PgLedger(store, create=create, station=station, read_only=read_only)
    if read_only:
        return Ledger.open_read_only(path, raw_check=raw_check, station=station)
    return Ledger(path, create=create, station=station, raw_check=raw_check)


def drop_left_by_init(store: str, station: str) -> None:
    """A PostgreSQL ``store`` that an unfinished ``redline init`` made for ``station`` (a root key
    no station ever served with) is dropped, so init can make it again; nothing else is touched
    (``postgres.drop_left_by_init``). A SQLite store is in the station folder: init removes it."""
    if store:
        from redline.ledger.postgres import drop_left_by_init as drop

        drop(store, station)
