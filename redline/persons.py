"""People sign for themselves (guarantee 8): per-user keys unlocked only by that user's password.

Each user's Ed25519 seed is sealed with a key derived from their password (Argon2id, libsodium
``crypto_pwhash``) and XSalsa20-Poly1305 (``SecretBox``). The station stores the sealed file but
cannot open it: only the person typing the password can sign. The public half is published to the
peer in a ROSTER envelope, so the peer checks the person's signature on ACK, TEST_ANSWER,
CALL_RECORD and READOUT against the roster the sender published before.

The receiving side pins each person's key the first time a ROSTER names them (``RosterPins``): a
later ROSTER cannot change or drop a pinned key, so "acknowledged by" always names the key holder
first published.

**Certified by the root** (guarantee 8, issue 13): a person's name, role and key are certified by
the station's root (``PersonCert``, domain ``personcert``; ``redline user add --root-key``), and
the ROSTER carries each certificate. Pins then follow certificates, not the online key's word: a
key, role or removal changes only with a newer certificate from the same root (rotation, a new
role, a removal certificate in the ROSTER's ``removed``), and a removed person comes back only
with a newer certificate over a new key. Anything else is refused and alarmed: a certificate the
pinned root did not sign, an uncertified change to a certified person. People published without a
certificate (stations before this) are pinned on first sight as before, and marked so.
``PersonSignatures`` runs the same rule over whole chains for ``redline verify`` and bundles (the
gate calls it), so a third party checks every person signature up to the station's root.

What each role may do is one table here (``CAPABILITIES``), read by the HTTP API,
by the station when an operator files and by ops when the peer's envelopes arrive
(``check_signer``); which kinds a person signs is the registry's (``kinds.REGISTRY``, its
``person`` column), and the role names and the person-name rule are the protocol's (``kinds``).

A person signature covers the envelope content without its ``person`` field:
``Ed25519(person key, "redline/1/person\\0" || canonical(content minus "person"))`` and is carried as
``content["person"] = {"name", "role", "key", "sig"}``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from redline import canonical, identity, jsonin, kinds
from redline.errors import ConfigError, RedlineError, RoleError, SchemaError, SignatureError, VerificationError
from redline.identity import SignedCert

# THE table of roles and what each may do: the HTTP API (api/auth.py), the station when an
# operator files (Station.act) and ops when the peer's envelopes are received all read it.
# "read" sees the line; "operate" files messages and actions and signs ACK, TEST_ANSWER,
# CALL_RECORD and READOUT; "confirm" confirms a line's safety code. Users are managed with the CLI.
READ, OPERATE, CONFIRM = "read", "operate", "confirm"
CAPABILITIES: dict[str, frozenset[str]] = {
    "duty": frozenset({READ, OPERATE}),
    "deputy": frozenset({READ, OPERATE}),
    "supervisor": frozenset({READ, OPERATE, CONFIRM}),
    "auditor": frozenset({READ}),
    "admin": frozenset({READ}),
}
ROLES = kinds.ROLES  # the keys of CAPABILITIES, in this order (tests/test_attacks_ops.py checks it)
# Signing a person-signed kind (the registry's ``person`` column) needs "operate".
PERSON_SIGNED_KINDS = kinds.PERSON_SIGNED
SIGNING_NEEDS: dict[str, str] = {kind: OPERATE for kind in sorted(PERSON_SIGNED_KINDS)}
_NAME = kinds.PERSON_NAME
DOMAIN = "person"
DOMAIN_CERT = "personcert"  # a root's certificate over a person's name, role and key (or their removal)
_T = TypeVar("_T")
REMOVED_FILE = "+removed.json"  # users/ (no person name starts with +): removal certificates, sent in ROSTERs
# The most people one ROSTER may list, and the most one station may have pinned in all (PROTOCOL.md
# 5.10). A protocol constant, not a setting: which people a ROSTER pins decides whose signature
# counts, so the station live, its peer, ``redline verify`` and a bundle's reader must count to the
# same number, or one co-signed transcript would mean something else to each (it was config.json's
# ``max_roster_people`` once; config.py refuses a value other than this one).
MAX_ROSTER_PEOPLE: Final = 500

# Argon2id cost: "moderate" is libsodium's recommendation for interactive logins of sensitive data.
# REDLINE_PWHASH_COST=interactive (64 MiB) is for demos and tests on small machines only.
_FAST = os.environ.get("REDLINE_PWHASH_COST") == "interactive"
OPS = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE if _FAST else nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEM = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE if _FAST else nacl.pwhash.argon2id.MEMLIMIT_MODERATE
# The most Argon2id cost a sealed file may name: what this version writes at its strongest setting. A
# user's file (and a backup's sealed secrets) names its own cost, and that cost is work and memory a
# login (or a restore) spends: a file naming more is refused before any of it is spent.
MAX_OPS = max(OPS, nacl.pwhash.argon2id.OPSLIMIT_MODERATE)
MAX_MEM = max(MEM, nacl.pwhash.argon2id.MEMLIMIT_MODERATE)
SEALED_SEED_BYTES = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES + 32  # a sealed Ed25519 seed


@dataclass(frozen=True, kw_only=True)
class PersonCert:
    """The station root's statement: ``name`` holds ``key`` with ``role`` (or, ``removed``: no longer)."""

    station: str  # fingerprint of the root that signs it
    name: str
    role: str
    key: str
    issued_at: int
    removed: bool = False

    def to_obj(self) -> dict[str, Any]:
        return {"v": 1, "station": self.station, "name": self.name, "role": self.role, "key": self.key,
                "issued_at": self.issued_at, "removed": self.removed}  # fmt: skip

    def sign(self, root: nacl.signing.SigningKey) -> SignedCert:
        data = canonical.encode(self.to_obj())
        return SignedCert(data, identity.sign(root, DOMAIN_CERT, data))

    @classmethod
    def open(cls, signed: SignedCert, root_public: bytes, *, station: str | None = None) -> PersonCert:
        """Verified under ``root_public`` and naming ``station``: the station's identity (default:
        the root's own fingerprint; after a root rotation, the first root's; SignatureError,
        SchemaError)."""
        identity.verify(root_public, DOMAIN_CERT, signed.data, signed.sig, "person certificate")
        obj = canonical.decode_object(signed.data, "person certificate")
        identity.require(obj, "person certificate", {"v": int, "station": str, "name": str, "role": str, "key": str,
                                                     "issued_at": int, "removed": bool})  # fmt: skip
        if obj["v"] != 1 or len(obj) != 7:
            raise SchemaError("person certificate: version 1 has exactly the members of PROTOCOL.md section 5.10")
        cert = cls(**{k: v for k, v in obj.items() if k != "v"})
        Person(name=cert.name, role=cert.role, key=cert.key)  # the same rules as a roster entry
        if cert.station != (station or identity.fingerprint(root_public)):
            raise SignatureError("person certificate names another station than the root that signed it")
        return cert


