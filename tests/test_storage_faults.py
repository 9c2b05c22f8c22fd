"""Storage faults (issue 2): a full disk under a running station, and a damaged store at start.

Guarantee 1 says "accepted" means committed here. So when the disk fills up, the station must
stop accepting with a clear error instead of receipting or acknowledging what it did not store,
and carry on by itself once there is space again, with nothing lost and nothing stored twice. And
when its store was damaged while it was down (file truncated, WAL corrupted, a page zeroed), it
must refuse to start, say what is damaged and how to recover, and leave the damaged files exactly
as they were, because SQLite on its own would silently drop what follows a bad WAL frame and then
delete the WAL. The recovery it names (restore a backup; the station re-fetches the rest from the
peer) is run here end to end with real station processes.

The disk is a real tmpfs mounted for the test where the machine allows it (root and ``mount``);
otherwise, and in addition, a file-size limit (RLIMIT_FSIZE, set on the running station process
with prlimit) makes SQLite's writes fail the way a full disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redline import canonical
from redline.envelope import seal, split
from redline.errors import StorageError
from redline.home import StationDir
from redline.ledger import integrity
from redline.ledger.sqlite import Ledger
from redline.testing import SessionPair
from tests.procs import StationProc, both, paired_stations, wait_until

pytestmark = pytest.mark.timeout(120)

FULL = "database or disk is full"
BIG = "x" * 60_000  # near max_text_bytes: a few of these fill what is left of the disk


# -- helpers ------------------------------------------------------------------------------------------


def rl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env, timeout=60)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of the store (and only those), by content hash."""
    files = sorted(p for p in folder.iterdir() if p.name.startswith("ledger"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def seqs_and_texts(store: Path, line: str, sender: str) -> list[tuple[int, str]]:
    ledger = Ledger(store)
    try:
        out = []
        for seq, raw in ledger.raw_envelopes(line, sender):
            body = split(raw).body_bytes
            assert body is not None
            out.append((seq, canonical.decode_object(body, "body")["content"].get("text", "")))
        return out
    finally:
        ledger.close()


def raw_chain(store: Path, line: str, sender: str) -> list[bytes]:
    ledger = Ledger(store)
    try:
        return [raw for _, raw in ledger.raw_envelopes(line, sender)]
    finally:
        ledger.close()


def equivocations(store: Path) -> int:
    ledger = Ledger(store)
    try:
        return len(ledger.equivocations())
    finally:
        ledger.close()


def verify_ok(home: Path) -> None:
    out = rl("verify", "--station", str(home))
    assert out.returncode == 0 and "VERIFIED" in out.stdout, out.stdout + out.stderr


def wal_frames(wal: Path) -> tuple[int, list[tuple[int, bool]]]:
    """(page size, [(offset, is_commit)]) of the frames of the WAL's current generation."""
    data = wal.read_bytes()
    page_size, salts = struct.unpack_from(">I", data, 8)[0], data[16:24]
    frames = []
    off = 32
    while off + 24 + page_size <= len(data) and data[off + 8 : off + 16] == salts:
        frames.append((off, struct.unpack_from(">I", data, off + 4)[0] != 0))
        off += 24 + page_size
    return page_size, frames


def corrupt_wal_frame(wal: Path) -> int:
    """Flip one byte in the page of a frame that has committed transactions after it; return how
    many committed transactions follow the damaged frame."""
    page_size, frames = wal_frames(wal)
    commits = [i for i, (_, c) in enumerate(frames) if c]
    assert len(commits) >= 4, f"the WAL holds too few transactions to damage one in the middle: {len(commits)}"
    victim = commits[len(commits) // 2 - 1] + 1  # the first frame of a transaction in the middle
    with open(wal, "r+b") as f:
        f.seek(frames[victim][0] + 24 + page_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x5A]))
    return sum(1 for i in commits if i >= victim)


def serve_refuses(home: Path) -> str:
    """``redline serve`` on a damaged store: exits at once, non-zero, and says why on stderr."""
    started = time.monotonic()
    out = rl("serve", "--station", str(home))
    assert out.returncode == 1, out.stdout + out.stderr
    assert time.monotonic() - started < 20
    message = " ".join(out.stderr.split())
    assert "is damaged" in message, message
    assert "restore" in message and "backup" in message and "peer" in message, message
    return message


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionPair]:
    """Two stations' real stores with traffic both ways, one transaction per envelope burst. The
    ledgers stay open, so each store still has its WAL, as after a crash or a power cut."""
    pair = SessionPair(tmp_path_factory.mktemp("traffic"), paths=1)
    pair.run()
    for i in range(24):
        pair.send("a", f"EUCOM {i}")
        pair.send("b", f"NDMC {i}")
        pair.run()
    yield pair
    pair.close()


