"""Backups that restore: a consistent copy of a running station, verified, and its restore.

A backup directory holds::

    manifest.json         what was taken, when, by which station; each file's SHA-256; the verify result
    ledger.sqlite         the store, copied by SQLite's online backup API (one self-contained file)
    config.json           the station's config
    keys/root.pub tls.crt certs.json   public keys and the root's certificates
    keys/secrets.sealed   signing.key and tls.key sealed under a passphrase (Argon2id + SecretBox),
                          only with --secrets encrypt; with --secrets omit they are not in it
    users/*.json          the people's keys, each already sealed under its owner's password

The root key is never in it: it lives offline (docs/OPERATIONS.md).

**The store is copied by the running station itself** (control op ``backup``): only SQLite may
open the store's files while a station runs, and only in the station's process (module
``ledger.integrity`` says why), so the station opens a read-only SQLite connection of its own and
runs ``sqlite3.Connection.backup`` in a worker thread, in one step: one read transaction, so the
copy is one consistent state of the store, while the station's own connection keeps committing
(WAL) and its event loop keeps the heartbeats flowing. A stopped station is copied the same way by
the CLI process (the store's integrity is checked as it is opened).

**A restored store is older than what the peer holds.** Nothing more is needed for that: at start
a station signs nothing until the peer's HELLO agrees with its heads, and when the peer holds more
of our chain the station fetches and verifies that tail first (guarantee 2), so no seq is reused.
What the lost store had accepted but the peer had not yet receipted is lost with it: ``redline
status`` (outbox, unreceipted) says how much is at stake at any moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from redline import identity, persons
from redline.errors import RedlineError
from redline.home import StationDir
from redline.ledger.sqlite import Ledger
from redline.ledger.verify import LineReport, verify_line

if TYPE_CHECKING:
    from redline.station import Station

FORMAT = "redline-backup/1"
MANIFEST = "manifest.json"
STORE = "ledger.sqlite"
SEALED = "keys/secrets.sealed"
PUBLIC_KEYS = ("keys/root.pub", "keys/tls.crt", "keys/certs.json")
SECRET_KEYS = ("signing.key", "tls.key")
LAST_BACKUP = "last-backup.json"  # in the station directory: where and when the latest backup went
MIN_PASSPHRASE = 12


class BackupError(RedlineError):
    """A backup could not be taken, or a backup directory cannot be restored; nothing was changed."""


@contextlib.contextmanager
def read_only_store(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only SQLite connection to the store (``Ledger.open_read_only``: SQLite only, never
    plain file I/O on a store this process holds; a store nobody holds is checked as it opens)."""
    ledger = Ledger.open_read_only(path)
    try:
        yield ledger._db  # the ledger's own connection: read-only (mode=ro, query_only)
    finally:
        ledger.close()