def certify_person(root: nacl.signing.SigningKey, person: Person, *, removed: bool = False,
                   issued_at: int | None = None, station: str | None = None) -> SignedCert:  # fmt: skip
    """The root's certificate over ``person`` (or over their removal); ``station`` is the station's
    identity (default: the root's fingerprint; after a root rotation, the first root's)."""
    stamp = int(time.time() * 1000) if issued_at is None else issued_at
    fp = station or identity.fingerprint(bytes(root.verify_key))
    return PersonCert(station=fp, name=person.name, role=person.role,
                      key=person.key, issued_at=stamp, removed=removed).sign(root)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Person:
    name: str
    role: str
    key: str  # hex public key
    cert: SignedCert | None = None  # the root's certificate over name, role and key, if any

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SchemaError(f"user name {self.name!r} must be 1-63 letters, digits, spaces, '.', '_' or '-'")
        if self.role not in ROLES:
            raise SchemaError(f"role must be one of {', '.join(ROLES)}")
        if not identity.HEX64.match(self.key):
            raise SchemaError("person key must be 64 hex digits")

    @property
    def key_id(self) -> str:
        return identity.key_id(bytes.fromhex(self.key))

    def to_obj(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role, "key": self.key}

    def roster_entry(self) -> dict[str, Any]:
        """As a ROSTER lists it: with the root's certificate when there is one."""
        return {**self.to_obj(), **({"cert": self.cert.to_obj()} if self.cert is not None else {})}


def _identity(station: Path) -> str | None:
    """The station's identity (its first root's fingerprint, keys/root.pub), if it has one."""
    pub = station / "keys" / "root.pub"
    return identity.fingerprint(bytes.fromhex(pub.read_text().strip())) if pub.exists() else None


def users_dir(station: Path) -> Path:
    return station / "users"


