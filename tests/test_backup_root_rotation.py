"""A backup of a station whose root was rotated restores, and the restored station knows its root.

The attack (losing the machine after a root rotation, PROTOCOL.md 5.9 ROOT): the backup checked the
station's certificates against keys/root.pub alone, the pairing root, so once a key was certified
by the new root every backup of the station was refused at restore ("not signed by the root"); and
keys/roots.json, where the station records its later roots, was not in the backup at all, so a
restored station took its first root for the one in force and 'keys rotate' then asked for the
old root key. The roots now come from the one place that vouches for them: the ROOT envelopes of
the station's own chain, each opened against the root before it (``rotation.filed_roots``),
when a backup is checked, when it is restored and when a key command asks for the root in force.
"""

from __future__ import annotations

import json
from pathlib import Path

import nacl.signing

from redline import backup, rotation
from redline import keys as keyfiles
from redline.testing import StationPair
from tests.test_keys import in_loop, root_of
from tests.test_keys_root import _write_key


async def _rotated(sp: StationPair, tmp_path: Path) -> nacl.signing.SigningKey:
    """NDMC rotated its root (EUCOM confirmed it) and then its signing key, under the new root."""
    await sp.send("b", "NDMC 1")
    us = sp.b.keys.fingerprint
    old, new = root_of(sp.dir_b), nacl.signing.SigningKey.generate()
    content = rotation.root_content(old, new, station=us, version=2, issued_at=sp.clocks["b"].wall())
    result = await rotation.file_root_running(sp.b, content, 2)
    keyfiles.record_root(sp.dir_b.keys, 2, bytes(new.verify_key))
    await sp.synced()
    await sp.a.confirm_root(sp.line, result["codes"][sp.line])
    await sp.synced()
    # a signing key under the new root, in force
    keyfiles.prepare_signing(sp.dir_b.keys, keyfiles.read_root(_write_key(tmp_path, new), bytes(new.verify_key)),
                             "NDMC", us)  # fmt: skip
    await rotation.file_running(sp.b)
    await sp.synced()
    await sp.send("b", "NDMC under the new root's key")
    await sp.advance(2)
    assert sp.dir_b.load_keys().signing_cert.verify(bytes(new.verify_key), station=us)
    return new


@in_loop
async def test_a_backup_taken_after_a_root_rotation_restores_with_its_roots(tmp_path: Path) -> None:
    async with StationPair(tmp_path) as sp:
        new = await _rotated(sp, tmp_path)
        us = sp.b.keys.fingerprint
        dest = backup.prepare_dir(tmp_path / "bk")
        taken = await backup.station_backup(sp.b, {"op": "backup", "dest": str(dest / backup.STORE)})
        backup.finish_backup(sp.dir_b, dest, taken_at=taken["taken_at"], passphrase=None, by="test")
    target = tmp_path / "restored"
    got = backup.restore(dest, target, keys_from=sp.dir_b.keys)
    assert got["fingerprint"] == us
    assert keyfiles.root_in_force(target / "keys") == (2, bytes(new.verify_key))
    assert json.loads((target / "keys" / keyfiles.ROOTS).read_text()) == [
        {"version": 2, "public": bytes(new.verify_key).hex()}
    ]


@in_loop
async def test_a_station_missing_its_later_roots_learns_them_from_its_chain_before_a_key_command(
    tmp_path: Path,
) -> None:
    """A station restored from a copy older than its root rotation gets the ROOT back from the peer
    (recovery), not keys/roots.json: the key commands ask ``record_roots``, which records it again,
    so 'keys rotate --root-key NEW' takes the new root instead of asking for the old one."""
    async with StationPair(tmp_path) as sp:
        new = await _rotated(sp, tmp_path)
        (sp.dir_b.keys / keyfiles.ROOTS).unlink()
        assert keyfiles.root_in_force(sp.dir_b.keys)[0] == 1  # what the key commands read before
        assert rotation.record_roots(sp.dir_b) == (2, bytes(new.verify_key))
        assert keyfiles.root_in_force(sp.dir_b.keys) == (2, bytes(new.verify_key))
        first = bytes.fromhex((sp.dir_b.keys / "root.pub").read_text().strip())
        assert rotation.filed_roots(sp.b.ledger, sp.b.keys.fingerprint, first) == [(2, bytes(new.verify_key))]
