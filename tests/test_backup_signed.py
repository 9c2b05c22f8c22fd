"""Backup review findings (``redline restore``): anyone who could write a backup folder could rewrite
its files, recompute the unsigned manifest's SHA-256s, and the restore took the result as the
station's own: a supervisor added to users/ logged into the console, config.json weakened (listen,
trusted_proxies, a postgresql:// store of the attacker's), another station's whole backup whose root
certified our keys restored as ours, a sparse 8 GiB file was hashed (39 s) before any size check, a
user's file naming its own Argon2id cost or a non-hex salt made a login hang, eat memory or answer
500 with a traceback. And a station that ran ``redline user remove`` (users/+removed.json, a list)
backed up but never restored.

Now the manifest is signed by the station's signing key (each file's size beside its hash), and a
restore checks it under a key from an authenticated source (--keys-from, or the sealed secrets
opened with the passphrase) before it believes anything else in the folder; every user's file is
read by the login's own reader; an unsigned backup of the earlier format needs the operator's word
(--trust-unsigned-backup). Each test is named after its attack and failed before the fix."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from nacl.pwhash.argon2id import MEMLIMIT_MIN, OPSLIMIT_MIN

from redline import backup, identity, persons
from redline.errors import ConfigError
from redline.testing import make_station, pair_directly
from tests.backupkit import PASSPHRASE, copy_backup, refused_untouched, rehash, rl
from tests.procs import free_ports

pytestmark = pytest.mark.timeout(120)
PASSWORD = "alice's own password"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A paired station with a user its root certified, and two backups of it: secrets omitted, sealed."""
    tmp = tmp_path_factory.mktemp("signed")
    pa, pb = free_ports(2)
    a, b = make_station(tmp, "EUCOM", "en", pa), make_station(tmp, "NDMC", "ru", pb)
    pair_directly(a, b)
    root = identity.load_signing_key(a.keys / "root.key")
    persons.add_user(a.path, "Alice", "duty", PASSWORD, ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN, root=root)
    for secrets in ("omit", "encrypt"):
        out = rl("backup", str(tmp / secrets), "--secrets", secrets, station=a.path, stdin=PASSPHRASE + "\n")
        assert out.returncode == 0, out.stderr
    return a.path, tmp / "omit", tmp / "encrypt"


def _restore(dest: Path, home: Path, target: Path, secrets: str = "omit") -> subprocess.CompletedProcess[str]:
    keys = ["--keys-from", str(home / "keys")] if secrets == "omit" else []
    return rl("restore", str(dest), *keys, station=target, stdin=PASSPHRASE + "\n")


def _user(dest: Path, name: str = "Alice") -> dict[str, object]:
    obj: dict[str, object] = json.loads((dest / "users" / f"{name}.json").read_text())
    return obj


def _login(station: Path, name: str, password: str) -> int:
    """The console's login (``LoginGuard``): the HTTP status it refuses with (200: logged in)."""
    from redline.api.auth import ApiConfig, ApiError, LoginGuard

    async def no_wait(seconds: float) -> None:
        return None

    people = {p.name: p for p in persons.load_users(station)}
    try:
        asyncio.run(LoginGuard(ApiConfig(), sleep=no_wait).login(station, people, name, password, "192.0.2.1"))
    except ApiError as exc:
        return exc.status
    return 200


