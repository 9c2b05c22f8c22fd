"""Backups that restore: a consistent copy of a running station, verified, and its restore.

A backup directory holds::

    manifest.json         what was taken, when, by which station; each file's SHA-256 and size; the verify
                          result; signed by the station's signing key (``signature``)
    ledger.sqlite         the store, copied by SQLite's online backup API (one self-contained file)
    config.json           the station's config
    keys/root.pub tls.crt certs.json   public keys and the root's certificates
    keys/secrets.sealed   signing.key and tls.key sealed under a passphrase (Argon2id + SecretBox),
                          only with --secrets encrypt; with --secrets omit they are not in it
    keys/*.next.*         a rotation under way (``keys.py``): the prepared next keys' certificates,
                          and their secret halves in secrets.sealed, so a restore finishes it
    users/*.json          the people's keys, each already sealed under its owner's password

The root key is never in it: it lives offline (docs/OPERATIONS.md). The manifest and
``last-backup.json`` record the ids of the keys the backup holds (``held_keys``): a key made after
the backup cannot be in it, and ``redline doctor`` says so once the keys in force differ.

**A backup folder is untrusted input** (it lives on other disks, other machines) until one gate,
``restore``, has accepted it; hashes alone prove nothing, since whoever can write a file can write
its hash. So the manifest (format ``redline-backup/2``) is signed by the station's signing key in
force (``sign_manifest``: Ed25519 over its canonical bytes without ``signature``, domain
``backupmanifest``), and a restore, before it writes anything: reads the manifest by its schema
only; takes the secret keys from an authenticated source (``--keys-from``, the operator's copy, or
the sealed secrets, whose MAC proves the passphrase sealed them, their Argon2id cost bounded first);
verifies the signature under that signing key (``verify_manifest``); checks each file's size by
``lstat`` against the signed size and its bound before reading any (``check_files``); reads each
file once into a private copy inside the target, its hash checked on the bytes read (``_stage``);
and on that copy only parses every file with the reader this version uses (``check_backup``: users'
files with ``persons.read_user``, the login's own), verifies the store, checks the keys are those
the backup's root certified (``_check_keys``) and installs it. Only then is anything in the folder
the station's own word, and nothing written into the folder during the restore gets in.
Symbolic links are refused, never followed. An unsigned backup of the earlier format
(``redline-backup/1``) restores only when the operator vouches for the folder (``trust_unsigned``).
Not covered: an older genuine backup put in place of a newer one (it is the station's own word, of
then); the restore says when it was taken.

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
import stat
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

from redline import canonical, identity, jsonin, persons
from redline import keys as keyfiles
from redline.errors import ConfigError, EncodingError, RedlineError, StorageError
from redline.home import StationDir
from redline.ledger.sqlite import Ledger
from redline.ledger.verify import LineReport, verify_line

if TYPE_CHECKING:
    from redline.config import StationConfig
    from redline.station import Station

FORMAT = "redline-backup/2"  # the manifest signed by the station's signing key, each file's size beside its hash
FORMAT_UNSIGNED = "redline-backup/1"  # earlier versions': unsigned, hashes only (restored only when vouched for)
DOMAIN_MANIFEST = "backupmanifest"  # identity.domain: what the manifest's signature is a signature of
MANIFEST = "manifest.json"
STORE = "ledger.sqlite"
SEALED = "keys/secrets.sealed"
PUBLIC_KEYS = ("keys/root.pub", "keys/tls.crt", "keys/certs.json")
SECRET_KEYS = ("signing.key", "tls.key")
# A rotation under way (keys.py): taken when present, so a backup made during one restores it.
NEXT_PUBLIC = {
    keyfiles.NEXT_KEY: (f"keys/{keyfiles.NEXT_CERT}",),
    keyfiles.TLS_NEXT_KEY: (f"keys/{keyfiles.TLS_NEXT_CRT}", f"keys/{keyfiles.TLS_NEXT_CERT}"),
}
KEY_NAMES = ("signing", "tls", "next_signing", "next_tls")  # the manifest's "keys": which key ids it holds
MAX_FILE = 1 << 20  # any backup file but the store (a real one is a few KB): read into memory whole
MAX_SEALED = 64 << 10
# Argon2id cost of a sealed file: at most what this version writes (persons.OPS/MEM at its
# strongest setting); the file is untrusted, and its cost is work and memory it makes us spend.
MAX_OPS = persons.MAX_OPS
MAX_MEM = persons.MAX_MEM
NOT_SIGNED = "the backup's manifest is not signed by this station's signing key"
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
    names = [*SECRET_KEYS, *(n for n in NEXT_PUBLIC if _next_whole(keys_dir, n))]
    secrets = {name: identity.read_secret(keys_dir / name).decode("ascii") for name in names}
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    key = nacl.pwhash.argon2id.kdf(32, passphrase.encode(), salt, opslimit=persons.OPS, memlimit=persons.MEM)
    sealed = nacl.secret.SecretBox(key).encrypt(json.dumps(secrets).encode())
    obj = {"kdf": "argon2id", "salt": salt.hex(), "ops": persons.OPS, "mem": persons.MEM, "sealed": sealed.hex()}
    return json.dumps(obj, indent=2).encode()


def _sealed_fields(obj: Any) -> tuple[bytes, int, int, bytes]:
    """secrets.sealed checked: salt, cost and box, the cost within what this version writes."""
    what = f"backup file {SEALED}"
    try:
        identity.require(obj if isinstance(obj, dict) else {}, what,
                         {"kdf": str, "salt": str, "ops": int, "mem": int, "sealed": str})  # fmt: skip
    except RedlineError as exc:
        raise BackupError(str(exc)) from None
    if obj["kdf"] != "argon2id":
        raise BackupError(f"{what}: key derivation {obj['kdf'][:20]!r} is not argon2id")
    salt, sealed = _hex(obj["salt"], what, "salt"), _hex(obj["sealed"], what, "sealed")
    if len(salt) != nacl.pwhash.argon2id.SALTBYTES:
        raise BackupError(f"{what}: the salt is not {nacl.pwhash.argon2id.SALTBYTES} bytes")
    if not nacl.pwhash.argon2id.OPSLIMIT_MIN <= obj["ops"] <= MAX_OPS:
        raise BackupError(f"{what}: Argon2id ops {obj['ops']} is outside what redline writes (at most {MAX_OPS})")
    if not nacl.pwhash.argon2id.MEMLIMIT_MIN <= obj["mem"] <= MAX_MEM:
        raise BackupError(f"{what}: Argon2id memory {obj['mem']} is outside what redline writes (at most {MAX_MEM})")
    return salt, obj["ops"], obj["mem"], sealed


def open_secrets(data: bytes, passphrase: str) -> dict[str, bytes]:
    salt, ops, mem, sealed = _sealed_fields(_loads(data, SEALED))
    key = nacl.pwhash.argon2id.kdf(32, passphrase.encode(), salt, opslimit=ops, memlimit=mem)
    try:
        plain = nacl.secret.SecretBox(key).decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise BackupError("wrong passphrase for this backup's secret keys (nothing was restored)") from None
    secrets = _loads(plain, f"{SEALED} (opened)")
    allowed = (*SECRET_KEYS, *NEXT_PUBLIC)
    if (
        not isinstance(secrets, dict) or not set(SECRET_KEYS) <= set(secrets) <= set(allowed)
        or not all(isinstance(v, str) and v.isascii() for v in secrets.values())
    ):  # fmt: skip
        raise BackupError(f"backup file {SEALED} does not hold the station's secret keys")
    return {name: str(secrets[name]).encode("ascii") for name in allowed if name in secrets}


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
    for name, public in NEXT_PUBLIC.items():
        if _next_whole(home.keys, name):
            for rel in public:
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
    held = held_keys(home.keys)
    manifest = {
        "format": FORMAT, "station": config.name, "fingerprint": home.load_keys().fingerprint,
        "taken_at": taken_at, "keys": held, "taken_by": by,
        "secrets": "encrypted" if passphrase is not None else "omitted",
        "lines": lines, "verified": all(r.ok for r in reports),
        "problems": [str(p) for r in reports for p in r.problems][:20],
        "files": {rel: _digest(dest / rel) for rel in _files(dest)},
    }  # fmt: skip
    manifest["signature"] = sign_manifest(manifest, home.load_keys().signing)
    _write_atomic(dest / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    for folder in (dest / "keys", dest / "users", dest):
        if folder.exists():
            _fsync(folder)
    record = {"path": str(dest), "taken_at": taken_at, "verified": manifest["verified"], "keys": held}
    _write_atomic(home.path / LAST_BACKUP, json.dumps(record, indent=2).encode() + b"\n")
    return BackupResult(dest, manifest, reports)


def verify_store(folder: Path) -> tuple[list[LineReport], list[dict[str, Any]]]:
    """``redline verify`` on the copy in ``folder``: every line, against the root in the backup."""
    root = _root_public(folder)
    name = _config(folder).name
    try:
        ledger = Ledger.open_read_only(folder / STORE)
    except (StorageError, sqlite3.Error) as exc:
        raise BackupError(f"the backup's store cannot be opened: {exc}") from None
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
    """The manifest, by its schema only (bounded in size, never through a symbolic link; nothing
    else in the folder is read): what the CLI reads before it asks for the passphrase. Nothing in
    it is believed yet: ``restore`` checks its signature (``verify_manifest``) once it holds the
    station's keys, and only then the files it lists (``check_files``)."""
    try:
        manifest = _loads(_read_small(folder / MANIFEST, MANIFEST), MANIFEST)
    except FileNotFoundError:
        raise BackupError(f"{folder} is not a finished backup (no {MANIFEST})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, FORMAT_UNSIGNED):
        raise BackupError(f"{folder} is not a redline backup this version reads ({FORMAT})")
    _check_manifest(manifest)
    return manifest


def require_signed(manifest: dict[str, Any], *, trust_unsigned: bool) -> bool:
    """Whether the manifest is signed (this version's format). An unsigned one (an earlier
    version's) is refused unless the operator vouches for the folder (``trust_unsigned``)."""
    if manifest["format"] == FORMAT:
        return True
    if not trust_unsigned:
        raise BackupError(
            f"this backup was taken by an earlier redline ({FORMAT_UNSIGNED}): its manifest is not signed, so anyone "
            "who could write where it is kept could have changed it. Take a new backup with this version; only if "
            "nobody else could ever have written that folder, restore it with --trust-unsigned-backup"
        )
    return False


def sign_manifest(manifest: dict[str, Any], key: nacl.signing.SigningKey) -> dict[str, str]:
    """The station signing key's signature over the manifest's canonical bytes (without its own
    ``signature``), under the domain ``backupmanifest``."""
    body = canonical.encode({k: v for k, v in manifest.items() if k != "signature"})
    sig = identity.sign(key, DOMAIN_MANIFEST, body)
    return {"key_id": identity.key_id(bytes(key.verify_key)), "sig": sig.hex()}


def verify_manifest(manifest: dict[str, Any], signing_public: bytes) -> None:
    """The manifest is signed by ``signing_public`` (the station's signing key, from an
    authenticated source: the operator's copy or the sealed secrets), else one BackupError line."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        data = canonical.encode(body)
        identity.verify(signing_public, DOMAIN_MANIFEST, data, bytes.fromhex(manifest["signature"]["sig"]), MANIFEST)
    except (RedlineError, ValueError):
        ours, named = identity.key_id(signing_public), manifest["signature"]["key_id"]
        if named != ours:  # the manifest's word, only a hint: the wrong key file is the honest mistake
            why = f"(it names key {named[:16]}, the signing key given is {ours[:16]}): the wrong key file, or "
        else:
            why = f"({ours[:16]}): "
        raise BackupError(
            f"{NOT_SIGNED} {why}another station's backup, or one changed since it was taken (nothing was restored)"
        ) from None


def check_files(folder: Path, manifest: dict[str, Any]) -> None:
    """The files the manifest lists, and nothing else (no symbolic link, nothing unlisted:
    ``_members``), each one's size from ``lstat`` (nothing read): within what such a file holds,
    and in a signed manifest the size signed. So a huge (or sparse) file is refused before a byte
    of any file is read; ``_stage`` then reads each one once, checking its size and hash again on
    the bytes it copies."""
    signed = manifest["format"] == FORMAT
    listed: dict[str, Any] = manifest["files"]
    for rel in (STORE, "config.json", *PUBLIC_KEYS):
        if rel not in listed:
            raise BackupError(f"the backup's manifest does not list {rel}")
    # Nothing restored may be a file the manifest does not vouch for (a user slipped in, a key).
    extra = sorted(set(_members(folder)) - set(listed))
    if extra:
        raise BackupError(f"the backup holds files its manifest does not list: {', '.join(extra[:5])}")
    for rel, entry in listed.items():
        if not _member_name(rel):
            raise BackupError(f"the backup's manifest lists {rel[:80]!r}, not a file a backup holds")
        try:
            st = os.lstat(folder / rel)
        except OSError:
            raise BackupError(f"backup file {rel} is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise BackupError(f"backup file {rel} is not a plain file")
        limit = _limit(rel)
        if limit is not None and st.st_size > limit:
            raise BackupError(f"backup file {rel} is {st.st_size} bytes, over {limit}: not one redline writes")
        if signed and st.st_size != entry["size"]:
            raise BackupError(f"backup file {rel} has changed since the backup was taken ({st.st_size} bytes; the "
                              f"signed manifest says {entry['size']})")  # fmt: skip


def _limit(rel: str) -> int | None:
    """The most bytes backup file ``rel`` may hold (None: the store, as large as the transcript)."""
    return None if rel == STORE else MAX_SEALED if rel == SEALED else MAX_FILE


def _stage(folder: Path, manifest: dict[str, Any], into: Path) -> None:
    """Every file the manifest lists, read ONCE from ``folder`` into ``into`` (inside the 0700
    target: nobody else writes there), its size and SHA-256 checked on the bytes copied. What is
    parsed, verified and installed after this is that copy: a file changed in the folder between
    its check and its copy (a review swapped users/Alice.json for a supervisor of its own, and
    added a user, while the store was being verified) never reaches the station."""
    signed = manifest["format"] == FORMAT
    for rel, entry in manifest["files"].items():
        limit = _limit(rel)
        size = entry["size"] if signed else limit
        dest = into / rel
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _copy_hashed(folder / rel, dest, rel, size, exact=signed) != (entry["sha256"] if signed else entry):
            raise BackupError(f"backup file {rel} has changed since the backup was taken (SHA-256 differs)")


def _copy_hashed(source: Path, dest: Path, rel: str, size: int | None, *, exact: bool) -> str:
    """Copy ``source`` to a new private file ``dest`` (fsynced) and return the SHA-256 of the bytes
    copied. Never through a link, never waiting on a FIFO (O_NONBLOCK), and never more than ``size``
    bytes (``exact``: exactly that many) whatever the file does while it is read."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise BackupError(f"backup file {rel} cannot be read ({exc.strerror}; a symbolic link is refused)") from None
    h, got = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as src, open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise BackupError(f"backup file {rel} is not a plain file")
        for chunk in iter(lambda: src.read(1 << 20), b""):
            got += len(chunk)
            if size is not None and got > size:
                raise BackupError(f"backup file {rel} grew past {size} bytes while it was read")
            h.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if exact and got != size:
        raise BackupError(f"backup file {rel} has changed since the backup was taken ({got} bytes read; the signed "
                          f"manifest says {size})")  # fmt: skip
    return h.hexdigest()


_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str, "station": str, "fingerprint": str, "taken_at": int, "taken_by": str, "secrets": str,
    "lines": list, "verified": bool, "problems": list, "files": dict,
}  # fmt: skip