def add_user(
    station: Path, name: str, role: str, password: str, *, ops: int = OPS, mem: int = MEM,
    root: nacl.signing.SigningKey | None = None,
) -> Person:  # fmt: skip
    """Create a user's key, sealed under their password, certified by ``root`` when given (the
    station's root, read by the caller from wherever it lives). Refuses an existing name or a
    weak password."""
    if len(password) < 10:
        raise ConfigError("the password must be at least 10 characters")
    folder = users_dir(station)
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{name}.json"
    Person(name=name, role=role, key="0" * 64)  # the name and role rules, before any work
    if path.exists():
        raise ConfigError(f"user {name!r} already exists at this station")
    held = sum(1 for p in folder.glob("*.json") if p.name != REMOVED_FILE)
    if held >= MAX_ROSTER_PEOPLE:  # refused here, before a ROSTER that every reader would ignore is signed
        raise ConfigError(
            f"this station has {held} users, the most one ROSTER may list ({MAX_ROSTER_PEOPLE}, PROTOCOL.md "
            "5.10); remove one first ('redline user remove')"
        )
    return _seal_user(path, name, role, password, ops=ops, mem=mem, root=root)


def _seal_user(path: Path, name: str, role: str, password: str, *, ops: int, mem: int,
               root: nacl.signing.SigningKey | None) -> Person:  # fmt: skip
    key = nacl.signing.SigningKey.generate()
    person = Person(name=name, role=role, key=bytes(key.verify_key).hex())
    if root is not None:
        cert = certify_person(root, person, station=_identity(path.parent.parent))
        person = Person(name=name, role=role, key=person.key, cert=cert)
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(nacl.pwhash.argon2id.kdf(32, password.encode(), salt, opslimit=ops, memlimit=mem))
    sealed = box.encrypt(key.encode())
    record: dict[str, Any] = {**person.to_obj(), "salt": salt.hex(), "ops": ops, "mem": mem, "sealed": sealed.hex()}
    if person.cert is not None:
        record["cert"] = person.cert.to_obj()
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    identity.write_secret(tmp, json.dumps(record, indent=2).encode())
    os.replace(tmp, path)  # whole or not at all: a rotation never leaves a person without a key
    _fsync_dir(path.parent)
    return person


def rotate_user(station: Path, name: str, password: str, root: nacl.signing.SigningKey, *, ops: int = OPS,
                mem: int = MEM) -> Person:  # fmt: skip
    """A person's new key (sealed under ``password``), certified by ``root`` with a later
    certificate: the peer's pin moves to it when the next ROSTER carries it; the old key signs
    nothing from then on."""
    if len(password) < 10:
        raise ConfigError("the password must be at least 10 characters")
    path = users_dir(station) / f"{name}.json"
    if not _NAME.match(name) or not path.exists():
        raise ConfigError(f"no user {name!r} at this station (see 'redline user list')")
    role = json.loads(path.read_text())["role"]
    return _seal_user(path, name, role, password, ops=ops, mem=mem, root=root)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_user(station: Path, name: str, *, root: nacl.signing.SigningKey | None = None) -> Person:
    """Remove a user: their sealed key file is deleted, so nobody can unlock it again, and the
    station's console ends their session at its next request (it re-reads the users folder). With
    ``root``, the root certifies the removal (kept in users/+removed.json and published in every
    ROSTER), so the peer drops the person's pin; without it the peer keeps the pin (refused drop)."""
    path = users_dir(station) / f"{name}.json"
    if not _NAME.match(name) or not path.exists():
        raise ConfigError(f"no user {name!r} at this station (see 'redline user list')")
    obj = json.loads(path.read_text())
    person = Person(name=obj["name"], role=obj["role"], key=obj["key"])
    if root is not None:  # the removal certificate first: a crash between leaves the user, never a silent drop
        held = [c.to_obj() for c in load_removed(station) if _removal_of(c) != (person.name, person.key)]
        held.append(certify_person(root, person, removed=True, station=_identity(station)).to_obj())
        removed = users_dir(station) / REMOVED_FILE
        tmp = removed.with_name(REMOVED_FILE + ".tmp")
        tmp.unlink(missing_ok=True)
        identity.write_secret(tmp, json.dumps(held, indent=2).encode())
        os.replace(tmp, removed)
    path.unlink()
    _fsync_dir(users_dir(station))  # the removal is durable before we say it is done
    return person


def _removal_of(signed: SignedCert) -> tuple[str, str]:
    obj = canonical.decode_object(signed.data, "person certificate")
    return str(obj.get("name")), str(obj.get("key"))


def _read_users_file(path: Path, read: Callable[[Any], _T]) -> _T:
    """``read`` over the JSON in one file of users/, or a ConfigError naming the file and what is
    wrong with it: a file edited by hand or half written must say so in one line (the tick keeps
    the roster last read; a person's filing is refused with this reason), never as a bare
    JSONDecodeError or KeyError from wherever it was read."""
    try:
        return read(jsonin.loads(path.read_text(encoding="utf-8")))  # nesting bounded: one line, not a RecursionError
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RedlineError) as exc:
        why = str(exc) if isinstance(exc, RedlineError) else f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"users/{path.name} cannot be read ({why}); restore it or add the user again") from exc


