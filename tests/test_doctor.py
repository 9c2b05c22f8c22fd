"""'redline doctor': each finding with what to do, the exit code by the worst severity.

A healthy running pair (root key moved offline, a fresh backup) is all ok and exits 0; a station
whose signing key others can read is critical, names the chmod that fixes it and exits 2. The
thresholds of every other check are walked through on the pure ``examine`` with made-up facts, so
no clock is waited for and no network is cut.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from redline import backup, doctor
from redline.doctor import CRITICAL, OK, WARNING, Facts, Finding, examine, worst
from redline.home import StationDir
from redline.ledger.sqlite import SCHEMA_VERSION
from redline.testing import make_station
from tests.procs import both, free_ports, paired_stations, wait_until
from tests.test_metrics import measured

pytestmark = pytest.mark.timeout(180)
HOUR_MS = 3_600_000


def rl(*args: str, station: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "REDLINE_STATION": str(station)}
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def findings(out: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    data = json.loads(out.stdout)
    rows: list[dict[str, str]] = data["findings"]
    return rows


@pytest.mark.slow
def test_doctor_on_a_healthy_running_station_finds_nothing_to_fix(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, _, _ = await paired_stations(tmp_path, relays=False)
        try:
            await wait_until(lambda: both(a, b, measured), "heartbeats measured the round trip and the clocks")
            offline = tmp_path / "offline-usb"
            offline.mkdir()
            shutil.move(a.home / "keys" / "root.key", offline / "root.key")  # as docs/OPERATIONS.md says
            took = await asyncio.to_thread(rl, "backup", str(tmp_path / "bk"), "--secrets", "omit", station=a.home)
            assert took.returncode == 0, took.stderr
            out = await asyncio.to_thread(rl, "doctor", "--json", station=a.home)
            human = await asyncio.to_thread(rl, "doctor", station=a.home)
        finally:
            a.stop()
            b.stop()
        rows = findings(out)
        assert out.returncode == 0, [r for r in rows if r["severity"] != OK]
        assert json.loads(out.stdout)["worst"] == OK
        checks = {r["check"] for r in rows}
        assert {"keys", "station", "store", "line", "path", "clock", "line test", "checkpoint", "disk",
                "certificate", "backup"} <= checks, checks  # fmt: skip
        assert any("integrity check passed (run by the station" in r["text"] for r in rows)
        assert any(r["check"] == "path" and "up:" in r["text"] for r in rows)
        assert human.returncode == 0 and human.stdout.rstrip().endswith("OK (exit 0)")

    asyncio.run(main())


def test_doctor_names_a_secret_key_open_to_others_and_exits_critical(tmp_path: Path) -> None:
    home = make_station(tmp_path, "EUCOM", "en", free_ports(1)[0])
    (home.keys / "signing.key").chmod(0o644)
    out = rl("doctor", "--json", station=home.path)
    assert out.returncode == 2
    keys = [r for r in findings(out) if r["check"] == "keys" and r["severity"] == CRITICAL]
    assert len(keys) == 1, findings(out)
    assert f"chmod 600 {home.keys / 'signing.key'}" in keys[0]["text"] and keys[0]["fix"]
    human = rl("doctor", station=home.path)
    assert human.returncode == 2 and "CRITICAL keys:" in human.stdout and "what to do:" in human.stdout
    # The doctor only looks: the mode is as it was.
    assert (home.keys / "signing.key").stat().st_mode & 0o777 == 0o644


# -- every other check, on made-up facts ----------------------------------------------------------
def _cert(days: float) -> str:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer")])
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now + datetime.timedelta(days=days)).sign(key, None)
    )  # fmt: skip
    return cert.public_bytes(Encoding.DER).hex()


NOW = int(datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC).timestamp() * 1000)


def _line(**changes: Any) -> dict[str, Any]:
    path = {"up": True, "rtt_ms": 1.5, "skew_ms": 20.0, "last_rx": NOW, "reason": ""}
    row: dict[str, Any] = {
        "line": "ab" * 16, "peer": "NDMC", "active": True, "confirmed": {"local": True, "peer": True},
        "synced": True, "halted": False, "outbox": 0, "unreceipted": 0,
        "paths": {"10.0.0.1:7401": dict(path), "10.0.1.1:7401": dict(path)},
        "disk_sent": 1000, "disk_received": 1000, "created_at": NOW - 30 * 86_400_000,
        "peer_tls_cert": _cert(365), "since_last_proven_ms": HOUR_MS, "last_test": "passed",
        "checkpoint_at": NOW - 1000, "checkpoint_lag_ms": 0,
    }  # fmt: skip
    row.update(changes)
    return row


def _skew(ms: float) -> dict[str, Any]:
    return {p: {"up": True, "rtt_ms": 1.0, "skew_ms": ms, "last_rx": NOW, "reason": ""} for p in ("p1", "p2")}


def _about(home: StationDir, check: str, row: dict[str, Any] | None = None, **facts: Any) -> list[Finding]:
    state = Facts(running=True, now=NOW, lines=[row or _line()], integrity=facts.pop("integrity", ["ok"]))
    return [f for f in examine(home, state) if f.check == check]


@pytest.fixture
def home(tmp_path: Path) -> StationDir:
    home = make_station(tmp_path, "EUCOM", "en", 7401)
    (home.keys / "root.key").unlink()
    record = {"path": str(tmp_path / "bk"), "taken_at": NOW - HOUR_MS, "verified": True}
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / backup.MANIFEST).write_text("{}")
    (home.path / backup.LAST_BACKUP).write_text(json.dumps(record))
    return home


def _severities(found: list[Finding]) -> set[str]:
    return {f.severity for f in found}


def test_each_check_turns_warning_then_critical_where_it_should(home: StationDir) -> None:
    ok = examine(home, Facts(running=True, now=NOW, lines=[_line()], integrity=["ok"]))
    assert worst(ok) == OK, [f for f in ok if f.severity != OK]

    # clock
    assert _severities(_about(home, "clock", _line(paths=_skew(2_000)))) == {WARNING}
    assert _severities(_about(home, "clock", _line(paths=_skew(-45_000)))) == {CRITICAL}
    # disk, against each direction's own budget
    budget = 4 * 1024**3
    assert WARNING in _severities(_about(home, "disk", _line(disk_received=int(budget * 0.85))))
    assert CRITICAL in _severities(_about(home, "disk", _line(disk_sent=int(budget * 0.96))))
    # the pinned peer certificate
    assert _severities([f for f in _about(home, "certificate", _line(peer_tls_cert=_cert(10))) if "NDMC" in f.text]) \
        == {WARNING}  # fmt: skip
    expired = [f for f in _about(home, "certificate", _line(peer_tls_cert=_cert(-1))) if "NDMC" in f.text]
    assert _severities(expired) == {CRITICAL} and "EXPIRED" in expired[0].text and expired[0].fix
    # the line's last proof: tests at 08:00 and 20:00, 300 s to answer, 15 min of slack
    assert _severities(_about(home, "line test", _line(since_last_proven_ms=13 * HOUR_MS))) == {WARNING}
    assert _severities(_about(home, "line test", _line(since_last_proven_ms=26 * HOUR_MS))) == {CRITICAL}
    assert _severities(_about(home, "line test", _line(last_test="missed"))) == {WARNING}
    never = _about(home, "line test", _line(since_last_proven_ms=None, created_at=NOW - 600_000))
    assert _severities(never) == {OK} and "since pairing" in never[0].text
    # the line and its paths
    assert CRITICAL in _severities(_about(home, "line", _line(halted=True)))
    assert CRITICAL in _severities(_about(home, "line", _line(synced=False)))
    one_down = _line()
    one_down["paths"]["10.0.1.1:7401"].update(up=False, reason="connection refused")
    assert _severities(_about(home, "path", one_down)) == {OK, WARNING}
    for p in one_down["paths"].values():
        p["up"] = False
    assert _severities(_about(home, "path", one_down)) == {CRITICAL}
    # checkpoints not keeping up
    assert _severities(_about(home, "checkpoint", _line(checkpoint_lag_ms=20 * 60_000))) == {WARNING}
    # the store
    damaged = _about(home, "store", integrity=["*** in database main ***", "Page 7 is never used"])
    assert _severities(damaged) == {CRITICAL} and "redline restore" in damaged[0].fix


@pytest.mark.parametrize("step", [+1, -1])
def test_a_store_of_another_version_is_not_called_damaged_nor_sent_to_a_backup(home: StationDir, step: int) -> None:
    """A stopped station whose store a newer redline wrote (a rollback), or an older one (an upgrade
    not started yet): its read-only open refuses the version. That is not damage, and restoring a
    backup, the damaged store's advice, would throw away everything newer than the backup."""
    db = sqlite3.connect(home.ledger_path)
    with db:
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + step),))
    db.close()
    found = [f for f in examine(home, doctor.stopped_facts(home, NOW, doctor.Thresholds())) if f.check == "store"]
    assert len(found) == 1, found
    assert f"schema version {SCHEMA_VERSION + step}" in found[0].text and "integrity" not in found[0].text
    assert "redline restore" not in found[0].fix
    if step > 0:
        assert found[0].severity == CRITICAL and "cannot open" in found[0].text
        assert "release that wrote it" in found[0].fix
    else:
        assert found[0].severity == WARNING and "start the station once" in found[0].fix