def copy_station(pair: SessionPair, dest: Path, *, clean: bool) -> Path:
    """A copy of EUCOM's whole station directory (keys, config, store): as it is on disk with its
    WAL (``clean=False``), or as left by a clean shutdown, the WAL checkpointed into the file."""
    src = pair.dir_a.path
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("control.sock"))
    if clean:
        db = sqlite3.connect(dest / "ledger.sqlite")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()  # the last connection: checkpoints and removes the WAL
        assert not (dest / "ledger.sqlite-wal").exists()
    return dest


# -- a damaged store: refused at start, left as found, says how to recover ----------------------------


def test_intact_store_with_its_wal_opens(traffic: SessionPair, tmp_path: Path) -> None:
    home = copy_station(traffic, tmp_path / "eucom", clean=False)
    assert (home / "ledger.sqlite-wal").stat().st_size > 0
    ledger = Ledger(home / "ledger.sqlite")
    try:
        assert ledger.head(traffic.line, traffic.a.us)[0] == 24
    finally:
        ledger.close()


@pytest.mark.parametrize("cut", ["half", "one page", "mid-page"])
def test_truncated_store_is_refused_at_start_and_left_as_found(traffic: SessionPair, tmp_path: Path, cut: str) -> None:
    home = copy_station(traffic, tmp_path / "eucom", clean=True)
    store = home / "ledger.sqlite"
    size, page = store.stat().st_size, 4096
    new_size = {"half": size // 2 // page * page, "one page": size - page, "mid-page": size - page // 2}[cut]
    os.truncate(store, new_size)
    before = snapshot(home)
    with pytest.raises(StorageError, match="is damaged: the file is truncated"):
        Ledger(store)
    message = serve_refuses(home)
    assert "truncated" in message
    assert snapshot(home) == before


def test_corrupted_wal_frame_is_refused_where_sqlite_would_silently_drop_commits(
    traffic: SessionPair, tmp_path: Path
) -> None:
    home = copy_station(traffic, tmp_path / "eucom", clean=False)
    lost = corrupt_wal_frame(home / "ledger.sqlite-wal")
    before = snapshot(home)
    message = serve_refuses(home)
    assert f"SQLite would silently drop the {lost} committed transaction(s) after it" in message
    assert snapshot(home) == before, "the refused store was touched (checkpointed or its WAL removed)"
    # Why the check exists: SQLite itself opens the same files without a word and shows less.
    shutil.copytree(home, tmp_path / "plain")
    db = sqlite3.connect(tmp_path / "plain" / "ledger.sqlite")
    try:
        held = db.execute("SELECT count(*) FROM envelopes").fetchone()[0]
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        db.close()
    assert held < 48, "the corrupted frame did not cost SQLite any committed envelope; the test proves nothing"


def test_corrupted_wal_header_is_refused(traffic: SessionPair, tmp_path: Path) -> None:
    home = copy_station(traffic, tmp_path / "eucom", clean=False)
    wal = home / "ledger.sqlite-wal"
    with open(wal, "r+b") as f:
        f.seek(12)
        f.write(b"\xff\xff\xff\xff")  # the checkpoint sequence: the header checksum no longer matches
    before = snapshot(home)
    assert "header of its write-ahead log ledger.sqlite-wal is corrupt" in serve_refuses(home)
    assert snapshot(home) == before


@pytest.mark.parametrize("which", ["envelopes root", "envelopes leaf", "outbox root"])
def test_zeroed_page_is_refused_at_start_and_left_as_found(traffic: SessionPair, tmp_path: Path, which: str) -> None:
    home = copy_station(traffic, tmp_path / "eucom", clean=True)
    store = home / "ledger.sqlite"
    db = sqlite3.connect(store)
    try:
        table = which.split()[0]
        if which.endswith("root"):
            (page,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()
        else:
            (page,) = db.execute(
                "SELECT pageno FROM dbstat WHERE name=? AND pagetype='leaf' ORDER BY pageno LIMIT 1 OFFSET 2", (table,)
            ).fetchone()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    with open(store, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(bytes(page_size))
    before = snapshot(home)
    message = serve_refuses(home)
    assert "integrity check found" in message and f"table {table}" in message, message
    assert snapshot(home) == before


def test_store_behind_a_symlink_has_its_wal_checked_where_sqlite_keeps_it(traffic: SessionPair, tmp_path: Path) -> None:
    home = copy_station(traffic, tmp_path / "eucom", clean=False)
    volume = tmp_path / "volume"
    volume.mkdir()
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        shutil.move(home / name, volume / name)
    (home / "ledger.sqlite").symlink_to(volume / "ledger.sqlite")
    corrupt_wal_frame(volume / "ledger.sqlite-wal")
    assert "write-ahead log ledger.sqlite-wal is corrupt" in serve_refuses(home)


# -- a write that fails surfaces as StorageError --------------------------------------------------


def test_a_write_that_fails_before_commit_is_a_storage_error_and_nothing_is_kept(tmp_path: Path) -> None:
    """Disk full while SQLite spills a large transaction to the WAL (before COMMIT): the caller gets
    StorageError with SQLite's reason, not a raw sqlite3 error, and the ledger goes on."""
    pair = SessionPair(tmp_path, paths=1)
    try:
        ledger, line, keys = pair.a.ledger, pair.line, pair.dir_a.load_keys()
        ledger._db.execute("PRAGMA cache_size=-64")  # 64 KiB of page cache: a big batch must spill
        store = pair.dir_a.ledger_path
        wal = Path(f"{store}-wal")
        limit = max(store.stat().st_size, wal.stat().st_size if wal.exists() else 0) + 64 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        envs, prev = [], None
        for seq in range(1, 9):
            env = seal(
                keys.signing, line=line, sender=keys.fingerprint, key=keys.key_id, seq=seq, sent_at=1, kind="TEXT",
                prio="ROUTINE", prev=prev, seen_seq=0, seen_id=None, lang="en", content={"text": BIG}, salt=bytes(16),
            )  # fmt: skip
            envs.append(env)
            prev = env.id
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # Python ignores SIGXFSZ: writes get EFBIG
            failed = f"nothing from this batch was accepted: ({FULL}|disk I/O error)"
            with pytest.raises(StorageError, match=failed), ledger.batch():
                for env in envs:
                    ledger.append(env, 1)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert not ledger._db.in_transaction
        assert ledger.head(line, keys.fingerprint) == (0, None)
        assert ledger.append(envs[0], 1) is True  # space again: the ledger carries on
    finally:
        pair.close()


# -- the disk fills up under a running station --------------------------------------------------------


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path | None]:
    """A fresh tmpfs of ``size``, or None where this machine does not let us mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield None
        return
    mnt = Path(tempfile.mkdtemp(prefix="redline-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        mnt.rmdir()
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


class SmallDisk:
    """The disk under EUCOM's store runs out (``fill``) and gets space back (``free``)."""

    def __init__(self, how: str, mnt: Path | None, proc: StationProc) -> None:
        self.how, self.mnt, self.proc = how, mnt, proc

    def fill(self, leave: int) -> None:
        if self.mnt is not None:
            st = os.statvfs(self.mnt)
            (self.mnt / "ballast").write_bytes(bytes(max(0, st.f_bavail * st.f_frsize - leave)))
        else:
            assert self.proc.proc is not None
            home = self.proc.home
            files = [home / "ledger.sqlite", home / "ledger.sqlite-wal", self.proc.log]
            biggest = max(p.stat().st_size for p in files if p.exists())
            resource.prlimit(self.proc.proc.pid, resource.RLIMIT_FSIZE, (biggest + leave, resource.RLIM_INFINITY))

    def free(self) -> None:
        if self.mnt is not None:
            (self.mnt / "ballast").unlink()
        else:
            assert self.proc.proc is not None
            resource.prlimit(self.proc.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)


async def send(proc: StationProc, line: str, text: str) -> dict[str, Any]:
    try:
        return {"ok": True, **(await proc.call({"op": "send", "line": line, "text": text}))}
    except Exception as exc:
        return {"ok": False, "error": str(exc)}


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_full_disk_stops_acceptance_with_a_clear_error_then_resumes_losing_nothing(tmp_path: Path, how: str) -> None:
    async def main(mnt: Path | None) -> None:
        a, b, line, _ = await paired_stations(tmp_path, relays=False)
        try:
            if mnt is not None:  # EUCOM's store moves to the small disk (its log stays where it was)
                a.stop()
                store = a.home / "ledger.sqlite"
                shutil.move(store, mnt / "ledger.sqlite")
                store.symlink_to(mnt / "ledger.sqlite")
                await a.start()
                await wait_until(lambda: both(a, b, lambda ln: ln["synced"]), "line in sync again")
            disk = SmallDisk(how, mnt, a)
            accepted_a: list[str] = []
            sent_b: list[str] = []
            for i in range(2):  # some traffic while there is room
                assert (await send(a, line, f"EUCOM {i}"))["ok"]
                accepted_a.append(f"EUCOM {i}")
                assert (await send(b, line, f"NDMC {i}"))["ok"]
                sent_b.append(f"NDMC {i}")
            await wait_until(lambda: both(a, b, lambda ln: ln["their_seq"] == 2 and ln["unreceipted"] == 0), "room")

            disk.fill(leave=200_000)
            refusals: list[str] = []
            for i in range(2, 14):
                r = await send(b, line, f"NDMC {i} {BIG}")  # NDMC's disk is fine: it accepts
                assert r["ok"], r
                sent_b.append(f"NDMC {i} {BIG}")
                r = await send(a, line, f"EUCOM {i} {BIG}")
                if r["ok"]:
                    accepted_a.append(f"EUCOM {i} {BIG}")
                else:
                    refusals.append(r["error"])
                # Never a receipt for what EUCOM did not store: what NDMC counts as receipted is held.
                st_b = await b.status_line()
                held_at_a = (await a.status_line())["their_seq"]
                assert st_b["our_seq"] - st_b["unreceipted"] <= held_at_a, (st_b, held_at_a)
                await asyncio.sleep(0.1)
            assert refusals, "the disk never filled up; the test proved nothing"
            # ENOSPC reads "database or disk is full"; a file-size limit (EFBIG), "disk I/O error" and a hint.
            assert all("nothing from this batch was accepted" in e for e in refusals), refusals
            assert all(FULL in e or "it may be full" in e for e in refusals), refusals
            st_a = await a.call({"op": "status"})
            assert any("STORAGE FAILURE" in al["text"] for al in st_a["alarms"]), st_a["alarms"]
            assert (await b.status_line())["unreceipted"] > 0, "NDMC's messages cannot all be stored at EUCOM"

            disk.free()  # the operator frees space: no restart, the line catches up by itself
            await wait_until(
                lambda: both(a, b, lambda ln: ln["outbox"] == 0 and ln["unreceipted"] == 0 and ln["synced"]),
                "the line caught up after space came back", timeout=60,
            )  # fmt: skip
            st_a, st_b = await a.status_line(), await b.status_line()
            assert st_a["their_seq"] == st_b["our_seq"] == len(sent_b)
            assert st_b["their_seq"] == st_a["our_seq"] == len(accepted_a)
        finally:
            a.stop()
            b.stop()
        fa, fb = (StationDir(p.home).load_keys().fingerprint for p in (a, b))
        store_a, store_b = StationDir(a.home).ledger_path, StationDir(b.home).ledger_path
        # Exactly what was accepted, once each, in order; the refused ones nowhere.
        assert [t for _, t in seqs_and_texts(store_a, line, fa)] == accepted_a
        assert [t for _, t in seqs_and_texts(store_a, line, fb)] == sent_b
        assert raw_chain(store_a, line, fa) == raw_chain(store_b, line, fa)
        assert raw_chain(store_a, line, fb) == raw_chain(store_b, line, fb)
        for home in (a.home, b.home):
            verify_ok(home)
        log = " ".join(a.log.read_text().split())
        assert "STORAGE FAILURE" in log and "Task exception was never retrieved" not in log

    with tmpfs("16m") as mnt:
        if how == "tmpfs" and mnt is None:
            pytest.skip("this machine does not let the test mount a tmpfs; the rlimit case covers the full disk")
        asyncio.run(main(mnt if how == "tmpfs" else None))


# -- the recovery the refusal names, end to end ------------------------------------------------------


def backup(store: Path, dest: Path) -> None:
    """What ``sqlite3 ledger.sqlite ".backup FILE"`` does: a consistent copy while the station runs."""
    src, dst = sqlite3.connect(f"file:{store}?mode=ro", uri=True), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.mark.timeout(120)
def test_damaged_store_recovers_from_a_backup_and_the_peer_without_reusing_a_seq(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, line, _ = await paired_stations(tmp_path, relays=False)
        home = a.home
        store = StationDir(home).ledger_path
        try:
            for i in range(12):
                await send(a, line, f"EUCOM {i}")
                await send(b, line, f"NDMC {i}")
            await wait_until(lambda: both(a, b, lambda ln: ln["their_seq"] == 12 and ln["unreceipted"] == 0), "12")
            backup(store, tmp_path / "backup.sqlite")
            for i in range(12, 30):
                await send(a, line, f"EUCOM {i}")
                await send(b, line, f"NDMC {i}")
            await wait_until(lambda: both(a, b, lambda ln: ln["their_seq"] == 30 and ln["unreceipted"] == 0), "30")
            a.kill9()  # the WAL stays, as after a crash
            lost = corrupt_wal_frame(Path(f"{store}-wal"))
            assert lost >= 1
            before = snapshot(home)
            message = serve_refuses(home)
            assert "write-ahead log ledger.sqlite-wal is corrupt" in message
            assert snapshot(home) == before

            # The operator does what the message says: damaged files aside, the backup in their place.
            aside = tmp_path / "damaged"
            aside.mkdir()
            for name in before:
                shutil.move(home / name, aside / name)
            shutil.copy(tmp_path / "backup.sqlite", store)
            await a.start()
            await wait_until(
                lambda: both(a, b, lambda ln: ln["our_seq"] == 30 and ln["their_seq"] == 30 and ln["synced"]),
                "EUCOM recovered both chains from NDMC",
            )  # fmt: skip
            st = await a.call({"op": "status"})
            assert any("recovering our own envelopes 13..30" in al["text"] for al in st["alarms"]), st["alarms"]
            assert (await send(a, line, "EUCOM after the restore"))["ok"]
            assert (await send(b, line, "NDMC after the restore"))["ok"]
            await wait_until(lambda: both(a, b, lambda ln: ln["their_seq"] == 31 and ln["unreceipted"] == 0), "31")
        finally:
            a.stop()
            b.stop()
        fa, fb = (StationDir(p.home).load_keys().fingerprint for p in (a, b))
        store_b = StationDir(b.home).ledger_path
        ours = seqs_and_texts(store, line, fa)
        assert ours == [(i + 1, f"EUCOM {i}") for i in range(30)] + [(31, "EUCOM after the restore")]
        assert raw_chain(store, line, fa) == raw_chain(store_b, line, fa)  # no seq reused: byte for byte
        assert raw_chain(store, line, fb) == raw_chain(store_b, line, fb)
        assert equivocations(store) == equivocations(store_b) == 0
        for h in (a.home, b.home):
            verify_ok(h)

    asyncio.run(main())


@given(data=st.binary(min_size=0, max_size=4096).map(lambda b: b[: len(b) // 8 * 8]),
       s0=st.integers(0, 2**32 - 1), s1=st.integers(0, 2**32 - 1), big=st.booleans())  # fmt: skip
def test_the_wal_checksum_is_sqlites_rule_step_by_step(data: bytes, s0: int, s1: int, big: bool) -> None:
    """integrity._checksum reduces modulo 2**32 once per 64 word pairs: the same sums as SQLite's
    rule, which reduces at every step (https://www.sqlite.org/fileformat2.html#walformat)."""
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    r0, r1 = s0, s1
    for i in range(0, len(words), 2):
        r0 = (r0 + words[i] + r1) & 0xFFFFFFFF
        r1 = (r1 + words[i + 1] + r0) & 0xFFFFFFFF
    assert integrity._checksum(data, s0, s1, big) == (r0, r1)
