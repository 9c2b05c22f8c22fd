"""Runbook review: a second ``serve`` (or an offline key change) beside a running station was told to
run ``redline stop``, a command that does not exist. It now names what does stop a station: SIGTERM
(Ctrl-C, kill -TERM) or the systemd unit's ``systemctl stop`` (docs/OPERATIONS.md)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from redline.errors import StationBusyError
from redline.home import LOCK_FILE, StationDir
from redline.testing import make_station
from tests.procs import free_ports


def test_a_busy_station_names_a_way_to_stop_it_that_exists(tmp_path: Path) -> None:
    home = make_station(tmp_path, "EUCOM", "en", free_ports(1)[0])
    fd = os.open(home.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: conflicts as another process's serve would
        os.pwrite(fd, b"pid 4242 (serve)\n", 0)
        with pytest.raises(StationBusyError) as info:
            StationDir(home.path).hold("serve")
    finally:
        os.close(fd)
    text = str(info.value)
    assert "pid 4242 (serve)" in text and "redline stop" not in text
    assert "kill -TERM" in text and "systemctl stop redline" in text and "\n" not in text
