"""The store is opened by SQLite only, once per process (docs/OPERATIONS.md, "The store").

On POSIX, closing *any* descriptor of a file drops every fcntl lock the process holds on it. A
station that opened its own ``ledger.sqlite`` with plain ``open()`` (to check it) while SQLite had
it open lost its locks; the next outside reader then believed it was the last connection,
checkpointed and deleted the live WAL, and everything the station committed afterwards went into
an unlinked file: gone after kill -9. These tests hold the promise end to end with real station
processes, and in-process at the seam that broke it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from redline import canonical, persons
from redline.envelope import split
from redline.errors import StorageError
from redline.home import StationDir
from redline.ledger import integrity
from redline.ledger.sqlite import Ledger
from tests.procs import StationProc, free_ports, paired_stations, wait_until
from tests.test_api import FAST, PASSWORD

SENDS = 50


class HttpStationProc(StationProc):
    """``redline serve --http`` in its own process: the console's API runs in the station's process."""

    def __init__(self, home: Path, http_port: int) -> None:
        super().__init__(home)
        self.http = f"127.0.0.1:{http_port}"

    async def start(self) -> None:
        sock = StationDir(self.home).control_path
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "redline", "serve", "--station", str(self.home), "--http", self.http],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=f"http://{self.http}") as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"station exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/api/openapi.json")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError("station's console did not start")


def store_locks(pid: int, store: Path) -> list[str]:
    """Lines of /proc/locks by ``pid`` on the store's inode (``MAJ:MIN:INODE`` names the file)."""
    inode = os.stat(store).st_ino
    with open("/proc/locks") as f:
        rows = f.read().splitlines()
    # The leading ordinal ("6:") numbers every lock on the machine and moves when other processes
    # take or drop theirs: only the rest of the row says what this process holds.
    return [
        " ".join(row.split()[1:]) for row in rows
        if row.split()[4] == str(pid) and row.split()[5].rsplit(":", 1)[-1] == str(inode)
    ]  # fmt: skip