def test_backup_age_and_verification(home: StationDir) -> None:
    last = json.loads((home.path / backup.LAST_BACKUP).read_text())

    def at(**changes: Any) -> set[str]:
        (home.path / backup.LAST_BACKUP).write_text(json.dumps({**last, **changes}))
        return _severities(_about(home, "backup"))

    assert at() == {OK}
    assert at(taken_at=NOW - 30 * HOUR_MS) == {WARNING}
    assert at(taken_at=NOW - 8 * 24 * HOUR_MS) == {CRITICAL}
    assert at(verified=False) == {CRITICAL}
    assert at(path=str(home.path / "gone")) == {WARNING}
    (home.path / backup.LAST_BACKUP).unlink()
    assert _severities(_about(home, "backup")) == {WARNING}


def test_exit_codes_follow_the_worst_finding() -> None:
    assert doctor.SEVERITY_EXIT == {OK: 0, WARNING: 1, CRITICAL: 2}
    assert worst([Finding("a", OK, "")]) == OK
    assert worst([Finding("a", OK, ""), Finding("b", WARNING, "")]) == WARNING
    assert worst([Finding("a", CRITICAL, ""), Finding("b", WARNING, "")]) == CRITICAL


def test_the_doctor_names_every_dependency_and_warns_about_an_old_one(monkeypatch: Any) -> None:
    from importlib import metadata

    from redline import doctor

    [ok] = doctor._dependencies()
    assert ok.severity == doctor.OK and "pynacl" in ok.text and "OpenSSL" in ok.text
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.1" if name == "shapely" else real(name))
    [old] = doctor._dependencies()
    assert old.severity == doctor.WARNING and "shapely 0.1 is older than 2" in old.text and old.fix


def test_the_doctor_of_a_postgres_station_does_not_read_a_sqlite_file_that_is_not_there(tmp_path: Path) -> None:
    from redline import doctor
    from redline.home import StationDir

    home = StationDir(tmp_path / "st")
    home.init(name="EUCOM", lang="en", listen=["127.0.0.1:7401"])
    cfg = json.loads(home.config_path.read_text())
    cfg["store"] = "postgresql://redline@db.example/redline_eucom"
    home.config_path.write_text(json.dumps(cfg))
    facts = doctor.stopped_facts(home, 0, doctor.Thresholds())
    assert facts.integrity == [doctor.ON_POSTGRES]
    [store] = [f for f in doctor.examine(home, facts) if f.check == "store"]
    assert store.severity == doctor.OK and "PostgreSQL" in store.text
