"""Backups that restore (docs/OPERATIONS.md, "Backup and restore"), as the procedure is written.

The end-to-end test takes a backup with 'redline backup' while both stations send, loses EUCOM's
whole directory (kill -9, the directory gone), restores it with 'redline restore' and starts it:
the line resumes, both chains are byte for byte those the peer holds, no seq is reused and every
accepted message is there exactly once. The others are the refusals: a backup never holds the root
key, a tampered or foreign backup is refused before anything is written, a restore never
overwrites a station.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from redline import backup
from redline.canonical import decode_object
from redline.control import answer
from redline.envelope import split
from redline.home import StationDir
from redline.ledger.sqlite import Ledger
from redline.testing import make_station, pair_directly
from tests.procs import StationProc, both, free_ports, paired_stations, pipelined, wait_until
from tests.test_api import Pair
from tests.test_api import run as run_pair

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "a passphrase kept apart from the backup"
FAST_ENV = {"REDLINE_PWHASH_COST": "interactive"}  # Argon2id at 64 MiB: tests on a small machine


def rl(*args: str, station: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAST_ENV, "COLUMNS": "200"}
    if station is not None:
        env["REDLINE_STATION"] = str(station)
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env,
                          timeout=120, input=stdin)  # fmt: skip


def chain(store: Path, line: str, sender: str) -> list[tuple[int, bytes]]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT seq, raw FROM envelopes WHERE line=? AND sender=? ORDER BY seq", (line, sender)
        ).fetchall()
        return [(int(r[0]), bytes(r[1])) for r in rows]
    finally:
        db.close()


def texts(store: Path, line: str, sender: str) -> list[str]:
    ledger = Ledger.open_read_only(store)
    try:
        out = []
        for _, raw in ledger.raw_envelopes(line, sender):
            env = split(raw)
            header = decode_object(env.header_bytes, "header")
            if header["kind"] == "TEXT":
                out.append(str(decode_object(env.body_bytes, "body")["content"]["text"]))
        return out
    finally:
        ledger.close()


def equivocations(store: Path) -> int:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM equivocations").fetchone()[0])
    finally:
        db.close()


def verified(home: Path) -> bool:
    out = rl("verify", "--json", station=home)
    return out.returncode == 0 and all(r["ok"] for r in json.loads(out.stdout))


async def send_many(p: StationProc, line: str, prefix: str, n: int, start: int = 0) -> list[str]:
    """Send n messages, pipelined in bursts of 5 (so they share group commits); the texts accepted."""
    accepted = []
    for i in range(start, start + n, 5):
        batch = [f"{prefix} {j}" for j in range(i, min(i + 5, start + n))]
        answers = await pipelined(p.home, [{"op": "send", "line": line, "text": t} for t in batch])
        for t, a in zip(batch, answers, strict=True):
            assert a["ok"], a
            accepted.append(t)
    return accepted


@pytest.mark.slow
def test_backup_under_traffic_restores_and_the_line_resumes_with_no_seq_reused_and_nothing_lost(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        a, b, line, _ = await paired_stations(tmp_path / "run", relays=False)
        passfile = tmp_path / "passphrase"
        passfile.write_text(PASSPHRASE + "\n")
        passfile.chmod(0o600)
        dest = tmp_path / "backups" / "eucom-1"
        try:
            sent_a = await send_many(a, line, "EUCOM", 20)
            sent_b = await send_many(b, line, "NDMC", 20)
            # The backup is taken while both stations keep sending.
            traffic = asyncio.gather(send_many(a, line, "EUCOM", 60, 20), send_many(b, line, "NDMC", 60, 20))
            backup_args = ("backup", str(dest), "--station", str(a.home), "--secrets", "encrypt", "--passphrase-file",
                           str(passfile))  # fmt: skip
            took = await asyncio.to_thread(rl, *backup_args, "--json")
            more_a, more_b = await traffic
            sent_a, sent_b = sent_a + more_a, sent_b + more_b
            # ...and after it: a tail the backup certainly lacks, which NDMC holds.
            sent_a += await send_many(a, line, "EUCOM", 20, 80)
            sent_b += await send_many(b, line, "NDMC", 20, 80)
            assert took.returncode == 0, took.stderr
            report = json.loads(took.stdout)
            assert report["verified"] and report["taken_by"] == "the running station", report
            in_backup = report["lines"][0]["our_seq"]
            await wait_until(lambda: both(a, b, lambda ln: ln["their_seq"] == 100 and ln["unreceipted"] == 0
                                          and ln["outbox"] == 0), "everything receipted")  # fmt: skip
            assert 20 <= in_backup <= 80, report  # taken under traffic; the last 20 at least come from NDMC
            fa = (await a.call({"op": "status"}))["fingerprint"]
            fb = (await b.call({"op": "status"}))["fingerprint"]

            # EUCOM's disk is lost: the process is killed and its whole directory is gone.
            a.kill9()
            shutil.move(a.home, tmp_path / "lost-eucom")
            restore_args = ("restore", str(dest), "--station", str(a.home), "--passphrase-file", str(passfile))
            restored = rl(*restore_args)
            assert restored.returncode == 0, restored.stderr
            assert "signs nothing until the peer" in restored.stdout
            assert not (a.home / "keys" / "root.key").exists()  # the root key was never in the backup
            for name in ("signing.key", "tls.key"):
                assert stat.S_IMODE((a.home / "keys" / name).stat().st_mode) == 0o600
            store = StationDir(a.home).ledger_path
            assert len(chain(store, line, fa)) == in_backup

            await a.start()
            # At once, before it can have heard from NDMC: these must wait, and get seqs after the
            # tail the station recovers, never one the lost store had already used.
            after = [f"EUCOM after the restore {i}" for i in range(3)]
            answers = await pipelined(a.home, [{"op": "send", "line": line, "text": t} for t in after])
            assert all(x["ok"] for x in answers), answers
            sent_b += await send_many(b, line, "NDMC after the restore", 3)
            total_a, total_b = len(sent_a) + 3, len(sent_b)
            await wait_until(
                lambda: both(a, b, lambda ln: ln["synced"] and ln["our_seq"] + ln["their_seq"] == total_a + total_b
                             and ln["unreceipted"] == 0 and ln["outbox"] == 0), "the line resumed", timeout=90,
            )  # fmt: skip
            alarms = (await a.call({"op": "status"}))["alarms"]
            assert any("recovering our own envelopes" in al["text"] for al in alarms), alarms
        finally:
            a.stop()
            b.stop()
        store_a, store_b = StationDir(a.home).ledger_path, StationDir(b.home).ledger_path
        # Nothing lost, nothing twice, in the order accepted; the restarted station's first new
        # messages come after everything the lost store had signed.
        assert texts(store_a, line, fa) == sent_a + after
        assert texts(store_a, line, fb) == sent_b
        ours = chain(store_a, line, fa)
        assert [s for s, _ in ours] == list(range(1, len(ours) + 1))
        # No seq reused: both stations hold the same bytes at every seq of both chains.
        assert ours == chain(store_b, line, fa)
        assert chain(store_a, line, fb) == chain(store_b, line, fb)
        assert equivocations(store_a) == equivocations(store_b) == 0
        assert verified(a.home) and verified(b.home)
        # The procedure in docs/OPERATIONS.md is this one: the same commands with the same options.
        assert _flags(backup_args) == _documented("backup") and _flags(restore_args) == _documented("restore")

    asyncio.run(main())


def _flags(args: tuple[str, ...]) -> tuple[str, list[str]]:
    return args[0], sorted(a for a in args if a.startswith("--"))


def _documented(command: str) -> tuple[str, list[str]]:
    section = (ROOT / "docs" / "OPERATIONS.md").read_text().split("## 10. Backup and restore")[1].split("\n## ")[0]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"redline {command} "))
    return command, sorted(w for w in line.split() if w.startswith("--"))


def test_the_station_copies_its_store_in_a_worker_thread_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The online backup runs off the event loop (heartbeats keep flowing), on a read-only SQLite
    connection of the station's own process, and the copy is one consistent, self-contained file."""
    seen: list[str] = []
    real = backup.copy_store

    def spy(source: Path, dest: Path) -> None:
        seen.append(threading.current_thread().name)
        real(source, dest)

    monkeypatch.setattr(backup, "copy_store", spy)

    async def scenario(p: Pair) -> None:
        for i in range(10):
            await p.a.send(p.line, f"before the backup {i}")
        dest = tmp_path / "copy.sqlite"
        before = p.our_seq()  # everything signed so far must be in the copy
        got = await answer(p.a, {"op": "backup", "dest": str(dest)})  # the control socket's own table
        assert got["taken_at"] <= p.a.wall()
        assert seen and seen[0] != threading.main_thread().name
        assert stat.S_IMODE(dest.stat().st_mode) == 0o600
        assert not Path(f"{dest}-wal").exists()  # self-contained: no write-ahead log beside it
        copy = Ledger.open_read_only(dest)
        try:
            # (the station may sign more meanwhile, e.g. its roster: the copy is a state in between)
            assert before <= copy.head(p.line, p.a.keys.fingerprint)[0] <= p.our_seq()
        finally:
            copy.close()
        for bad in ("relative.sqlite", str(dest)):  # not absolute; already there
            with pytest.raises(backup.BackupError):
                await backup.station_backup(p.a, {"op": "backup", "dest": bad})

    run_pair(tmp_path, scenario)