def _file_entry(value: Any, signed: bool) -> bool:
    """A manifest's entry for one file: its SHA-256 and (signed) its size."""
    if not signed:
        return isinstance(value, str) and identity.is_hex(value, 32)
    return (
        isinstance(value, dict) and set(value) == {"sha256", "size"} and isinstance(value["sha256"], str)
        and identity.is_hex(value["sha256"], 32) and type(value["size"]) is int and 0 <= value["size"] < 1 << 53
    )  # fmt: skip


def _check_manifest(m: dict[str, Any]) -> None:
    """Every field a manifest has, of its type and within its range. This version's (signed):
    "keys" and "signature" too, and each file's size; an earlier version's: "keys" only since key
    ids were recorded, and hashes only."""
    signed = m.get("format") == FORMAT
    extra: dict[str, type] = {"keys": dict, "signature": dict} if signed else {"keys": dict} if "keys" in m else {}
    try:
        identity.require(m, MANIFEST, {**_MANIFEST_FIELDS, **extra})
    except RedlineError as exc:
        raise BackupError(str(exc)) from None
    if not 0 <= m["taken_at"] < 1 << 53:
        raise BackupError(f"{MANIFEST}: taken_at is not a time")
    if m["secrets"] not in ("encrypted", "omitted"):
        raise BackupError(f"{MANIFEST}: secrets is neither 'encrypted' nor 'omitted'")
    if not all(isinstance(k, str) and _file_entry(v, signed) for k, v in m["files"].items()):
        what = "SHA-256 digests (hex) and sizes" if signed else "SHA-256 digests (hex)"
        raise BackupError(f"{MANIFEST}: files must map names to {what}")
    keys = m.get("keys", {})
    ids_ok = all(isinstance(v, str) and (identity.is_hex(v, 16) or identity.is_hex(v, 32)) for v in keys.values())
    if not set(keys) <= set(KEY_NAMES) or not ids_ok:
        raise BackupError(f"{MANIFEST}: keys must map {', '.join(KEY_NAMES)} to key ids (hex)")
    if signed:
        sig = m["signature"]
        if (
            set(sig) != {"key_id", "sig"}
            or not all(isinstance(v, str) for v in sig.values())
            or not (identity.is_hex(sig["key_id"], 16) and identity.is_hex(sig["sig"], 64))
        ):
            raise BackupError(f"{MANIFEST}: signature must hold a key_id and an Ed25519 signature (hex)")
    for key in ("station", "fingerprint", "taken_by"):
        if len(m[key]) > 200:
            raise BackupError(f"{MANIFEST}: {key} is too long")
    if not all(isinstance(ln, dict) for ln in m["lines"]) or not all(isinstance(p, str) for p in m["problems"]):
        raise BackupError(f"{MANIFEST}: lines or problems malformed")


