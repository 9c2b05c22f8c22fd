"""The pairing ceremony, sans-IO: invite tokens, commit-then-reveal, the safety code.

1. The inviter makes a token: its addresses, root fingerprint, TLS SPKI hash, a 128-bit secret,
   an expiry, and a commitment ``SHA-256("redline/1/commit\\0" || nonce_i || line_id)``. The
   token travels out of band (it is not secret from the inviter's operator, but it is single-use).
2. The joiner dials the inviter's pairing port pinning the SPKI hash from the token, and sends
   JOIN: its root key, key certificates, TLS certificate, name, language, addresses, a fresh
   nonce_j, and ``HMAC-SHA256(secret, join fields)`` proving it holds the token.
3. The inviter checks the proof, expiry and single use, and answers REVEAL: nonce_i, line_id, its
   root key, certificates, TLS certificate, name, language, addresses. The joiner checks the
   commitment, the root fingerprint and the certificates.
4. Both compute the safety code from both roots, both nonces and the line id. Neither side can
   grind keys to match: the joiner chose its keys and nonce before nonce_i was revealed, and the
   inviter fixed nonce_i and line_id (by the commitment) before it saw the joiner's keys.
   Operators compare the code by voice and each runs ``redline confirm``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

from redline import canonical, identity
from redline.config import check_lang, check_station_name, parse_hostport
from redline.errors import ConfigError, PairingError, RedlineError
from redline.identity import SignedCert

TOKEN_PREFIX = "rl1-"


def commitment(nonce: bytes, line: str) -> str:
    return hashlib.sha256(identity.domain("commit") + nonce + bytes.fromhex(line)).hexdigest()


def safety_code(line: str, root_inviter: bytes, root_joiner: bytes, nonce_i: bytes, nonce_j: bytes) -> str:
    """Eight decimal digits, read aloud as two groups: ``1234-5678``."""
    digest = hashlib.sha256(
        identity.domain("safety") + bytes.fromhex(line) + root_inviter + root_joiner + nonce_i + nonce_j
    ).digest()
    n = int.from_bytes(digest[:8], "big") % 100_000_000
    return f"{n // 10000:04d}-{n % 10000:04d}"


def normalize_code(text: str) -> str:
    # Any script's decimal digits read as the same digits (a keyboard may type Arabic-Indic ones).
    digits = "".join(str(unicodedata.decimal(c)) for c in text if unicodedata.decimal(c, None) is not None)
    if len(digits) != 8:
        raise PairingError("a safety code is eight digits, like 1234-5678")
    return f"{digits[:4]}-{digits[4:]}"


@dataclass(frozen=True, kw_only=True)
class Invite:
    """The inviter's private record of a token it issued."""

    id: str
    secret: bytes
    nonce: bytes
    line: str
    expires: int  # wall ms
    used: bool = False


@dataclass(frozen=True, kw_only=True)
class Token:
    id: str
    name: str
    addrs: tuple[str, ...]
    pair_addr: str
    station: str  # inviter root fingerprint
    spki: str  # inviter TLS SPKI hash
    secret: bytes
    commit: str
    expires: int

    def encode(self) -> str:
        obj = {
            "v": 1, "id": self.id, "name": self.name, "addrs": list(self.addrs), "pair": self.pair_addr,
            "station": self.station, "spki": self.spki, "secret": self.secret.hex(), "commit": self.commit,
            "expires": self.expires,
        }  # fmt: skip
        return TOKEN_PREFIX + base64.urlsafe_b64encode(canonical.encode(obj)).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Token:
        text = text.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise PairingError("this is not a redline pairing token (it should start with 'rl1-')")
        try:
            raw = base64.urlsafe_b64decode(text[len(TOKEN_PREFIX) :] + "=" * (-len(text) % 4))
            obj = canonical.decode_object(raw, "pairing token")
            identity.require(
                obj,
                "pairing token",
                {
                    "v": int, "id": str, "name": str, "addrs": list, "pair": str, "station": str, "spki": str,
                    "secret": str, "commit": str, "expires": int,
                },
            )  # fmt: skip
            secret = bytes.fromhex(obj["secret"])
        except (ValueError, RedlineError) as exc:
            raise PairingError(f"the pairing token is damaged or incomplete ({exc}); ask for a new one") from exc
        if obj["v"] != 1 or len(secret) != 16 or not identity.HEX64.match(obj["station"]):
            raise PairingError("the pairing token is of an unknown version or malformed; ask for a new one")
        return cls(
            id=obj["id"], name=obj["name"], addrs=tuple(obj["addrs"]), pair_addr=obj["pair"], station=obj["station"],
            spki=obj["spki"], secret=secret, commit=obj["commit"], expires=obj["expires"],
        )  # fmt: skip
        # (name and addrs are only shown; the station and addresses that count come with the REVEAL)


def new_invite(*, name: str, addrs: tuple[str, ...], pair_addr: str, station: str, spki: str, now: int, ttl_ms: int,
               ) -> tuple[Invite, Token]:  # fmt: skip
    invite = Invite(
        id=os.urandom(8).hex(), secret=os.urandom(16), nonce=os.urandom(32), line=os.urandom(16).hex(),
        expires=now + ttl_ms,
    )  # fmt: skip
    token = Token(
        id=invite.id, name=name, addrs=addrs, pair_addr=pair_addr, station=station, spki=spki, secret=invite.secret,
        commit=commitment(invite.nonce, invite.line), expires=invite.expires,
    )  # fmt: skip
    return invite, token