# -- refusals, on stopped stations ----------------------------------------------------------------------
def _station_with_traffic(tmp_path: Path) -> tuple[StationDir, str]:
    pa, pb = free_ports(2)
    a, b = make_station(tmp_path, "EUCOM", "en", pa), make_station(tmp_path, "NDMC", "ru", pb)
    return a, pair_directly(a, b)


def test_a_backup_never_holds_the_root_key_and_seals_the_others(tmp_path: Path) -> None:
    home, _ = _station_with_traffic(tmp_path)
    dest = tmp_path / "bk"
    out = rl("backup", str(dest), "--secrets", "encrypt", "--json", station=home.path, stdin=PASSPHRASE + "\n")
    assert out.returncode == 0, out.stderr
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert "keys/root.key" not in files and "keys/signing.key" not in files and "keys/tls.key" not in files
    sealed = (dest / backup.SEALED).read_bytes()
    for name in ("root.key", "signing.key", "tls.key"):
        secret = (home.keys / name).read_bytes().strip()
        assert all(secret not in p.read_bytes() for p in dest.rglob("*") if p.is_file()), name
    assert stat.S_IMODE((dest / backup.SEALED).stat().st_mode) == 0o600 and sealed
    # A wrong passphrase restores nothing, and leaves no directory behind.
    target = tmp_path / "restored"
    wrong = rl("restore", str(dest), station=target, stdin="not the passphrase at all\n")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    assert not target.exists()
    right = rl("restore", str(dest), station=target, stdin=PASSPHRASE + "\n")
    assert right.returncode == 0, right.stderr
    for name in ("signing.key", "tls.key"):
        assert (target / "keys" / name).read_bytes() == (home.keys / name).read_bytes()
    assert rl("verify", station=target).returncode == 0