def load_removed(station: Path) -> list[SignedCert]:
    """The root's removal certificates this station publishes (users/+removed.json)."""
    path = users_dir(station) / REMOVED_FILE
    if not path.exists():
        return []
    return _read_users_file(path, lambda certs: [SignedCert.from_obj(c) for c in certs])


def _person(obj: Any) -> Person:
    cert = SignedCert.from_obj(obj["cert"]) if "cert" in obj else None
    return Person(name=obj["name"], role=obj["role"], key=obj["key"], cert=cert)


@dataclass(frozen=True)
class SealedUser:
    """A user's file (users/NAME.json) as this version writes it: the person and their sealed key."""

    person: Person
    salt: bytes
    ops: int
    mem: int
    sealed: bytes


_USER_FIELDS: dict[str, type] = {"name": str, "role": str, "key": str, "salt": str, "ops": int, "mem": int,
                                 "sealed": str}  # fmt: skip


def read_user(obj: Any, file_name: str) -> SealedUser:
    """``obj`` (the JSON of users/``file_name``) checked as ``_seal_user`` writes it: exactly its
    fields, the person's name the file's, the salt and the sealed key hex of their sizes, and the
    Argon2id cost within what this version writes (``MAX_OPS``, ``MAX_MEM``). SchemaError naming
    what is wrong: the one reader of a user's file for a login (``unlock``) and a restore."""
    if not isinstance(obj, dict):
        raise SchemaError("a user's file holds a JSON object")
    identity.require(obj, "user file", {**_USER_FIELDS, **({"cert": dict} if "cert" in obj else {})})
    person = _person(obj)
    if file_name != f"{person.name}.json":
        raise SchemaError(f"it is {person.name!r}'s file, not one named {file_name!r}")
    salt, sealed = obj["salt"], obj["sealed"]
    if not identity.is_hex(salt, nacl.pwhash.argon2id.SALTBYTES):
        raise SchemaError(f"the salt is not {nacl.pwhash.argon2id.SALTBYTES} bytes in hex")
    if not identity.is_hex(sealed, SEALED_SEED_BYTES):
        raise SchemaError(f"the sealed key is not {SEALED_SEED_BYTES} bytes in hex")
    if not nacl.pwhash.argon2id.OPSLIMIT_MIN <= obj["ops"] <= MAX_OPS:
        raise SchemaError(f"Argon2id ops {obj['ops']} is outside what redline writes (at most {MAX_OPS})")
    if not nacl.pwhash.argon2id.MEMLIMIT_MIN <= obj["mem"] <= MAX_MEM:
        raise SchemaError(f"Argon2id memory {obj['mem']} is outside what redline writes (at most {MAX_MEM})")
    return SealedUser(person, bytes.fromhex(salt), obj["ops"], obj["mem"], bytes.fromhex(sealed))


Stamp = tuple[tuple[str, int, int, int, int], ...]


def users_stamp(station: Path) -> Stamp:
    """users/ as it stands, without reading a file: each JSON file's name, inode, size, and change
    and modification times (one stat each). A file written, replaced, added or removed changes it.
    It can miss a rewrite of the same size within one tick of the file system's clock (a few
    milliseconds), so a reader that keeps what it read by the stamp also reads afresh now and then.
    OSError if users/ changes while it is stamped."""
    try:
        entries = os.scandir(users_dir(station))
    except FileNotFoundError:
        return ()
    with entries:
        stamps = []
        for entry in entries:
            if entry.name.endswith(".json"):
                st = entry.stat()
                stamps.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(sorted(stamps))


def load_users(station: Path) -> list[Person]:
    folder = users_dir(station)
    if not folder.exists():
        return []
    return [_read_users_file(path, _person) for path in sorted(folder.glob("*.json")) if path.name != REMOVED_FILE]


