"""Attack (HA pass, finding 1): a station served any store its config points at. Nothing compared
the station recorded in the store (``meta.station``, written at ``init``) with the folder's root
key, so a copied config naming another station's PostgreSQL database took that pair's lease, and
another station's ledger.sqlite put in the folder was served; on both, what the wrong station
accepted was later signed and sent by the real one. Now every opener (serve, the standby before
it asks for the lease, read-only tools, doctor) refuses such a store in one line, before any write.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from redline import doctor
from redline.doctor import Thresholds
from redline.errors import WrongStoreError
from redline.home import StationDir
from redline.standby import Pair
from redline.testing import make_station, pair_directly
from tests.procs import free_ports

ENV = {**os.environ, "REDLINE_PWHASH_COST": "interactive", "COLUMNS": "200"}


def _serve_refused(home: StationDir) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redline", "serve", "--station", str(home.path)],
        capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip


def test_a_sqlite_station_refuses_another_stations_store(tmp_path: Path) -> None:
    p = free_ports(3)
    x, peer, y = (make_station(tmp_path, "EUCOM", "en", p[0]), make_station(tmp_path, "NDMC", "ru", p[1]),
                  make_station(tmp_path, "OTHER", "en", p[2]))  # fmt: skip
    pair_directly(x, peer)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{y.ledger_path}{suffix}").unlink(missing_ok=True)
    shutil.copy(x.ledger_path, y.ledger_path)  # EUCOM's store (a backup file) put in OTHER's folder
    before = y.ledger_path.read_bytes()
    for opener in (y.open_ledger, y.read_ledger):
        with pytest.raises(WrongStoreError, match=r"made for station .* another station's store"):
            opener()
    done = _serve_refused(y)
    assert done.returncode == 1
    assert "another station's store" in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert y.ledger_path.read_bytes() == before  # nothing written, nothing migrated
    facts = doctor.stopped_facts(y, 0, Thresholds())
    assert any("another station's store" in i for i in facts.integrity)
    # The right folder still opens its own store.
    x.open_ledger().close()


@pytest.mark.slow
def test_a_station_refuses_a_store_made_for_another_station(tmp_path: Path, pg_url: str) -> None:
    p = free_ports(3)
    x = StationDir(tmp_path / "X")
    x.init(name="EUCOM", lang="en", listen=[f"127.0.0.1:{p[0]}"], store=pg_url)
    peer = make_station(tmp_path, "NDMC", "ru", p[1])
    pair_directly(x, peer)
    y = make_station(tmp_path, "OTHER", "en", p[2])
    cfg = json.loads(y.config_path.read_text())
    cfg["store"] = pg_url  # a copied config: the wrong database
    y.config_path.write_text(json.dumps(cfg))

    for opener in (y.open_ledger, y.read_ledger):
        with pytest.raises(WrongStoreError, match="another station's store"):
            opener()
    # The standby refuses before it asks for (or even makes the table of) the lease.
    with pytest.raises(WrongStoreError, match="another station's store"):
        asyncio.run(Pair(y).wait_active(asyncio.Event()))
    done = _serve_refused(y)
    assert done.returncode == 1
    assert "another station's store" in done.stderr + done.stdout and "Traceback" not in done.stderr
    with psycopg.connect(pg_url) as db:
        has_lease = db.execute("SELECT to_regclass('lease') IS NOT NULL").fetchone()
        assert has_lease is not None
        if has_lease[0]:
            assert db.execute("SELECT count(*) FROM lease").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    facts = doctor.stopped_facts(y, 0, Thresholds())
    assert any("another station's store" in i for i in facts.integrity)
    x.open_ledger().close()  # EUCOM's own folder still opens it
