"""kill -9 (or a power cut) during ``redline init`` leaves no station or a whole one, never a folder
that ``serve`` says to ``init`` and that ``init`` refuses.

``init`` wrote keys/, then config.json, then made the store, in place and without fsyncs: killed
after the keys, it left a folder without config.json (``serve``: "not a station directory; create
one with 'redline init'") whose keys/ made ``init`` refuse ("already holds a station"). Now it
builds the station in a staging folder, fsynced, and moves it into place with config.json last;
``init`` takes away what an unfinished one left. The process dies where kill -9 would find it: a
child that ``os._exit``s at each step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from redline.cli import main as cli
from redline.errors import ConfigError
from redline.home import INIT_STAGING, StationDir

ROOT = str(Path(__file__).resolve().parent.parent)

DIE = {  # where in init the process dies, and whether the folder then holds a station
    "writing config.json into the staging folder": ("StationConfig.save", False),
    "after the keys moved into place": ("replace:ledger.sqlite", False),
    "after the keys and store moved, before config.json": ("replace:config.json", False),
    "after config.json moved, before the staging folder is gone": ("shutil.rmtree", True),
}
INIT = ["--name", "EUCOM", "--lang", "en", "--listen", "127.0.0.1:47511"]


def _kill_init(folder: Path, where: str, store: str = "") -> None:
    child = textwrap.dedent(f"""
        import os, shutil
        from pathlib import Path
        from redline.config import StationConfig
        from redline.home import StationDir
        where = {where!r}
        if where == "StationConfig.save":
            StationConfig.save = lambda self, path: os._exit(9)
        elif where == "shutil.rmtree":
            shutil.rmtree = lambda path, *a, **k: os._exit(9)
        else:
            real, name = os.replace, where.split(":")[1]
            os.replace = lambda src, dst: os._exit(9) if Path(dst).name == name else real(src, dst)
        StationDir(Path({str(folder)!r})).init(name="EUCOM", lang="en", listen=["127.0.0.1:47511"], store={store!r})
    """)
    proc = subprocess.run([sys.executable, "-c", child], env={**os.environ, "PYTHONPATH": ROOT}, check=False)
    assert proc.returncode == 9


def _whole(station: StationDir) -> None:
    """A station that loads its keys and opens its store, which holds the root's certificates."""
    station.check_private()
    keys = station.load_keys()
    ledger = station.open_ledger()
    try:
        assert ledger.station == keys.fingerprint
        assert {c.data for _, _, c in ledger.certs(keys.fingerprint)} == {keys.signing_cert.data, keys.tls_cert.data}
    finally:
        ledger.close()


@pytest.mark.slow
@pytest.mark.parametrize("where", list(DIE))
def test_kill_9_during_init_leaves_no_station_or_a_whole_one(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "eucom"
    folder.mkdir(mode=0o700)  # as OPERATIONS section 1 makes it, before init
    hook, whole = DIE[where]
    _kill_init(folder, hook)
    station = StationDir(folder)
    if not whole:
        with pytest.raises(ConfigError, match="create one with 'redline init"):
            station.require()  # what serve says
    init = CliRunner().invoke(cli, ["init", "--station", str(folder), *INIT])
    if whole:
        assert init.exit_code != 0 and "already holds a station" in init.output
        _whole(station)
        return
    assert init.exit_code == 0, init.output  # refused before: "already holds a station"
    # no staging left (serve.lock: the folder's hold, which init takes as serve does)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "keys", "ledger.sqlite", "serve.lock"]
    _whole(station)


def test_init_refuses_keys_it_did_not_leave(tmp_path: Path) -> None:
    """keys/ without config.json and without a staging folder's config.json is not init's own
    leftover (a station whose config.json was lost): refused as before, the keys untouched."""
    folder = tmp_path / "eucom"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / "root.key").write_text("precious\n")
    (folder / INIT_STAGING).mkdir()  # an unfinished init that had not begun to move anything
    init = CliRunner().invoke(cli, ["init", "--station", str(folder), *INIT])
    assert init.exit_code != 0 and "already holds a station" in init.output
    assert (folder / "keys" / "root.key").read_text() == "precious\n"


def test_init_fsyncs_every_file_and_folder_it_makes_and_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut just after ``init`` said it was done finds the whole station: every file, every
    folder and the new folder's entry in its parent went through fsync (the files' and folders'
    inodes, seen by the real ``os.fsync``). Before, none of root.pub, certs.json, tls.crt,
    config.json or the folders was."""
    synced: set[int] = set()
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.add(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    folder = tmp_path / "eucom"
    StationDir(folder).init(name="EUCOM", lang="en", listen=["127.0.0.1:47511"])
    made = [folder, *folder.rglob("*")]
    assert {p.name for p in made} >= {"config.json", "keys", "ledger.sqlite", "root.pub", "certs.json", "tls.crt"}
    assert [str(p) for p in [*made, tmp_path] if p.stat().st_ino not in synced] == []


@pytest.mark.slow
def test_kill_9_during_init_on_postgres_leaves_a_store_init_makes_again(tmp_path: Path, pg_url: str) -> None:
    """On PostgreSQL the store is made in the database, not in the folder: the one an unfinished
    init made for its root key (holding only init's certificates) is dropped when init runs again.
    A store of any other station stays, and init refuses it as before."""
    folder = tmp_path / "eucom"
    _kill_init(folder, "StationConfig.save", pg_url)  # the store is made by then
    init = CliRunner().invoke(cli, ["init", "--station", str(folder), *INIT, "--store", pg_url])
    assert init.exit_code == 0, init.output  # before: "a store already exists"
    _whole(StationDir(folder))
    other = tmp_path / "ndmc"
    _kill_init(other, "StationConfig.save")  # an unfinished init on SQLite: its root key made no store
    init = CliRunner().invoke(cli, ["init", "--station", str(other), *INIT, "--store", pg_url])
    assert init.exit_code != 0 and "a store already exists" in init.output
    _whole(StationDir(folder))  # EUCOM's store untouched