def check_backup(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file of the backup parsed as a restore will use it, before anything is written: the
    config, the root, the certificates, the TLS certificates, the users' files (each by
    ``persons.read_user``, the login's own reader: its name, salt, sealed key and Argon2id cost;
    users/+removed.json as ``persons.load_removed`` reads it, each a removal certified by one of the
    station's roots), the sealed secrets' frame (its cost bounded). Anything wrong: one
    ``BackupError`` line."""
    _config(folder)
    certs = _loads(_read_small(folder / "keys/certs.json", "keys/certs.json"), "keys/certs.json")
    if not isinstance(certs, dict) or "signing" not in certs or "tls" not in certs:
        raise BackupError("backup file keys/certs.json does not name a signing and a TLS certificate")
    roots = _roots(folder)
    _certified(roots, "keys/certs.json", certs["signing"])
    _certified(roots, "keys/certs.json", certs["tls"])
    _tls_cert(folder, "keys/tls.crt")
    if (folder / "keys" / keyfiles.TLS_NEXT_CRT).exists():
        _tls_cert(folder, f"keys/{keyfiles.TLS_NEXT_CRT}")
    for rel in (f"keys/{keyfiles.NEXT_CERT}", f"keys/{keyfiles.TLS_NEXT_CERT}"):
        if (folder / rel).exists():
            _certified(roots, rel, _loads(_read_small(folder / rel, rel), rel))
    if (folder / "users").exists():
        files = sorted((folder / "users").iterdir())
        if sum(f.name != persons.REMOVED_FILE for f in files) > persons.MAX_ROSTER_PEOPLE:
            raise BackupError(
                f"the backup holds more than {persons.MAX_ROSTER_PEOPLE} users: not a station redline keeps"
            )
        for f in files:
            rel = f"users/{f.name}"
            obj = _loads(_read_small(f, rel), rel)
            if f.name == persons.REMOVED_FILE:
                _removals(roots, rel, obj)
                continue
            try:
                persons.read_user(obj, f.name)
            except RedlineError as exc:
                raise BackupError(f"backup file {rel} is not a user's file as redline writes it: {exc}") from None
    if manifest["secrets"] == "encrypted":
        if not (folder / SEALED).exists():
            raise BackupError(f"the backup says its secret keys are sealed, but holds no {SEALED}")
        _sealed_fields(_loads(_read_small(folder / SEALED, SEALED, MAX_SEALED), SEALED))


def _removals(roots: list[bytes], rel: str, obj: Any) -> None:
    """users/+removed.json: a list of removal certificates (``persons.load_removed``), each signed by
    one of the station's roots and naming the station."""
    if not isinstance(obj, list):
        raise BackupError(f"backup file {rel} is not a list of removal certificates")
    station = identity.fingerprint(roots[0])
    for i, item in enumerate(obj):
        try:
            signed = identity.SignedCert.from_obj(item)
        except RedlineError as exc:
            raise BackupError(f"backup file {rel}: entry {i}: {exc}") from None
        for root in reversed(roots):
            with contextlib.suppress(RedlineError):
                if persons.PersonCert.open(signed, root, station=station).removed:
                    break
        else:
            raise BackupError(f"backup file {rel}: entry {i} is not a removal certified by one of the station's roots")


def held_keys(keys_dir: Path) -> dict[str, str]:
    """The ids of the keys a backup of ``keys_dir`` holds: the signing key's id, the TLS key's
    (the SHA-256 of its SPKI, what the peer pins) and, during a rotation, the next ones'."""
    from redline.home import _pem_to_der

    def signing(name: str) -> str:
        return identity.key_id(bytes(identity.load_signing_key(keys_dir / name).verify_key))

    def tls(name: str) -> str:
        return identity.spki_hash(_pem_to_der((keys_dir / name).read_bytes()))

    held = {"signing": signing("signing.key"), "tls": tls("tls.crt")}
    if _next_whole(keys_dir, keyfiles.NEXT_KEY):
        held["next_signing"] = signing(keyfiles.NEXT_KEY)
    if _next_whole(keys_dir, keyfiles.TLS_NEXT_KEY):
        held["next_tls"] = tls(keyfiles.TLS_NEXT_CRT)
    return held


def keys_in_force(keys_dir: Path) -> dict[str, str]:
    """The ids of the signing and TLS keys the station uses now."""
    held = held_keys(keys_dir)
    return {"signing": held["signing"], "tls": held["tls"]}


def stale_keys(keys_dir: Path, record: dict[str, Any]) -> list[str]:
    """The keys in force that the backup ``record`` (last-backup.json or a manifest) does not
    hold: a restore from it could not use them (empty: it holds them all). A record of an earlier
    version names none: the backup's own certificates say; unreadable, nothing is told (empty)."""
    recorded = record.get("keys")
    if isinstance(recorded, dict):
        have = set(recorded.values())
    else:  # an earlier version's record: the backup's own public files say which keys it holds
        have = _public_key_ids(Path(str(record.get("path"))))
        if not have:
            return []  # nothing to tell from: not a finding of its own (the backup's age still is)
    return [role for role, kid in keys_in_force(keys_dir).items() if kid not in have]


def _public_key_ids(folder: Path) -> set[str]:
    """The key ids a backup folder's certificates name (the TLS one from its certificate), or none."""
    from redline.home import _pem_to_der

    ids: set[str] = set()
    try:
        for rel in ("keys/certs.json", f"keys/{keyfiles.NEXT_CERT}"):
            if rel.endswith("certs.json") or (folder / rel).exists():
                obj = _loads(_read_small(folder / rel, rel), rel)
                for cert in obj.values() if rel.endswith("certs.json") else [obj]:
                    data = identity.SignedCert.from_obj(cert).data
                    kc = canonical.decode_object(data, "key certificate")
                    ids.add(str(kc.get("key_id") if kc.get("role") == "signing" else ""))
        for rel in ("keys/tls.crt", f"keys/{keyfiles.TLS_NEXT_CRT}"):
            if (folder / rel).exists():
                ids.add(identity.spki_hash(_pem_to_der(_read_small(folder / rel, rel))))
    except (RedlineError, OSError, ValueError, AttributeError):
        return set()
    return ids - {""}


def _next_whole(keys_dir: Path, name: str) -> bool:
    """Whether the rotation's next key ``name`` is prepared whole (its key and every public file)."""
    return (keys_dir / name).exists() and all((keys_dir.parent / rel).exists() for rel in NEXT_PUBLIC[name])


# -- restoring ---------------------------------------------------------------------------------------
def _roots(folder: Path) -> list[bytes]:
    """Every root the backed-up station had: keys/root.pub (version 1), then each later root its
    own chains in the backup's store filed (``rotation.filed_roots``: each opened against the one
    before). The store vouches for them; nothing else in the backup is taken for a root."""
    from redline import rotation

    first = _root_public(folder)
    try:
        ledger = Ledger.open_read_only(folder / STORE)
    except (StorageError, sqlite3.Error) as exc:
        raise BackupError(f"the backup's store cannot be opened: {exc}") from None
    try:
        return [first, *(public for _, public in rotation.filed_roots(ledger, identity.fingerprint(first), first))]
    except (RedlineError, sqlite3.Error) as exc:
        raise BackupError(f"the backup's store cannot be read: {exc}") from None
    finally:
        ledger.close()


def _certified(roots: list[bytes], rel: str, obj: Any) -> identity.KeyCert:
    """A certificate of the backup, signed by one of the station's roots (``_roots``)."""
    try:
        signed = identity.SignedCert.from_obj(obj)
    except RedlineError as exc:
        raise BackupError(f"backup file {rel}: {exc}") from None
    station = identity.fingerprint(roots[0])  # the station's identity: its first root's, after any rotation
    for root in reversed(roots):  # the newest first: a key is most likely certified by the root in force
        with contextlib.suppress(RedlineError):
            return signed.verify(root, station=station)
    raise BackupError(f"backup file {rel}: a certificate signed by none of the station's {len(roots)} root(s)")


def restore(
    folder: Path, target: Path, *, passphrase: str | None = None, keys_from: Path | None = None,
    trust_unsigned: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Make ``target`` (new or empty) a station from the backup in ``folder``.

    One gate, before anything is written: the manifest by its schema; the secret keys from an
    authenticated source (``keys_from``, a folder holding signing.key and tls.key, e.g. the
    offline copy; or the backup's sealed secrets opened with ``passphrase``, their MAC checked);
    the manifest's signature under that signing key (so every size and hash it lists is the
    station's own word); each file's size; then each file read once into a private copy inside the
    target (``_stage``: its hash checked on the bytes read), and everything after that done on the
    copy: every file parsed (``check_backup``), the store verified, the keys the ones the backup's
    root certified (``_check_keys``), and the copy installed, so nothing written into the folder
    during the restore gets in. An
    unsigned manifest (an earlier version's) only with ``trust_unsigned``, the operator's word
    that nobody else could have written the folder. Nothing is left in ``target`` if anything fails."""
    folder = folder.resolve()
    manifest = read_manifest(folder)
    signed = require_signed(manifest, trust_unsigned=trust_unsigned)
    target = target.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} is not empty: restore into a new or empty station directory")
    secrets = _secrets(folder, manifest, passphrase, keys_from)
    if signed:
        verify_manifest(manifest, bytes(_seed(secrets, "signing.key").verify_key))
    check_files(folder, manifest)
    created = not target.exists()
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = target / ".restoring"  # the backup's files, each read once (``_stage``): all that is used
    try:
        os.chmod(target, 0o700)
        staged.mkdir(mode=0o700)
        _stage(folder, manifest, staged)
        check_backup(staged, manifest)
        reports, lines = verify_store(staged)
        if not all(r.ok for r in reports):
            first = next(str(p) for r in reports for p in r.problems)
            raise BackupError(f"the backup's store does not verify ({first}); restore another backup")
        _check_keys(staged, secrets)
        roots = _roots(staged)  # keys/root.pub and the rotations in the store, before the files move
        (target / "keys").mkdir(mode=0o700)
        for rel in ("config.json", *PUBLIC_KEYS, *(r for n in secrets if n in NEXT_PUBLIC for r in NEXT_PUBLIC[n])):
            os.replace(staged / rel, target / rel)
        for name, data in secrets.items():
            identity.write_secret(target / "keys" / name, data)
        for version, public in enumerate(roots[1:], start=2):  # keys/roots.json, from the store
            keyfiles.record_root(target / "keys", version, public)
        if (staged / "users").exists():
            (target / "users").mkdir(mode=0o700)
            for rel in sorted(r for r in manifest["files"] if r.startswith("users/")):  # the listed ones only
                os.replace(staged / rel, target / rel)
        # The station is not running here (the directory was empty): the staged copy is the store.
        os.replace(staged / STORE, target / STORE)
        shutil.rmtree(staged)
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
        "taken_at": manifest["taken_at"], "lines": lines, "keys": held_keys(target / "keys"), "signed": signed,
    }  # fmt: skip


def _seed(secrets: dict[str, bytes], name: str) -> nacl.signing.SigningKey:
    try:
        return nacl.signing.SigningKey(bytes.fromhex(secrets[name].decode("ascii").strip()))
    except (ValueError, UnicodeDecodeError, nacl.exceptions.ValueError) as exc:
        raise BackupError(f"{name} does not hold an Ed25519 seed in hex") from exc


def _secrets(
    folder: Path, manifest: dict[str, Any], passphrase: str | None, keys_from: Path | None
) -> dict[str, bytes]:
    if keys_from is not None:
        nexts = [n for n in NEXT_PUBLIC if (keys_from / n).exists() and (folder / NEXT_PUBLIC[n][0]).exists()]
        names = [*SECRET_KEYS, *nexts]
        return {name: identity.read_secret(keys_from / name) for name in names}
    if manifest.get("secrets") != "encrypted":
        raise BackupError(
            "this backup holds no secret keys (taken with --secrets omit): give --keys-from DIR, a folder with "
            "the station's signing.key and tls.key (its offline copy)"
        )
    if passphrase is None:
        raise BackupError("this backup's secret keys are sealed: give the backup passphrase")
    try:
        sealed = _read_small(folder / SEALED, SEALED, MAX_SEALED)
    except FileNotFoundError:
        raise BackupError(f"the backup says its secret keys are sealed, but holds no {SEALED}") from None
    secrets = open_secrets(sealed, passphrase)
    # A next key restored only with its certificates (a sealed next key without them is dropped).
    return {n: v for n, v in secrets.items() if n in SECRET_KEYS or (folder / NEXT_PUBLIC[n][0]).exists()}


def _check_keys(folder: Path, secrets: dict[str, bytes]) -> None:
    """The secret keys must be the ones the backup's certificates (signed by our root) name."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

    certs = _loads(_read_small(folder / "keys/certs.json", "keys/certs.json"), "keys/certs.json")
    roots = _roots(folder)
    signing_cert = _certified(roots, "keys/certs.json", certs["signing"])
    signing = _seed(secrets, "signing.key")
    if bytes(signing.verify_key).hex() != signing_cert.key:
        raise BackupError("signing.key is not the signing key this station's root certified: wrong key file")
    tls_cert = _tls_cert(folder, "keys/tls.crt")
    try:
        tls_key = load_pem_private_key(secrets["tls.key"], password=None)
    except ValueError as exc:
        raise BackupError("tls.key is not a PEM private key") from exc
    spki = PublicFormat.SubjectPublicKeyInfo
    if tls_key.public_key().public_bytes(Encoding.DER, spki) != tls_cert.public_key().public_bytes(Encoding.DER, spki):
        raise BackupError("tls.key does not belong to the backup's TLS certificate: wrong key file")
    if keyfiles.NEXT_KEY in secrets:  # a rotation under way: its next key must be the one certified
        rel = f"keys/{keyfiles.NEXT_CERT}"
        next_cert = _certified(roots, rel, _loads(_read_small(folder / rel, rel), rel))
        nxt = _seed(secrets, keyfiles.NEXT_KEY)
        if bytes(nxt.verify_key).hex() != next_cert.key:
            raise BackupError(f"{keyfiles.NEXT_KEY} is not the next signing key the root certified: wrong key file")


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
    return _members(folder)


def _members(folder: Path) -> list[str]:
    """Every file in ``folder`` (relative, the manifest aside). A symbolic link anywhere, or
    anything but plain files and folders, is refused: a backup holds only plain files, and a link
    would make a restore read (and copy) whatever it points at."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            rel = str(path.relative_to(folder))
            if stat.S_ISLNK(mode):
                raise BackupError(f"backup file {rel} is a symbolic link: a backup holds only plain files")
            if name in filenames and not stat.S_ISREG(mode):
                raise BackupError(f"backup file {rel} is not a plain file")
        out.extend(str((Path(dirpath) / n).relative_to(folder)) for n in filenames)
    return sorted(r for r in out if r != MANIFEST)


def _member_name(rel: str) -> bool:
    """Whether ``rel`` is a file a backup holds (no other name is restored or read)."""
    known = {STORE, "config.json", SEALED, *PUBLIC_KEYS, *(r for v in NEXT_PUBLIC.values() for r in v)}
    if rel in known:
        return True
    parts = rel.split("/")
    return len(parts) == 2 and parts[0] == "users" and parts[1].endswith(".json") and not parts[1].startswith(".")


def _read_small(path: Path, rel: str, limit: int = MAX_FILE) -> bytes:
    """A backup file's bytes, never through a symbolic link, at most ``limit`` of them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO: refused below, not waited on
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BackupError(f"backup file {rel} cannot be read ({exc.strerror}; a symbolic link is refused)") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BackupError(f"backup file {rel} is not a plain file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BackupError(f"backup file {rel} is over {limit} bytes: not one redline writes")
    return data


def _loads(data: bytes, rel: str) -> Any:
    try:
        return jsonin.loads(data)
    except EncodingError as exc:
        raise BackupError(f"backup file {rel} is not valid JSON ({exc})") from None


def _hex(value: str, what: str, field: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BackupError(f"{what}: {field} is not hex") from None


def _config(folder: Path) -> StationConfig:
    from redline.config import StationConfig

    try:
        return StationConfig.from_obj(_loads(_read_small(folder / "config.json", "config.json"), "config.json"))
    except ConfigError as exc:
        raise BackupError(f"backup file config.json: {exc}") from None


def _root_public(folder: Path) -> bytes:
    text = _read_small(folder / "keys/root.pub", "keys/root.pub").decode("ascii", "replace").strip()
    if not identity.is_hex(text, 32):
        raise BackupError("backup file keys/root.pub does not hold a root public key (hex)")
    return bytes.fromhex(text)


def _tls_cert(folder: Path, rel: str) -> Any:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(_read_small(folder / rel, rel))
    except ValueError:
        raise BackupError(f"backup file {rel} is not a PEM certificate") from None


def _digest(path: Path) -> dict[str, Any]:
    """A file's SHA-256 and size, from one reading (what a signed manifest lists for it)."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "size": size}


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
