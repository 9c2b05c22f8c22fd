"""docs/PROTOCOL.md is complete enough to build a station from: pairing, kinds, person signatures.

- tests/vectors/pairing.json: every message of the pairing ceremony (section 9) is recomputed from
  its inputs with redline.pairing and, where short, as the spec spells it out (commitment, HMAC,
  safety code, PAIR frame); each side's checks accept the other's message.
- tests/vectors/kinds.json: one envelope of every kind (section 5.8) is resealed byte for byte,
  the chains link up, and every person signature verifies against the roster in force (5.10).
- docs/schemas/<KIND>.json: one per kind of the registry (redline/kinds.py) and no other, each a
  valid draft 2020-12 schema whose examples, and every vector's content, validate; the examples are
  kinds.json's.
- The registry agrees with section 5.8's table (sent by, person-signed, default priority) and with
  5.10; every kind has a body type; each schema example parses (strictly, as a sender must) into a
  body whose content form is the example again and validates; and the body types accept exactly
  what the schemas accept, over thousands of mutations of the examples (every member dropped,
  replaced by hostile values, or joined by an unknown one), but for the rules section 5.9 states
  that a schema cannot express.
- Real traffic: a full run of the demo scenario between two station processes, plus the kinds the
  scenario does not file (READ, TRANSLATION, NOTICE_WITHDRAW) filed through the CLI, is read back
  from both ledgers and every content validates against its kind's schema and parses strictly
  into its body type.
- The worked examples of Appendix A.2 and A.3 verify from the values printed in the document.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import nacl.signing
import pytest

from redline import canonical, envelope, identity, kinds, pairing, persons, revocation
from redline.envelope import KINDS, open_envelope
from redline.errors import PairingError, SchemaError, SignatureError, UnknownKeyError
from redline.identity import KeyCert, SignedCert
from redline.ops.voice import VOICE_KINDS
from redline.protocol.framing import FrameDecoder, FrameType
from redline.statements import Checkpoint, Signed

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
SCHEMAS = ROOT / "docs" / "schemas"
PROTOCOL = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


KEYS = load("keys.json")
STATIONS = {s["label"]: s for s in KEYS["stations"]}
PAIRING = load("pairing.json")
KINDS_VECTORS = load("kinds.json")
KIND_ENVELOPES: list[dict[str, Any]] = KINDS_VECTORS["envelopes"]
STORY_ENVELOPES: list[dict[str, Any]] = load("envelopes.json")["envelopes"]
SCHEMA_FILES = sorted(SCHEMAS.glob("*.json"))


def schema(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / f"{kind}.json").read_text(encoding="utf-8"))
    return data


def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(kind))


def make_vectors_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts" / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def signing_key(seed_hex: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes.fromhex(seed_hex))


def lookup(sender: str, key_id: str) -> bytes:
    for s in KEYS["stations"]:
        if (s["fingerprint"], s["key_id"]) == (sender, key_id):
            return bytes.fromhex(s["signing_public"])
    for v in KIND_ENVELOPES:  # a key a KEY vector rotated to (its window is the gate's, not checked here)
        for c in v["input"]["content"].get("certs", []) if v["input"]["kind"] == "KEY" else []:
            cert = json.loads(bytes.fromhex(c["data"]))
            if (cert["station"], cert["key_id"]) == (sender, key_id):
                return bytes.fromhex(cert["key"])
    raise UnknownKeyError(f"no key {key_id}")


# --- pairing (section 9) --------------------------------------------------------------------------

PARTIES = PAIRING["stations"]
INVITE = PAIRING["invite"]


def party(label: str) -> pairing.Party:
    return pairing.Party.from_obj(PARTIES[label]["party"])


def the_invite(*, used: bool = False) -> pairing.Invite:
    inp = INVITE["input"]
    return pairing.Invite(
        id=inp["id"], secret=bytes.fromhex(inp["secret"]), nonce=bytes.fromhex(inp["nonce_i"]), line=inp["line"],
        expires=inp["expires"], used=used,
    )  # fmt: skip


def ed25519_spki(public: bytes) -> bytes:
    """RFC 8410 SubjectPublicKeyInfo of an Ed25519 key, as PROTOCOL.md section 3.6 spells it out."""
    return bytes.fromhex("302a300506032b6570032100") + public


@pytest.mark.parametrize("label", ["alpha", "bravo"])
def test_tls_certificate_spki_hash_and_key_id(label: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    v, st = PARTIES[label], STATIONS[label]
    der = bytes.fromhex(v["tls_der"])
    cert = x509.load_der_x509_certificate(der)
    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["tls_seed"])).public_key()
    assert cert.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == public.public_bytes(
        Encoding.Raw, PublicFormat.Raw
    )
    spki = ed25519_spki(public.public_bytes(Encoding.Raw, PublicFormat.Raw))
    assert cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == spki
    assert identity.spki_hash(der) == v["tls_spki_hash"] == hashlib.sha256(spki).hexdigest()
    assert v["tls_key_id"] == v["tls_spki_hash"][:32]
    # Self-signed, subject = issuer, the CN of section 3.6, no extensions.
    assert cert.subject == cert.issuer and cert.version == x509.Version.v3 and len(cert.extensions) == 0
    assert cert.subject.rfc4514_string() == f"CN=redline station {st['name']} {v['tls_spki_hash'][:16]}"
    public.verify(cert.signature, cert.tbs_certificate_bytes)
    # The tls key certificate: key = SPKI hash, key_id = its first 32 hex digits, signed by the root.
    root = bytes.fromhex(st["root_public"])
    tls = SignedCert(bytes.fromhex(v["tls_cert"]["canonical"]), bytes.fromhex(v["tls_cert"]["signature"]))
    obj = tls.verify(root)
    assert obj == KeyCert.from_obj(v["tls_cert"]["object"])
    assert (obj.role, obj.key, obj.key_id) == ("tls", v["tls_spki_hash"], v["tls_spki_hash"][:32])
    assert identity.domain("keycert") + tls.data == bytes.fromhex(v["tls_cert"]["signed"])
    # Its signing certificate is the very one keys.json publishes.
    published = {c["input"]["root_seed"]: c["output"] for c in KEYS["key_certificates"]}[st["root_seed"]]
    assert v["signing_cert"]["canonical"] == published["canonical"]
    assert v["signing_cert"]["signature"] == published["signature"]


@pytest.mark.parametrize("label", ["alpha", "bravo"])
def test_party_object(label: str) -> None:
    v, st = PARTIES[label], STATIONS[label]
    obj = v["party"]
    assert set(obj) == {"root", "signing_cert", "tls_cert", "tls_der", "name", "lang", "addrs"}
    p = pairing.Party.from_obj(obj)
    assert p.to_obj() == obj
    assert p.check() == st["fingerprint"] == hashlib.sha256(bytes.fromhex(obj["root"])).hexdigest()
    assert obj["signing_cert"] == {"data": v["signing_cert"]["canonical"], "sig": v["signing_cert"]["signature"]}
    assert obj["tls_cert"] == {"data": v["tls_cert"]["canonical"], "sig": v["tls_cert"]["signature"]}
    assert obj["tls_der"] == v["tls_der"]


def test_token_vector() -> None:
    inp, out = INVITE["input"], INVITE["output"]
    # Commitment, spelled out: SHA-256("redline/1/commit" 0x00 || nonce_i || line).
    commit_input = b"redline/1/commit\x00" + bytes.fromhex(inp["nonce_i"]) + bytes.fromhex(inp["line"])
    assert commit_input.hex() == out["commit_input"] and len(commit_input) == 65
    assert hashlib.sha256(commit_input).hexdigest() == out["commit"]
    assert pairing.commitment(bytes.fromhex(inp["nonce_i"]), inp["line"]) == out["commit"]
    token = pairing.Token(
        id=inp["id"], name=inp["name"], addrs=tuple(inp["addrs"]), pair_addr=inp["pair"], station=inp["station"],
        spki=inp["spki"], secret=bytes.fromhex(inp["secret"]), commit=out["commit"], expires=inp["expires"],
    )  # fmt: skip
    assert token.encode() == out["token"]
    obj = out["token_object"]
    assert set(obj) == {"v", "id", "name", "addrs", "pair", "station", "spki", "secret", "commit", "expires"}
    assert canonical.encode(obj).hex() == out["token_canonical"]
    unpadded = base64.urlsafe_b64encode(bytes.fromhex(out["token_canonical"])).decode().rstrip("=")
    assert out["token"] == "rl1-" + unpadded and "=" not in out["token"]
    assert pairing.Token.decode(out["token"]) == token
    assert re.fullmatch(r"[0-9a-f]{16}", inp["id"]) and len(bytes.fromhex(inp["secret"])) == 16
    assert len(bytes.fromhex(inp["nonce_i"])) == 32 and re.fullmatch(r"[0-9a-f]{32}", inp["line"])
    assert inp["station"] == STATIONS["alpha"]["fingerprint"] and inp["spki"] == PARTIES["alpha"]["tls_spki_hash"]
    assert inp["addrs"] == PARTIES["alpha"]["party"]["addrs"]


def _frame(data_hex: str, frame_hex: str) -> None:
    data, frame = bytes.fromhex(data_hex), bytes.fromhex(frame_hex)
    assert frame == struct.pack(">IB", len(data) + 1, 10) + data
    assert FrameDecoder(max_frame_bytes=1 << 20).feed(frame) == [(FrameType.PAIR, data)]
    assert canonical.encode(canonical.decode_object(data, "pairing message")) == data


def test_join_vector() -> None:
    vec, out = PAIRING["join"], PAIRING["join"]["output"]
    token = pairing.Token.decode(vec["input"]["token"])
    nonce_j = bytes.fromhex(vec["input"]["nonce_j"])
    msg = pairing.join_message(token, party("bravo"), nonce_j)
    assert msg == out["message"] and canonical.encode(msg).hex() == out["canonical"]
    assert set(msg) == {"step", "invite", "party", "nonce", "proof"} and msg["step"] == "join"
    unsigned = {k: v for k, v in msg.items() if k != "proof"}
    assert canonical.encode(unsigned).hex() == out["unsigned_canonical"]
    # HMAC-SHA256 keyed with the 16 raw secret bytes (not their hex), over the object without proof.
    secret = bytes.fromhex(INVITE["input"]["secret"])
    proof = hmac.new(secret, bytes.fromhex(out["unsigned_canonical"]), hashlib.sha256).hexdigest()
    assert proof == out["proof"] == msg["proof"]
    _frame(out["canonical"], out["frame"])
    # The inviter's checks accept it; the same JOIN again (token used) or late is refused.
    joiner, nonce = pairing.check_join(the_invite(), msg, vec["input"]["now"])
    assert joiner == party("bravo") and nonce == nonce_j
    with pytest.raises(PairingError, match="already used"):
        pairing.check_join(the_invite(used=True), msg, vec["input"]["now"])
    with pytest.raises(PairingError, match="expired"):
        pairing.check_join(the_invite(), msg, INVITE["input"]["expires"] + 1)
    pairing.check_join(the_invite(), msg, INVITE["input"]["expires"])  # valid up to and including expires
    with pytest.raises(PairingError, match="secret"):
        pairing.check_join(the_invite(), {**msg, "nonce": "00" * 32}, vec["input"]["now"])


def test_reveal_and_error_vectors() -> None:
    vec, out = PAIRING["reveal"], PAIRING["reveal"]["output"]
    msg = pairing.reveal_message(the_invite(), party("alpha"))
    assert msg == out["message"] and canonical.encode(msg).hex() == out["canonical"]
    assert set(msg) == {"step", "nonce", "line", "party"} and msg["step"] == "reveal"
    _frame(out["canonical"], out["frame"])
    token = pairing.Token.decode(INVITE["output"]["token"])
    inviter, nonce_i, line = pairing.check_reveal(token, msg)
    assert inviter == party("alpha") and nonce_i.hex() == vec["input"]["nonce_i"] and line == vec["input"]["line"]
    err = PAIRING["error"]["output"]
    assert set(err["message"]) == {"step", "message"}
    _frame(err["canonical"], err["frame"])
    with pytest.raises(PairingError, match="already used"):
        pairing.check_reveal(token, err["message"])


def test_safety_code_vector() -> None:
    inp, out = PAIRING["safety_code"]["input"], PAIRING["safety_code"]["output"]
    line, ri, rj = bytes.fromhex(inp["line"]), bytes.fromhex(inp["root_inviter"]), bytes.fromhex(inp["root_joiner"])
    ni, nj = bytes.fromhex(inp["nonce_i"]), bytes.fromhex(inp["nonce_j"])
    hashed = b"redline/1/safety\x00" + line + ri + rj + ni + nj
    assert hashed.hex() == out["hashed"] and len(hashed) == 161
    digest = hashlib.sha256(hashed).digest()
    assert digest.hex() == out["digest"] and digest[:8].hex() == out["first8"]
    assert int.from_bytes(digest[:8], "big") == out["integer"] and out["integer"] % 10**8 == out["mod"]
    assert out["code"] == f"{out['mod'] // 10**4:04d}-{out['mod'] % 10**4:04d}"
    # Both sides compute it with the inviter's root first, whoever computes.
    assert pairing.safety_code(inp["line"], ri, rj, ni, nj) == out["code"]
    assert pairing.safety_code(inp["line"], rj, ri, ni, nj) != out["code"]
    assert pairing.normalize_code(out["code"].replace("-", " ")) == out["code"]
    assert ri.hex() == STATIONS["alpha"]["root_public"] and rj.hex() == STATIONS["bravo"]["root_public"]
    assert inp["nonce_i"] == INVITE["input"]["nonce_i"] and inp["nonce_j"] == PAIRING["join"]["input"]["nonce_j"]


# --- one envelope of every kind (section 5.9) -----------------------------------------------------


@pytest.mark.parametrize("vector", KIND_ENVELOPES, ids=lambda v: v["name"])
def test_kind_envelope_vector(vector: dict[str, Any]) -> None:
    inp, out = vector["input"], vector["output"]
    args = {k: v for k, v in inp.items() if k != "signing_seed"} | {"salt": bytes.fromhex(inp["salt"])}
    env = envelope.seal(signing_key(inp["signing_seed"]), **args)
    assert env.body_bytes is not None
    body = canonical.encode({"content": inp["content"], "salt": inp["salt"]})
    assert env.body_bytes.hex() == out["body"] == body.hex()
    assert env.header.body_hash == out["body_hash"] == hashlib.sha256(env.body_bytes).hexdigest()
    assert env.header_bytes.hex() == out["header"]
    assert (b"redline/1/envelope\x00" + env.header_bytes).hex() == out["signed"]
    assert env.id == out["id"] == hashlib.sha256(bytes.fromhex(out["signed"])).hexdigest()
    assert env.sig.hex() == out["signature"]
    assert env.encode().hex() == out["wire"] and env.redacted().encode().hex() == out["redacted_wire"]
    opened = open_envelope(bytes.fromhex(out["wire"]), lookup)
    assert opened == env and opened.content() == inp["content"] and opened.kind == inp["kind"]


def test_kind_chains_link_up() -> None:
    chains: dict[str, list[dict[str, Any]]] = {}
    for v in KIND_ENVELOPES:
        inp = v["input"]
        assert inp["line"] == KINDS_VECTORS["line"]
        chain = chains.setdefault(inp["sender"], [])
        (peer,) = {s["fingerprint"] for s in KEYS["stations"]} - {inp["sender"]}
        held = chains.get(peer, [])
        assert inp["seq"] == len(chain) + 1 and inp["prev"] == (chain[-1]["output"]["id"] if chain else None)
        assert (inp["seen_seq"], inp["seen_id"]) == (len(held), held[-1]["output"]["id"] if held else None)
        chain.append(v)


def _refs(value: Any) -> list[dict[str, Any]]:
    """Every reference object inside a content."""
    if isinstance(value, dict):
        found = [value] if set(value) == {"sender", "seq", "id"} else []
        return found + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_kind_references_name_earlier_envelopes() -> None:
    held: dict[tuple[str, int], str] = {}
    for v in KIND_ENVELOPES:
        for ref in _refs(v["input"]["content"]):
            assert held[(ref["sender"], ref["seq"])] == ref["id"], v["name"]
        held[(v["input"]["sender"], v["input"]["seq"])] = v["output"]["id"]


def roster_in_force(vector: dict[str, Any]) -> dict[str, persons.Person]:
    """Section 5.10: the last ROSTER of the sender's own chain before the envelope."""
    inp = vector["input"]
    rosters = [
        v for v in KIND_ENVELOPES
        if v["input"]["kind"] == "ROSTER" and v["input"]["sender"] == inp["sender"] and v["input"]["seq"] < inp["seq"]
    ]  # fmt: skip
    assert rosters, f"{vector['name']} has no roster in force"
    return persons.parse_roster(rosters[-1]["input"]["content"])