def copy_store(source: Path, dest: Path) -> None:
    """Copy the store with SQLite's online backup API into a new file ``dest`` (0600), as one
    consistent state, then make the copy a single self-contained file (no WAL)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # an empty file is an empty database
    os.close(fd)
    try:
        with read_only_store(source) as src:
            target = sqlite3.connect(dest)
            try:
                src.backup(target)  # pages=-1: one step, one read transaction, one state of the store
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
    except sqlite3.DatabaseError as exc:
        dest.unlink(missing_ok=True)
        raise BackupError(f"the store could not be copied ({exc}): it may be damaged; run 'redline doctor'") from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    _fsync(dest)


async def station_backup(station: Station, request: dict[str, Any]) -> dict[str, Any]:
    """Control op ``backup``: the running station copies its own store to ``request["dest"]``, off
    the event loop. Returns when the copy is on disk."""
    dest = Path(str(request["dest"]))
    if not dest.is_absolute() or dest.exists() or not dest.parent.is_dir():
        raise BackupError(f"backup destination {dest} must be a new file in an existing directory (absolute path)")
    taken_at = station.wall()  # the copy holds at least everything committed before this moment
    started = time.monotonic()
    await asyncio.to_thread(copy_store, station.home.ledger_path, dest)
    return {"taken_at": taken_at, "seconds": round(time.monotonic() - started, 3), "by": "station"}


# -- secrets under a passphrase ------------------------------------------------------------------------
def seal_secrets(keys_dir: Path, passphrase: str) -> bytes:
    check_passphrase(passphrase)
    secrets = {name: identity.read_secret(keys_dir / name).decode("ascii") for name in SECRET_KEYS}
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    key = nacl.pwhash.argon2id.kdf(32, passphrase.encode(), salt, opslimit=persons.OPS, memlimit=persons.MEM)
    sealed = nacl.secret.SecretBox(key).encrypt(json.dumps(secrets).encode())
    obj = {"kdf": "argon2id", "salt": salt.hex(), "ops": persons.OPS, "mem": persons.MEM, "sealed": sealed.hex()}
    return json.dumps(obj, indent=2).encode()


def open_secrets(data: bytes, passphrase: str) -> dict[str, bytes]:
    obj = json.loads(data)
    key = nacl.pwhash.argon2id.kdf(
        32, passphrase.encode(), bytes.fromhex(obj["salt"]), opslimit=obj["ops"], memlimit=obj["mem"]
    )
    try:
        plain = nacl.secret.SecretBox(key).decrypt(bytes.fromhex(obj["sealed"]))
    except nacl.exceptions.CryptoError:
        raise BackupError("wrong passphrase for this backup's secret keys (nothing was restored)") from None
    secrets = json.loads(plain)
    return {name: str(secrets[name]).encode("ascii") for name in SECRET_KEYS}


# -- taking a backup ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: dict[str, Any]
    reports: list[LineReport]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)


def prepare_dir(dest: Path) -> Path:
    """A new (or empty) directory for a backup, 0700."""
    dest = dest.resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} is not empty: a backup goes into a new or empty directory")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(dest, 0o700)
    return dest


def finish_backup(home: StationDir, dest: Path, *, taken_at: int, passphrase: str | None, by: str) -> BackupResult:
    """Everything after the store's copy: config, public keys, users, the sealed secrets (or none),
    the copy verified, the manifest written last (a directory without one is no backup)."""
    (dest / "keys").mkdir(mode=0o700, exist_ok=True)
    _copy_durably(home.config_path, dest / "config.json")
    for rel in PUBLIC_KEYS:
        _copy_durably(home.path / rel, dest / rel)
    users = persons.users_dir(home.path)
    if users.exists():
        (dest / "users").mkdir(mode=0o700, exist_ok=True)
        for f in sorted(users.glob("*.json")):
            identity.write_secret(dest / "users" / f.name, f.read_bytes())
    if passphrase is not None:
        identity.write_secret(dest / SEALED, seal_secrets(home.keys, passphrase))
    reports, lines = verify_store(dest)
    config = home.config()
    manifest = {
        "format": FORMAT, "station": config.name, "fingerprint": home.load_keys().fingerprint,
        "taken_at": taken_at, "taken_by": by, "secrets": "encrypted" if passphrase is not None else "omitted",
        "lines": lines, "verified": all(r.ok for r in reports),
        "problems": [str(p) for r in reports for p in r.problems][:20],
        "files": {rel: _sha256(dest / rel) for rel in _files(dest)},
    }  # fmt: skip
    _write_atomic(dest / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    for folder in (dest / "keys", dest / "users", dest):
        if folder.exists():
            _fsync(folder)
    record = {"path": str(dest), "taken_at": taken_at, "verified": manifest["verified"]}
    _write_atomic(home.path / LAST_BACKUP, json.dumps(record, indent=2).encode() + b"\n")
    return BackupResult(dest, manifest, reports)


def verify_store(folder: Path) -> tuple[list[LineReport], list[dict[str, Any]]]:
    """``redline verify`` on the copy in ``folder``: every line, against the root in the backup."""
    root = bytes.fromhex((folder / "keys" / "root.pub").read_text().strip())
    name = json.loads((folder / "config.json").read_text())["name"]
    ledger = Ledger.open_read_only(folder / STORE)
    try:
        # Every page, whatever the store's clean-close mark lets an ordinary open skip.
        rows = [str(r[0]) for r in ledger._db.execute("PRAGMA quick_check(20)").fetchall()]
        if rows != ["ok"]:
            raise BackupError(f"the copy failed SQLite's integrity check: {'; '.join(rows[:3])}")
        reports, lines = [], []
        for record in ledger.lines():
            roots = {ledger.station: root, record.peer: bytes.fromhex(record.peer_root)}
            reports.append(verify_line(ledger.line_data(record.line, name), roots))
            lines.append({
                "line": record.line, "peer": record.peer_name,
                "our_seq": ledger.head(record.line, ledger.station)[0],
                "their_seq": ledger.head(record.line, record.peer)[0],
            })  # fmt: skip
        return reports, lines
    finally:
        ledger.close()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest, with every file it lists checked against its SHA-256."""
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{folder} is not a finished backup (no {MANIFEST})") from None
    except ValueError as exc:
        raise BackupError(f"{folder / MANIFEST} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder} is not a redline backup this version reads ({FORMAT})")
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise BackupError(f"{folder / MANIFEST} lists no files")
    for rel in (STORE, "config.json", *PUBLIC_KEYS):
        if rel not in listed:
            raise BackupError(f"the backup's manifest does not list {rel}")
    # Nothing restored may be a file the manifest does not vouch for (a user slipped in, a key).
    extra = sorted(set(_files(folder)) - set(listed))
    if extra:
        raise BackupError(f"the backup holds files its manifest does not list: {', '.join(extra[:5])}")
    for rel, digest in listed.items():
        path = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not path.is_file():
            raise BackupError(f"backup file {rel} is missing")
        if _sha256(path) != digest:
            raise BackupError(f"backup file {rel} has changed since the backup was taken (SHA-256 differs)")
    return manifest


