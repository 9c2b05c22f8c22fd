"""People sign for themselves (guarantee 8): per-user keys unlocked only by that user's password.

Each user's Ed25519 seed is sealed with a key derived from their password (Argon2id, libsodium
``crypto_pwhash``) and XSalsa20-Poly1305 (``SecretBox``). The station stores the sealed file but
cannot open it: only the person typing the password can sign. The public half is published to the
peer in a ROSTER envelope, so the peer checks the person's signature on ACK, TEST_ANSWER,
CALL_RECORD and READOUT against the roster the sender published before.

The receiving side pins each person's key the first time a ROSTER names them (``RosterPins``): a
later ROSTER cannot change or drop a pinned key, so "acknowledged by" always names the key holder
first published. What each role may do is one table here (``CAPABILITIES``), read by the HTTP API,
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from redline import canonical, identity, kinds
from redline.errors import ConfigError, RoleError, SchemaError, SignatureError

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
# Argon2id cost: "moderate" is libsodium's recommendation for interactive logins of sensitive data.
# REDLINE_PWHASH_COST=interactive (64 MiB) is for demos and tests on small machines only.
_FAST = os.environ.get("REDLINE_PWHASH_COST") == "interactive"
OPS = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE if _FAST else nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEM = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE if _FAST else nacl.pwhash.argon2id.MEMLIMIT_MODERATE


@dataclass(frozen=True, kw_only=True)
class Person:
    name: str
    role: str
    key: str  # hex public key

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


def users_dir(station: Path) -> Path:
    return station / "users"


def add_user(station: Path, name: str, role: str, password: str, *, ops: int = OPS, mem: int = MEM) -> Person:
    """Create a user's key, sealed under their password. Refuses an existing name or a weak password."""
    if len(password) < 10:
        raise ConfigError("the password must be at least 10 characters")
    folder = users_dir(station)
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{name}.json"
    key = nacl.signing.SigningKey.generate()
    person = Person(name=name, role=role, key=bytes(key.verify_key).hex())
    if path.exists():
        raise ConfigError(f"user {name!r} already exists at this station")
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(nacl.pwhash.argon2id.kdf(32, password.encode(), salt, opslimit=ops, memlimit=mem))
    sealed = box.encrypt(key.encode())
    record = {**person.to_obj(), "salt": salt.hex(), "ops": ops, "mem": mem, "sealed": sealed.hex()}
    identity.write_secret(path, json.dumps(record, indent=2).encode())
    return person


def remove_user(station: Path, name: str) -> Person:
    """Remove a user: their sealed key file is deleted, so nobody can unlock it again, and the
    station's console ends their session at its next request (it re-reads the users folder)."""
    path = users_dir(station) / f"{name}.json"
    if not _NAME.match(name) or not path.exists():
        raise ConfigError(f"no user {name!r} at this station (see 'redline user list')")
    obj = json.loads(path.read_text())
    person = Person(name=obj["name"], role=obj["role"], key=obj["key"])
    path.unlink()
    fd = os.open(users_dir(station), os.O_RDONLY)
    try:
        os.fsync(fd)  # the removal is durable before we say it is done
    finally:
        os.close(fd)
    return person


def load_users(station: Path) -> list[Person]:
    folder = users_dir(station)
    if not folder.exists():
        return []
    people = []
    for path in sorted(folder.glob("*.json")):
        obj = json.loads(path.read_text())
        people.append(Person(name=obj["name"], role=obj["role"], key=obj["key"]))
    return people


def unlock(station: Path, name: str, password: str) -> nacl.signing.SigningKey:
    path = users_dir(station) / f"{name}.json"
    if not path.exists():
        raise ConfigError(f"no user {name!r} at this station; add one with 'redline user add'")
    obj = json.loads(path.read_text())
    key = nacl.pwhash.argon2id.kdf(32, password.encode(), bytes.fromhex(obj["salt"]), opslimit=obj["ops"],
                                   memlimit=obj["mem"])  # fmt: skip
    try:
        seed = nacl.secret.SecretBox(key).decrypt(bytes.fromhex(obj["sealed"]))
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


def roster_content(people: list[Person]) -> dict[str, Any]:
    return {"users": [p.to_obj() for p in people]}


def parse_roster(content: dict[str, Any], *, max_people: int | None = None) -> dict[str, Person]:
    """A ROSTER's people by name (SchemaError when it is not as PROTOCOL.md section 5.9 says, or
    lists more than ``max_people``)."""
    users = content.get("users")
    if max_people is not None and isinstance(users, list) and len(users) > max_people:
        raise SchemaError(f"ROSTER lists {len(users)} people; at most {max_people} (max_roster_people)")
    return roster_people(kinds.Roster.parse(content))


def roster_people(roster: kinds.Roster) -> dict[str, Person]:
    return {u.name: Person(name=u.name, role=u.role, key=u.key) for u in roster.users}


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
    over_limit: list[str]  # new names past max_people: not pinned

    def refusal(self) -> str | None:
        """Why (part of) the ROSTER was refused, naming each person, or None."""
        parts = []
        if self.key_refused:
            parts.append(f"it changes the pinned key of {_names(self.key_refused)}")
        if self.drop_refused:
            parts.append(f"it drops {_names(self.drop_refused)}, whose key is pinned")
        if self.over_limit:
            parts.append(f"{_names(self.over_limit)} would pass the limit of pinned people")
        if not parts:
            return None
        return "; ".join(parts) + ": refused for those people, their pinned keys stay in force"


@dataclass
class RosterPins:
    """One station's people as this side trusts them: each person's key pinned on first sight.

    A later ROSTER may add people and change a pinned person's role (alarmed), but not change or
    drop a pinned key: that is refused for the person, whose old pin stays in force, so the
    station's admin cannot swap whose signature an "acknowledged by" names. A person's key changes
    only by key rotation (``rotate``). Pins are derived from the ROSTER envelopes in transcript
    order, so replaying the ledger at start gives the same pins.
    """

    max_people: int = 500
    people: dict[str, Person] = field(default_factory=dict)

    def apply(self, published: dict[str, Person]) -> RosterChange:
        added: list[str] = []
        roles: list[tuple[str, str, str]] = []
        key_refused: list[str] = []
        over: list[str] = []
        for name, p in published.items():
            pinned = self.people.get(name)
            if pinned is None:
                if len(self.people) >= self.max_people:
                    over.append(name)
                    continue
                self.people[name] = p
                added.append(name)
            elif p.key != pinned.key:
                key_refused.append(name)
            elif p.role != pinned.role:
                self.people[name] = p
                roles.append((name, pinned.role, p.role))
        dropped = [name for name in self.people if name not in published]
        return RosterChange(added=added, roles=roles, key_refused=key_refused, drop_refused=dropped, over_limit=over)

    def rotate(self, person: Person) -> None:
        """Replace ``person.name``'s pinned key. The seam for person-key rotation: to be called only
        once a rotation is verified (a KEY envelope certified by the station's root key, not built
        yet), never for a ROSTER."""
        self.people[person.name] = person