PERSON_SIGNED = [v for v in KIND_ENVELOPES if v["input"]["kind"] in persons.PERSON_SIGNED_KINDS]


def test_every_person_signed_kind_has_a_vector() -> None:
    assert {v["input"]["kind"] for v in PERSON_SIGNED} == kinds.PERSON_SIGNED
    assert kinds.PERSON_SIGNED == persons.PERSON_SIGNED_KINDS


@pytest.mark.parametrize("vector", PERSON_SIGNED, ids=lambda v: v["name"])
def test_person_signature_vector(vector: dict[str, Any]) -> None:
    content = vector["input"]["content"]
    roster = roster_in_force(vector)
    signer = persons.check_content(content, roster)
    assert signer.to_obj() == {k: content["person"][k] for k in ("name", "role", "key")}
    # Spelled out: Ed25519 under the roster's key over "redline/1/person" 0x00 || canonical(content - person).
    signed = b"redline/1/person\x00" + canonical.encode({k: v for k, v in content.items() if k != "person"})
    sig = bytes.fromhex(content["person"]["sig"])
    nacl.signing.VerifyKey(bytes.fromhex(roster[signer.name].key)).verify(signed, sig)
    # Deterministic: the person's seed in the vectors signs the same bytes.
    label = "alpha" if vector["input"]["sender"] == STATIONS["alpha"]["fingerprint"] else "bravo"
    (who,) = [p for p in KINDS_VECTORS["people"][label] if p["name"] == signer.name]
    resigned = persons.sign_content(content, signer, signing_key(who["seed"]))
    assert resigned == content
    # The signature covers the content: change any of it and it no longer verifies.
    first = next((k for k in content if k != "person"), "added")  # a CALL_RING may hold only its person
    with pytest.raises(SignatureError):
        persons.check_content({**content, first: "changed"}, roster)
    # It is bound to the roster: another name, or the same name with another key, is refused.
    other = next(p for p in roster.values() if p.name != signer.name)
    with pytest.raises(SignatureError):
        persons.check_content({**content, "person": {**content["person"], "name": other.name}}, roster)
    with pytest.raises(SignatureError):
        persons.check_content(content, {signer.name: persons.Person(name=signer.name, role=signer.role, key=other.key)})


