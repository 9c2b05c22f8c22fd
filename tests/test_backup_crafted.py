"""Attack finding 7: a crafted backup folder was read with trusting code. The sealed secrets named
their own Argon2id cost (a restore ran > 30 s at the file's will), malformed files gave tracebacks,
one after the station was already written to the target. Every file is now read by one
schema-checked parser before a restore writes anything; symbolic links are refused, not followed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from redline import backup
from redline.home import StationDir
from redline.testing import make_station, pair_directly
from tests.backupkit import PASSPHRASE, copy_backup, refused_untouched, rehash, rl
from tests.procs import free_ports


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A paired station and two backups of it: secrets omitted, secrets sealed."""
    tmp = tmp_path_factory.mktemp("crafted")
    pa, pb = free_ports(2)
    a, b = make_station(tmp, "EUCOM", "en", pa), make_station(tmp, "NDMC", "ru", pb)
    pair_directly(a, b)
    for secrets in ("omit", "encrypt"):
        out = rl("backup", str(tmp / secrets), "--secrets", secrets, station=a.path, stdin=PASSPHRASE + "\n")
        assert out.returncode == 0, out.stderr
    return a.path, tmp / "omit", tmp / "encrypt"


def test_sealed_secrets_cannot_name_their_own_argon2_cost(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, sealed = made
    dest = copy_backup(sealed, tmp_path)
    obj = json.loads((dest / backup.SEALED).read_text())
    obj["ops"] = 2**32 - 1
    (dest / backup.SEALED).write_text(json.dumps(obj))
    rehash(dest)
    target = tmp_path / "r"
    out = rl("restore", str(dest), station=target, stdin=PASSPHRASE + "\n", timeout=30)
    refused_untouched(out, target, "Argon2id ops")


@pytest.mark.parametrize("field,value", [("salt", "00"), ("salt", "zz"), ("mem", 1 << 40), ("kdf", "scrypt"),
                                         ("sealed", 5)])  # fmt: skip
def test_sealed_secrets_malformed_get_one_line(made: tuple[Path, Path, Path], tmp_path: Path, field: str,
                                               value: object) -> None:  # fmt: skip
    _, _, sealed = made
    dest = copy_backup(sealed, tmp_path)
    obj = json.loads((dest / backup.SEALED).read_text())
    obj[field] = value
    (dest / backup.SEALED).write_text(json.dumps(obj))
    rehash(dest)
    target = tmp_path / "r"
    refused_untouched(rl("restore", str(dest), station=target, stdin=PASSPHRASE + "\n"), target, backup.SEALED)


@pytest.mark.parametrize("change", ["list", "taken_at", "files", "keys"])
def test_a_malformed_manifest_gets_one_line_and_restores_nothing(made: tuple[Path, Path, Path], tmp_path: Path,
                                                                 change: str) -> None:  # fmt: skip
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    m = json.loads((dest / "manifest.json").read_text())
    if change == "list":
        m = []
    elif change == "taken_at":
        m["taken_at"] = "yesterday"  # was a traceback AFTER the station had been written to the target
    elif change == "files":
        m["files"]["config.json"] = 7
    else:
        m["keys"] = {"signing": ["x"]}
    (dest / "manifest.json").write_text(json.dumps(m))
    target = tmp_path / "r"
    target.mkdir(mode=0o700)  # an empty station folder: it stays empty
    refused_untouched(rl("restore", str(dest), "--keys-from", str(home / "keys"), station=target), target)


@pytest.mark.parametrize("rel,text", [("config.json", "{}"), ("config.json", "[1"), ("keys/certs.json", "{}"),
                                      ("keys/root.pub", "nothex"), ("keys/tls.crt", "no pem"),
                                      ("config.json", "[" * 5000)])  # fmt: skip
def test_a_malformed_backup_file_gets_one_line_and_restores_nothing(made: tuple[Path, Path, Path], tmp_path: Path,
                                                                    rel: str, text: str) -> None:  # fmt: skip
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    (dest / rel).write_text(text)
    rehash(dest, home)  # signed by the station itself: the file's own parser refuses it
    target = tmp_path / "r"
    refused_untouched(rl("restore", str(dest), "--keys-from", str(home / "keys"), station=target), target, rel)


@pytest.mark.parametrize("rel", ["ledger.sqlite", "config.json", "keys"])
def test_a_symlink_in_a_backup_is_refused_not_followed(made: tuple[Path, Path, Path], tmp_path: Path,
                                                       rel: str) -> None:  # fmt: skip
    """A backup's store linked to a live station's store was opened and copied by the restore."""
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    os.rename(dest / rel, elsewhere)
    os.symlink(elsewhere, dest / rel)
    target = tmp_path / "r"
    refused_untouched(rl("restore", str(dest), "--keys-from", str(home / "keys"), station=target), target,
                       "symbolic link")  # fmt: skip


def test_open_secrets_refuses_a_cost_above_what_redline_writes_at_once() -> None:
    obj = {"kdf": "argon2id", "salt": "00" * 16, "ops": backup.MAX_OPS + 1, "mem": backup.MAX_MEM, "sealed": "00"}
    with pytest.raises(backup.BackupError, match="Argon2id ops"):
        backup.open_secrets(json.dumps(obj).encode(), PASSPHRASE)


@pytest.mark.parametrize("body", [{"salt": "00" * 16}, {"salt": "00" * 16, "content": {"rotation": "not an object"}},
                                  {"salt": "00" * 16, "content": {"rotation": {"data": "zz"}}}],
                         ids=["no-content", "rotation-not-an-object", "rotation-data-not-hex"])  # fmt: skip
def test_a_root_row_crafted_into_a_backups_store_gets_one_line_not_a_traceback(
    made: tuple[Path, Path, Path], tmp_path: Path, body: dict[str, object]
) -> None:
    """The store is read for the station's later roots (``rotation.filed_roots``) before it is
    verified: a row of our chain that says ROOT and does not open (an outside review crafted one
    without ``content``) ended the restore in a KeyError traceback."""
    import sqlite3

    from redline import canonical, envelope

    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    us, line = StationDir(home).load_keys().fingerprint, json.loads((dest / "manifest.json").read_text())["lines"][0]
    raw_body = canonical.encode(body)
    header = envelope.Header(line=line["line"], sender=us, key="00" * 16, seq=line["our_seq"] + 1, sent_at=1,
                             kind="ROOT", prio="FLASH", prev=None, seen_seq=0, seen_id=None,
                             body_hash=envelope.body_hash(raw_body), lang="en").encode()  # fmt: skip
    raw = b"".join((len(header).to_bytes(4, "big"), header, len(raw_body).to_bytes(4, "big"), raw_body, b"\0" * 64))
    db = sqlite3.connect(dest / backup.STORE)
    row = (line["line"], us, line["our_seq"] + 1, envelope.envelope_id(header), "ROOT", raw, 1, "FLASH")
    db.execute("INSERT INTO envelopes (line, sender, seq, id, kind, raw, stored_at, prio) VALUES (?,?,?,?,?,?,?,?)",
               row)  # fmt: skip
    db.commit()
    db.close()
    rehash(dest, home)
    target = tmp_path / "r"
    refused_untouched(rl("restore", str(dest), "--keys-from", str(home / "keys"), station=target), target)
