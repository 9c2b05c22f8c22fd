"""Online signing-key rotation (guarantee 6): the files, their order, and recovery after a crash.

``redline keys rotate --signing --root-key PATH`` runs in three steps, each durable before the next:

1. **prepare** (``prepare_signing``): a new signing key and the root's certificate over it are
   written beside the current ones as ``keys/signing.next.key`` and ``keys/signing.next.cert.json``
   (written, fsynced, renamed into place). The root key is read from the path given at that moment
   and never copied. Then a KEY envelope naming the new key is filed in each line's outbox and the
   certificate among our own in the store (one commit).
2. **switch**, per line (``session.py``): the KEY envelope is sealed with the *old* key at seq s;
   from s + 1 that line signs with the new key. The gate (``gate.py``) holds the same windows, so
   the chain and the key files can never disagree about which key signs: the chain decides.
3. **promote** (``promote_signing``), once every line has switched: ``keys/certs.json`` names the
   new certificate (written, fsynced, renamed), then ``signing.next.key`` is renamed over
   ``signing.key`` and the next certificate file removed.

A crash anywhere leaves one of these states, each of which the station takes up at start: the
next files without a KEY envelope filed (``keys rotate`` again files it: ``pending_signing``);
a KEY in the outbox (sealed when the line is next in sync); KEY sealed on some lines (each line's
chain says which key signs it, ``StationKeys.for_key``); certs.json promoted but not the key file
(``finish_signing`` completes the rename). Nothing here writes the store: the callers do.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing

from redline import identity
from redline.errors import ConfigError
from redline.identity import KeyCert, SignedCert

NEXT_KEY = "signing.next.key"
NEXT_CERT = "signing.next.cert.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` whole or not at all: a new file, fsynced, renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_root(path: Path, root_public: bytes) -> nacl.signing.SigningKey:
    """The station's root key from wherever the operator keeps it; refused unless it is this
    station's root (a wrong key would certify a key the peer can never trust)."""
    root = identity.load_signing_key(path)
    if bytes(root.verify_key) != root_public:
        raise ConfigError(
            f"{path} is not this station's root key (its fingerprint is not {identity.fingerprint(root_public)[:16]}…)"
        )
    return root


def read_new_root(path: Path, in_force: bytes) -> nacl.signing.SigningKey:
    """A new root key for ``keys rotate --root``: refused if it is the root in force (a key counts once)."""
    root = identity.load_signing_key(path)
    if bytes(root.verify_key) == in_force:
        raise ConfigError(f"{path} is the root in force, not a new one")
    return root


def pending_signing(keys_dir: Path) -> tuple[nacl.signing.SigningKey, SignedCert] | None:
    """A prepared next signing key and its certificate, if a rotation is under way."""
    key_path, cert_path = keys_dir / NEXT_KEY, keys_dir / NEXT_CERT
    if not key_path.exists():
        return None
    key = identity.load_signing_key(key_path)
    if not cert_path.exists():
        raise ConfigError(f"{key_path} has no certificate beside it ({NEXT_CERT}); run 'redline keys rotate' again")
    cert = SignedCert.from_obj(json.loads(cert_path.read_text()))
    return key, cert


def prepare_signing(
    keys_dir: Path, root: nacl.signing.SigningKey, name: str, station: str | None = None
) -> tuple[nacl.signing.SigningKey, SignedCert]:
    """Step 1: a new signing key and the root's certificate over it, durable beside the current
    ones. A rotation already prepared is returned as it is (the command is safe to repeat)."""
    held = pending_signing(keys_dir)
    if held is not None:
        return held
    (keys_dir / NEXT_CERT).unlink(missing_ok=True)
    key = nacl.signing.SigningKey.generate()
    public = bytes(key.verify_key)
    # The station's identity: its first root's fingerprint, also under a later root (section 5.9, ROOT).
    fp = station or identity.fingerprint(bytes(root.verify_key))
    cert = identity.certify(
        root,
        KeyCert(station=fp, name=name, role="signing", key=public.hex(), key_id=identity.key_id(public),
                issued_at=int(time.time() * 1000)),
    )  # fmt: skip
    # The certificate first: a key file without one is refused at start, a certificate alone is
    # just made again.
    _write_atomic(keys_dir / NEXT_CERT, (json.dumps(cert.to_obj()) + "\n").encode())
    _write_atomic(keys_dir / NEXT_KEY, key.encode().hex().encode("ascii") + b"\n")
    return key, cert


def key_content(cert: SignedCert) -> dict[str, Any]:
    """The KEY envelope's content naming the new key (PROTOCOL.md section 5.9)."""
    return {"certs": [cert.to_obj()]}