def test_a_tampered_backup_is_refused_before_anything_is_restored(tmp_path: Path) -> None:
    home, _ = _station_with_traffic(tmp_path)
    dest = tmp_path / "bk"
    assert rl("backup", str(dest), "--secrets", "omit", station=home.path).returncode == 0
    config = json.loads((dest / "config.json").read_text())
    config["listen"] = ["203.0.113.9:7401"]  # an attacker's address, slipped into the backup
    (dest / "config.json").write_text(json.dumps(config))
    target = tmp_path / "restored"
    out = rl("restore", str(dest), "--keys-from", str(home.keys), station=target)
    assert out.returncode == 1 and "config.json has changed since the backup was taken" in out.stderr
    assert not target.exists()


def test_a_user_slipped_into_a_backup_is_refused(tmp_path: Path) -> None:
    """A person added to the backup's users/ after it was taken would be published in our ROSTER and
    pinned by the peer: every file restored must be one the manifest lists, with its hash."""
    home, _ = _station_with_traffic(tmp_path)
    dest = tmp_path / "bk"
    assert rl("backup", str(dest), "--secrets", "omit", station=home.path).returncode == 0
    (dest / "users").mkdir(mode=0o700, exist_ok=True)
    (dest / "users" / "Intruder.json").write_text("{}")
    target = tmp_path / "restored"
    out = rl("restore", str(dest), "--keys-from", str(home.keys), station=target)
    assert out.returncode == 1 and "files its manifest does not list: users/Intruder.json" in out.stderr
    assert not target.exists()


def test_restore_with_another_stations_keys_is_refused(tmp_path: Path) -> None:
    home, _ = _station_with_traffic(tmp_path)
    dest = tmp_path / "bk"
    assert rl("backup", str(dest), "--secrets", "omit", station=home.path).returncode == 0
    other = make_station(tmp_path, "OTHER", "en", free_ports(1)[0])
    target = tmp_path / "restored"
    out = rl("restore", str(dest), "--keys-from", str(other.keys), station=target)
    assert out.returncode == 1 and "not signed by this station's signing key" in out.stderr  # checked first
    assert "the wrong key file" in out.stderr
    assert not target.exists()
    without = rl("restore", str(dest), station=target)
    assert without.returncode == 1 and "--keys-from" in without.stderr
    ok = rl("restore", str(dest), "--keys-from", str(home.keys), station=target)
    assert ok.returncode == 0, ok.stderr


def test_restore_never_overwrites_a_station(tmp_path: Path) -> None:
    home, _ = _station_with_traffic(tmp_path)
    dest = tmp_path / "bk"
    assert rl("backup", str(dest), "--secrets", "omit", station=home.path).returncode == 0
    before = {p: p.read_bytes() for p in home.path.rglob("*") if p.is_file()}
    out = rl("restore", str(dest), "--keys-from", str(home.keys), station=home.path)
    assert out.returncode == 1 and "not empty" in out.stderr
    assert {p: p.read_bytes() for p in home.path.rglob("*") if p.is_file()} == before
    again = rl("backup", str(dest), "--secrets", "omit", station=home.path)  # nor a backup over a backup
    assert again.returncode == 1 and "not empty" in again.stderr


def test_backup_of_a_damaged_store_is_refused(tmp_path: Path) -> None:
    home, _ = _station_with_traffic(tmp_path)
    with open(home.ledger_path, "r+b") as f:  # the station is stopped: plain file I/O is allowed here
        size = f.seek(0, 2)
        f.truncate(size - 1024)
    out = rl("backup", str(tmp_path / "bk"), "--secrets", "omit", station=home.path)
    assert out.returncode == 1 and "damaged" in out.stderr
    assert not (tmp_path / "bk").exists()