@dataclass(frozen=True, kw_only=True)
class Party:
    """What each side tells the other about itself during pairing."""

    root: bytes
    signing_cert: SignedCert
    tls_cert: SignedCert
    tls_der: bytes
    name: str
    lang: str
    addrs: tuple[str, ...]

    def to_obj(self) -> dict[str, Any]:
        return {
            "root": self.root.hex(), "signing_cert": self.signing_cert.to_obj(), "tls_cert": self.tls_cert.to_obj(),
            "tls_der": self.tls_der.hex(), "name": self.name, "lang": self.lang, "addrs": list(self.addrs),
        }  # fmt: skip

    @classmethod
    def from_obj(cls, obj: Any) -> Party:
        try:
            return cls(
                root=bytes.fromhex(obj["root"]), signing_cert=SignedCert.from_obj(obj["signing_cert"]),
                tls_cert=SignedCert.from_obj(obj["tls_cert"]), tls_der=bytes.fromhex(obj["tls_der"]),
                name=check_station_name(obj["name"], "the other station's"),
                lang=check_lang(obj["lang"], "the other station's"), addrs=_addrs(obj["addrs"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, RedlineError) as exc:
            raise PairingError(f"the other station's pairing message is malformed: {exc}") from exc

    def check(self) -> str:
        """Verify the certificates against the root; return the root fingerprint."""
        try:
            signing = self.signing_cert.verify(self.root)
            tls = self.tls_cert.verify(self.root)
            spki = identity.spki_hash(self.tls_der)
        except (RedlineError, ValueError) as exc:  # ValueError: certificate bytes that are not DER
            raise PairingError(f"the other station's key certificates do not verify: {exc}") from exc
        if signing.role != "signing" or tls.role != "tls" or tls.key != spki:
            raise PairingError("the other station's TLS certificate is not the one its root certified")
        return identity.fingerprint(self.root)


MAX_ADDRS = 8  # paths a station may advertise


def _addrs(value: Any) -> tuple[str, ...]:
    """The other station's advertised addresses: a short list of HOST:PORT strings."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ADDRS:
        raise PairingError(f"the other station must advertise 1 to {MAX_ADDRS} addresses")
    for addr in value:
        try:
            if not isinstance(addr, str) or len(addr) > 300:
                raise ConfigError("not a HOST:PORT string")
            parse_hostport(addr)
        except ConfigError as exc:
            raise PairingError(f"the other station advertised a malformed address: {exc}") from None
    return tuple(value)


def join_message(token: Token, me: Party, nonce: bytes) -> dict[str, Any]:
    body = {"step": "join", "invite": token.id, "party": me.to_obj(), "nonce": nonce.hex()}
    proof = hmac.new(token.secret, canonical.encode(body), hashlib.sha256).hexdigest()
    return {**body, "proof": proof}


def check_join(invite: Invite, msg: dict[str, Any], now: int) -> tuple[Party, bytes]:
    """Inviter side: check a JOIN against the invite; return the joiner and its nonce."""
    if msg.get("step") != "join" or msg.get("invite") != invite.id:
        raise PairingError("the joining station used a token this station did not issue (foreign token)")
    body = {k: v for k, v in msg.items() if k != "proof"}
    expected = hmac.new(invite.secret, canonical.encode(body), hashlib.sha256).hexdigest()
    if not isinstance(msg.get("proof"), str) or not hmac.compare_digest(expected, msg["proof"]):
        raise PairingError("the joining station does not hold this token's secret")
    if invite.used:
        raise PairingError("this pairing token was already used; issue a new one with 'redline invite'")
    if now > invite.expires:
        raise PairingError("this pairing token has expired; issue a new one with 'redline invite'")
    party = Party.from_obj(msg.get("party"))
    party.check()
    try:
        nonce = bytes.fromhex(msg["nonce"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PairingError("the joining station's nonce is malformed") from exc
    if len(nonce) != 32:
        raise PairingError("the joining station's nonce must be 32 bytes")
    return party, nonce


def reveal_message(invite: Invite, me: Party) -> dict[str, Any]:
    return {"step": "reveal", "nonce": invite.nonce.hex(), "line": invite.line, "party": me.to_obj()}


def check_reveal(token: Token, msg: dict[str, Any]) -> tuple[Party, bytes, str]:
    """Joiner side: check the REVEAL against the token's commitment and fingerprint."""
    if msg.get("step") == "error":
        raise PairingError(f"the inviting station refused: {str(msg.get('message'))[:500]}")
    if msg.get("step") != "reveal":
        raise PairingError("the inviting station's answer is not a REVEAL")
    try:
        nonce, line = bytes.fromhex(msg["nonce"]), str(msg["line"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PairingError("the inviting station's answer is malformed") from exc
    if len(nonce) != 32:
        raise PairingError("the inviting station's nonce must be 32 bytes")
    if not identity.HEX32.match(line) or commitment(nonce, line) != token.commit:
        raise PairingError("the inviting station's nonce does not match its commitment: do not trust this pairing")
    party = Party.from_obj(msg.get("party"))
    if party.check() != token.station:
        raise PairingError("the inviting station's root key is not the one named in the token")
    if identity.spki_hash(party.tls_der) != token.spki:
        raise PairingError("the inviting station's TLS key is not the one named in the token")
    return party, nonce, line