def test_kinds_key_and_revoke_vectors() -> None:
    alpha = STATIONS["alpha"]
    (key,) = [v for v in KIND_ENVELOPES if v["input"]["kind"] == "KEY"]
    (cert,) = key["input"]["content"]["certs"]
    rotated = SignedCert.from_obj(cert).verify(bytes.fromhex(alpha["root_public"]))
    assert rotated.role == "signing" and rotated.station == alpha["fingerprint"] and rotated.key_id != alpha["key_id"]
    (revoke,) = [v for v in KIND_ENVELOPES if v["input"]["kind"] == "REVOKE"]
    cp = KINDS_VECTORS["checkpoint"]
    signer = signing_key(cp["input"]["signing_seed"])
    signed = Checkpoint.from_obj(cp["input"]["object"]).sign(signer)
    assert signed.data.hex() == cp["output"]["canonical"] and signed.sig.hex() == cp["output"]["signature"]
    assert signed.digest(Checkpoint.DOMAIN) == cp["output"]["digest"]
    assert Checkpoint.open(Signed.decode(bytes.fromhex(cp["output"]["wire"])), signer.verify_key.encode())
    # the REVOKE carries that checkpoint and Bravo's cosign, and the root-signed revocation naming it
    assert revoke["input"]["content"]["checkpoint"] == {"proposal": cp["output"]["wire"],
                                                        "cosign": KINDS_VECTORS["cosign"]["output"]["wire"]}
    rv = KINDS_VECTORS["revocation"]
    root = signing_key(rv["input"]["root_seed"])
    rev = revocation.Revocation.from_obj(rv["input"]["object"])
    signed = rev.sign(root)
    assert signed.data.hex() == rv["output"]["canonical"] and signed.sig.hex() == rv["output"]["signature"]
    assert revoke["input"]["content"]["revocation"] == {"data": signed.data.hex(), "sig": signed.sig.hex()}
    opened = revocation.Revocation.open(signed, bytes.fromhex(alpha["root_public"]))
    assert opened.key == alpha["key_id"] and opened.checkpoint_digest == cp["output"]["digest"]
    assert opened.checkpoint_n == 1 and rv["output"]["signed"].startswith(b"redline/1/revoke\x00".hex())