@pytest.mark.parametrize("secrets", ["omit", "encrypt"])
def test_a_supervisor_added_to_a_rehashed_backup_is_refused(made: tuple[Path, Path, Path], tmp_path: Path,
                                                            secrets: str) -> None:  # fmt: skip
    home, omit, sealed = made
    dest = copy_backup(omit if secrets == "omit" else sealed, tmp_path)
    persons.add_user(dest, "mallory", "supervisor", "malloryPassw0rd", ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
    rehash(dest)
    target = tmp_path / "r"
    refused_untouched(_restore(dest, home, target, secrets), target, "not signed by this station's signing key")


@pytest.mark.parametrize("change", ["listen", "trusted_proxies", "store"])
def test_a_config_weakened_in_a_rehashed_backup_is_refused(made: tuple[Path, Path, Path], tmp_path: Path,
                                                           change: str) -> None:  # fmt: skip
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    config = json.loads((dest / "config.json").read_text())
    if change == "listen":
        config["listen"] = ["0.0.0.0:7401"]
    elif change == "trusted_proxies":
        config["api"]["trusted_proxies"] = ["0.0.0.0/0"]  # any client may then say where it comes from
    else:
        config["store"] = "postgresql://mallory@203.0.113.9/redline"
    (dest / "config.json").write_text(json.dumps(config))
    rehash(dest)
    target = tmp_path / "r"
    refused_untouched(_restore(dest, home, target), target, "not signed by this station's signing key")


def test_another_stations_backup_certifying_our_keys_is_refused(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The attacker's own station X (its root, its peer, its line), backed up; its root re-certifies
    OUR signing and TLS keys and the backup takes our tls.crt; its manifest hashed again and signed
    by X's own signing key. Restored with our keys it was a station of X's, holding our keys."""
    home, _, _ = made
    pa, pb = free_ports(2)
    x, p = make_station(tmp_path, "EUCOM", "en", pa), make_station(tmp_path, "NDMC", "ru", pb)
    pair_directly(x, p)
    assert rl("backup", str(tmp_path / "xbk"), "--secrets", "omit", station=x.path).returncode == 0
    dest = copy_backup(tmp_path / "xbk", tmp_path)
    x_root = identity.load_signing_key(x.keys / "root.key")
    ours = json.loads((home / "keys" / "certs.json").read_text())
    certs = {}
    for role in ("signing", "tls"):
        kc = identity.KeyCert.from_obj(json.loads(bytes.fromhex(ours[role]["data"])))
        forged = identity.KeyCert(station=x.fingerprint(), name="EUCOM", role=kc.role, key=kc.key, key_id=kc.key_id,
                                  issued_at=kc.issued_at)  # fmt: skip
        certs[role] = identity.certify(x_root, forged).to_obj()
    (dest / "keys" / "certs.json").write_text(json.dumps(certs))
    (dest / "keys" / "tls.crt").write_bytes((home / "keys" / "tls.crt").read_bytes())
    rehash(dest, x.path)  # signed, by X's signing key: the attacker's own
    target = tmp_path / "r"
    refused_untouched(_restore(dest, home, target), target, "not signed by this station's signing key")


@pytest.mark.parametrize("rel", ["config.json", "users/Alice.json", "ledger.sqlite", "unsigned:config.json"])
def test_a_sparse_huge_file_is_refused_before_it_is_hashed(
    made: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rel: str
) -> None:
    """A genuine backup whose file became a sparse 8 GiB one (no disk used): refused by its size,
    from lstat, before a byte of it is hashed (it was hashed for 39 s first). With an unsigned
    backup of the earlier format, vouched for, a file over what redline writes is refused too."""
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    unsigned, rel = rel.startswith("unsigned:"), rel.removeprefix("unsigned:")
    if unsigned:
        _unsign(dest)
    huge = 8 << 30
    with open(dest / rel, "r+b") as f:
        f.truncate(huge)
    real = backup._copy_hashed

    def copy_hashed(source: Path, *args: object, **kw: bool) -> str:
        assert source.stat().st_size < huge, f"{source} was read"
        return real(source, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(backup, "_copy_hashed", copy_hashed)
    target = tmp_path / "r"
    with pytest.raises(backup.BackupError, match=f"{rel} .*{huge} bytes"):
        if unsigned:
            backup.restore(dest, target, keys_from=home / "keys", trust_unsigned=True)
        else:
            backup.restore(dest, target, keys_from=home / "keys")
    assert not target.exists()


def _unsign(dest: Path) -> None:
    """The backup as the earlier version wrote it (redline-backup/1): no signature, hashes only."""
    m = json.loads((dest / "manifest.json").read_text())
    m["format"] = backup.FORMAT_UNSIGNED
    m.pop("signature", None)
    m["files"] = {rel: entry["sha256"] if isinstance(entry, dict) else entry for rel, entry in m["files"].items()}
    (dest / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("field,value", [("ops", 2**32 - 1), ("mem", 4 << 30)])
def test_a_user_file_naming_its_own_argon2_cost_is_refused(made: tuple[Path, Path, Path], tmp_path: Path,
                                                           field: str, value: int) -> None:  # fmt: skip
    """Even in a backup the station signed itself, and in the station's own users/ at login."""
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    obj = {**_user(dest), field: value}
    (dest / "users" / "Alice.json").write_text(json.dumps(obj))
    rehash(dest, home)
    target = tmp_path / "r"
    refused_untouched(_restore(dest, home, target), target, "users/Alice.json", "Argon2id")
    station = tmp_path / "station"
    persons.users_dir(station).mkdir(parents=True)
    (persons.users_dir(station) / "Alice.json").write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match="Argon2id") as refused:  # before any Argon2 work
        persons.unlock(station, "Alice", PASSWORD)
    assert "\n" not in str(refused.value)
    assert _login(station, "Alice", PASSWORD) == 401


@pytest.mark.parametrize("salt", ["zz" * 16, "00", 5, "00" * 15 + "0g"])
def test_a_user_file_with_a_malformed_salt_is_one_line_not_a_traceback(
    made: tuple[Path, Path, Path], tmp_path: Path, salt: object
) -> None:
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    obj = {**_user(dest), "salt": salt}
    (dest / "users" / "Alice.json").write_text(json.dumps(obj))
    rehash(dest, home)
    target = tmp_path / "r"
    refused_untouched(_restore(dest, home, target), target, "users/Alice.json")
    station = tmp_path / "station"
    persons.users_dir(station).mkdir(parents=True)
    (persons.users_dir(station) / "Alice.json").write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=r"users/Alice\.json") as refused:
        persons.unlock(station, "Alice", PASSWORD)
    assert "\n" not in str(refused.value)
    assert _login(station, "Alice", PASSWORD) == 401  # was a 500 with a traceback


