"""Our primitives against test vectors that other people published (tests/vectors/external/).

The vectors are a copy of the project's shared folder so that a fresh clone can run this file;
each upstream folder keeps its LICENSE and the SOURCE-COMMIT it was taken from.

- ed25519-speccheck: the 12 edge cases of "Taming the many EdDSAs". Our verdict is libsodium's
  strict rule (docs/PROTOCOL.md section 4): only case 3 is valid.
- rfc9162-merkle (transparency-dev/merkle): inclusion and consistency proofs, happy and corrupted.
- rfc8785-jcs (cyberphone/json-canonicalization): canonical JSON inputs and their exact outputs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest

from redline import canonical, identity, merkle
from redline.errors import EncodingError, MerkleError, SignatureError

EXTERNAL = Path(__file__).parent / "vectors" / "external"
SPECCHECK = EXTERNAL / "ed25519-speccheck"
MERKLE = EXTERNAL / "rfc9162-merkle" / "testdata"
JCS = EXTERNAL / "rfc8785-jcs" / "testdata"


@pytest.mark.parametrize("folder", ["ed25519-speccheck", "rfc9162-merkle", "rfc8785-jcs"])
def test_each_vector_folder_keeps_its_license_and_source_commit(folder: str) -> None:
    assert "Apache License" in (EXTERNAL / folder / "LICENSE").read_text()
    commit = (EXTERNAL / folder / "SOURCE-COMMIT").read_text().strip()
    assert len(commit) == 40 and int(commit, 16) >= 0


# --- Ed25519 speccheck ---------------------------------------------------------------------------

# libsodium's crypto_sign_verify_detached, which PyNaCl wraps: V = valid, X = rejected.
# 0-2: small-order A and/or R; 3: mixed-order A, the one fully valid case; 4-5: cofactored vs
# cofactorless equation; 6-7: S >= L; 8-9: non-canonical R; 10-11: non-canonical A.
EXPECTED_VERDICTS = "XXXVXXXXXXXX"


def _cases() -> list[dict[str, str]]:
    cases: list[dict[str, str]] = json.loads((SPECCHECK / "cases.json").read_text())
    return cases


def _nacl_verdict(case: dict[str, str]) -> str:
    """The primitive identity.verify uses, with the same exceptions mapped to 'rejected'."""
    try:
        nacl.signing.VerifyKey(bytes.fromhex(case["pub_key"])).verify(
            bytes.fromhex(case["message"]), bytes.fromhex(case["signature"])
        )
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return "X"
    return "V"


def _identity_verdict(case: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """identity.verify itself, with its domain prefix set to empty so the raw vector message is checked.

    identity.verify signs b"redline/1/<kind>\\0" + data, and the vectors sign bare messages; until
    identity exposes a verify_raw(public, data, sig) that verify() calls, emptying the prefix is the
    only way to run our own code path (length check, key parsing, error mapping) on them.
    """
    monkeypatch.setattr(identity, "domain", lambda kind: b"")
    try:
        identity.verify(
            bytes.fromhex(case["pub_key"]), "speccheck", bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]), "speccheck vector",
        )  # fmt: skip
    except SignatureError:
        return "X"
    finally:
        monkeypatch.undo()
    return "V"


def test_speccheck_has_twelve_cases() -> None:
    assert len(_cases()) == 12


def test_libsodium_verdicts_on_speccheck_cases() -> None:
    assert "".join(_nacl_verdict(c) for c in _cases()) == EXPECTED_VERDICTS


def test_identity_verify_verdicts_on_speccheck_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "".join(_identity_verdict(c, monkeypatch) for c in _cases()) == EXPECTED_VERDICTS


def test_identity_verify_raw_verdicts_on_speccheck_cases() -> None:
    verify_raw: Callable[[bytes, bytes, bytes], None] | None = getattr(identity, "verify_raw", None)
    if verify_raw is None:
        pytest.skip("redline.identity has no verify_raw(public, data, sig) yet; covered via verify() above")
    verdicts = ""
    for c in _cases():
        try:
            verify_raw(bytes.fromhex(c["pub_key"]), bytes.fromhex(c["message"]), bytes.fromhex(c["signature"]))
        except SignatureError:
            verdicts += "X"
        else:
            verdicts += "V"
    assert verdicts == EXPECTED_VERDICTS


def test_domain_prefix_really_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Guards the trick above: with the real prefix, the one valid vector must no longer verify.
    case = _cases()[3]
    assert _identity_verdict(case, monkeypatch) == "V"
    with pytest.raises(SignatureError):
        identity.verify(
            bytes.fromhex(case["pub_key"]), "speccheck", bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]), "speccheck vector",
        )  # fmt: skip


# --- RFC 9162 Merkle proofs ----------------------------------------------------------------------


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _proof(value: list[str] | None) -> list[bytes]:
    return [_b64(p) for p in value or []]


def _vector_files(kind: str) -> list[Any]:
    paths = sorted((MERKLE / kind).rglob("*.json"))
    return [pytest.param(p, id=str(p.relative_to(MERKLE / kind))) for p in paths]


def test_merkle_vectors_are_all_there() -> None:
    # If a glob silently matched nothing, the parametrized tests below would prove nothing.
    assert len(list((MERKLE / "inclusion").rglob("*.json"))) == 98
    assert len(list((MERKLE / "consistency").rglob("*.json"))) == 98


@pytest.mark.parametrize("path", _vector_files("inclusion"))
def test_rfc9162_inclusion_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), _proof(v["proof"]), _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(MerkleError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _vector_files("consistency"))
def test_rfc9162_consistency_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), _proof(v["proof"]))
    if v["wantErr"]:
        with pytest.raises(MerkleError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


# --- RFC 8785 JSON canonicalization --------------------------------------------------------------

# Our encoder covers RFC 8785 only for the subset redline signs: no floats at all. Upstream inputs
# holding a JSON number with a fraction or exponent (even 56.0) must be refused with EncodingError,
# never silently turned into some other number form; the others must match byte for byte.
FLOAT_INPUTS = {"structures", "values"}


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return False


def _jcs_names() -> list[str]:
    return sorted(p.stem for p in (JCS / "input").glob("*.json"))


def test_jcs_vectors_are_all_there() -> None:
    assert _jcs_names() == ["arrays", "french", "structures", "unicode", "values", "weird"]


@pytest.mark.parametrize("name", _jcs_names())
def test_rfc8785_vector(name: str) -> None:
    raw_input = (JCS / "input" / f"{name}.json").read_bytes()
    expected = (JCS / "output" / f"{name}.json").read_bytes()
    assert bytes.fromhex((JCS / "outhex" / f"{name}.txt").read_text().replace(" ", "").replace("\n", "")) == expected
    value = json.loads(raw_input)
    assert _has_float(value) == (name in FLOAT_INPUTS)
    if name in FLOAT_INPUTS:
        with pytest.raises(EncodingError):
            canonical.encode(value)
    else:
        assert canonical.encode(value) == expected
    # The canonical output is ours too unless it still holds a non-integer ("56.0" became "56",
    # which is in the subset; 4.5 is not).
    output_value = json.loads(expected)
    if _has_float(output_value):
        assert name == "values"
        with pytest.raises(EncodingError):
            canonical.decode(expected)
    else:
        assert canonical.decode(expected) == output_value
        assert canonical.encode(output_value) == expected
    # The pretty-printed upstream input is valid JSON but not canonical: decode must refuse it.
    with pytest.raises(EncodingError):
        canonical.decode(raw_input)