def certs_in(content: dict[str, Any]) -> list[SignedCert]:
    """The certificates a KEY envelope carries (already checked by the gate)."""
    return [SignedCert.from_obj(c) for c in content.get("certs", [])]


def promote_signing(keys_dir: Path, cert: SignedCert) -> None:
    """Step 3: the new key becomes the station's signing key on disk (every line signs with it)."""
    _name_in_certs(keys_dir, "signing", cert)
    finish_signing(keys_dir)


def _name_in_certs(keys_dir: Path, role: str, cert: SignedCert) -> None:
    """certs.json names ``cert`` as the station's ``role`` key (written whole, then renamed): the
    step after which a crash is completed by ``finish_signing``/``finish_tls``."""
    certs_path = keys_dir / "certs.json"
    certs = json.loads(certs_path.read_text())
    certs[role] = cert.to_obj()
    _write_atomic(certs_path, (json.dumps(certs, indent=2) + "\n").encode(), mode=0o644)


def finish_signing(keys_dir: Path) -> None:
    """Complete a promotion a crash interrupted: certs.json already names the next key."""
    key_path, cert_path = keys_dir / NEXT_KEY, keys_dir / NEXT_CERT
    if not cert_path.exists():
        return
    named = SignedCert.from_obj(json.loads((keys_dir / "certs.json").read_text())["signing"])
    if named != SignedCert.from_obj(json.loads(cert_path.read_text())):
        return  # not promoted yet: the rotation is still under way
    if key_path.exists():
        os.replace(key_path, keys_dir / "signing.key")
    cert_path.unlink()
    _fsync_dir(keys_dir)


# -- TLS keys -----------------------------------------------------------------------------------------
#
# ``redline keys rotate --tls`` keeps the paths up (PROTOCOL.md section 5.9, KEY with ``tls_der``):
# 1. prepare (``prepare_tls``): a new TLS key and self-signed certificate as keys/tls.next.key and
#    keys/tls.next.crt, and the root's ``tls`` certificate over its SPKI hash as
#    keys/tls.next.cert.json (written last: the three are whole only when it is there);
# 2. a KEY on every line names it and carries the certificate's DER: the peer pins the new key
#    beside the old one from the moment it stores the KEY;
# 3. promote (``promote_tls``), once the peer has receipted every line's KEY (so it holds the new
#    pin): certs.json names the new certificate, then tls.next.key and tls.next.crt are renamed
#    over tls.key and tls.crt. Connections already up stay up; new ones present the new key. The
#    peer drops the old pin as soon as a connection proves the new one.
# A crash between the renames is completed at start (``finish_tls``), as for the signing key.

TLS_NEXT_KEY = "tls.next.key"
TLS_NEXT_CRT = "tls.next.crt"
TLS_NEXT_CERT = "tls.next.cert.json"


def pending_tls(keys_dir: Path) -> tuple[bytes, SignedCert] | None:
    """A prepared next TLS certificate (DER) and the root's certificate over it, if whole."""
    if not (keys_dir / TLS_NEXT_CERT).exists():
        return None
    from redline.home import _pem_to_der

    cert = SignedCert.from_obj(json.loads((keys_dir / TLS_NEXT_CERT).read_text()))
    return _pem_to_der((keys_dir / TLS_NEXT_CRT).read_bytes()), cert


