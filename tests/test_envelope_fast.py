"""The fast paths of the envelope header (``Header.encode``, ``Header.parse``) are the general ones.

``seal`` writes a header from a template and ``open_envelope`` reads one with a single pattern,
instead of ``canonical.encode``/``canonical.decode`` and ``Header.from_obj``: a third of the CPU of
opening an envelope before its signature. A second parser of signed bytes is only acceptable if it
can never decide differently, so: the template gives byte for byte what the canonical encoder
gives; every header the pattern accepts is one the general path accepts, with the same fields;
and whatever it does not accept goes to the general path, which refuses exactly what it refused
before (same error, same message), for headers built at random and for their mutations. The link
routes a frame by the same match (``plain_route``: the seq and sender JSON would give) and hands
the header built from it on with the envelope (``RawEnvelope.parsed``): that header is the one the
general path gives, or none when the general path refuses the bytes. A body sealed from the
content's member encoded at acceptance (``content_member``) is the body the encoder gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redline import canonical, identity
from redline.envelope import (
    _CANONICAL_HEADER,
    MEMBER_OVERHEAD,
    PRIORITIES,
    Envelope,
    Header,
    RawEnvelope,
    content_member,
    envelope_id,
    make_body,
    open_envelope,
    plain_header,
    plain_route,
    seal,
    split,
)
from redline.errors import RedlineError

hex_of = lambda n: st.binary(min_size=n // 2, max_size=n // 2).map(bytes.hex)  # noqa: E731
ints = st.one_of(st.integers(0, 3), st.integers(0, 2**53 - 1), st.integers(2**53 - 5, 2**53 + 5))
kinds = st.one_of(
    st.sampled_from(["TEXT", "FLASH", "ACK", "NOTICE_WITHDRAW"]), st.from_regex(r"\A[A-Z][A-Z0-9_]{0,31}\Z")
)
langs = st.one_of(
    st.sampled_from(["en", "ru", "uk", "en-GB", "zh-Hant-TW", "EN", "e"]),
    st.from_regex(r"\A[a-z]{2,3}(-[A-Za-z0-9]{1,8}){0,2}\Z"),
)


@st.composite
def header_objs(draw: st.DrawFn) -> dict[str, Any]:
    seq = draw(st.integers(1, 3) | ints)
    seen_seq = draw(ints)
    # Now and then prev or seen breaks its null rule: headers the pattern matches and the rules refuse.
    broken = draw(st.sampled_from(["none"] * 6 + ["prev", "seen"]))
    prev = None if (seq == 1) != (broken == "prev") else draw(hex_of(64))
    seen_id = None if (seen_seq == 0) != (broken == "seen") else draw(hex_of(64))
    return {
        "v": draw(st.sampled_from([1, 1, 1, 2])),
        "line": draw(hex_of(32)),
        "sender": draw(hex_of(64)),
        "key": draw(hex_of(32)),
        "seq": seq,
        "sent_at": draw(ints),
        "kind": draw(kinds),
        "prio": draw(st.sampled_from([*PRIORITIES, "URGENT"])),
        "prev": prev,
        "seen": {"seq": seen_seq, "id": seen_id},
        "body": draw(hex_of(64)),
        "lang": draw(langs),
    }


def general(data: bytes) -> Header | str:
    """What the general path makes of header bytes: a Header, or the error it raises."""
    try:
        return Header.from_obj(canonical.decode_object(data, "envelope header"))
    except RedlineError as exc:
        return f"{type(exc).__name__}: {exc}"


def fast(data: bytes) -> Header | str:
    try:
        return Header.parse(data)
    except RedlineError as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=400, deadline=None)
@given(header_objs())
def test_the_template_is_the_canonical_encoding_and_the_pattern_reads_it_back(obj: dict[str, Any]) -> None:
    try:
        header = Header.from_obj(obj)
    except RedlineError:
        return  # not a header (v 2, an unknown priority ...): nothing to encode
    try:
        expected: bytes | str = canonical.encode(header.to_obj())
    except RedlineError as exc:
        expected = f"{type(exc).__name__}: {exc}"
    try:
        got: bytes | str = header.encode()
    except RedlineError as exc:
        got = f"{type(exc).__name__}: {exc}"
    assert got == expected
    if isinstance(expected, bytes):
        assert _CANONICAL_HEADER.fullmatch(expected.decode()) is not None  # the fast path is the one taken
        assert Header.parse(expected) == header


@settings(max_examples=600, deadline=None)
@given(header_objs(), st.data())
def test_the_pattern_never_decides_differently_from_the_general_path(obj: dict[str, Any], data: st.DataObject) -> None:
    """Canonical bytes of any object (valid or not), then mutated: flipped, cut, grown, respaced."""
    try:
        raw = canonical.encode(obj)
    except RedlineError:
        return
    mutation = data.draw(st.sampled_from(["none", "flip", "cut", "insert", "space", "reorder", "upper", "escape"]))
    if mutation == "flip" and raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1 :]
    elif mutation == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif mutation == "insert":
        i = data.draw(st.integers(0, len(raw)))
        raw = raw[:i] + data.draw(st.binary(min_size=1, max_size=4)) + raw[i:]
    elif mutation == "space":
        raw = raw.replace(b":", b": ", 1)
    elif mutation == "reorder":
        raw = raw.replace(b'"key":', b'"kez":', 1).replace(b'"kind":', b'"key":', 1).replace(b'"kez":', b'"kind":', 1)
    elif mutation == "upper":
        raw = raw.replace(b'"body":"', b'"body":"A', 1)
    elif mutation == "escape":
        raw = raw.replace(b'"kind":"', b'"kind":"\\u0054', 1)
    assert fast(raw) == general(raw)
    got, expected = fast(raw), general(raw)
    if isinstance(got, Header):  # built without the constructor: the very fields, of the very types
        assert isinstance(expected, Header) and vars(got) == vars(expected)
        assert [type(x) for x in vars(got).values()] == [type(x) for x in vars(expected).values()]
    assert routed(raw) == (general(raw) if isinstance(general(raw), Header) else None)


def routed(raw: bytes) -> Header | None:
    """What the link hands on for header bytes: checks its routing against JSON's, then the header
    it built (None: the station parses the header itself)."""
    m = plain_header(raw)
    if m is None:
        return None
    obj = json.loads(raw)
    assert plain_route(m) == (obj["seq"], obj["sender"])
    return RawEnvelope(raw, None, bytes(64)).parsed(m).header


@pytest.mark.parametrize(
    "text",
    [
        "2**53", "leading zero", "negative", "float", "duplicate key", "non-ascii lang", "bool seq",
    ],
)
def test_edge_cases_fall_back_to_the_general_path(text: str) -> None:
    h = Header(
        line="0" * 32, sender="a" * 64, key="b" * 32, seq=7, sent_at=1_700_000_000_000, kind="TEXT", prio="ROUTINE",
        prev="c" * 64, seen_seq=2, seen_id="d" * 64, body_hash=hashlib.sha256(b"x").hexdigest(), lang="en",
    )  # fmt: skip
    raw = h.encode()
    assert raw == canonical.encode(h.to_obj())
    variants = {
        "2**53": raw.replace(b'"sent_at":1700000000000', b'"sent_at":9007199254740992'),
        "leading zero": raw.replace(b'"seq":7', b'"seq":07'),
        "negative": raw.replace(b'"seq":7', b'"seq":-7'),
        "float": raw.replace(b'"seq":7', b'"seq":7.0'),
        "duplicate key": raw.replace(b'"v":1}', b'"v":1,"v":1}'),
        "non-ascii lang": raw.replace(b'"lang":"en"', '"lang":"ен"'.encode()),
        "bool seq": raw.replace(b'"seq":7', b'"seq":true'),
    }
    bad = variants[text]
    assert fast(bad) == general(bad)
    assert isinstance(general(bad), str)
    assert routed(bad) is None


def test_a_header_match_of_other_bytes_is_refused() -> None:
    h = Header(
        line="0" * 32, sender="a" * 64, key="b" * 32, seq=1, sent_at=1, kind="TEXT", prio="ROUTINE", prev=None,
        seen_seq=0, seen_id=None, body_hash="e" * 64, lang="en",
    )  # fmt: skip
    other = Header(**{**h.__dict__, "seq": 2, "prev": "f" * 64})
    m = plain_header(other.encode())
    assert m is not None
    with pytest.raises(ValueError):
        RawEnvelope(h.encode(), None, bytes(64)).parsed(m)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6), st.binary(min_size=16, max_size=16))
def test_a_body_from_the_encoded_member_is_the_encoders_body(content: dict[str, Any], salt: bytes) -> None:
    member = content_member(content)
    assert make_body(content, salt, member) == make_body(content, salt)
    assert len(member) - MEMBER_OVERHEAD == len(canonical.encode(content))


def test_content_nested_too_deep_for_a_body_is_refused_when_encoded_at_acceptance() -> None:
    """32 levels inside the content are 33 in the body: the encoder refuses the body, and now
    the acceptance that encodes the member, instead of the seal after it."""
    deep: dict[str, Any] = {}
    for _ in range(32):
        deep = {"a": deep}
    canonical.encode(deep)  # the content alone is within the limit
    with pytest.raises(RedlineError):
        content_member(deep)
    with pytest.raises(RedlineError):
        make_body(deep, bytes(16))


_SIGNER = nacl.signing.SigningKey(bytes(range(32)))
_KEY_ID = identity.key_id(bytes(_SIGNER.verify_key))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    st.integers(1, 3) | st.integers(1, 2**53 - 1),
    st.booleans(),
    st.sampled_from(["none", "id read before", "redacted"]),
)
def test_an_opened_envelope_is_the_one_its_constructor_makes(
    content: dict[str, Any], seq: int, seen: bool, how: str
) -> None:
    """``open_envelope`` makes its Envelope without the frozen ``__init__`` (``_verified``): the
    same fields, values, types and equality as the constructor's, frozen all the same, and the
    same id whether or not someone read the raw envelope's id first (the link does, to drop a
    duplicate)."""
    sender = "c" * 64
    env = seal(
        _SIGNER, line="0" * 32, sender=sender, key=_KEY_ID, seq=seq, sent_at=seq, kind="TEXT", prio="ROUTINE",
        prev=None if seq == 1 else "d" * 64, seen_seq=3 if seen else 0, seen_id="e" * 64 if seen else None,
        lang="en", content=content, salt=bytes(16),
    )  # fmt: skip
    env = env.redacted() if how == "redacted" else env
    raw = split(env.encode())
    if how == "id read before":
        assert raw.id == env.id
    opened = open_envelope(raw, lambda s, k: bytes(_SIGNER.verify_key))
    made = Envelope(env.header, raw.header_bytes, raw.body_bytes, raw.sig, envelope_id(raw.header_bytes),
                    {} if how == "redacted" else content)  # fmt: skip
    assert type(opened) is Envelope and vars(opened) == vars(made) and list(vars(opened)) == list(vars(made))
    assert opened == made and repr(opened) == repr(made) and hash(opened.id) == hash(made.id)
    assert opened.content() == made.content()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opened.id = "f" * 64  # type: ignore[misc]
