"""Canonical bytes (redline.canonical): RFC 8785 JSON over redline's value subset.

What must hold (docs/PROTOCOL.md section 2):
- every value of the subset has exactly one encoding, and ``decode`` gives the value back;
- ``decode`` accepts exactly the canonical bytes: for any input it either raises EncodingError or
  returns a value whose encoding is the input, byte for byte;
- inside the subset our bytes are the bytes of an independent RFC 8785 implementation (the
  ``rfc8785`` package).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redline import canonical
from redline.errors import EncodingError, VerificationError

MAX = canonical.MAX_SAFE_INT

# --- strategies --------------------------------------------------------------------------------

# codec="utf-8" keeps every code point except lone surrogates (which are not Unicode scalar
# values and which UTF-8 cannot carry); the second alphabet makes non-BMP and control characters
# common instead of rare, since those are where JSON encoders differ.
_tricky_chars = st.sampled_from(
    ["\x00", "\x07", "\x08", "\t", "\n", "\x0b", "\x0c", "\r", "\x1f", '"', "\\", "/", "\x7f", "\x80",
     "\u2028", "\u2029", "\ufeff", "\ufffd", "\uffff", "\U00010000", "\U0001f602", "\U0010ffff", "é", "€"]
)  # fmt: skip
texts = st.text(st.characters(codec="utf-8"), max_size=20) | st.text(
    _tricky_chars | st.characters(min_codepoint=0x10000, codec="utf-8"), max_size=8
)
ints = st.integers(-MAX, MAX) | st.sampled_from([0, 1, -1, MAX, -MAX, 2**31, -(2**31), 2**32, 10**15])
scalars = st.none() | st.booleans() | ints | texts


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=25,
).filter(lambda v: _depth(v) <= 32)
objects = st.dictionaries(texts, values, max_size=6)


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types: in Python True == 1, which would hide a bool/int mix-up."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def assert_decode_is_canonical_or_refused(data: bytes) -> None:
    """The decode contract: EncodingError, or a value that encodes back to exactly ``data``."""
    try:
        value = canonical.decode(data)
    except EncodingError:
        return
    assert canonical.encode(value) == data


# --- round trip and agreement with an independent implementation --------------------------------


@settings(max_examples=200)
@given(values)
def test_round_trip(value: Any) -> None:
    data = canonical.encode(value)
    back = canonical.decode(data)
    assert same(back, value)
    assert canonical.encode(back) == data


@settings(max_examples=200)
@given(values)
def test_matches_the_rfc8785_package(value: Any) -> None:
    assert canonical.encode(value) == rfc8785.dumps(value)


@settings(max_examples=100)
@given(objects)
def test_output_is_utf8_json_without_insignificant_whitespace(value: dict[str, Any]) -> None:
    data = canonical.encode(value)
    text = data.decode("utf-8")
    assert same(json.loads(text), value)
    # Re-serialising with Python's compact separators and sorted keys must not add anything,
    # which it would if we emitted spaces or newlines between tokens.
    assert len(json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)) == len(text)


@settings(max_examples=100)
@given(st.dictionaries(texts, st.integers(0, 9), min_size=2, max_size=8))
def test_keys_are_sorted_by_utf16_code_units(value: dict[str, int]) -> None:
    decoded = json.loads(canonical.encode(value), object_pairs_hook=lambda pairs: [k for k, _ in pairs])
    assert decoded == sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))


def test_utf16_order_differs_from_code_point_order() -> None:
    # U+1F602 is D83D DE02 in UTF-16, so it sorts before U+FFFD although its code point is larger.
    value = {"\ufffd": 1, "\U0001f602": 2, "a": 3, "": 4}
    assert canonical.encode(value) == '{"":4,"a":3,"\U0001f602":2,"\ufffd":1}'.encode()


def test_example_of_protocol_section_2_2() -> None:
    value = {"b": [True, None, -5], "a": "é\n/"}
    assert canonical.encode(value) == b'{"a":"\xc3\xa9\\n/","b":[true,null,-5]}'


def test_key_order_of_the_input_does_not_matter() -> None:
    assert canonical.encode({"b": 1, "a": {"d": 2, "c": 3}}) == b'{"a":{"c":3,"d":2},"b":1}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x00", b'"\\u0000"'),
        ("\x08\t\n\x0c\r", b'"\\b\\t\\n\\f\\r"'),
        ("\x0b\x1f", b'"\\u000b\\u001f"'),  # lower-case hex, as ECMAScript JSON.stringify
        ('"\\', b'"\\"\\\\"'),
        ("/", b'"/"'),  # solidus is not escaped
        ("\x7f", b'"\x7f"'),  # DEL is not a JSON control character
        ("\u2028\u2029", '"\u2028\u2029"'.encode()),  # raw since ES2019 JSON superset
        ("é€\U0001f602", '"é€\U0001f602"'.encode()),  # non-ASCII as raw UTF-8, never \u escapes
        ("A\u030a", '"A\u030a"'.encode()),  # no Unicode normalisation
    ],
)
def test_string_escapes(text: str, expected: bytes) -> None:
    assert canonical.encode(text) == expected
    assert canonical.decode(expected) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, b"0"),
        (-1, b"-1"),
        (MAX, b"9007199254740991"),
        (-MAX, b"-9007199254740991"),
        (True, b"true"),
        (False, b"false"),
        (None, b"null"),
        ([], b"[]"),
        ({}, b"{}"),
        ((1, "a"), b'[1,"a"]'),  # tuples encode as arrays
        ([True, 1, False, 0], b"[true,1,false,0]"),  # bool is not an int
    ],
)
def test_scalars_and_empty_containers(value: Any, expected: bytes) -> None:
    assert canonical.encode(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        MAX + 1,
        -MAX - 1,
        2**64,
        1.0,
        0.5,
        -0.0,
        float("nan"),
        float("inf"),
        [1, 2.5],
        {"a": {"b": 1e3}},
        {1: "int key"},
        {None: "null key"},
        b"bytes",
        {1, 2},
        object(),
        "\ud800",  # lone surrogate: not Unicode
        "a\udfffb",
        {"\udc00": 1},
    ],
    ids=lambda v: "object()" if type(v) is object else repr(v),  # the same id in every process (xdist)
)
def test_values_outside_the_subset_are_refused(value: Any) -> None:
    with pytest.raises(EncodingError):
        canonical.encode(value)


def _nested(levels: int, inner: Any) -> Any:
    value = inner
    for _ in range(levels):
        value = [value]
    return value


def test_nesting_limit_is_32_enclosing_containers() -> None:
    # No value may have more than 32 arrays/objects around it (docs/PROTOCOL.md section 2).
    assert canonical.decode(canonical.encode(_nested(32, 1))) == _nested(32, 1)
    assert canonical.encode(_nested(32, [])) == b"[" * 33 + b"]" * 33
    assert canonical.encode(_nested(31, {"a": 1})) == b"[" * 31 + b'{"a":1}' + b"]" * 31
    with pytest.raises(EncodingError):
        canonical.encode(_nested(33, 1))
    with pytest.raises(EncodingError):
        canonical.encode(_nested(33, []))
    with pytest.raises(EncodingError):
        canonical.encode(_nested(32, {"a": 1}))
    with pytest.raises(EncodingError):
        canonical.decode(b"[" * 33 + b"1" + b"]" * 33)


# --- decode accepts only canonical bytes -----------------------------------------------------------

NON_CANONICAL = {
    # whitespace
    "space after colon": b'{"a": 1}',
    "space after comma": b"[1, 2]",
    "leading space": b" {}",
    "trailing newline": b"{}\n",
    "tab inside array": b"[\t1]",
    "CRLF between tokens": b'{"a":1,\r\n"b":2}',
    # key order
    "keys reordered": b'{"b":1,"a":2}',
    "keys in code point order, not UTF-16 order": '{"\ufffd":1,"\U0001f602":2}'.encode(),
    "nested keys reordered": b'{"a":{"d":1,"c":2}}',
    # escapes that have a shorter canonical form
    "escaped ASCII letter": b'"\\u0041"',
    "escaped non-ASCII": b'"\\u00e9"',
    "escaped euro sign": b'"\\u20ac"',
    "escaped solidus": b'"\\/"',
    "upper-case hex escape": b'"\\u001F"',
    "u-escape for newline": b'"\\u000a"',
    "escaped DEL": b'"\\u007f"',
    "escaped surrogate pair for a valid character": b'"\\ud83d\\ude02"',
    "escaped key": b'{"\\u0061":1}',
    # duplicate keys
    "duplicate key, same value": b'{"a":1,"a":1}',
    "duplicate key, different value": b'{"a":1,"a":2}',
    "duplicate nested key": b'{"a":{"b":1,"b":1}}',
    # numbers outside the subset
    "float": b"1.5",
    "float with zero fraction": b"1.0",
    "float in array": b"[0.5]",
    "exponent": b"1E2",
    "lower-case exponent": b"1e2",
    "negative exponent": b"1e-2",
    "negative zero float": b"-0.0",
    "negative zero int": b"-0",
    "leading zero": b"01",
    "plus sign": b"+1",
    "2**53": b"9007199254740992",
    "-(2**53)": b"-9007199254740992",
    "2**64": b"18446744073709551616",
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"[-Infinity]",
    # lone surrogates (valid JSON escapes, but not Unicode)
    "lone high surrogate": b'"\\ud800"',
    "lone low surrogate": b'"\\udc00"',
    "high surrogate then letter": b'"\\ud83dA"',
    "lone surrogate in key": b'{"\\udfff":1}',
    # invalid UTF-8
    "invalid byte": b'"\xff"',
    "overlong slash": b'"\xc0\xaf"',
    "UTF-8-encoded surrogate (CESU-8)": b'"\xed\xa0\x80"',
    "truncated sequence": b'"\xe2\x82"',
    "latin-1 text": b'"caf\xe9"',
    "byte order mark": b"\xef\xbb\xbf{}",
    "UTF-16 text": '{"a":1}'.encode("utf-16-le"),
    # trailing or missing data
    "two values": b"1 2",
    "two objects": b"{}{}",
    "trailing garbage": b'{"a":1}x',
    "trailing NUL": b"[]\x00",
    "empty input": b"",
    "unterminated object": b'{"a":1',
    "unterminated string": b'"abc',
    # not JSON at all
    "trailing comma": b"[1,]",
    "trailing comma in object": b'{"a":1,}',
    "single quotes": b"'a'",
    "bare word": b"abc",
    "upper-case literal": b"True",
    "comment": b"[1/*x*/]",
    "raw control character in string": b'"a\nb"',
    "unescaped tab in string": b'"a\tb"',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("data", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
def test_non_canonical_input_is_refused(data: bytes) -> None:
    with pytest.raises(EncodingError):
        canonical.decode(data)


def test_integer_with_thousands_of_digits_is_refused_as_encoding_error() -> None:
    # BUG (redline/canonical.py): Python refuses to convert integer strings over 4,300 digits and
    # raises ValueError from inside json.loads, which escapes decode() as a bare ValueError. A peer
    # can send such a number to crash whatever catches only VerificationError.
    for data in (b"1" * 5000, b'{"a":' + b"9" * 4301 + b"}", b"-" + b"1" * 4400):
        with pytest.raises(EncodingError):
            canonical.decode(data)


@settings(max_examples=200)
@given(values, st.data())
def test_whitespace_anywhere_is_refused_or_was_inside_a_string(value: Any, data: st.DataObject) -> None:
    encoded = canonical.encode(value)
    pos = data.draw(st.integers(0, len(encoded)), label="position")
    ws = data.draw(st.sampled_from([b" ", b"\t", b"\n", b"\r"]), label="whitespace")
    mutated = encoded[:pos] + ws + encoded[pos:]
    assert_decode_is_canonical_or_refused(mutated)
    try:
        back = canonical.decode(mutated)
    except EncodingError:
        return
    # Accepted only if the space landed inside a string, which changes the value.
    assert ws == b" " and not same(back, value)


@settings(max_examples=200)
@given(st.dictionaries(texts, values, min_size=2, max_size=6))
def test_reordered_keys_are_refused(value: dict[str, Any]) -> None:
    canonical_bytes = canonical.encode(value)
    keys = list(json.loads(canonical_bytes))
    reordered = (
        "{"
        + ",".join(
            json.dumps(k, ensure_ascii=False) + ":" + canonical.encode(value[k]).decode() for k in reversed(keys)
        )
        + "}"
    )
    with pytest.raises(EncodingError):
        canonical.decode(reordered.encode())


@settings(max_examples=100)
@given(values)
def test_ascii_escaped_non_ascii_is_refused(value: Any) -> None:
    escaped = json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=False).encode()
    canonical_bytes = canonical.encode(value)
    if escaped != canonical_bytes:
        with pytest.raises(EncodingError):
            canonical.decode(escaped)


@settings(max_examples=200)
@given(values, st.data())
def test_mutated_canonical_bytes_are_refused_or_canonical(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(canonical.encode(value))
    op = data.draw(st.sampled_from(["flip", "delete", "insert", "duplicate"]), label="op")
    pos = data.draw(st.integers(0, max(len(encoded) - 1, 0)), label="position")
    if op == "flip" and encoded:
        encoded[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif op == "delete" and encoded:
        del encoded[pos]
    elif op == "insert":
        encoded.insert(pos, data.draw(st.integers(0, 255), label="byte"))
    else:
        encoded[pos:pos] = encoded[pos : pos + data.draw(st.integers(1, 8), label="length")]
    assert_decode_is_canonical_or_refused(bytes(encoded))


@settings(max_examples=200)
@given(st.binary(max_size=64))
@example(b'{"a":1}')
@example(b"\x80")
def test_arbitrary_bytes_are_refused_or_canonical(data: bytes) -> None:
    assert_decode_is_canonical_or_refused(data)


def test_encoding_error_is_a_verification_error() -> None:
    # Callers that refuse untrusted input catch VerificationError; decode must stay inside it.
    assert issubclass(EncodingError, VerificationError)


# --- decode_object -----------------------------------------------------------------------------


def test_decode_object_returns_the_object() -> None:
    assert canonical.decode_object(b'{"a":[1,true,null]}', "thing") == {"a": [1, True, None]}


@pytest.mark.parametrize("data", [b"[]", b"1", b'"{}"', b"null", b"true"])
def test_decode_object_refuses_other_values(data: bytes) -> None:
    with pytest.raises(EncodingError, match="thing must be a JSON object"):
        canonical.decode_object(data, "thing")


def test_every_unicode_scalar_value_is_escaped_as_rfc8785_says() -> None:
    """The bytes are written by orjson: each of the 1,112,064 scalar values, alone and beside ASCII
    text, must come out as the reference does (JSON.stringify's escapes, UTF-8 otherwise), and read
    back to the same string through the fast path."""
    scalars = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(scalars), 4096):
        chunk = [chr(c) for c in scalars[start : start + 4096]]
        value = {"one": chunk, "in text": "a" + "b".join(chunk) + "z"}
        data = canonical.encode(value)
        assert data == rfc8785.dumps(value), hex(scalars[start])
        assert canonical.decode(data) == value
