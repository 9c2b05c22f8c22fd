"""What the control clients say when a station stops answering mid-request names the station's
folder; it was a ``str.format`` template with the folder's path inside, so a path holding braces
("duty{1}") turned that one line into a KeyError traceback."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from redline.control import call
from redline.control_client import call_blocking
from redline.errors import ControlError
from redline.home import StationDir


def _station_that_hangs_up(folder: Path) -> socket.socket:
    """A control socket that takes each request and closes without an answer."""
    folder.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(StationDir(folder).control_path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.mark.parametrize("name", ["duty{1}", "{why}", "a{{b"])
def test_a_folder_with_braces_is_named_in_one_line_not_a_traceback(tmp_path: Path, name: str) -> None:
    folder = tmp_path / name
    server = _station_that_hangs_up(folder)
    try:
        with pytest.raises(ControlError) as blocking:
            call_blocking(folder, {"op": "status"}, timeout=5)
        with pytest.raises(ControlError) as awaited:
            asyncio.run(call(folder, {"op": "status"}, timeout=5))
        for refused in (blocking, awaited):
            said = str(refused.value)
            assert f"the station at {folder} stopped answering (" in said and "may or may not" in said, said
    finally:
        server.close()