def unlock(station: Path, name: str, password: str) -> nacl.signing.SigningKey:
    """The person's signing key, opened with ``password``: SignatureError for a wrong password,
    ConfigError (one line; a 401 at the console) for a file that is not as ``read_user`` says, so a
    file naming its own Argon2id cost or a malformed salt costs nothing and raises no traceback."""
    path = users_dir(station) / f"{name}.json"
    if not _NAME.match(name) or not path.exists():
        raise ConfigError(f"no user {name!r} at this station; add one with 'redline user add'")
    user = _read_users_file(path, lambda obj: read_user(obj, path.name))
    key = nacl.pwhash.argon2id.kdf(32, password.encode(), user.salt, opslimit=user.ops, memlimit=user.mem)
    try:
        seed = nacl.secret.SecretBox(key).decrypt(user.sealed)
    except nacl.exceptions.CryptoError:
        raise SignatureError(f"wrong password for {name}") from None
    return nacl.signing.SigningKey(seed)


def sign_content(content: dict[str, Any], person: Person, key: nacl.signing.SigningKey) -> dict[str, Any]:
    """Return ``content`` with the person's signature attached."""
    if bytes(key.verify_key).hex() != person.key:
        raise SignatureError(f"that key is not {person.name}'s published key")
    body = {k: v for k, v in content.items() if k != "person"}
    sig = identity.sign(key, DOMAIN, canonical.encode(body))
    return {**body, "person": {**person.to_obj(), "sig": sig.hex()}}


def check_content(content: dict[str, Any], roster: dict[str, Person]) -> Person:
    """Verify the person signature in ``content`` against ``roster`` (name -> Person)."""
    signer = content.get("person")
    if not isinstance(signer, dict):
        raise SignatureError("no person signature: a named person must sign this")
    name = signer.get("name")
    person = roster.get(name) if isinstance(name, str) else None
    if person is None:
        raise SignatureError(f"{name!r} is not on the sending station's published roster")
    if signer.get("key") != person.key:
        raise SignatureError(f"{name} signed with a key that is not the one on the roster")
    try:
        sig = bytes.fromhex(str(signer.get("sig")))
    except ValueError:
        raise SignatureError("person signature is not hex") from None
    body = {k: v for k, v in content.items() if k != "person"}
    identity.verify(bytes.fromhex(person.key), DOMAIN, canonical.encode(body), sig, f"signature of {name}")
    return person


def may(role: str, capability: str) -> bool:
    return capability in CAPABILITIES.get(role, frozenset())


def check_role(person: Person, kind: str) -> None:
    """Refuse (RoleError) a person-signed ``kind`` that ``person``'s role may not sign."""
    need = SIGNING_NEEDS.get(kind)
    if need is not None and not may(person.role, need):
        allowed = ", ".join(r for r in ROLES if may(r, need))
        raise RoleError(f"{person.name} is {person.role}: only {allowed} may sign {kind}")


def check_signer(kind: str, content: dict[str, Any], roster: dict[str, Person]) -> Person:
    """The one rule for a person-signed envelope, where it is filed (``Station.act``, against our
    users) and where it is received (ops, against the sender's pinned roster): the signature
    verifies under the person's key on ``roster`` and the person's role may sign ``kind``."""
    person = check_content(content, roster)
    check_role(person, kind)
    return person


def roster_content(people: list[Person], removed: list[SignedCert] | None = None) -> dict[str, Any]:
    """A ROSTER's content: the people (with their certificates) and the root's removal certificates
    of people no longer listed."""
    listed = {(p.name, p.key) for p in people}
    gone = [c.to_obj() for c in removed or () if _removal_of(c) not in listed]
    return {"users": [p.roster_entry() for p in people], **({"removed": gone} if gone else {})}


def parse_roster(content: dict[str, Any]) -> dict[str, Person]:
    """A ROSTER's people by name (SchemaError when it is not as PROTOCOL.md section 5.9 says, or
    lists more than ``MAX_ROSTER_PEOPLE``: the station refuses to publish such a roster)."""
    users = content.get("users")
    why = roster_too_long(len(users)) if isinstance(users, list) else None
    if why is not None:  # counted before anything in it is read
        raise SchemaError(why)
    return roster_people(kinds.Roster.parse(content))


def roster_too_long(listed: int) -> str | None:
    """Why a ROSTER listing ``listed`` people is ignored as a whole (PROTOCOL.md 5.10), or None:
    the one test, live (ops), in ``redline verify`` and in bundles (``PersonSignatures``)."""
    if listed <= MAX_ROSTER_PEOPLE:
        return None
    return f"ROSTER lists {listed} people; at most {MAX_ROSTER_PEOPLE} (PROTOCOL.md 5.10)"


def roster_people(roster: kinds.Roster) -> dict[str, Person]:
    return {
        u.name: Person(name=u.name, role=u.role, key=u.key,
                       cert=SignedCert(bytes.fromhex(u.cert.data), bytes.fromhex(u.cert.sig)) if u.cert else None)
        for u in roster.users
    }  # fmt: skip


