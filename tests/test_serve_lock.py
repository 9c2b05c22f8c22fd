"""One process at a time serves a station's folder (``StationDir.hold``: an flock on serve.lock).

Whether a station runs was judged by its control socket alone, which a second ``redline serve``
deleted on its way out (it opened the store, failed to bind the ports, and cleaned up the socket
as its own), after it had already sealed the running station's live call recording as one a
crash interrupted. Readers then checked the raw files of a live store, and ``store migrate`` could
have moved it. Now the folder is held by the process that serves it, from before it reads
anything to after its store is closed; readers and ``store migrate`` ask the lock, not the socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from redline.control_client import station_answers
from redline.errors import ConfigError, StationBusyError
from redline.home import StationDir
from redline.ledger.migrate import migrate_to_postgres
from redline.station import Station
from redline.testing import free_ports, make_station
from tests.procs import StationProc


def _holder(home: StationDir, how: str) -> subprocess.Popen[str]:
    """Another process that holds ``home``: exclusively (``hold``) or shared as a reader checking the
    store's files (``_opening``), until its standard input closes."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from redline.home import StationDir
        home = StationDir(Path({str(home.path)!r}))
        if {how!r} == "hold":
            home.hold("a test holder")
            print("held", flush=True)
            sys.stdin.read()
        else:
            with home._opening() as serving:
                print("reading", serving, flush=True)
                sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() in ("held", "reading False")
    return proc


def test_a_folder_another_process_holds_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    home = make_station(tmp_path, "EUCOM", "en", port)
    other = _holder(home, "hold")
    try:
        assert home.served()  # what readers ask instead of the control socket, which is not there
        assert not home.control_path.exists()
        with pytest.raises(StationBusyError) as refused:
            Station(home)
        assert f"pid {other.pid} (a test holder)" in str(refused.value) and "\n" not in str(refused.value)
        with pytest.raises(ConfigError, match="must be stopped first"):
            migrate_to_postgres(home, "postgresql://nobody@127.0.0.1:1/none")  # refused before any connection
    finally:
        other.communicate("")
    assert not home.served()
    st = Station(home)  # the holder gone, the folder is free (as after kill -9: the kernel drops the lock)
    asyncio.run(st.close())


def test_a_reader_checking_the_files_is_waited_for_not_taken_for_a_station(tmp_path: Path) -> None:
    """A reader holds the folder shared while it checks the store's raw bytes: a station starting
    meanwhile waits for it (it is not refused, and does not open the store under the reader)."""
    (port,) = free_ports(1)
    home = make_station(tmp_path, "EUCOM", "en", port)
    home.hold("an earlier serve").release()  # served before: its lock file is there (the first serve makes it)
    reader = _holder(home, "read")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        starting = pool.submit(Station, home)
        with pytest.raises(concurrent.futures.TimeoutError):
            starting.result(timeout=0.3)  # waits for the reader (READERS_WAIT), is not refused
        reader.communicate("")
        st = starting.result(timeout=10)
    asyncio.run(st.close())


def test_a_control_socket_that_cannot_be_made_stops_the_start_in_one_line(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * max(1, 112 - len(str(tmp_path))))
    deep.mkdir()
    (port,) = free_ports(1)
    home = make_station(deep, "EUCOM", "en", port)
    assert len(str(home.control_path)) > 108  # over what AF_UNIX allows

    async def main() -> None:
        st = Station(home)
        try:
            with pytest.raises(ConfigError, match="cannot make the control socket") as refused:
                await st.start()
            assert "\n" not in str(refused.value)
        finally:
            await st.close()

    asyncio.run(main())
    assert not home.served()


@pytest.mark.slow
def test_a_second_serve_is_refused_and_leaves_the_running_station_alone(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    home = make_station(tmp_path, "EUCOM", "en", port)

    async def main() -> None:
        first = StationProc(home.path)
        await first.start()
        try:
            second = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "redline", "serve", "--station", str(home.path)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert second.returncode != 0
            said = (second.stdout + second.stderr).strip()
            assert first.proc is not None and f"pid {first.proc.pid} (redline serve)" in said, said
            assert "Traceback" not in said and len(said.splitlines()) == 1, said
            assert first.proc.poll() is None and station_answers(home.path)  # its socket is still there
            assert os.path.exists(home.path / "serve.lock")
        finally:
            await asyncio.to_thread(first.stop)

    asyncio.run(main())


def test_a_reader_never_makes_the_lock_file_and_one_the_station_cannot_open_is_one_line(tmp_path: Path) -> None:
    """A reader run first, as another user (root), made serve.lock 0600 as its own, and 'serve' then
    failed with a traceback. Readers make nothing; the station says in one line what to do."""
    (port,) = free_ports(1)
    home = make_station(tmp_path, "EUCOM", "en", port)
    assert not home.served() and not (home.path / "serve.lock").exists()
    (home.path / "serve.lock").mkdir()  # stands for a lock file this user cannot open
    with pytest.raises(ConfigError, match=r"cannot open .*serve\.lock.*chown it") as refused:
        Station(home)
    assert "\n" not in str(refused.value)



def test_a_key_change_on_a_stopped_station_is_refused_while_another_process_holds_it(tmp_path: Path) -> None:
    """`redline key rotate` and the like change a stopped station's store and key files without it
    (rotation.file_offline and friends): they hold the folder while they do, so none is made under
    a station that started meanwhile, and a station cannot start under them (review_s8 L1)."""
    from redline import rotation
    from redline.errors import LocalProtocolError

    (port,) = free_ports(1)
    home = make_station(tmp_path, "EUCOM", "en", port)
    other = _holder(home, "hold")
    try:
        for change in (lambda: rotation.file_offline(home), lambda: rotation.file_tls_offline(home)):
            with pytest.raises(StationBusyError, match="a test holder"):
                change()
    finally:
        other.communicate("")
    with pytest.raises(LocalProtocolError, match="no next signing key is prepared"):  # the folder free: on it goes
        rotation.file_offline(home)
    assert not home.served()