def rl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    cmd = [sys.executable, "-m", "redline", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
@pytest.mark.timeout(300)
def test_console_verify_then_outside_readers_do_not_lose_the_live_wal(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, line, _ = await paired_stations(tmp_path, relays=False)
        (port,) = free_ports(1)
        persons.add_user(a.home, "Duty EUCOM", "duty", PASSWORD, **FAST)
        a.stop()
        a = HttpStationProc(a.home, port)
        store = StationDir(a.home).ledger_path
        try:
            await a.start()
            assert a.proc is not None
            pid = a.proc.pid
            assert store_locks(pid, store), "the station holds SQLite's lock on its store"
            async with httpx.AsyncClient(base_url=f"http://{a.http}", timeout=60) as client:
                r = await client.post("/api/login", json={"user": "Duty EUCOM", "password": PASSWORD})
                assert r.status_code == 200, r.text
                # verification in the station's own process: must not touch the store but through SQLite
                r = await client.get("/api/verify")
                assert r.status_code == 200 and r.json()["ok"] is True, r.text
                assert store_locks(pid, store), "the console's verify dropped the station's lock on its store"
                # outside readers, in their own processes, open and close the store
                shown = rl("log", "NDMC", "--station", str(a.home))
                assert shown.returncode == 0, shown.stderr
                checked = rl("verify", "--station", str(a.home))
                assert checked.returncode == 0 and "VERIFIED" in checked.stdout, checked.stdout + checked.stderr
                assert store_locks(pid, store), "the station's lock on its store is gone"
                assert (store.parent / "ledger.sqlite-wal").exists()
                texts = [f"after verify {i:02d}" for i in range(SENDS)]
                for i, text in enumerate(texts):
                    r = await client.post(f"/api/lines/{line}/send", json={"text": text, "idempotency_key": f"k{i}"})
                    assert r.status_code == 200, r.text  # accepted: durable in EUCOM's store
            assert store_locks(pid, store)
            a.kill9()
            a = HttpStationProc(a.home, port)
            await a.start()
            fa = StationDir(a.home).load_keys().fingerprint
            # every accepted message survived the kill, in EUCOM's store and delivered to the peer
            await wait_until(lambda: _all_there(b.home, line, fa, texts), "all 50 at the peer", timeout=60)
            assert texts_in_chain(a.home, line, fa)[-SENDS:] == texts
            assert texts_in_chain(b.home, line, fa)[-SENDS:] == texts
        finally:
            a.stop()
            b.stop()

    asyncio.run(main())


def texts_in_chain(home: Path, line: str, sender: str) -> list[str]:
    """The texts of ``sender``'s chain as held in the store at ``home`` (read-only, SQLite only)."""
    ledger = Ledger.open_read_only(StationDir(home).ledger_path)
    try:
        out = []
        for _, raw in ledger.raw_envelopes(line, sender):
            body = split(raw).body_bytes
            content = canonical.decode_object(body, "body")["content"] if body else {}
            if isinstance(content.get("text"), str):
                out.append(content["text"])
        return out
    finally:
        ledger.close()


async def _all_there(home: Path, line: str, sender: str, texts: list[str]) -> bool:
    return texts_in_chain(home, line, sender)[-len(texts) :] == texts


# -- the seam, in one process -------------------------------------------------------------------------
def _store(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    Ledger(path, create=True, station="ab" * 32).close()
    return path


def test_raw_read_of_a_store_this_process_has_open_is_refused(tmp_path: Path) -> None:
    path = _store(tmp_path)
    ledger = Ledger(path)
    try:
        before = store_locks(os.getpid(), path)
        assert before
        with pytest.raises(integrity.StoreInUseError, match="open through SQLite"):
            integrity.check_files(path)
        # by another name for the same file, too
        link = tmp_path / "link.sqlite"
        link.symlink_to(path)
        with pytest.raises(integrity.StoreInUseError):
            integrity.check_files(link)
        assert store_locks(os.getpid(), path) == before  # nothing was opened, so no lock was dropped
    finally:
        ledger.close()
    integrity.check_files(path)  # closed: the check may read the files again
    assert not integrity.is_open_here(path)


def test_second_open_in_one_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    path = _store(tmp_path)
    writer = Ledger(path)
    try:
        before = store_locks(os.getpid(), path)
        for reader in (Ledger.open_read_only(path), Ledger(path)):
            reader.close()
            assert store_locks(os.getpid(), path) == before
        assert integrity.is_open_here(path)
    finally:
        writer.close()
    assert not integrity.is_open_here(path)


def test_read_only_open_cannot_write_and_reads_one_snapshot(tmp_path: Path) -> None:
    path = _store(tmp_path)
    writer = Ledger(path)
    reader = Ledger.open_read_only(path)
    try:
        with pytest.raises(StorageError):
            reader.accept("line", "TEXT", "ROUTINE", {"text": "no"}, None, 1)
        with reader.snapshot():
            before = reader.max_outbox_local()
            writer.accept("line", "TEXT", "ROUTINE", {"text": "yes"}, None, 1)
            assert reader.max_outbox_local() == before  # the snapshot holds while the writer commits
        assert reader.max_outbox_local() == before + 1
    finally:
        reader.close()
        writer.close()


def test_a_ledger_dropped_without_close_is_forgotten(tmp_path: Path) -> None:
    path = _store(tmp_path)
    Ledger(path)  # not closed: the garbage collector closes the connection, and the registry forgets it
    import gc

    gc.collect()
    assert not integrity.is_open_here(path)


@pytest.mark.slow
def test_outside_readers_beside_a_running_station_never_read_its_files_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a station runs, only SQLite touches its store's files, from any process: 'redline log',
    'verify' and 'export' open it through SQLite without the raw-bytes check (the station made it
    when it opened them). A stopped station's store is checked raw before SQLite reads it."""
    raw_reads: list[Path] = []
    monkeypatch.setattr(integrity, "check_files", lambda path: raw_reads.append(path))

    async def main() -> None:
        a, b, line, _ = await paired_stations(tmp_path, relays=False)
        home = StationDir(a.home)
        try:
            for opened in (home.read_ledger(), home.open_ledger()):  # log and export; verify
                assert opened.find_line(line).line == line
                opened.close()
            assert raw_reads == [], "a reader read the running station's files outside SQLite"
        finally:
            a.stop()
            b.stop()
        home.read_ledger().close()
        assert raw_reads == [home.ledger_path], "a stopped station's store is checked raw first"

    asyncio.run(main())