def test_a_station_with_a_certified_removal_restores(tmp_path: Path) -> None:
    """users/+removed.json (a JSON list of the root's removal certificates) was refused as "not a
    person's file": such a station backed up, and could never be restored."""
    home = make_station(tmp_path, "EUCOM", "en", free_ports(1)[0])
    root = identity.load_signing_key(home.keys / "root.key")
    for name in ("Sam", "Alice"):
        persons.add_user(home.path, name, "duty", PASSWORD, ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN, root=root)
    persons.remove_user(home.path, "Sam", root=root)
    assert rl("backup", str(tmp_path / "bk"), "--secrets", "omit", station=home.path).returncode == 0
    target = tmp_path / "r"
    out = _restore(tmp_path / "bk", home.path, target)
    assert out.returncode == 0, out.stderr
    assert [c.to_obj() for c in persons.load_removed(target)] == [c.to_obj() for c in persons.load_removed(home.path)]
    assert [p.name for p in persons.load_users(target)] == ["Alice"]
    # A removal the station's root did not sign is refused, even in a backup the station signed.
    (tmp_path / "crafted").mkdir()
    dest = copy_backup(tmp_path / "bk", tmp_path / "crafted")
    other = make_station(tmp_path, "OTHER", "en", free_ports(1)[0])
    sam = persons.Person(name="Sam", role="duty", key="ab" * 32)
    forged = persons.certify_person(identity.load_signing_key(other.keys / "root.key"), sam, removed=True)
    (dest / "users" / persons.REMOVED_FILE).write_text(json.dumps([forged.to_obj()]))
    rehash(dest, home.path)
    refused_untouched(_restore(dest, home.path, tmp_path / "r2"), tmp_path / "r2", persons.REMOVED_FILE)


