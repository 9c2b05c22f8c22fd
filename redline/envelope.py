"""Envelopes: canonical bytes, signing, verification and message kinds.

Wire and storage form of one envelope (all integers big-endian)::

    u32 header_len | header (canonical JSON) | u32 body_len | body (canonical JSON) | sig (64)

``body_len`` 0 means the body was redacted: the header still commits to it by salted hash.
Signed bytes are ``b"redline/1/envelope\\0" + header``; the envelope id is SHA-256 of the signed
bytes (the signature is not part of the id). Untrusted input stays bytes until ``open_envelope``
has checked structure, canonical form, body hash and signature (python-tuf's rule).
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redline import canonical, kinds
from redline.config import LANG_TAG, MAX_ENVELOPE_BYTES
from redline.errors import EncodingError, SchemaError
from redline.identity import HEX32, HEX64, domain, require, sign, verify

if TYPE_CHECKING:  # an annotation only: 'redline log' reads envelopes and signs none (PyNaCl loads with a key)
    import nacl.signing

VERSION = 1
DOMAIN = "envelope"
SIGNED_PREFIX = domain(DOMAIN)

PRIORITIES = ("ROUTINE", "PRIORITY", "FLASH")
# The kinds this version knows, and which of them are operational (each followed by a checkpoint,
# guarantee 3) or may use the disk reserve (Limits.line_disk_reserve_bytes): read from THE
# registry, ``kinds.REGISTRY``, and kept here under their old names for the session and tools.
KINDS = kinds.NAMES
OPERATIONAL_KINDS = kinds.OPERATIONAL
RESERVE_KINDS = kinds.RESERVE
_KIND = re.compile(r"\A[A-Z][A-Z0-9_]{0,31}\Z")  # unknown kinds from a newer peer must fit this
SALT_BYTES = 16
_U32 = struct.Struct(">I")


# The canonical header as one pattern, the fast path of ``Header.parse``: exactly the bytes
# ``canonical.encode`` gives for a header whose strings are all of the plain kind a header holds
# (hex, an upper-case kind, a language tag: nothing to escape) and whose integers are written
# plainly, in canonical key order. One regex match instead of a JSON parse, a re-encode to compare
# and a type check: a third of ``open_envelope``'s time before the signature. Anything else takes
# the general path, which decides the same and also says precisely what is wrong.
_H64, _H32, _INT = "[0-9a-f]{64}", "[0-9a-f]{32}", "0|[1-9][0-9]{0,15}"
_CANONICAL_HEADER = re.compile(
    rf'\{{"body":"({_H64})","key":"({_H32})","kind":"([A-Z][A-Z0-9_]{{0,31}})","lang":"([A-Za-z0-9-]{{1,64}})",'
    rf'"line":"({_H32})","prev":(?:null|"({_H64})"),"prio":"([A-Z]{{1,16}})","seen":\{{"id":(?:null|"({_H64})"),'
    rf'"seq":({_INT})\}},"sender":"({_H64})","sent_at":({_INT}),"seq":({_INT}),"v":({_INT})\}}'
)


def plain_header(data: bytes) -> re.Match[str] | None:
    """The header's fields if ``data`` is a header in the plain canonical form (``_CANONICAL_HEADER``),
    else None: one pattern match, nothing validated yet. The link reads a frame's seq and sender
    from it to route the frame (a third of a JSON parse's cost), and the header it builds from the
    same match goes on with the envelope (``RawEnvelope.header``), so nobody parses it again."""
    return _CANONICAL_HEADER.fullmatch(data.decode("ascii")) if data.isascii() else None


_SEQ_GROUP, _SENDER_GROUP = 12, 10  # of _CANONICAL_HEADER


def plain_route(m: re.Match[str]) -> tuple[int, str]:
    """(seq, sender) of a ``plain_header`` match."""
    return int(m.group(_SEQ_GROUP)), m.group(_SENDER_GROUP)


@dataclass(frozen=True, kw_only=True)
class Header:
    """The signed part of an envelope. Validates on construction."""

    line: str
    sender: str
    key: str
    seq: int
    sent_at: int
    kind: str
    prio: str
    prev: str | None
    seen_seq: int
    seen_id: str | None
    body_hash: str
    lang: str
    v: int = VERSION

    def __post_init__(self) -> None:
        for rule in _HEADER_RULES:
            if not rule.holds(self):
                raise SchemaError(rule.says.format(h=self))

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "line": self.line,
            "sender": self.sender,
            "key": self.key,
            "seq": self.seq,
            "sent_at": self.sent_at,
            "kind": self.kind,
            "prio": self.prio,
            "prev": self.prev,
            "seen": {"seq": self.seen_seq, "id": self.seen_id},
            "body": self.body_hash,
            "lang": self.lang,
        }

    def encode(self) -> bytes:
        """``canonical.encode(self.to_obj())``, written directly: a header that validated holds
        only strings that need no escaping (hex, kind, language tag, priority) and integers, so its
        canonical form is this template (tests/test_envelope_fast.py checks the two agree)."""
        ints = (self.seq, self.sent_at, self.seen_seq, self.v)
        if any(type(i) is not int or i > canonical.MAX_SAFE_INT for i in ints):
            return canonical.encode(self.to_obj())  # refused there, with the reason
        prev = "null" if self.prev is None else f'"{self.prev}"'
        seen_id = "null" if self.seen_id is None else f'"{self.seen_id}"'
        return (
            f'{{"body":"{self.body_hash}","key":"{self.key}","kind":"{self.kind}","lang":"{self.lang}",'
            f'"line":"{self.line}","prev":{prev},"prio":"{self.prio}","seen":{{"id":{seen_id},'
            f'"seq":{self.seen_seq}}},"sender":"{self.sender}","sent_at":{self.sent_at},"seq":{self.seq},'
            f'"v":{self.v}}}'
        ).encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> Header:
        """``Header.from_obj(canonical.decode_object(data))``, with a fast path for the plain header."""
        m = plain_header(data)
        if m is not None:
            header = cls.from_plain(m)
            if header is not None:
                return header
        return cls.from_obj(canonical.decode_object(data, "envelope header"))

    @classmethod
    def from_plain(cls, m: re.Match[str]) -> Header | None:
        """The header a ``plain_header`` match holds (None when an integer is past the safe range:
        the general path refuses it, with the reason). Validates, as every construction does.

        Every envelope received (and every one ``verify`` replays) comes through here, so a header
        whose fields hold the rules the pattern leaves open (``_OPEN_RULES``: the pattern pins the
        hex fields, the kind's form and the integers' signs) is made without the frozen ``__init__``
        and without ``__post_init__`` checking the pinned rules again: 5.5 -> 1.8 us. Both read the
        one table of rules, ``_HEADER_RULES``, so the verdict and the reason are the constructor's
        (tests/test_envelope_fast.py holds both ways to the general path's, field for field and
        message for message)."""
        body, key, kind, lang, line, prev, prio, seen_id, seen_seq, sender, sent_at, seq, v = m.groups()
        n_seen, n_sent, n_seq, n_v = int(seen_seq), int(sent_at), int(seq), int(v)
        if max(n_seen, n_sent, n_seq, n_v) > canonical.MAX_SAFE_INT:
            return None
        header = object.__new__(cls)
        header.__dict__.update(
            line=line, sender=sender, key=key, seq=n_seq, sent_at=n_sent, kind=kind, prio=prio, prev=prev,
            seen_seq=n_seen, seen_id=seen_id, body_hash=body, lang=lang, v=n_v,
        )  # fmt: skip
        for rule in _OPEN_RULES:  # a pinned rule holds by the match: the first to fail is an open one
            if not rule.holds(header):
                raise SchemaError(rule.says.format(h=header))
        return header

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Header:
        require(
            obj,
            "envelope header",
            {
                "v": int, "line": str, "sender": str, "key": str, "seq": int, "sent_at": int,
                "kind": str, "prio": str, "prev": (str, type(None)), "seen": dict, "body": str,
                "lang": str,
            },
        )  # fmt: skip
        seen = obj["seen"]
        require(seen, "envelope header 'seen'", {"seq": int, "id": (str, type(None))})
        return cls(
            v=obj["v"], line=obj["line"], sender=obj["sender"], key=obj["key"], seq=obj["seq"],
            sent_at=obj["sent_at"], kind=obj["kind"], prio=obj["prio"], prev=obj["prev"],
            seen_seq=seen["seq"], seen_id=seen["id"], body_hash=obj["body"], lang=obj["lang"],
        )  # fmt: skip


@dataclass(frozen=True)
class _Rule:
    """One rule of a header: ``holds`` it, or ``says`` why not (formatted with ``h``, the header)."""

    holds: Callable[[Header], bool]
    says: str
    pinned: bool = False  # ``_CANONICAL_HEADER`` admits no header that breaks it


# THE rules of a header, in the order their reasons are given: ``Header.__post_init__`` checks every
# one, ``Header.from_plain`` the ones the canonical pattern leaves open. Written once, so the fast
# path cannot drift from the constructor (the review's "rules written in several places").
_HEADER_RULES: tuple[_Rule, ...] = (
    _Rule(lambda h: h.v == VERSION, f"envelope version {{h.v}} is not supported (this station speaks {VERSION})"),
    _Rule(lambda h: HEX32.match(h.line) is not None, "envelope: line id must be 32 lowercase hex digits", True),
    _Rule(lambda h: HEX64.match(h.sender) is not None, "envelope: sender must be a 64-hex-digit station fingerprint",
          True),
    _Rule(lambda h: HEX32.match(h.key) is not None, "envelope: key id must be 32 lowercase hex digits", True),
    _Rule(lambda h: h.seq >= 1, "envelope: seq starts at 1"),
    _Rule(lambda h: h.sent_at >= 0, "envelope: sent_at must be milliseconds since 1970 (UTC)", True),
    _Rule(lambda h: _KIND.match(h.kind) is not None, "envelope: kind {h.kind!r} is not an upper-case name", True),
    _Rule(lambda h: h.prio in PRIORITIES, f"envelope: priority must be one of {', '.join(PRIORITIES)}"),
    _Rule(lambda h: (h.seq == 1) == (h.prev is None), "envelope: prev is null exactly for seq 1"),
    _Rule(lambda h: h.prev is None or HEX64.match(h.prev) is not None,
          "envelope: prev must be a 64-hex-digit envelope id", True),
    _Rule(lambda h: h.seen_seq >= 0 and (h.seen_seq == 0) == (h.seen_id is None),
          "envelope: seen is (0, null) or (seq >= 1, id)"),
    _Rule(lambda h: h.seen_id is None or HEX64.match(h.seen_id) is not None,
          "envelope: seen id must be a 64-hex-digit envelope id", True),
    _Rule(lambda h: HEX64.match(h.body_hash) is not None, "envelope: body hash must be 64 lowercase hex digits", True),
    _Rule(lambda h: LANG_TAG.match(h.lang) is not None,
          "envelope: language tag {h.lang!r} is not a BCP 47 tag like 'en' or 'ru'"),
)  # fmt: skip
_OPEN_RULES = tuple(rule for rule in _HEADER_RULES if not rule.pinned)


@dataclass(frozen=True)
class Envelope:
    """A verified envelope: only ``seal`` and ``open_envelope`` make one."""

    header: Header
    header_bytes: bytes
    body_bytes: bytes | None  # None once redacted
    sig: bytes
    id: str  # hex SHA-256 of the signed bytes
    # The body's content as decoded when the envelope was sealed or opened (not part of equality).
    parsed: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def seq(self) -> int:
        return self.header.seq

    @property
    def kind(self) -> str:
        return self.header.kind

    @property
    def known_kind(self) -> bool:
        return self.header.kind in KINDS

    def content(self) -> dict[str, Any]:
        """The body's content object ({} for a redacted body)."""
        if self.body_bytes is None:
            return {}
        if self.parsed is not None:
            return self.parsed
        content: dict[str, Any] = canonical.decode_object(self.body_bytes, "envelope body")["content"]
        return content

    def encode(self) -> bytes:
        body = self.body_bytes or b""
        return b"".join(
            (_U32.pack(len(self.header_bytes)), self.header_bytes, _U32.pack(len(body)), body, self.sig)
        )

    def redacted(self) -> Envelope:
        return Envelope(self.header, self.header_bytes, None, self.sig, self.id, {})


def envelope_id(header_bytes: bytes) -> str:
    return hashlib.sha256(SIGNED_PREFIX + header_bytes).hexdigest()


def make_body(content: dict[str, Any], salt: bytes, member: bytes | None = None) -> bytes:
    """Canonical body bytes. The random salt makes the body hash hide a redacted body.

    ``member``: ``content_member(content)``, when the caller has it already: the body is then
    that member and the salt written after it (``content`` sorts before ``salt``), the very bytes
    the encoder gives, without walking the content a second time."""
    if len(salt) != SALT_BYTES:
        raise SchemaError(f"body salt must be {SALT_BYTES} bytes")
    if member is not None:
        return b"".join((member[:-1], b',"salt":"', salt.hex().encode("ascii"), b'"}'))
    return canonical.encode({"content": content, "salt": salt.hex()})


def content_member(content: dict[str, Any]) -> bytes:
    """``{"content": content}``, canonically encoded: what a body holds before its salt. Its
    length less ``MEMBER_OVERHEAD`` is the content's canonical size."""
    return canonical.encode({"content": content})


MEMBER_OVERHEAD = len(b'{"content":}')


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def seal(
    signer: nacl.signing.SigningKey,
    *,
    line: str,
    sender: str,
    key: str,
    seq: int,
    sent_at: int,
    kind: str,
    prio: str,
    prev: str | None,
    seen_seq: int,
    seen_id: str | None,
    lang: str,
    content: dict[str, Any],
    salt: bytes,
    member: bytes | None = None,
) -> Envelope:
    """Build and sign an envelope. Pure: the caller supplies time, salt and chain position (and
    ``content_member(content)``, if it encoded the content already)."""
    body = make_body(content, salt, member)
    header = Header(
        line=line, sender=sender, key=key, seq=seq, sent_at=sent_at, kind=kind, prio=prio,
        prev=prev, seen_seq=seen_seq, seen_id=seen_id, body_hash=body_hash(body), lang=lang,
    )  # fmt: skip
    hb = header.encode()
    return Envelope(header, hb, body, sign(signer, DOMAIN, hb), envelope_id(hb), content)


@dataclass(frozen=True)
class RawEnvelope:
    """Envelope bytes split into parts, not yet trusted."""

    header_bytes: bytes
    body_bytes: bytes | None
    sig: bytes
    # ``Header.parse(header_bytes)``, when whoever split the bytes parsed the header already (the
    # link, to route the frame: ``parsed``); ``open_envelope`` then does not parse it a second
    # time. Nothing is trusted for it: the signature, body hash and every rule are still checked.
    header: Header | None = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def id(self) -> str:
        return envelope_id(self.header_bytes)

    def parsed(self, m: re.Match[str]) -> RawEnvelope:
        """These bytes with their header built from ``m``, this header's ``plain_header`` match
        (as they are when it does not validate: ``open_envelope`` then refuses it, with the reason)."""
        if m.string != self.header_bytes.decode("ascii"):
            raise ValueError("a header match of other bytes than this envelope's")
        try:
            header = Header.from_plain(m)
        except SchemaError:
            return self
        return RawEnvelope(self.header_bytes, self.body_bytes, self.sig, header) if header is not None else self


def split(data: bytes, max_size: int = MAX_ENVELOPE_BYTES) -> RawEnvelope:
    """Split wire bytes into header, body and signature without trusting any of them."""
    if len(data) > max_size:
        raise EncodingError(f"envelope is {len(data)} bytes, over the {max_size}-byte limit")
    if len(data) < 4 + 4 + 64:
        raise EncodingError("envelope is too short to hold a header, a body and a signature")
    (hlen,) = _U32.unpack_from(data, 0)
    if 4 + hlen + 4 + 64 > len(data):
        raise EncodingError("envelope header length runs past the end of the envelope")
    header = data[4 : 4 + hlen]
    (blen,) = _U32.unpack_from(data, 4 + hlen)
    start = 8 + hlen
    if start + blen + 64 != len(data):
        raise EncodingError("envelope lengths do not add up: truncated or trailing bytes")
    body = data[start : start + blen] if blen else None
    return RawEnvelope(header, body, data[start + blen :])


def peek_seen_seq(raw: bytes) -> int:
    """The ``seen`` seq an envelope claims, read without trusting anything (the gate checks it):
    what orders the two chains' envelopes for the gate (recovery, verify's causal replay). 0 when
    it cannot be read; the gate then says what is wrong with the envelope."""
    try:
        seen = canonical.decode_object(split(raw).header_bytes, "envelope header").get("seen")
    except (EncodingError, SchemaError):
        return 0
    value = seen.get("seq") if isinstance(seen, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


KeyLookup = Callable[[str, str], bytes]
"""(sender fingerprint, key id) -> raw Ed25519 public key; raises UnknownKeyError."""


def open_envelope(raw: RawEnvelope | bytes, keys: KeyLookup) -> Envelope:
    """Verify an envelope from bytes: canonical header, body hash, signature under a known key."""
    if isinstance(raw, bytes):
        raw = split(raw)
    header = raw.header if raw.header is not None else Header.parse(raw.header_bytes)
    content: dict[str, Any] | None = {}
    if raw.body_bytes is not None:
        body = canonical.decode_object(raw.body_bytes, "envelope body")
        require(body, "envelope body", {"content": dict, "salt": str})
        if not HEX32.match(body["salt"]):
            raise SchemaError("envelope body: salt must be 32 lowercase hex digits")
        if body_hash(raw.body_bytes) != header.body_hash:
            raise EncodingError(f"envelope seq {header.seq}: body does not match the hash its header signs")
        if not isinstance(body["content"], dict):
            raise SchemaError("envelope body: content must be an object")
        content = body["content"]
    public = keys(header.sender, header.key)
    verify(public, DOMAIN, raw.header_bytes, raw.sig, f"envelope seq {header.seq} ({header.kind})")
    return _verified(raw, header, content)


def _verified(raw: RawEnvelope, header: Header, content: dict[str, Any] | None) -> Envelope:
    """``Envelope(header, raw.header_bytes, raw.body_bytes, raw.sig, raw.id, content)``, made the
    way unpickling makes one: the frozen ``__init__`` sets each field through ``object.__setattr__``,
    and ``raw.id``, a ``cached_property``, takes a lock (3.11) even to hash: 1 us of the 14 us that
    ``open_envelope`` spends beside the signature, which every envelope received and every one
    ``redline verify`` checks pays (tests/test_envelope_fast.py holds both to the constructor's)."""
    env = object.__new__(Envelope)
    env.__dict__.update(
        header=header, header_bytes=raw.header_bytes, body_bytes=raw.body_bytes, sig=raw.sig,
        id=raw.__dict__.get("id") or envelope_id(raw.header_bytes), parsed=content,
    )  # fmt: skip
    return env
