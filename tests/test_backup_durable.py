"""A backup, and a restore, survive a power cut right after they report success: every file they
write is fsynced, and so is every folder they write into (a rename or a new name is an entry of its
folder). config.json and the public keys were copied without an fsync (the manifest, fsynced,
vouched for their hashes: a "finished" backup could hold empty files, found only at restore), a
restored station's config.json likewise, its users/ folder was never fsynced, nor the station
folder after last-backup.json was renamed into it.

A power cut cannot be staged in a test; what is checked is what survives one: the real files, and
which of them the real ``os.fsync`` was called on (by inode: a file fsynced under a temporary name
and then renamed counts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nacl.pwhash.argon2id import MEMLIMIT_MIN, OPSLIMIT_MIN

from redline import backup, persons
from redline.testing import make_station


def test_every_file_and_folder_a_backup_or_a_restore_writes_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = make_station(tmp_path, "EUCOM", "en", 47631)
    # A real user's file: a restore reads each one with the login's own reader (persons.read_user).
    persons.add_user(home.path, "duty", "duty", "a password long enough", ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
    synced: set[tuple[int, int]] = set()
    fsync = os.fsync

    def recorded(fd: int) -> None:
        st = os.fstat(fd)
        synced.add((st.st_dev, st.st_ino))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)

    def unsynced(*paths: Path) -> list[Path]:
        return [p for p in paths if (p.stat().st_dev, p.stat().st_ino) not in synced]

    def written(root: Path) -> list[Path]:
        return [root, *root.rglob("*")]

    dest = backup.prepare_dir(tmp_path / "backup")
    backup.copy_store(home.ledger_path, dest / backup.STORE)
    backup.finish_backup(home, dest, taken_at=0, passphrase=None, by="test")
    assert unsynced(*written(dest)) == []
    assert unsynced(home.path / backup.LAST_BACKUP, home.path) == []

    synced.clear()
    target = tmp_path / "restored"
    backup.restore(dest, target, keys_from=home.keys)
    assert unsynced(*written(target)) == []
