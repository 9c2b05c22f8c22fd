"""Signed statements beside the chains (redline.statements): receipts, checkpoints, cosigns.

Key certificates (redline.identity) are the same construction (canonical JSON + domain-separated
Ed25519 signature) and are tampered with here too. Security tests are named after the attack.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redline import canonical, identity
from redline.errors import EncodingError, SchemaError, SignatureError, VerificationError
from redline.identity import KeyCert, SignedCert
from redline.statements import Checkpoint, Cosign, Head, Receipt, Signed


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"redline test key " + name.encode()).digest())


A_ROOT, A_SIGN, B_ROOT, B_SIGN = _key("a root"), _key("a signing"), _key("b root"), _key("b signing")
A_ROOT_PUB, A_PUB, B_PUB = A_ROOT.verify_key.encode(), A_SIGN.verify_key.encode(), B_SIGN.verify_key.encode()
A = identity.fingerprint(A_ROOT_PUB)
B = identity.fingerprint(B_ROOT.verify_key.encode())
A_KEY, B_KEY = identity.key_id(A_PUB), identity.key_id(B_PUB)
# Checkpoint heads are ordered by station fingerprint; name the two ends by that order.
LOW, HIGH = sorted([A, B])
LINE = "00112233445566778899aabbccddeeff"
T0 = 1_700_000_000_000
ID1 = hashlib.sha256(b"envelope 1").hexdigest()
ROOT1 = hashlib.sha256(b"root 1").hexdigest()
ROOT2 = hashlib.sha256(b"root 2").hexdigest()


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def receipt(**fields: Any) -> Receipt:
    args: dict[str, Any] = {"line": LINE, "by": B, "key": B_KEY, "of": A, "seq": 7, "id": ID1, "received_at": T0}
    args.update(fields)
    return Receipt(**args)


def heads(low_size: int = 7, high_size: int = 1) -> tuple[Head, Head]:
    return Head(station=LOW, size=low_size, root=ROOT1), Head(station=HIGH, size=high_size, root=ROOT2)


def checkpoint(**fields: Any) -> Checkpoint:
    args: dict[str, Any] = {"line": LINE, "n": 1, "prev": None, "heads": heads(), "by": A, "key": A_KEY, "time": T0}
    args.update(fields)
    return Checkpoint(**args)


def cosign_of(signed_checkpoint: Signed, **fields: Any) -> Cosign:
    args: dict[str, Any] = {
        "line": LINE, "checkpoint": signed_checkpoint.digest(Checkpoint.DOMAIN), "by": B, "key": B_KEY, "time": T0 + 5,
    }  # fmt: skip
    args.update(fields)
    return Cosign(**args)


def resign(obj: Any, key: nacl.signing.SigningKey, domain: str) -> Signed:
    """A statement of our choosing, validly signed: what a buggy or hostile peer can send."""
    data = obj if isinstance(obj, bytes) else canonical.encode(obj)
    return Signed(data, identity.sign(key, domain, data))


# --- the Signed container ------------------------------------------------------------------------


def test_signed_wire_form() -> None:
    s = Signed(b'{"a":1}', bytes(range(64)))
    assert s.encode() == struct.pack(">I", 7) + b'{"a":1}' + bytes(range(64))
    assert Signed.decode(s.encode()) == s


def test_signed_digest_is_hash_of_the_signed_bytes() -> None:
    s = checkpoint().sign(A_SIGN)
    assert s.digest("checkpoint") == hashlib.sha256(b"redline/1/checkpoint\x00" + s.data).hexdigest()


def test_truncated_statement_is_refused_at_every_length() -> None:
    data = receipt().sign(B_SIGN).encode()
    for n in range(len(data)):
        with pytest.raises(EncodingError):
            Signed.decode(data[:n])


@pytest.mark.parametrize("extra", [b"\x00", bytes(64), b"x" * 1000])
def test_statement_with_trailing_bytes_is_refused(extra: bytes) -> None:
    with pytest.raises(EncodingError):
        Signed.decode(receipt().sign(B_SIGN).encode() + extra)


# --- receipts ------------------------------------------------------------------------------------


def test_receipt_sign_open_round_trip() -> None:
    r = receipt()
    s = r.sign(B_SIGN)
    assert s.data == canonical.encode(r.to_obj())
    fields = {"v", "line", "by", "key", "of", "seq", "id", "received_at"}
    assert set(canonical.decode_object(s.data, "receipt")) == fields
    nacl.signing.VerifyKey(B_PUB).verify(b"redline/1/receipt\x00" + s.data, s.sig)
    assert Receipt.open(Signed.decode(s.encode()), B_PUB) == r
    assert Receipt.peek(s) == r


def test_forged_receipt_is_refused() -> None:
    # A signs a receipt that claims to be B's: "B stored your envelopes up to seq 7".
    forged = receipt().sign(A_SIGN)
    assert Receipt.peek(forged).by == B  # peeking shows the claim, but only open() verifies it
    with pytest.raises(SignatureError):
        Receipt.open(forged, B_PUB)


def test_receipt_with_raised_seq_is_refused() -> None:
    s = receipt().sign(B_SIGN)
    raised = Signed(canonical.encode(receipt(seq=8).to_obj()), s.sig)
    with pytest.raises(SignatureError):
        Receipt.open(raised, B_PUB)


BAD_RECEIPTS: dict[str, dict[str, Any]] = {
    "seq 0": {"seq": 0},
    "negative time": {"received_at": -1},
    "line upper-case": {"line": LINE.upper()},
    "by short": {"by": B[:32]},
    "of not hex": {"of": "x" * 64},
    "id short": {"id": ID1[:62]},
    "key 64 digits": {"key": B},
}


@pytest.mark.parametrize("fields", BAD_RECEIPTS.values(), ids=BAD_RECEIPTS.keys())
def test_invalid_receipt_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        receipt(**fields)
    with pytest.raises(SchemaError):
        Receipt.open(resign(receipt().to_obj() | fields, B_SIGN, "receipt"), B_PUB)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o | {"v": 2},
        lambda o: o | {"x": 1},
        lambda o: {k: v for k, v in o.items() if k != "of"},
        lambda o: o | {"seq": True},
        lambda o: o | {"received_at": "now"},
    ],
    ids=["version 2", "extra field", "missing field", "bool seq", "string time"],
)
def test_validly_signed_malformed_receipt_is_refused(mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    with pytest.raises(SchemaError):
        Receipt.open(resign(mutate(receipt().to_obj()), B_SIGN, "receipt"), B_PUB)


def test_validly_signed_non_canonical_receipt_is_refused() -> None:
    data = canonical.encode(receipt().to_obj()).replace(b",", b", ")
    with pytest.raises(EncodingError):
        Receipt.open(resign(data, B_SIGN, "receipt"), B_PUB)


# --- checkpoints and cosigns ---------------------------------------------------------------------


def test_checkpoint_sign_open_round_trip() -> None:
    cp = checkpoint(n=2, prev="ab" * 32)
    s = cp.sign(A_SIGN)
    obj = canonical.decode_object(s.data, "checkpoint")
    assert set(obj) == {"v", "line", "n", "prev", "heads", "by", "key", "time"}
    assert obj["heads"] == [{"station": LOW, "size": 7, "root": ROOT1}, {"station": HIGH, "size": 1, "root": ROOT2}]
    nacl.signing.VerifyKey(A_PUB).verify(b"redline/1/checkpoint\x00" + s.data, s.sig)
    assert Checkpoint.open(Signed.decode(s.encode()), A_PUB) == cp
    assert cp.head(LOW).size == 7 and cp.head(HIGH).root == ROOT2


def test_cosign_round_trip_binds_the_exact_checkpoint() -> None:
    s = checkpoint().sign(A_SIGN)
    co = cosign_of(s)
    cs = co.sign(B_SIGN)
    assert set(canonical.decode_object(cs.data, "cosign")) == {"v", "line", "checkpoint", "by", "key", "time"}
    nacl.signing.VerifyKey(B_PUB).verify(b"redline/1/cosign\x00" + cs.data, cs.sig)
    assert Cosign.open(Signed.decode(cs.encode()), B_PUB) == co
    assert co.checkpoint == hashlib.sha256(b"redline/1/checkpoint\x00" + s.data).hexdigest()
    # A different proposal has a different digest, so this cosign cannot be moved onto it.
    assert checkpoint(time=T0 + 1).sign(A_SIGN).digest(Checkpoint.DOMAIN) != co.checkpoint


def test_forged_countersignature_is_refused() -> None:
    # The proposer signs the "countersignature" itself, claiming the peer agreed.
    cs = cosign_of(checkpoint().sign(A_SIGN)).sign(A_SIGN)
    with pytest.raises(SignatureError):
        Cosign.open(cs, B_PUB)


def test_checkpoint_signature_cannot_pass_as_a_cosign_or_receipt() -> None:
    # Same key, same bytes, other domain: every statement type has its own prefix.
    s = checkpoint(by=B, key=B_KEY).sign(B_SIGN)
    with pytest.raises(SignatureError):
        Cosign.open(s, B_PUB)
    with pytest.raises(SignatureError):
        Receipt.open(s, B_PUB)
    r = receipt().sign(B_SIGN)
    with pytest.raises(SignatureError):
        Checkpoint.open(r, B_PUB)


def test_checkpoint_with_a_rewritten_head_is_refused() -> None:
    s = checkpoint().sign(A_SIGN)
    rewritten = Signed(canonical.encode(checkpoint(heads=heads(low_size=6)).to_obj()), s.sig)
    with pytest.raises(SignatureError):
        Checkpoint.open(rewritten, A_PUB)


BAD_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "n 0": {"n": 0},
    "first with prev": {"prev": "ab" * 32},
    "second without prev": {"n": 2},
    "prev not hex": {"n": 2, "prev": "AB" * 32},
    "heads out of order": {"heads": tuple(reversed(heads()))},
    "same station twice": {"heads": (heads()[0], heads()[0])},
    "proposer not on the line": {"by": "cd" * 32},
    "negative size": {"heads": (Head(station=LOW, size=-1, root=ROOT1), heads()[1])},
    "root short": {"heads": (Head(station=LOW, size=1, root=ROOT1[:60]), heads()[1])},
    "station not hex": {"heads": (heads()[0], Head(station="z" * 64, size=1, root=ROOT2))},
    "line short": {"line": LINE[:30]},
    "key upper-case": {"key": A_KEY.upper()},
}


@pytest.mark.parametrize("fields", BAD_CHECKPOINTS.values(), ids=BAD_CHECKPOINTS.keys())
def test_invalid_checkpoint_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        checkpoint(**fields)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o | {"v": 2},
        lambda o: o | {"heads": o["heads"][:1]},
        lambda o: o | {"heads": [*o["heads"], o["heads"][0]]},
        lambda o: o | {"heads": [o["heads"][0], "head"]},
        lambda o: o | {"heads": [o["heads"][0], o["heads"][1] | {"x": 1}]},
        lambda o: o | {"heads": [o["heads"][1], o["heads"][0]]},
        lambda o: o | {"heads": {"a": 1}},
        lambda o: o | {"n": "1"},
        lambda o: {k: v for k, v in o.items() if k != "time"},
    ],
    ids=["version 2", "one head", "three heads", "head not object", "head extra field", "heads reversed",
         "heads object", "string n", "missing time"],
)  # fmt: skip
def test_validly_signed_malformed_checkpoint_is_refused(mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    with pytest.raises(SchemaError):
        Checkpoint.open(resign(mutate(checkpoint().to_obj()), A_SIGN, "checkpoint"), A_PUB)


# BUG (redline/statements.py): Receipt refuses received_at < 0 and Header refuses sent_at < 0, but
# Checkpoint.time and Cosign.time accept any integer, though both are "ms since 1970 (UTC)" too.
def test_checkpoint_time_before_1970_is_refused() -> None:
    with pytest.raises(SchemaError):
        checkpoint(time=-1)


def test_cosign_time_before_1970_is_refused() -> None:
    with pytest.raises(SchemaError):
        cosign_of(checkpoint().sign(A_SIGN), time=-1)


def test_checkpoint_head_for_a_third_station_is_refused() -> None:
    with pytest.raises(SchemaError):
        checkpoint().head("cd" * 32)


BAD_COSIGNS: dict[str, dict[str, Any]] = {
    "digest short": {"checkpoint": "ab" * 31},
    "digest upper-case": {"checkpoint": "AB" * 32},
    "station short": {"by": B[:62]},
    "line upper-case": {"line": LINE.upper()},
    "key short": {"key": B_KEY[:31]},
}


@pytest.mark.parametrize("fields", BAD_COSIGNS.values(), ids=BAD_COSIGNS.keys())
def test_invalid_cosign_is_refused(fields: dict[str, Any]) -> None:
    s = checkpoint().sign(A_SIGN)
    with pytest.raises(SchemaError):
        cosign_of(s, **fields)
    with pytest.raises(SchemaError):
        Cosign.open(resign(cosign_of(s).to_obj() | fields, B_SIGN, "cosign"), B_PUB)


def test_validly_signed_cosign_with_extra_field_is_refused() -> None:
    obj = cosign_of(checkpoint().sign(A_SIGN)).to_obj() | {"agree": True}
    with pytest.raises(SchemaError):
        Cosign.open(resign(obj, B_SIGN, "cosign"), B_PUB)


# --- key certificates ----------------------------------------------------------------------------


def keycert(**fields: Any) -> KeyCert:
    args: dict[str, Any] = {
        "station": A, "name": "Station A", "role": "signing", "key": A_PUB.hex(), "key_id": A_KEY, "issued_at": T0,
    }  # fmt: skip
    args.update(fields)
    return KeyCert(**args)


def test_key_certificate_round_trip() -> None:
    cert = keycert()
    sc = identity.certify(A_ROOT, cert)
    assert sc.data == canonical.encode(cert.to_obj())
    nacl.signing.VerifyKey(A_ROOT_PUB).verify(b"redline/1/keycert\x00" + sc.data, sc.sig)
    assert SignedCert.from_obj(sc.to_obj()).verify(A_ROOT_PUB) == cert


def test_key_certificate_from_another_root_is_refused() -> None:
    # B's root certifies a key in A's name.
    sc = identity.certify(B_ROOT, keycert())
    with pytest.raises(SignatureError):
        sc.verify(A_ROOT_PUB)
    # ...and verifying against B's root finds that it names another station.
    with pytest.raises(SignatureError, match="different station"):
        sc.verify(B_ROOT.verify_key.encode())


def test_key_certificate_with_mismatched_key_id_is_refused() -> None:
    sc = identity.certify(A_ROOT, keycert(key_id=B_KEY))
    with pytest.raises(SchemaError):
        sc.verify(A_ROOT_PUB)


def test_key_certificate_signed_by_the_signing_key_is_refused() -> None:
    # The online key must not be able to certify a successor: only the root signs certificates.
    sc = identity.certify(A_SIGN, keycert())
    with pytest.raises(SignatureError):
        sc.verify(A_ROOT_PUB)


@pytest.mark.parametrize(
    "fields",
    [{"role": "root"}, {"name": ""}, {"name": "x" * 65}, {"station": A.upper()}, {"key": A_PUB.hex()[:62]},
     {"key_id": A_KEY[:30]}],
    ids=["role root", "empty name", "long name", "station upper-case", "key short", "key id short"],
)  # fmt: skip
def test_invalid_key_certificate_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        keycert(**fields)


# --- tampering: every single-bit change is refused -----------------------------------------------


def _receipt_wire() -> bytes:
    return receipt().sign(B_SIGN).encode()


def _checkpoint_wire() -> bytes:
    return checkpoint(n=3, prev="ab" * 32).sign(A_SIGN).encode()


def _cosign_wire() -> bytes:
    return cosign_of(checkpoint().sign(A_SIGN)).sign(B_SIGN).encode()


def _open_receipt(raw: bytes) -> object:
    return Receipt.open(Signed.decode(raw), B_PUB)


def _open_checkpoint(raw: bytes) -> object:
    return Checkpoint.open(Signed.decode(raw), A_PUB)


def _open_cosign(raw: bytes) -> object:
    return Cosign.open(Signed.decode(raw), B_PUB)


def _open_keycert(raw: bytes) -> object:
    s = Signed.decode(raw)
    return SignedCert(s.data, s.sig).verify(A_ROOT_PUB)


def _keycert_wire() -> bytes:
    sc = identity.certify(A_ROOT, keycert())
    return Signed(sc.data, sc.sig).encode()


STATEMENTS: dict[str, tuple[Callable[[], bytes], Callable[[bytes], object]]] = {
    "receipt": (_receipt_wire, _open_receipt),
    "checkpoint": (_checkpoint_wire, _open_checkpoint),
    "cosign": (_cosign_wire, _open_cosign),
    "key certificate": (_keycert_wire, _open_keycert),
}


@pytest.mark.parametrize("name", STATEMENTS)
def test_tampered_statement_is_refused_at_every_bit(name: str) -> None:
    make_wire, open_ = STATEMENTS[name]
    data = make_wire()
    open_(data)  # the untampered statement opens
    for bit in range(len(data) * 8):
        with pytest.raises(VerificationError):
            open_(flip(data, bit))


hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
times = st.integers(0, canonical.MAX_SAFE_INT)
sizes = st.integers(0, 2**40)


@settings(max_examples=100)
@given(st.integers(1, 2**40), hex64, times, st.data())
def test_tampered_receipt_is_refused(seq: int, eid: str, t: int, data: st.DataObject) -> None:
    raw = receipt(seq=seq, id=eid, received_at=t).sign(B_SIGN).encode()
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    with pytest.raises(VerificationError):
        _open_receipt(flip(raw, bit))


@settings(max_examples=100)
@given(st.integers(1, 2**40), hex64, sizes, sizes, hex64, hex64, times, st.data())
def test_tampered_checkpoint_or_cosign_is_refused(
    n: int, prev: str, s1: int, s2: int, r1: str, r2: str, t: int, data: st.DataObject
) -> None:
    cp = checkpoint(
        n=n, prev=None if n == 1 else prev, time=t,
        heads=(Head(station=LOW, size=s1, root=r1), Head(station=HIGH, size=s2, root=r2)),
    )  # fmt: skip
    signed = cp.sign(A_SIGN)
    assert Checkpoint.open(signed, A_PUB) == cp
    raw = signed.encode()
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    with pytest.raises(VerificationError):
        _open_checkpoint(flip(raw, bit))
    co_raw = replace(cosign_of(signed), time=t).sign(B_SIGN).encode()
    bit = data.draw(st.integers(0, len(co_raw) * 8 - 1), label="cosign bit")
    with pytest.raises(VerificationError):
        _open_cosign(flip(co_raw, bit))