def roster_removals(roster: kinds.Roster) -> list[SignedCert]:
    return [SignedCert(bytes.fromhex(c.data), bytes.fromhex(c.sig)) for c in roster.removed or ()]


def _names(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


@dataclass(frozen=True, kw_only=True)
class RosterChange:
    """What one published ROSTER did to the pins of its station's people."""

    added: list[str]  # pinned now, on first sight
    roles: list[tuple[str, str, str]]  # (name, old role, new role): same key, role changed
    key_refused: list[str]  # would change a pinned key: refused, the pin stays
    drop_refused: list[str]  # would drop a pinned person: refused, the pin stays
    over_limit: list[str]  # new names past MAX_ROSTER_PEOPLE pinned in all: not pinned
    # Certified changes (a certificate from the station's root, newer than the pin's):
    rotated: list[str] = field(default_factory=list)  # a new key, certified: the pin moved
    removed: list[str] = field(default_factory=list)  # a certified removal: no longer pinned
    readded: list[str] = field(default_factory=list)  # back after a certified removal, with a new certified key
    cert_refused: list[tuple[str, str]] = field(default_factory=list)  # (name, why): a certificate that fails
    uncertified: list[str] = field(default_factory=list)  # an uncertified change to a certified person
    # A change certified by a root the station has since replaced (a confirmed ROOT): refused, the
    # pin stays; the replaced root's certificates of pins as they stand stay valid (not listed).
    replaced_root: list[str] = field(default_factory=list)

    def refusal(self) -> str | None:
        """Why (part of) the ROSTER was refused, naming each person, or None."""
        parts = []
        if self.cert_refused:
            parts.append("its certificate of " + _names([f"{n} ({why})" for n, why in self.cert_refused])
                         + " does not verify under the station's pinned root (forged?)")  # fmt: skip
        if self.replaced_root:
            parts.append(f"it changes {_names(self.replaced_root)} by a certificate of a replaced root (section 5.9 "
                         "ROOT: a change needs the root in force)")  # fmt: skip
        if self.key_refused:
            parts.append(f"it changes the pinned key of {_names(self.key_refused)}")
        if self.uncertified:
            parts.append(f"it changes {_names(self.uncertified)}, whose pin the root certified, without a newer "
                         "certificate from the root")  # fmt: skip
        if self.drop_refused:
            parts.append(f"it drops {_names(self.drop_refused)}, whose key is pinned")
        if self.over_limit:
            parts.append(f"{_names(self.over_limit)} would pass the limit of {MAX_ROSTER_PEOPLE} pinned people")
        if not parts:
            return None
        return "; ".join(parts) + ": refused for those people, their pinned keys stay in force"

    def certified(self) -> str | None:
        """The certified changes this ROSTER made, in words, or None."""
        parts = []
        if self.rotated:
            parts.append(f"new key of {_names(self.rotated)}")
        if self.removed:
            parts.append(f"{_names(self.removed)} removed")
        if self.readded:
            parts.append(f"{_names(self.readded)} back with a new key after a removal")
        return "; ".join(parts) + ", certified by the station's root" if parts else None


@dataclass
class RosterPins:
    """One station's people as this side trusts them: each person's key pinned on first sight.

    A later ROSTER may add people and change a pinned person's role (alarmed), but not change or
    drop a pinned key: that is refused for the person, whose old pin stays in force, so the
    station's admin cannot swap whose signature an "acknowledged by" names. With the station's
    pinned ``root``, certificates decide instead (module docstring): a certified pin moves only to
    a newer certificate of that root (a new key, a new role, a removal listed in ``removed``), and a
    certificate that does not verify is refused. Pins are derived from the ROSTER envelopes in
    transcript order, so replaying the ledger at start gives the same pins. At most
    ``MAX_ROSTER_PEOPLE`` people are pinned at once: new names past it are not pinned (a person
    removed by a certificate frees a place), the same number for every reader of the transcript.
    """

    people: dict[str, Person] = field(default_factory=dict)
    root: bytes | None = None  # the station's root in force where the ROSTER stands (the gate's root_for)
    station: str | None = None  # the station's identity, which its certificates name
    issued: dict[str, int] = field(default_factory=dict)  # name -> issued_at of the pin's certificate
    gone: dict[str, tuple[str, int]] = field(default_factory=dict)  # certified removals: name -> (key, issued_at)
    # The station's earlier roots in force, oldest first: each ``root`` this one held before a
    # confirmed rotation moved it on (``__setattr__``; the root in force only moves forward along a
    # chain). Their certificates stay valid for what they already certified (OPERATIONS.md, root
    # rotation step 4: the others keep their old-root certificates), but change no pin.
    replaced: list[bytes] = field(default_factory=list)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "root":
            before = self.__dict__.get("root")
            if before is not None and value != before and before not in self.__dict__.setdefault("replaced", []):
                self.__dict__["replaced"].append(before)
        object.__setattr__(self, name, value)

    def is_certified(self, name: str) -> bool:
        return name in self.issued

    def _open(self, signed: SignedCert) -> tuple[PersonCert, bool]:
        """``signed`` verified under the root in force, else under a replaced root: (certificate,
        True when by a replaced root). VerificationError (of the root in force) under none."""
        assert self.root is not None
        try:
            return PersonCert.open(signed, self.root, station=self.station), False
        except VerificationError as exc:
            for old in reversed(self.replaced):
                try:
                    return PersonCert.open(signed, old, station=self.station), True
                except VerificationError:
                    continue
            raise exc from None

    def _cert(self, p: Person) -> tuple[PersonCert | None, bool]:
        """``p``'s certificate, verified and matching the entry (None: it carries none, or there is
        no root to check it against), and whether a replaced root signed it; VerificationError when
        it does not hold."""
        if p.cert is None or self.root is None:
            return None, False
        cert, old = self._open(p.cert)
        if cert.removed or (cert.name, cert.role, cert.key) != (p.name, p.role, p.key):
            raise SchemaError("the certificate is not over this name, role and key")
        return cert, old

    def _still_valid(self, p: Person, cert: PersonCert) -> bool:
        """A replaced root's certificate holds only what it already certified: the pin as it stands."""
        pinned = self.people.get(p.name)
        return (pinned is not None and (pinned.key, pinned.role) == (p.key, p.role)
                and self.issued.get(p.name) == cert.issued_at)  # fmt: skip

    def apply(self, published: dict[str, Person], removals: list[SignedCert] | None = None) -> RosterChange:
        added: list[str] = []
        roles: list[tuple[str, str, str]] = []
        key_refused: list[str] = []
        over: list[str] = []
        rotated: list[str] = []
        readded: list[str] = []
        cert_refused: list[tuple[str, str]] = []
        uncertified: list[str] = []
        replaced_root: list[str] = []
        for name, p in published.items():
            try:
                cert, by_replaced = self._cert(p)
            except VerificationError as exc:
                cert_refused.append((name, str(exc)))
                continue
            if cert is not None and by_replaced:
                if not self._still_valid(p, cert):
                    replaced_root.append(name)  # a replaced root may not pin or move anyone any more
                continue  # the pin it certified stands, unchanged
            pinned = self.people.get(name)
            if pinned is None:
                gone = self.gone.get(name)
                if gone is not None and (cert is None or cert.issued_at <= gone[1] or p.key == gone[0]):
                    uncertified.append(name)  # removed by a certificate: back only with a newer one over a new key
                    continue
                if len(self.people) >= MAX_ROSTER_PEOPLE:  # a person back after a removal counts too
                    over.append(name)
                    continue
                if gone is not None:
                    readded.append(name)
                    del self.gone[name]
                else:
                    added.append(name)
                self._pin(p, cert)
            elif p.key != pinned.key or p.role != pinned.role:
                newer = cert is not None and cert.issued_at > self.issued.get(name, -1)
                if newer:
                    if p.key != pinned.key:
                        rotated.append(name)
                    if p.role != pinned.role:
                        roles.append((name, pinned.role, p.role))
                    self._pin(p, cert)
                elif p.key != pinned.key:
                    key_refused.append(name)
                elif self.is_certified(name):
                    uncertified.append(name)
                else:  # an uncertified person's role: taken and alarmed, as before certificates
                    self.people[name] = p
                    roles.append((name, pinned.role, p.role))
            elif cert is not None and not self.is_certified(name):
                self._pin(p, cert)  # the same key and role, now certified
        removed: list[str] = []
        for signed in removals or ():
            if self.root is None:
                break
            try:
                gone_cert, by_replaced = self._open(signed)
            except VerificationError as exc:
                cert_refused.append((_removal_of(signed)[0], str(exc)))
                continue
            pinned = self.people.get(gone_cert.name)
            if (not gone_cert.removed or pinned is None or pinned.key != gone_cert.key
                    or gone_cert.issued_at <= self.issued.get(gone_cert.name, -1)
                    or gone_cert.name in published):  # fmt: skip
                continue  # not about a person pinned now (an old removal, carried along): nothing to do
            if by_replaced:
                replaced_root.append(gone_cert.name)
                continue
            del self.people[gone_cert.name]
            self.issued.pop(gone_cert.name, None)
            self.gone[gone_cert.name] = (gone_cert.key, gone_cert.issued_at)
            removed.append(gone_cert.name)
        dropped = [name for name in self.people if name not in published]
        return RosterChange(
            added=added, roles=roles, key_refused=key_refused, drop_refused=dropped, over_limit=over, rotated=rotated,
            removed=removed, readded=readded, cert_refused=cert_refused, uncertified=uncertified,
            replaced_root=replaced_root,
        )  # fmt: skip

    def _pin(self, p: Person, cert: PersonCert | None) -> None:
        self.people[p.name] = p
        if cert is not None:
            self.issued[p.name] = cert.issued_at
        else:
            self.issued.pop(p.name, None)

    def rotate(self, person: Person) -> None:
        """Replace ``person.name``'s pinned key (tests only; a certified ROSTER does it in ``apply``)."""
        self.people[person.name] = person


@dataclass
class PersonSignatures:
    """Every person signature of a transcript checked up to the stations' roots, as the chains are
    replayed in order (the gate calls ``observe`` for each accepted envelope when a whole transcript
    is verified: ``redline verify``, bundles). Same rule as the station's ops: each side's pins from
    its own ROSTERs (``RosterPins`` with the pinned root), then ``check_signer``."""

    roots: Mapping[str, bytes]
    pins: dict[str, RosterPins] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)  # valid person signatures per station
    certified: dict[str, int] = field(default_factory=dict)  # of which the root certified the key
    invalid: list[tuple[str, int, str, str]] = field(default_factory=list)  # station, seq, kind, why
    roster_refused: list[tuple[str, int, str]] = field(default_factory=list)  # station, seq, why
    # ROSTERs ignored as a whole (malformed, or listing more than MAX_ROSTER_PEOPLE): station, seq, why
    roster_ignored: list[tuple[str, int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for fp, root in self.roots.items():
            self.pins[fp] = RosterPins(root=root, station=fp)
            self.checked[fp] = self.certified[fp] = 0

    def observe(self, sender: str, seq: int, kind: str, content: dict[str, Any] | None) -> None:
        pins = self.pins.get(sender)
        if pins is None:
            return
        if kind == "ROSTER" and content is not None:
            try:
                roster = kinds.Roster.parse(content)
            except VerificationError as exc:
                self.roster_ignored.append((sender, seq, f"malformed: {exc}"))
                return  # a malformed ROSTER is ignored as a whole (section 5.10)
            published = roster_people(roster)
            too_long = roster_too_long(len(published))
            if too_long is not None:  # the same test as ops', live: both ends and verify agree
                self.roster_ignored.append((sender, seq, too_long))
                return
            why = pins.apply(published, roster_removals(roster)).refusal()
            if why is not None:
                self.roster_refused.append((sender, seq, why))
        elif kind in PERSON_SIGNED_KINDS:
            if content is None:
                self.invalid.append((sender, seq, kind, "its body is redacted: the signature cannot be checked"))
                return
            try:
                person = check_signer(kind, content, pins.people)
            except VerificationError as exc:
                self.invalid.append((sender, seq, kind, str(exc)))
                return
            self.checked[sender] += 1
            self.certified[sender] += pins.is_certified(person.name)

    def describe(self, names: Mapping[str, str]) -> list[str]:
        """In words, per station: how many person signatures verify and up to what; then each that
        does not, and each ROSTER change refused."""
        out = []
        for fp in sorted(self.checked, key=lambda f: names.get(f, f)):
            n, c, name = self.checked[fp], self.certified[fp], names.get(fp, fp[:12])
            if n:
                upto = ("all up to its root" if c == n else
                        f"{c} up to its root, {n - c} up to its ROSTER only (no root certificate)")  # fmt: skip
                out.append(f"person signatures of {name}: {n} valid, {upto}")
        out += [f"PERSON SIGNATURE NOT VALID: {names.get(fp, fp[:12])} {kind} seq {seq}: {why}"
                for fp, seq, kind, why in self.invalid]  # fmt: skip
        out += [f"ROSTER REFUSED IN PART: {names.get(fp, fp[:12])} seq {seq}: {why}"
                for fp, seq, why in self.roster_refused]  # fmt: skip
        out += [f"ROSTER REFUSED WHOLE: {names.get(fp, fp[:12])} seq {seq}: {why}; its people are not pinned from it"
                for fp, seq, why in self.roster_ignored]  # fmt: skip
        return out
