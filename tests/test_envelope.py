"""Envelopes (redline.envelope): sealing, the wire form, and refusing every kind of tampering.

Security tests are named after the attack they block. Each asserts the specific error: a change to
untrusted bytes must end in a VerificationError subclass, never in success and never in some other
exception that would escape a caller's error handling.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redline import canonical, envelope, identity
from redline.envelope import Envelope, Header, RawEnvelope, open_envelope, seal, split
from redline.errors import EncodingError, SchemaError, SignatureError, UnknownKeyError, VerificationError


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"redline test key " + name.encode()).digest())


A_ROOT, A_SIGN, B_ROOT, B_SIGN = _key("a root"), _key("a signing"), _key("b root"), _key("b signing")
A = identity.fingerprint(A_ROOT.verify_key.encode())
B = identity.fingerprint(B_ROOT.verify_key.encode())
A_KEY = identity.key_id(A_SIGN.verify_key.encode())
B_KEY = identity.key_id(B_SIGN.verify_key.encode())
LINE = "00112233445566778899aabbccddeeff"
SALT = bytes(range(16))
T0 = 1_700_000_000_000

PUBLIC = {(A, A_KEY): A_SIGN.verify_key.encode(), (B, B_KEY): B_SIGN.verify_key.encode()}


def keys(sender: str, key_id: str) -> bytes:
    try:
        return PUBLIC[(sender, key_id)]
    except KeyError:
        raise UnknownKeyError(f"no key {key_id} for station {sender[:16]}") from None


def make(signer: nacl.signing.SigningKey = A_SIGN, **fields: Any) -> Envelope:
    args: dict[str, Any] = {
        "line": LINE, "sender": A, "key": A_KEY, "seq": 1, "sent_at": T0, "kind": "TEXT",
        "prio": "ROUTINE", "prev": None, "seen_seq": 0, "seen_id": None, "lang": "en",
        "content": {"text": "Line check. Please confirm you read me."}, "salt": SALT,
    }  # fmt: skip
    args.update(fields)
    return seal(signer, **args)


def header_fields(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "line": LINE, "sender": A, "key": A_KEY, "seq": 1, "sent_at": T0, "kind": "TEXT", "prio": "ROUTINE",
        "prev": None, "seen_seq": 0, "seen_id": None, "body_hash": "ab" * 32, "lang": "en",
    }  # fmt: skip
    base.update(fields)
    return base


def wire(header: bytes, body: bytes | None, sig: bytes) -> bytes:
    body = body or b""
    return struct.pack(">I", len(header)) + header + struct.pack(">I", len(body)) + body + sig


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def signed_header(obj: dict[str, Any] | bytes, signer: nacl.signing.SigningKey = A_SIGN) -> tuple[bytes, bytes]:
    """Header bytes of our choosing with a valid signature: what a buggy or hostile peer can send."""
    hb = obj if isinstance(obj, bytes) else canonical.encode(obj)
    return hb, identity.sign(signer, envelope.DOMAIN, hb)


# --- round trip and the exact construction -------------------------------------------------------


def test_seal_then_open_round_trip() -> None:
    env = make()
    opened = open_envelope(env.encode(), keys)
    assert opened == env
    assert opened.content() == {"text": "Line check. Please confirm you read me."}
    assert opened.seq == 1 and opened.kind == "TEXT" and opened.known_kind


def test_open_accepts_an_already_split_envelope() -> None:
    env = make()
    raw = split(env.encode())
    assert isinstance(raw, RawEnvelope) and raw.id == env.id
    assert open_envelope(raw, keys) == env


def test_signed_bytes_id_body_hash_and_wire_form_follow_the_spec() -> None:
    env = make()
    # Body: canonical {"content", "salt"}; the header commits to it by SHA-256.
    assert env.body_bytes == canonical.encode({"content": env.content(), "salt": SALT.hex()})
    assert env.header.body_hash == hashlib.sha256(env.body_bytes).hexdigest()
    # Header: canonical JSON with exactly these members.
    obj = json.loads(env.header_bytes)
    assert set(obj) == {"v", "line", "sender", "key", "seq", "sent_at", "kind", "prio", "prev", "seen", "body", "lang"}
    assert obj["v"] == 1 and obj["seen"] == {"seq": 0, "id": None} and obj["body"] == env.header.body_hash
    assert env.header_bytes == canonical.encode(obj)
    # Signed bytes = domain + header; id = SHA-256(signed bytes); the signature is not in the id.
    signed = b"redline/1/envelope\x00" + env.header_bytes
    assert env.id == hashlib.sha256(signed).hexdigest() == envelope.envelope_id(env.header_bytes)
    nacl.signing.VerifyKey(A_SIGN.verify_key.encode()).verify(signed, env.sig)
    # Wire: u32 header_len | header | u32 body_len | body | sig(64), big-endian.
    assert env.encode() == wire(env.header_bytes, env.body_bytes, env.sig)
    assert len(env.sig) == 64


def test_seal_is_deterministic() -> None:
    assert make().encode() == make().encode()
    assert make().id != make(salt=bytes(16)).id  # the salt is committed through the body hash


def test_kinds() -> None:
    assert envelope.KINDS == (
        "TEXT", "FLASH", "READ", "ESCALATED", "ACK", "TEST", "TEST_ANSWER", "TEST_RESULT",
        "CALL_REQUEST", "CALL_REPLY", "CALL_EXPIRED", "CALL_RECORD", "READOUT", "NOTICE",
        "NOTICE_WITHDRAW", "TRANSLATION", "KEY", "REVOKE", "ROOT", "ROOT_CONFIRM", "ROSTER", "CALL_RING",
        "CALL_ANSWER", "CALL_DECLINE", "CALL_UNANSWERED", "CALL_HANGUP", "CALL_AUDIO",
    )  # fmt: skip
    assert set(envelope.KINDS) - {"TEXT", "READ", "TRANSLATION"} == envelope.OPERATIONAL_KINDS


def test_unknown_kind_from_a_newer_peer_is_accepted() -> None:
    env = make(kind="WEATHER", content={"wind": "NW 20 kt"})
    opened = open_envelope(env.encode(), keys)
    assert opened.kind == "WEATHER" and not opened.known_kind
    assert opened.content() == {"wind": "NW 20 kt"}


def test_chain_links_survive_the_round_trip() -> None:
    first = make()
    second = make(seq=2, prev=first.id, kind="FLASH", prio="FLASH", seen_seq=3, seen_id="cd" * 32)
    opened = open_envelope(second.encode(), keys)
    assert opened.header.prev == first.id
    assert (opened.header.seen_seq, opened.header.seen_id) == (3, "cd" * 32)


unicode = st.characters(codec="utf-8")  # every code point but lone surrogates, which are not Unicode
json_scalars = (
    st.none() | st.booleans() | st.integers(-canonical.MAX_SAFE_INT, canonical.MAX_SAFE_INT) | st.text(unicode)
)
contents = st.dictionaries(
    st.text(unicode, max_size=10),
    st.recursive(
        json_scalars,
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(unicode, max_size=8), c, max_size=4),
        max_leaves=12,
    ),
    max_size=5,
)
kinds = st.sampled_from([*envelope.KINDS, "WEATHER", "X", "A" * 32])
langs = st.sampled_from(["en", "ru", "zh-Hant", "en-US", "sr-Latn-RS", "fil"])


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    seq = draw(st.integers(1, 2**40))
    seen_seq = draw(st.integers(0, 2**40))
    return make(
        seq=seq,
        prev=None if seq == 1 else draw(st.binary(min_size=32, max_size=32)).hex(),
        seen_seq=seen_seq,
        seen_id=None if seen_seq == 0 else draw(st.binary(min_size=32, max_size=32)).hex(),
        sent_at=draw(st.integers(0, canonical.MAX_SAFE_INT)),
        kind=draw(kinds),
        prio=draw(st.sampled_from(envelope.PRIORITIES)),
        lang=draw(langs),
        content=draw(contents),
        salt=draw(st.binary(min_size=16, max_size=16)),
    )


@settings(max_examples=150)
@given(envelopes())
def test_any_envelope_round_trips(env: Envelope) -> None:
    assert open_envelope(env.encode(), keys) == env
    assert Header.from_obj(canonical.decode_object(env.header_bytes, "header")) == env.header
    redacted = open_envelope(env.redacted().encode(), keys)
    assert redacted.id == env.id and redacted.body_bytes is None


# --- tampering: every single-bit change is refused -----------------------------------------------


def _assert_every_bit_flip_is_refused(data: bytes) -> None:
    for bit in range(len(data) * 8):
        with pytest.raises(VerificationError):
            open_envelope(flip(data, bit), keys)


def test_tampered_envelope_is_refused_at_every_bit() -> None:
    _assert_every_bit_flip_is_refused(make(seq=2, prev="ef" * 32, seen_seq=1, seen_id="01" * 32).encode())


def test_tampered_redacted_envelope_is_refused_at_every_bit() -> None:
    _assert_every_bit_flip_is_refused(make().redacted().encode())


@settings(max_examples=200)
@given(envelopes(), st.data())
def test_tampered_envelope_is_refused(env: Envelope, data: st.DataObject) -> None:
    encoded = env.redacted().encode() if data.draw(st.booleans(), label="redacted") else env.encode()
    bit = data.draw(st.integers(0, len(encoded) * 8 - 1), label="bit")
    with pytest.raises(VerificationError):
        open_envelope(flip(encoded, bit), keys)


# --- tampering: named attacks --------------------------------------------------------------------


def test_forged_signature_is_refused() -> None:
    # B signs a header that claims to come from A's key.
    env = make()
    forged = wire(env.header_bytes, env.body_bytes, identity.sign(B_SIGN, envelope.DOMAIN, env.header_bytes))
    with pytest.raises(SignatureError):
        open_envelope(forged, keys)


def test_envelope_checked_against_the_wrong_key_is_refused() -> None:
    env = make()
    with pytest.raises(SignatureError):
        open_envelope(env.encode(), lambda sender, key_id: B_SIGN.verify_key.encode())


def test_envelope_under_an_unknown_key_is_refused() -> None:
    env = make(key="99" * 16)
    with pytest.raises(UnknownKeyError):
        open_envelope(env.encode(), keys)


def test_impersonated_sender_is_refused() -> None:
    # B's own key, but the header names A as sender: the lookup by (sender, key id) finds nothing.
    env = make(signer=B_SIGN, sender=A, key=B_KEY)
    with pytest.raises(UnknownKeyError):
        open_envelope(env.encode(), keys)


def test_zeroed_signature_is_refused() -> None:
    env = make()
    with pytest.raises(SignatureError):
        open_envelope(wire(env.header_bytes, env.body_bytes, bytes(64)), keys)


def test_signature_spliced_from_another_envelope_is_refused() -> None:
    env, other = make(), make(content={"text": "another message"})
    with pytest.raises(SignatureError):
        open_envelope(wire(env.header_bytes, env.body_bytes, other.sig), keys)


def test_signature_from_another_domain_is_refused() -> None:
    # The same key signs receipts and checkpoints; a signature made for one must not pass as another.
    env = make()
    for domain in ("receipt", "checkpoint", "cosign", "keycert", "envelope2", ""):
        sig = identity.sign(A_SIGN, domain, env.header_bytes)
        with pytest.raises(SignatureError):
            open_envelope(wire(env.header_bytes, env.body_bytes, sig), keys)
    bare = A_SIGN.sign(env.header_bytes).signature  # no domain prefix at all
    with pytest.raises(SignatureError):
        open_envelope(wire(env.header_bytes, env.body_bytes, bare), keys)


def test_swapped_body_is_refused() -> None:
    env, other = make(), make(content={"text": "Stand down."})
    with pytest.raises(EncodingError, match="body does not match"):
        open_envelope(wire(env.header_bytes, other.body_bytes, env.sig), keys)


def test_body_with_another_salt_is_refused() -> None:
    env = make()
    body = envelope.make_body(env.content(), bytes(16))
    with pytest.raises(EncodingError, match="body does not match"):
        open_envelope(wire(env.header_bytes, body, env.sig), keys)


def test_validly_signed_non_canonical_header_is_refused() -> None:
    env = make()
    hb, sig = signed_header(json.dumps(json.loads(env.header_bytes), indent=1).encode())
    with pytest.raises(EncodingError):
        open_envelope(wire(hb, env.body_bytes, sig), keys)


def test_validly_signed_non_canonical_body_is_refused() -> None:
    body = b'{"salt":"' + SALT.hex().encode() + b'","content":{}}'  # keys out of order
    hb, sig = signed_header(make().header.to_obj() | {"body": hashlib.sha256(body).hexdigest()})
    with pytest.raises(EncodingError):
        open_envelope(wire(hb, body, sig), keys)


HEADER_SCHEMA_ATTACKS: dict[str, Any] = {
    "extra field": lambda h: h | {"x": 1},
    "missing field": lambda h: {k: v for k, v in h.items() if k != "lang"},
    "bool as seq": lambda h: h | {"seq": True},
    "string seq": lambda h: h | {"seq": "1"},
    "version 2": lambda h: h | {"v": 2},
    "seq 0": lambda h: h | {"seq": 0},
    "seq 1 with prev": lambda h: h | {"prev": "ab" * 32},
    "seen without id": lambda h: h | {"seen": {"seq": 1, "id": None}},
    "seen with extra field": lambda h: h | {"seen": {"seq": 0, "id": None, "x": 0}},
    "seen as list": lambda h: h | {"seen": [0, None]},
    "upper-case sender": lambda h: h | {"sender": h["sender"].upper()},
    "lower-case priority": lambda h: h | {"prio": "flash"},
    "negative time": lambda h: h | {"sent_at": -1},
    "header is a list": lambda h: [h],
}


@pytest.mark.parametrize("attack", HEADER_SCHEMA_ATTACKS.values(), ids=HEADER_SCHEMA_ATTACKS.keys())
def test_validly_signed_malformed_header_is_refused(attack: Any) -> None:
    env = make()
    hb, sig = signed_header(attack(env.header.to_obj()))
    with pytest.raises(VerificationError) as info:
        open_envelope(wire(hb, env.body_bytes, sig), keys)
    assert isinstance(info.value, (SchemaError, EncodingError))


BODY_SCHEMA_ATTACKS: dict[str, Any] = {
    "extra field": {"content": {}, "salt": SALT.hex(), "x": 1},
    "missing salt": {"content": {}},
    "content not an object": {"content": "text", "salt": SALT.hex()},
    "short salt": {"content": {}, "salt": SALT.hex()[:30]},
    "upper-case salt": {"content": {}, "salt": SALT.hex().upper()},
    "salt not a string": {"content": {}, "salt": 7},
    "body is a list": [{}, SALT.hex()],
}


@pytest.mark.parametrize("body_obj", BODY_SCHEMA_ATTACKS.values(), ids=BODY_SCHEMA_ATTACKS.keys())
def test_validly_signed_malformed_body_is_refused(body_obj: Any) -> None:
    body = canonical.encode(body_obj)
    hb, sig = signed_header(make().header.to_obj() | {"body": hashlib.sha256(body).hexdigest()})
    with pytest.raises(VerificationError) as info:
        open_envelope(wire(hb, body, sig), keys)
    assert isinstance(info.value, (SchemaError, EncodingError))


# --- framing: truncated, trailing and oversized input --------------------------------------------


def test_truncated_envelope_is_refused_at_every_length() -> None:
    data = make().encode()
    for n in range(len(data)):
        with pytest.raises(EncodingError):
            open_envelope(data[:n], keys)


@pytest.mark.parametrize("extra", [b"\x00", b"x" * 64, make().encode()])
def test_trailing_bytes_are_refused(extra: bytes) -> None:
    with pytest.raises(EncodingError):
        open_envelope(make().encode() + extra, keys)
    with pytest.raises(EncodingError):
        open_envelope(make().redacted().encode() + extra, keys)


def test_header_length_past_the_end_is_refused() -> None:
    data = make().encode()
    with pytest.raises(EncodingError, match="runs past"):
        split(struct.pack(">I", 2**32 - 1) + data[4:])


def test_oversized_envelope_is_refused_before_parsing() -> None:
    data = make().encode()
    split(data, max_size=len(data))
    with pytest.raises(EncodingError, match="limit"):
        split(data, max_size=len(data) - 1)
    big = make(content={"text": "x" * (1 << 20)}).encode()
    with pytest.raises(EncodingError, match="limit"):
        open_envelope(big, keys)


# --- redaction -----------------------------------------------------------------------------------


def test_redacted_envelope_still_verifies_and_keeps_its_id() -> None:
    env = make(kind="NOTICE", content={"area": "secret coordinates"})
    red = env.redacted()
    assert red.body_bytes is None and red.id == env.id and red.header == env.header
    encoded = red.encode()
    assert encoded == wire(env.header_bytes, None, env.sig)
    assert struct.unpack_from(">I", encoded, 4 + len(env.header_bytes)) == (0,)
    opened = open_envelope(encoded, keys)
    assert opened.id == env.id and opened.body_bytes is None and opened.content() == {}
    assert opened.header.body_hash == env.header.body_hash  # still commits to the removed body


def test_redaction_does_not_reveal_the_body_by_hash() -> None:
    # Same content, different salts: the committed hashes differ, so a short body cannot be
    # recovered by hashing guesses without the salt.
    assert make(salt=bytes(16)).header.body_hash != make(salt=b"\x01" * 16).header.body_hash


# --- header validation ---------------------------------------------------------------------------

BAD_HEADERS: dict[str, dict[str, Any]] = {
    "seq 0": {"seq": 0},
    "negative seq": {"seq": -1},
    "seq 1 with prev": {"prev": "ab" * 32},
    "seq 2 without prev": {"seq": 2},
    "prev upper-case hex": {"seq": 2, "prev": "AB" * 32},
    "prev too short": {"seq": 2, "prev": "ab" * 16},
    "prev not hex": {"seq": 2, "prev": "zz" * 32},
    "seen 0 with id": {"seen_id": "ab" * 32},
    "seen 1 without id": {"seen_seq": 1},
    "negative seen": {"seen_seq": -1},
    "seen id not hex": {"seen_seq": 1, "seen_id": "g" * 64},
    "line upper-case": {"line": LINE.upper()},
    "line 31 digits": {"line": LINE[:31]},
    "line 64 digits": {"line": LINE * 2},
    "sender 32 digits": {"sender": A[:32]},
    "sender with newline": {"sender": A + "\n"},
    "key 64 digits": {"key": A},
    "body hash short": {"body_hash": "ab" * 31},
    "negative sent_at": {"sent_at": -1},
    "kind lower-case": {"kind": "text"},
    "kind starts with digit": {"kind": "1TEXT"},
    "kind with hyphen": {"kind": "TE-XT"},
    "kind empty": {"kind": ""},
    "kind 33 characters": {"kind": "A" * 33},
    "unknown priority": {"prio": "URGENT"},
    "lower-case priority": {"prio": "flash"},
    "lang upper-case": {"lang": "EN"},
    "lang one letter": {"lang": "e"},
    "lang four letters": {"lang": "engl"},
    "lang with underscore": {"lang": "en_US"},
    "lang trailing hyphen": {"lang": "en-"},
    "lang empty": {"lang": ""},
    "lang subtag too long": {"lang": "en-abcdefghi"},
    "version 2": {"v": 2},
    "version 0": {"v": 0},
}


@pytest.mark.parametrize("fields", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_invalid_header_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        Header(**header_fields(**fields))
    # The same check guards the wire: a signed header with the same fault does not open.
    obj = Header(**header_fields()).to_obj()
    for name, value in fields.items():
        if name == "seen_seq":
            obj["seen"] = obj["seen"] | {"seq": value}
        elif name == "seen_id":
            obj["seen"] = obj["seen"] | {"id": value}
        else:
            obj[{"body_hash": "body"}.get(name, name)] = value
    with pytest.raises(SchemaError):
        Header.from_obj(obj)


@pytest.mark.parametrize("lang", ["en", "ru", "fil", "zh-Hant", "en-US", "sr-Latn-RS", "de-CH-1996"])
def test_valid_language_tags_are_accepted(lang: str) -> None:
    assert Header(**header_fields(lang=lang)).lang == lang


@pytest.mark.parametrize("kind", ["TEXT", "WEATHER", "X", "A" * 32, "CALL_REQUEST", "V2_THING"])
def test_valid_kind_names_are_accepted(kind: str) -> None:
    assert Header(**header_fields(kind=kind)).kind == kind


def test_seal_refuses_an_invalid_header() -> None:
    with pytest.raises(SchemaError):
        make(seq=2)  # no prev


def test_seal_refuses_a_salt_of_the_wrong_length() -> None:
    for salt in (b"", bytes(15), bytes(17)):
        with pytest.raises(SchemaError):
            make(salt=salt)


def test_seal_refuses_content_outside_the_canonical_subset() -> None:
    with pytest.raises(EncodingError):
        make(content={"lat": 51.5})
    with pytest.raises(EncodingError):
        make(content={"n": 2**53})


def test_header_is_frozen() -> None:
    h = Header(**header_fields())
    with pytest.raises(AttributeError):
        h.seq = 2  # type: ignore[misc]
    assert replace(h, seq=2, prev="ab" * 32).seq == 2
