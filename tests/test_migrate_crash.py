"""'redline store migrate' killed mid-copy (kill -9, a power cut) can simply be run again.

The store's tables are created and committed before the copy's own transaction: a kill during the
copy left this station's store made and empty in the database, and running the command again said
"a store already exists", with no way on but dropping the tables by hand. Now a second run copies
into that empty store of this station (any other store there is still refused: test_ledger_postgres).
The kill is a child process dying (os._exit) with every row sent and the copy not yet committed.
The switch of config.json is fsynced with its folder after the rename (it was not: a power cut within
seconds could bring the station back on SQLite after it had run on PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from redline.ledger.migrate import migrate_to_postgres
from redline.ledger.postgres import PgLedger
from redline.testing import make_station, pair_directly

ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.mark.slow
def test_migrate_killed_mid_copy_runs_again_and_moves_everything(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_station(tmp_path, "EUCOM", "en", 47641)
    line = pair_directly(a, make_station(tmp_path, "NDMC", "ru", 47642))
    config = a.config_path.read_bytes()
    child = textwrap.dedent(f"""
        import contextlib, os
        from pathlib import Path
        from redline.home import StationDir
        from redline.ledger import migrate

        copy = migrate._copy

        def dying_copy(src, dst, url):
            batch = dst.batch

            @contextlib.contextmanager
            def dying_batch():
                with batch():
                    yield
                    os._exit(9)  # every row sent, the copy's transaction not committed

            dst.batch = dying_batch
            return copy(src, dst, url)

        migrate._copy = dying_copy
        migrate.migrate_to_postgres(StationDir(Path({str(a.path)!r})), {pg_url!r})
    """)
    proc = subprocess.run([sys.executable, "-c", child], env={**os.environ, "PYTHONPATH": ROOT}, check=False)
    assert proc.returncode == 9
    assert a.config_path.read_bytes() == config  # still on SQLite
    synced: list[int] = []  # inodes given to the real os.fsync, in order
    fsync = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    report = migrate_to_postgres(a, pg_url)
    assert report.lines == 1
    assert json.loads(a.config_path.read_text())["store"] == pg_url
    # config.json fsynced, then (after its rename) the folder: the switch survives a power cut
    assert a.path.stat().st_ino in synced[synced.index(a.config_path.stat().st_ino) :]
    led = PgLedger(pg_url)
    try:
        assert [r.line for r in led.lines()] == [line]
    finally:
        led.close()