# -- restoring ---------------------------------------------------------------------------------------
def restore(
    folder: Path, target: Path, *, passphrase: str | None = None, keys_from: Path | None = None
) -> dict[str, Any]:
    """Make ``target`` (new or empty) a station from the backup in ``folder``.

    The copy is checked (manifest hashes, the store verified) before anything is written. The
    secret keys come from the backup (``passphrase``) or from ``keys_from`` (a folder holding
    signing.key and tls.key, e.g. the offline copy); either way they must be the keys the backup's
    certificates name. Nothing is left in ``target`` if anything fails."""
    folder = folder.resolve()
    manifest = read_manifest(folder)
    reports, lines = verify_store(folder)
    if not all(r.ok for r in reports):
        first = next(str(p) for r in reports for p in r.problems)
        raise BackupError(f"the backup's store does not verify ({first}); restore another backup")
    target = target.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} is not empty: restore into a new or empty station directory")
    secrets = _secrets(folder, manifest, passphrase, keys_from)
    _check_keys(folder, secrets)
    created = not target.exists()
    try:
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target, 0o700)
        (target / "keys").mkdir(mode=0o700)
        _copy_durably(folder / "config.json", target / "config.json")
        for rel in PUBLIC_KEYS:
            _copy_durably(folder / rel, target / rel)
        for name, data in secrets.items():
            identity.write_secret(target / "keys" / name, data)
        if (folder / "users").exists():
            (target / "users").mkdir(mode=0o700)
            for f in sorted((folder / "users").glob("*.json")):
                identity.write_secret(target / "users" / f.name, f.read_bytes())
        # The station is not running here (the directory was empty): a plain copy of the file is safe.
        fd = os.open(target / STORE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        shutil.copyfile(folder / STORE, target / STORE)
        for path in (target / STORE, target / "keys", target / "users", target):
            if path.exists():
                _fsync(path)
        home = StationDir(target)
        home.check_private()
        home.load_keys()
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in target.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    return {
        "station": manifest["station"], "fingerprint": home.load_keys().fingerprint, "path": str(target),
        "taken_at": manifest["taken_at"], "lines": lines,
    }  # fmt: skip


def _secrets(
    folder: Path, manifest: dict[str, Any], passphrase: str | None, keys_from: Path | None
) -> dict[str, bytes]:
    if keys_from is not None:
        return {name: identity.read_secret(keys_from / name) for name in SECRET_KEYS}
    if manifest.get("secrets") != "encrypted":
        raise BackupError(
            "this backup holds no secret keys (taken with --secrets omit): give --keys-from DIR, a folder with "
            "the station's signing.key and tls.key (its offline copy)"
        )
    if passphrase is None:
        raise BackupError("this backup's secret keys are sealed: give the backup passphrase")
    return open_secrets((folder / SEALED).read_bytes(), passphrase)


def _check_keys(folder: Path, secrets: dict[str, bytes]) -> None:
    """The secret keys must be the ones the backup's certificates (signed by our root) name."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

    certs = json.loads((folder / "keys" / "certs.json").read_text())
    root = bytes.fromhex((folder / "keys" / "root.pub").read_text().strip())
    signing_cert = identity.SignedCert.from_obj(certs["signing"]).verify(root)
    try:
        signing = nacl.signing.SigningKey(bytes.fromhex(secrets["signing.key"].decode("ascii").strip()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError("signing.key does not hold an Ed25519 seed in hex") from exc
    if bytes(signing.verify_key).hex() != signing_cert.key:
        raise BackupError("signing.key is not the signing key this station's root certified: wrong key file")
    tls_cert = x509.load_pem_x509_certificate((folder / "keys" / "tls.crt").read_bytes())
    try:
        tls_key = load_pem_private_key(secrets["tls.key"], password=None)
    except ValueError as exc:
        raise BackupError("tls.key is not a PEM private key") from exc
    spki = PublicFormat.SubjectPublicKeyInfo
    if tls_key.public_key().public_bytes(Encoding.DER, spki) != tls_cert.public_key().public_bytes(Encoding.DER, spki):
        raise BackupError("tls.key does not belong to the backup's TLS certificate: wrong key file")


# -- age ---------------------------------------------------------------------------------------------
def last_backup(home: StationDir) -> dict[str, Any] | None:
    """What ``redline backup`` last recorded for this station, or None."""
    try:
        record: Any = json.loads((home.path / LAST_BACKUP).read_text())
    except (FileNotFoundError, ValueError):
        return None
    ok = isinstance(record, dict) and type(record.get("taken_at")) is int and isinstance(record.get("path"), str)
    return record if ok else None  # damaged or hand-edited: doctor then says no backup is known


def age_text(ms: float) -> str:
    s = max(0, int(ms // 1000))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


# -- files -------------------------------------------------------------------------------------------
def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_durably(source: Path, dest: Path) -> None:
    """Copy a file and fsync the copy: a manifest that vouches for it, or a restored station that
    starts from it, must not find it empty after a power cut (its folder is fsynced by the caller)."""
    shutil.copyfile(source, dest)
    _fsync(dest)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file, fsync it, rename it over ``path`` and fsync the folder: a
    power cut leaves the old file or the new one, and the rename itself survives it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def check_passphrase(passphrase: str) -> str:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the backup passphrase must be at least {MIN_PASSPHRASE} characters")
    return passphrase