def test_an_unsigned_backup_of_the_earlier_format_needs_the_flag(made: tuple[Path, Path, Path],
                                                                 tmp_path: Path) -> None:  # fmt: skip
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    _unsign(dest)
    target = tmp_path / "r"
    out = _restore(dest, home, target)
    refused_untouched(out, target, backup.FORMAT_UNSIGNED, "not signed", "--trust-unsigned-backup")
    vouched = rl("restore", str(dest), "--keys-from", str(home / "keys"), "--trust-unsigned-backup", station=target)
    assert vouched.returncode == 0, vouched.stderr
    assert vouched.stderr.startswith("warning: restoring an unsigned backup") and "Traceback" not in vouched.stderr
    assert [p.name for p in persons.load_users(target)] == ["Alice"]


def test_a_file_changed_in_the_folder_during_a_restore_is_not_restored(
    made: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second review: whoever could write the folder while a restore ran (inotify on its reads)
    swapped users/Alice.json for a supervisor of their own and dropped in users/mallory.json while
    the store was being verified, after both had been checked: the restore copied the folder again
    and both logged in. Now each file is read once, into the target, and only that copy is used."""
    home, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    genuine = {rel: (dest / rel).read_bytes() for rel in ("users/Alice.json", "config.json")}
    real = backup.verify_store
    raced: list[bool] = []

    def verify_then_swap(folder: Path) -> object:
        result = real(folder)
        persons.add_user(dest, "mallory", "supervisor", "malloryPassw0rd", ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
        swapped = _user(dest, "mallory")
        swapped["name"] = "Alice"
        (dest / "users" / "Alice.json").write_text(json.dumps(swapped))
        (dest / "config.json").write_text((dest / "config.json").read_text().replace("127.0.0.1", "0.0.0.0"))
        raced.append(True)
        return result

    monkeypatch.setattr(backup, "verify_store", verify_then_swap)
    target = tmp_path / "r"
    backup.restore(dest, target, keys_from=home / "keys")
    assert raced == [True]
    assert sorted(f.name for f in (target / "users").iterdir()) == ["Alice.json"]
    assert {rel: (target / rel).read_bytes() for rel in genuine} == genuine
    assert not (target / ".restoring").exists()
    assert _login(target, "mallory", "malloryPassw0rd") == 401
    assert _login(target, "Alice", "malloryPassw0rd") == 401


@pytest.mark.parametrize("rel", ["manifest.json", "keys/secrets.sealed", "config.json"])
def test_a_fifo_in_place_of_a_backup_file_is_refused_not_waited_on(
    made: tuple[Path, Path, Path], tmp_path: Path, rel: str
) -> None:
    """An open of a FIFO waits for a writer: the restore hung (timeout 10 s: rc 124)."""
    _, _, sealed = made
    dest = copy_backup(sealed, tmp_path)
    (dest / rel).unlink()
    os.mkfifo(dest / rel)
    target = tmp_path / "r"
    out = rl("restore", str(dest), station=target, stdin=PASSPHRASE + "\n", timeout=30)
    refused_untouched(out, target, rel, "not a plain file")


def test_a_deeply_nested_user_file_is_one_line_and_a_401(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """In the station's own users/: json.loads raised RecursionError out of load_users and unlock."""
    home, omit, _ = made
    station = tmp_path / "st"
    backup.restore(copy_backup(omit, tmp_path), station, keys_from=home / "keys")
    (station / "users" / "Alice.json").write_text("[" * 200_000)
    with pytest.raises(ConfigError, match=r"users/Alice\.json cannot be read"):
        persons.unlock(station, "Alice", PASSWORD)
    with pytest.raises(ConfigError, match="nested more than"):
        persons.load_users(station)


def test_a_backup_saying_its_secrets_are_sealed_without_the_file_is_one_clear_line(
    made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The manifest's "secrets" flipped to "encrypted" (read before the signature can be checked,
    since it says where the key comes from): the restore said "No such file or directory"."""
    _, omit, _ = made
    dest = copy_backup(omit, tmp_path)
    m = json.loads((dest / "manifest.json").read_text())
    m["secrets"] = "encrypted"
    (dest / "manifest.json").write_text(json.dumps(m))
    target = tmp_path / "r"
    out = rl("restore", str(dest), station=target, stdin=PASSPHRASE + "\n")
    refused_untouched(out, target, "says its secret keys are sealed, but holds no keys/secrets.sealed")