def prepare_tls(
    keys_dir: Path, root: nacl.signing.SigningKey, name: str, station: str | None = None
) -> tuple[bytes, SignedCert]:
    """Step 1 for the TLS key; a rotation already prepared is returned as it is."""
    held = pending_tls(keys_dir)
    if held is not None:
        return held
    for leftover in (TLS_NEXT_KEY, TLS_NEXT_CRT):
        (keys_dir / leftover).unlink(missing_ok=True)
    der = identity.new_tls_identity(keys_dir / TLS_NEXT_KEY, keys_dir / TLS_NEXT_CRT, name)
    spki = identity.spki_hash(der)
    cert = identity.certify(
        root,
        KeyCert(station=station or identity.fingerprint(bytes(root.verify_key)), name=name, role="tls", key=spki,
                key_id=spki[:32], issued_at=int(time.time() * 1000)),
    )  # fmt: skip
    for done in (TLS_NEXT_KEY, TLS_NEXT_CRT):
        fd = os.open(keys_dir / done, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _write_atomic(keys_dir / TLS_NEXT_CERT, (json.dumps(cert.to_obj()) + "\n").encode(), mode=0o644)
    return der, cert


def tls_key_content(cert: SignedCert, der: bytes) -> dict[str, Any]:
    """The KEY envelope's content naming a new TLS key (PROTOCOL.md section 5.9)."""
    return {"certs": [cert.to_obj()], "tls_der": der.hex()}


def promote_tls(keys_dir: Path, cert: SignedCert) -> None:
    """Step 3: the new TLS key becomes the station's (new connections present it)."""
    _name_in_certs(keys_dir, "tls", cert)
    finish_tls(keys_dir)


def finish_tls(keys_dir: Path) -> None:
    """Complete a TLS promotion a crash interrupted: certs.json already names the next key."""
    cert_path = keys_dir / TLS_NEXT_CERT
    if not cert_path.exists():
        return
    named = SignedCert.from_obj(json.loads((keys_dir / "certs.json").read_text())["tls"])
    if named != SignedCert.from_obj(json.loads(cert_path.read_text())):
        return  # not promoted yet
    # The key first, then the certificate: a reader that finds the new certificate finds its key.
    if (keys_dir / TLS_NEXT_KEY).exists():
        os.replace(keys_dir / TLS_NEXT_KEY, keys_dir / "tls.key")
    if (keys_dir / TLS_NEXT_CRT).exists():
        os.replace(keys_dir / TLS_NEXT_CRT, keys_dir / "tls.crt")
    _fsync_dir(keys_dir)
    cert_path.unlink()
    _fsync_dir(keys_dir)


# -- the root (section 5.9, ROOT) -----------------------------------------------------------------------
#
# ``redline keys rotate --root --root-key OLD --new-root-key NEW`` reads both roots from where the
# operator keeps them (never copied), files on every line a ROOT signed by both, and records the new
# root's PUBLIC key in keys/roots.json (version and key, in order; version 1 is keys/root.pub, the
# station's identity, which never changes). The peer trusts the new root once its operator typed
# the new safety code and its ROOT_CONFIRM stands; until every line's peer has, keys are still
# certified by the old root (``rotation.unconfirmed_roots`` says which lines wait).

ROOTS = "roots.json"
ROOT_NEXT = "root.next.json"  # the ROOT content being filed: {"version", "content"} (public data only)


def prepare_root(keys_dir: Path, version: int, public: bytes, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The ROOT content naming root ``version`` (``public``), durable before anything is filed, so
    the command is safe to repeat after a crash: the same statement (and so the same safety codes)
    is filed again, never a second one. ``make`` builds it the first time."""
    path = keys_dir / ROOT_NEXT
    if path.exists():
        held = json.loads(path.read_text())
        data = bytes.fromhex(held["content"]["rotation"]["data"])
        named = json.loads(data)["root"]
        if held["version"] != version or named != public.hex():
            raise ConfigError(f"another root rotation (version {held['version']}, root {named[:16]}…) is under way "
                              "at this station: finish it with the new root key it names")  # fmt: skip
        content: dict[str, Any] = held["content"]
        return content
    content = make()
    _write_atomic(path, (json.dumps({"version": version, "content": content}) + "\n").encode(), mode=0o644)
    return content


def tidy_root(keys_dir: Path) -> None:
    """A crash after the new root was recorded but before its prepared statement was dropped."""
    path = keys_dir / ROOT_NEXT
    if path.exists() and json.loads(path.read_text())["version"] <= root_in_force(keys_dir)[0]:
        path.unlink()
        _fsync_dir(keys_dir)


def finish_root(keys_dir: Path, version: int, public: bytes) -> None:
    """The ROOT is filed on every line: the new root is recorded, the prepared statement dropped."""
    record_root(keys_dir, version, public)
    (keys_dir / ROOT_NEXT).unlink(missing_ok=True)
    _fsync_dir(keys_dir)


def root_in_force(keys_dir: Path) -> tuple[int, bytes]:
    """The station's latest root (version, public key): the last of keys/roots.json, else root.pub."""
    path = keys_dir / ROOTS
    if path.exists():
        held = json.loads(path.read_text())
        if held:
            return int(held[-1]["version"]), bytes.fromhex(held[-1]["public"])
    return 1, bytes.fromhex((keys_dir / "root.pub").read_text().strip())


def root_public_at(keys_dir: Path, version: int) -> bytes | None:
    """The public key of the station's root ``version`` as recorded here, or None."""
    if version == 1:
        return bytes.fromhex((keys_dir / "root.pub").read_text().strip())
    path = keys_dir / ROOTS
    held = json.loads(path.read_text()) if path.exists() else []
    return next((bytes.fromhex(r["public"]) for r in held if r["version"] == version), None)


def record_root(keys_dir: Path, version: int, public: bytes) -> None:
    """Add a new root's public key to keys/roots.json (whole or not at all); the same twice is kept once."""
    path = keys_dir / ROOTS
    held = json.loads(path.read_text()) if path.exists() else []
    if any(r["version"] == version for r in held):
        return
    held.append({"version": version, "public": public.hex()})
    _write_atomic(path, (json.dumps(held, indent=2) + "\n").encode(), mode=0o644)