# --- schemas --------------------------------------------------------------------------------------


def test_every_kind_has_a_schema_and_a_vector_and_nothing_else_does() -> None:
    assert sorted(p.stem for p in SCHEMA_FILES) == sorted(KINDS)
    assert sorted({v["input"]["kind"] for v in KIND_ENVELOPES}) == sorted(KINDS)
    for kind in KINDS:
        assert f"#### `{kind}`\n" in PROTOCOL, f"PROTOCOL.md section 5.9 lacks {kind}"


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_and_tight_and_its_examples_validate(kind: str) -> None:
    s = schema(kind)
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"].endswith(f"/{kind}.json") and s["title"] == f"{kind} envelope content"
    assert s["examples"], f"{kind} has no example"
    for example in s["examples"]:
        validator(kind).validate(example)
        canonical.encode(example)  # an example is a value of the canonical subset (no floats)

    def objects(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = [node] if node.get("type") == "object" else []
            return found + [o for v in node.values() for o in objects(v)]
        if isinstance(node, list):
            return [o for v in node for o in objects(v)]
        return []

    for obj in objects({k: v for k, v in s.items() if k != "examples"}):
        assert obj.get("additionalProperties") is False, f"{kind}: an object schema admits any member"


def test_schema_examples_are_the_kinds_vectors() -> None:
    module = make_vectors_module()
    built = module.schema_examples(KINDS_VECTORS)
    assert sorted(built) == sorted(p.name for p in SCHEMA_FILES)
    for name, text in built.items():
        assert (SCHEMAS / name).read_text(encoding="utf-8") == text, f"docs/schemas/{name} is stale"
    first: dict[str, Any] = {}
    for v in KIND_ENVELOPES:
        first.setdefault(v["input"]["kind"], v["input"]["content"])
    for kind in KINDS:
        assert schema(kind)["examples"] == [first[kind]]


@pytest.mark.parametrize("vector", KIND_ENVELOPES + STORY_ENVELOPES, ids=lambda v: v["name"])
def test_vector_content_validates_against_its_schema(vector: dict[str, Any]) -> None:
    kind = vector["input"]["kind"]
    if kind not in KINDS:
        assert kind == "WEATHER" and not (SCHEMAS / f"{kind}.json").exists()  # an unknown kind: no schema
        return
    validator(kind).validate(vector["input"]["content"])


def _invalid(kind: str, content: dict[str, Any]) -> bool:
    return not validator(kind).is_valid(content)


def test_schemas_refuse_what_the_spec_forbids() -> None:
    example = {kind: schema(kind)["examples"][0] for kind in KINDS}
    assert _invalid("TEXT", {**example["TEXT"], "extra": 1})
    assert _invalid("TEXT", {"text": "   "})
    assert _invalid("FLASH", {**example["FLASH"], "ack_within_ms": True})
    assert _invalid("ACK", {k: v for k, v in example["ACK"].items() if k != "person"})
    assert _invalid("ACK", {**example["ACK"], "ref": {**example["ACK"]["ref"], "id": "AB" * 32}})
    assert _invalid("TEST_RESULT", {**example["TEST_RESULT"], "result": "failed"})
    reply = example["CALL_REPLY"]
    assert _invalid("CALL_REPLY", {k: v for k, v in reply.items() if k != "time"})  # accept needs a time
    assert _invalid("CALL_REPLY", {**reply, "answer": "decline"})  # decline has none
    notices = [v["input"]["content"] for v in KIND_ENVELOPES if v["input"]["kind"] == "NOTICE"]
    polygon, point = notices
    assert polygon["area"]["type"] == "Polygon" and point["area"]["type"] == "Point"
    assert _invalid("NOTICE", {**point, "radius_m": 0})
    assert _invalid("NOTICE", {k: v for k, v in point.items() if k != "radius_m"})
    assert _invalid("NOTICE", {**polygon, "radius_m": 100})
    assert _invalid("NOTICE", {**point, "area": {"type": "Point", "coordinates": [29.05, 45.45]}})  # no numbers
    assert _invalid("NOTICE", {**point, "area": {"type": "Point", "coordinates": ["29.05", "45.45", "0"]}})
    assert _invalid("NOTICE", {**polygon, "window": [0, 1]})
    assert _invalid("ROSTER", {"users": []})
    assert _invalid("ROSTER", {"users": [{**example["ROSTER"]["users"][0], "role": "king"}]})


# --- the registry of kinds and its body types ------------------------------------------------------


def _section_58_rows() -> dict[str, list[str]]:
    """Section 5.8's table: kind -> [purpose, sent by, person-signed, default priority]."""
    text = PROTOCOL[PROTOCOL.index("### 5.8 Kinds") : PROTOCOL.index("### 5.9")]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_registry_is_section_5_8s_table() -> None:
    """One row per kind of section 5.8, in its order, saying what the table says."""
    table = _section_58_rows()
    assert list(table) == list(kinds.NAMES) == list(KINDS)
    for name, row in kinds.REGISTRY.items():
        purpose, sent_by, signed, priority = table[name]
        assert row.name == name and row.purpose == purpose.replace("`", "") and row.sent_by == sent_by, name
        assert row.person == (signed == "**yes**") and row.priority == priority, name
    assert kinds.PERSON_SIGNED == {"ACK", "TEST_ANSWER", "CALL_RECORD", "READOUT", "CALL_RING", "CALL_ANSWER"} == (
        persons.PERSON_SIGNED_KINDS)
    assert kinds.OPERATIONAL == set(kinds.NAMES) - {"TEXT", "READ", "TRANSLATION"} == envelope.OPERATIONAL_KINDS
    assert envelope.RESERVE_KINDS == kinds.RESERVE and not any(kinds.REGISTRY[k].reserved for k in kinds.NAMES)
    assert kinds.ROLES == persons.ROLES == tuple(persons.CAPABILITIES)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_body_type_and_its_references_are_typed(kind: str) -> None:
    row = kinds.REGISTRY[kind]
    assert issubclass(row.body, kinds.Body) and kind == row.body.KIND
    fields = {f.name: f for f in dataclasses.fields(row.body)}
    assert set(fields) == set(schema(kind)["properties"]), "a body has exactly the members its schema lists"
    assert set(schema(kind).get("required", ())) == {n for n, f in fields.items() if f.default is not None}
    assert ("person" in fields) == row.person
    for rule in row.refs:
        assert rule.member in fields and "Ref" in str(fields[rule.member].type), (kind, rule.member)
        assert set(rule.targets) <= set(kinds.NAMES) and rule.whose in (kinds.PEER, kinds.OWN, kinds.EITHER)
        assert rule.optional == (rule.member not in schema(kind).get("required", ()))
    ref_members = {n for n, p in schema(kind)["properties"].items() if p.get("$ref") == "#/$defs/ref"}
    assert ref_members == {r.member for r in row.refs}, "every reference a schema has is in the registry"


@pytest.mark.parametrize("kind", KINDS)
def test_each_schema_example_parses_into_a_body_whose_content_validates(kind: str) -> None:
    for example in schema(kind)["examples"]:
        body = kinds.parse(kind, example, strict=True)
        content = body.to_content()
        validator(kind).validate(content)
        assert content == example
        assert kinds.parse(kind, content, strict=True) == body
        assert body.summary() and "\n" not in body.summary()


HOSTILE: list[Any] = [None, True, False, 0, -1, 1, 2**53 - 1, 2**53, "", " ", "x", "200", "2022-05-13T08:00Z",
                      "a" * 64, "A" * 64, "ab" * 64, [], [1], ["x"], {}, {"x": 1}]  # fmt: skip


def _mutants(value: Any) -> list[Any]:
    """``value`` changed in one place: a member dropped, a member or item replaced by each hostile
    value, an unknown member added, an item dropped or repeated (long lists: first and last only)."""
    out: list[Any] = []
    if isinstance(value, dict):
        out.append({**value, "zz_unknown": 1})
        for k, v in value.items():
            out.append({kk: vv for kk, vv in value.items() if kk != k})
            out += [{**value, k: h} for h in HOSTILE]
            out += [{**value, k: m} for m in _mutants(v)]
    elif isinstance(value, list):
        if value:
            out += [value[1:], [*value, value[-1]]]
        for i in sorted({0, len(value) - 1} if len(value) > 3 else range(len(value))):
            out += [[*value[:i], h, *value[i + 1 :]] for h in HOSTILE]
            out += [[*value[:i], m, *value[i + 1 :]] for m in _mutants(value[i])]
    return out


def _beyond_the_schema(kind: str, c: dict[str, Any]) -> bool:
    """Whether schema-valid content breaks a rule of section 5.9 that its schema cannot express."""
    if kind == "CALL_REQUEST":
        return any(start >= end for start, end in c["windows"])
    if kind == "CALL_RECORD":
        return bool(c["start"] >= c["end"])
    if kind == "ROSTER":
        return len({u["name"] for u in c["users"]}) < len(c["users"])
    if kind == "NOTICE":

        def positions(node: Any) -> list[Any]:
            return [node] if isinstance(node[0], str) else [p for n in node for p in positions(n)]

        out_of_range = any(not (-180 <= float(lon) <= 180 and -90 <= float(lat) <= 90)
                           for lon, lat in positions(c["area"]["coordinates"]))  # fmt: skip
        window = not c["start"] < c["end"] <= c["start"] + 366 * 86_400_000
        return out_of_range or window or c["floor_m"] >= c["ceiling_m"]
    return False


@pytest.mark.parametrize("kind", KINDS)
def test_body_types_accept_exactly_what_the_schemas_accept(kind: str) -> None:
    """Over every one-place mutation of every example and vector of the kind: strict parsing (the
    sender's rule) succeeds exactly when the schema validates, but for section 5.9's rules beyond
    the schema; lenient parsing (the receiver's) also takes unknown members, except in NOTICE."""
    seeds = [*schema(kind)["examples"], *(v["input"]["content"] for v in KIND_ENVELOPES if v["input"]["kind"] == kind)]
    checked = 0
    for seed in seeds:
        for content in _mutants(seed):
            valid = validator(kind).is_valid(content)
            expected = valid and not _beyond_the_schema(kind, content)
            try:
                kinds.parse(kind, content, strict=True)
                parsed = True
            except SchemaError:
                parsed = False
            assert parsed == expected, f"{kind}: schema says {valid}, body type says {parsed}: {content!r:.300}"
            checked += 1
        unknown = {**seed, "zz_from_a_newer_peer": {"any": ["thing"]}}
        with pytest.raises(SchemaError, match="does not define: zz_from_a_newer_peer"):
            kinds.parse(kind, unknown, strict=True)
        if kind == "NOTICE":  # an unknown member makes a notice one that cannot be checked safely
            with pytest.raises(SchemaError):
                kinds.parse(kind, unknown)
        else:
            assert kinds.parse(kind, unknown) == kinds.parse(kind, seed, strict=True)
    assert checked > 40


def test_what_a_receiver_ignores_and_what_it_does_not() -> None:
    """Lenient parsing ignores unknown members at every level (but in NOTICE) and takes ESCALATED's
    reference under ``ref`` (section 5.9); it never takes a known member of the wrong form."""
    ack = schema("ACK")["examples"][0]
    loose = {**ack, "ref": {**ack["ref"], "note": 1}, "person": {**ack["person"], "title": "Capt."}}
    assert kinds.parse("ACK", loose) == kinds.parse("ACK", ack)
    escalated = schema("ESCALATED")["examples"][0]
    aliased = {"ref": escalated["flash"], "level": escalated["level"], "step": escalated["step"]}
    assert kinds.parse("ESCALATED", aliased) == kinds.parse("ESCALATED", escalated)
    with pytest.raises(SchemaError):
        kinds.parse("ESCALATED", aliased, strict=True)
    with pytest.raises(SchemaError, match="'person': 'sig'"):
        kinds.parse("ACK", {**ack, "person": {**ack["person"], "sig": ack["person"]["sig"].upper()}})
    with pytest.raises(SchemaError, match="WEATHER is not a kind this station knows"):
        kinds.parse("WEATHER", {})
    assert kinds.summarize("WEATHER", {"text": "rain", "person": {"sig": "x"}}) == '{"text": "rain"}'


# --- real traffic against the schemas -----------------------------------------------------------


def _stored_contents(home: Path) -> list[tuple[str, dict[str, Any]]]:
    from redline.envelope import split
    from redline.home import StationDir
    from redline.ledger.sqlite import Ledger

    ledger = Ledger(StationDir(home).ledger_path)
    try:
        (record,) = ledger.lines()
        out = []
        for _sender, _, raw, _stored_at in ledger.stored_in_order(record.line):
            env = split(raw)
            header = canonical.decode_object(env.header_bytes, "header")
            assert env.body_bytes is not None
            out.append((header["kind"], canonical.decode_object(env.body_bytes, "body")["content"]))
        return out
    finally:
        ledger.close()


@pytest.mark.timeout(300)
def test_real_traffic_validates_against_the_schemas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's scenario (SCENARIO.md, 1 March to 13 May 2022) between two station processes,
    then READ, TRANSLATION and NOTICE_WITHDRAW filed with the CLI as an operator would: every
    content both stations stored validates against its kind's schema, and every kind but the key
    changes (KEY, REVOKE, ROOT, ROOT_CONFIRM) and the voice kinds occurs."""
    from redline import scenario
    from redline.config import Limits
    from redline.home import StationDir
    from tests.procs import StationProc, free_ports, wait_until

    env = {**os.environ, "REDLINE_SETTABLE_CLOCK": "1", "REDLINE_PWHASH_COST": "interactive", "COLUMNS": "200"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    eucom, ndmc = tmp_path / "eucom", tmp_path / "ndmc"
    p = free_ports(4)
    StationDir(eucom).init(name="EUCOM", lang="en", listen=[f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"])
    StationDir(ndmc).init(name="NDMC", lang="ru", listen=[f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"],
                          limits=Limits(test_times_utc=()))  # fmt: skip

    def rl(home: Path, *args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "redline", *args, "--json"], capture_output=True, text=True, timeout=60,
            env={**env, "REDLINE_STATION": str(home)},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    async def run() -> None:
        a, b = StationProc(eucom), StationProc(ndmc)
        await a.start()
        await b.start()
        try:
            for proc in (a, b):  # as `redline demo` does: the line is set up on 1 March 2022
                await proc.call({"op": "clock", "set_ms": scenario.ms("2022-03-01T06:00:00Z")})
            scenario.add_demo_users(eucom, ndmc)
            paired = await b.call({"op": "pair", "token": (await a.call({"op": "invite"}))["token"]})
            line = paired["line"]
            await wait_until(lambda: a.status_line(), "EUCOM to record the line")
            for proc in (a, b):
                await proc.call({"op": "confirm", "line": line, "code": paired["safety_code"]})

            async def synced() -> bool:
                return all(ln["active"] and ln["synced"] for ln in (await a.status_line(), await b.status_line()))

            await wait_until(synced, "line in sync")
            await scenario.Replay(eucom, ndmc, line, lambda _: None).run()
            # What the scenario does not file, filed through the CLI.
            flash = next(f for f in await b.call({"op": "view", "line": line, "what": "flash"}) if not f["ours"])
            ref = flash["id"][:12]
            shown = await asyncio.to_thread(rl, ndmc, "show", line[:8], ref, "--user", "Dezhurny Orlov")
            translate = ("translate", line[:8], ref, "ВСПЫШКА: подтвердите.", "--lang", "ru", "--translator", "Orlov")
            filed = [shown["read"], await asyncio.to_thread(rl, ndmc, *translate)]
            notices = await a.call({"op": "view", "line": line, "what": "notices"})
            ours = next(n for n in notices["active"] if n["ours"])
            filed.append(await asyncio.to_thread(rl, eucom, "withdraw", line[:8], ours["id"][:12]))
            assert [f["kind"] for f in filed] == ["READ", "TRANSLATION", "NOTICE_WITHDRAW"]
            for f, peer in zip(filed, (a, a, b), strict=True):
                await wait_until(lambda f=f, peer=peer: peer.call({"op": "has", "line": line, "id": f["id"]}),
                                 f"the {f['kind']} to reach the peer")  # fmt: skip
        finally:
            a.stop()
            b.stop()

    asyncio.run(run())
    seen: dict[str, int] = {}
    for home in (eucom, ndmc):
        for kind, content in _stored_contents(home):
            seen[kind] = seen.get(kind, 0) + 1
            errors = [e.message for e in validator(kind).iter_errors(content)]
            assert not errors, f"{home.name} stored a {kind} that breaks docs/schemas/{kind}.json: {errors}; {content}"
            assert kinds.parse(kind, content, strict=True).to_content() == content
    # The demo makes no voice call yet: the voice kinds' real traffic is checked against their schemas by
    # tests/test_voice.py (two stations, a call with audio).
    # Key changes are not part of the scenario: tests/test_keys*.py file KEY, REVOKE, ROOT and ROOT_CONFIRM
    # between real stations, and the body-type tests above hold those kinds to their schemas.
    assert set(seen) == set(KINDS) - {"KEY", "REVOKE", "ROOT", "ROOT_CONFIRM"} - VOICE_KINDS, sorted(seen)


# --- the worked examples of PROTOCOL.md Appendix A ------------------------------------------------


def _section(title: str) -> str:
    start = PROTOCOL.index(title)
    end = PROTOCOL.find("\n### ", start + len(title))
    return PROTOCOL[start : end if end != -1 else len(PROTOCOL)]


def _values(text: str) -> dict[str, str]:
    """`    label   value` lines (label words separated by single spaces, then two or more spaces)."""
    found: dict[str, str] = {}
    label = None
    for line in text.splitlines():
        m = re.fullmatch(r" {4}(\S+(?: \S+)*) {2,}(\S+)", line)
        if m:
            label = m[1]
            found[label] = m[2]
        elif label and re.fullmatch(r" {20,}[0-9a-f]+", line):
            found[label] += line.strip()  # a continued value
        else:
            label = None
    return found


def _blocks(text: str) -> list[str]:
    return re.findall(r"```(?:json)?\n(.*?)\n```", text, re.S)


def _hex_blocks(text: str) -> list[bytes]:
    """Indented hex dumps of 64 digits a line (their last line may be shorter)."""
    blocks = re.findall(r"(?:^ {4}[0-9a-f]{2,64}\n)+", text, re.M)
    return [bytes.fromhex("".join(b.split())) for b in blocks]


def test_worked_example_pairing_verifies() -> None:
    text = _section("### A.2 Worked example: pairing")
    v = _values(text)
    line, nonce_i, nonce_j = v["line"], bytes.fromhex(v["nonce_i"]), bytes.fromhex(v["nonce_j"])
    ri, rj = bytes.fromhex(v["root inviter"]), bytes.fromhex(v["root joiner"])
    # From the document's own numbers: the commitment...
    (commit_input,) = _hex_blocks(text)
    assert commit_input == b"redline/1/commit\x00" + nonce_i + bytes.fromhex(line)
    assert hashlib.sha256(commit_input).hexdigest() == v["commit"] == pairing.commitment(nonce_i, line)
    # ...the token object and the token...
    token_text = _blocks(text)[0]
    token_obj = canonical.decode_object(token_text.encode(), "token")
    assert (token_obj["commit"], token_obj["id"], token_obj["secret"]) == (v["commit"], v["invite id"], v["secret"])
    assert (token_obj["station"], token_obj["spki"]) == (v["station"], v["spki"])
    assert token_obj["expires"] == int(v["expires"])
    assert hashlib.sha256(ri).hexdigest() == v["station"]
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("    rl1-"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("    "))
    token = "".join(ln.strip() for ln in lines[start:end])
    assert token.startswith("rl1-") and pairing.Token.decode(token) == pairing.Token.decode(
        "rl1-" + base64.urlsafe_b64encode(token_text.encode()).decode().rstrip("=")
    )
    assert token == PAIRING["invite"]["output"]["token"]
    # ...the JOIN proof over the vector's bytes, keyed with the document's secret...
    unsigned = bytes.fromhex(PAIRING["join"]["output"]["unsigned_canonical"])
    assert hmac.new(bytes.fromhex(v["secret"]), unsigned, hashlib.sha256).hexdigest() == v["proof"]
    # ...and the safety code, step by step.
    digest = hashlib.sha256(b"redline/1/safety\x00" + bytes.fromhex(line) + ri + rj + nonce_i + nonce_j).digest()
    assert digest.hex() == v["safety digest"] and digest[:8].hex() == v["first 8 bytes"]
    integer = int.from_bytes(digest[:8], "big")
    assert integer == int(v["as integer"]) and integer % 10**8 == int(v["mod 10^8"])
    code = pairing.safety_code(line, ri, rj, nonce_i, nonce_j)
    assert code == v["safety code"] == PAIRING["safety_code"]["output"]["code"]


def test_worked_example_person_signature_verifies() -> None:
    text = _section("### A.3 Worked example: a person signature")
    roster_text, content_text, body_text = _blocks(text)
    roster = persons.parse_roster(json.loads(roster_text))
    content = json.loads(content_text)
    body = {k: v for k, v in content.items() if k != "person"}
    assert canonical.encode(body) == body_text.encode()
    (signed,) = _hex_blocks(text)
    assert signed == b"redline/1/person\x00" + body_text.encode()
    v = _values(text)
    assert v["person key"] == content["person"]["key"] and v["sig"] == content["person"]["sig"]
    nacl.signing.VerifyKey(bytes.fromhex(v["person key"])).verify(signed, bytes.fromhex(v["sig"]))
    assert persons.check_content(content, roster).name == "Dezhurny Orlov"
    (ack,) = [e for e in KIND_ENVELOPES if e["input"]["kind"] == "ACK"]
    assert ack["input"]["content"] == content and ack["name"] in text


def test_worked_example_envelope_is_the_first_vector() -> None:
    # A.1 is checked byte for byte by tests/test_vectors.py; here only that it is still where it was.
    assert "### A.1 Worked example: Alpha's first envelope" in PROTOCOL


def test_the_published_kinds_chain_obeys_every_acceptance_rule() -> None:
    """The vectors are a transcript another implementation may replay: both chains, in the order
    they were made, go through the one trust gate (seq, prev, seen, key windows: Alpha's KEY is
    its last envelope but the REVOKE its new key signs, so every envelope is signed by the key
    valid at its seq; the REVOKE's checkpoint covers the chains held)."""
    from redline.gate import TrustedLine

    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts" / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    mv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mv)
    stations = [mv._station("alpha", "Station Alpha"), mv._station("bravo", "Station Bravo")]
    roots = {s["fingerprint"]: bytes.fromhex(s["root_public"]) for s in stations}
    keys = {s["fingerprint"]: {s["key_id"]: bytes.fromhex(s["signing_public"])} for s in stations}
    held: dict[tuple[str, int], str] = {}

    class View:
        def id_at(self, station: str, seq: int) -> str | None:
            return held.get((station, seq))

        def root_at(self, station: str, size: int) -> bytes | None:
            from redline import merkle

            ids = [held.get((station, seq)) for seq in range(1, size + 1)]
            if None in ids:
                return None
            return merkle.root([merkle.leaf_hash(bytes.fromhex(i)) for i in ids if i is not None])

    data = json.loads((VECTORS / "kinds.json").read_text())
    gate = TrustedLine(data["line"], keys, View(), roots=roots, people=True)
    for v in data["envelopes"]:
        env = gate.accept_envelope(bytes.fromhex(v["output"]["wire"]))
        held[(env.header.sender, env.seq)] = env.id
    assert len(held) == len(data["envelopes"])
    # the REVOKE (last) flags exactly the run the vectors say: Alpha's first key after checkpoint 1
    want = data["revocation"]["flagged"]
    assert [(f.station, f.first, f.last, f.revoked.revoke_seq) for f in gate.flagged()] == [
        (want["station"], want["first"], want["last"], want["revoke_seq"])]
    # every person signature checks up to its station's root (section 5.10: certified rosters)
    assert gate.people is not None and gate.people.invalid == [] and gate.people.roster_refused == []
    assert gate.people.checked == gate.people.certified and sum(gate.people.checked.values()) >= 6
    # Bravo's root version 2 is in force once Alpha's ROOT_CONFIRM stands (section 5.9, ROOT)
    bravo = next(s for s in stations if s["label"] == "bravo")
    assert [(r.version, r.confirmed) for r in gate.root_history[bravo["fingerprint"]]] == [
        (1, 0), (2, data["root_rotation"]["output"]["confirm_seq"])]


def test_root_rotation_vector() -> None:
    """Section 5.9 ROOT: the statement signed by both roots, its digest and the new safety code, as
    the document spells them out; the ROOT and ROOT_CONFIRM of the kinds chain carry them."""
    from redline import rootrotation

    v = KINDS_VECTORS["root_rotation"]
    old, new = signing_key(v["input"]["prev_seed"]), signing_key(v["input"]["root_seed"])
    rot = rootrotation.RootRotation(**{k: x for k, x in v["input"]["object"].items() if k != "v"})
    signed = rot.sign(old, new)
    assert rootrotation.content(signed) == v["output"]["content"]
    data = bytes.fromhex(signed["data"])
    assert data == canonical.encode(v["input"]["object"])
    tag = b"redline/1/root\x00"
    assert hashlib.sha256(tag + data).hexdigest() == v["output"]["digest"] == rootrotation.digest(signed)
    old.verify_key.verify(tag + data, bytes.fromhex(signed["prev_sig"]))
    new.verify_key.verify(tag + data, bytes.fromhex(signed["root_sig"]))
    bravo = STATIONS["bravo"]
    n = int.from_bytes(hashlib.sha256(b"redline/1/rootsafety\x00" + bytes.fromhex(KINDS_VECTORS["line"])
                                      + bytes.fromhex(bravo["root_public"]) + new.verify_key.encode()
                                      + bytes.fromhex(v["output"]["digest"])).digest()[:8], "big") % 10**8
    assert v["output"]["safety_code"] == f"{n // 10000:04d}-{n % 10000:04d}"
    (root_env,) = [e for e in KIND_ENVELOPES if e["input"]["kind"] == "ROOT"]
    (confirm,) = [e for e in KIND_ENVELOPES if e["input"]["kind"] == "ROOT_CONFIRM"]
    assert root_env["input"]["content"] == v["output"]["content"]
    assert root_env["input"]["seq"] == v["output"]["root_seq"]
    assert confirm["input"]["content"]["rotation"] == v["output"]["digest"]
    assert confirm["input"]["content"]["root"]["id"] == root_env["output"]["id"]


def test_person_certificate_vector() -> None:
    v = KINDS_VECTORS["person_certificate"]
    root = signing_key(v["input"]["root_seed"])
    signed = persons.PersonCert(**{k: x for k, x in v["input"]["object"].items() if k != "v"}).sign(root)
    assert signed.data.hex() == v["output"]["canonical"] and signed.sig.hex() == v["output"]["signature"]
    assert v["output"]["signed"].startswith(b"redline/1/personcert\x00".hex())
    cert = persons.PersonCert.open(signed, root.verify_key.encode())
    (roster,) = [e for e in KIND_ENVELOPES if e["input"]["kind"] == "ROSTER" and e["input"]["sender"] == cert.station]
    (entry,) = [u for u in roster["input"]["content"]["users"] if u["name"] == cert.name]
    assert entry["cert"] == {"data": signed.data.hex(), "sig": signed.sig.hex()} and entry["key"] == cert.key
    with pytest.raises(SignatureError):  # another root's signature over the same bytes
        persons.PersonCert.open(signed, nacl.signing.SigningKey.generate().verify_key.encode())
