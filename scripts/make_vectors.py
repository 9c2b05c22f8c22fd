#!/usr/bin/env python3
"""Write redline's own test vectors to tests/vectors/*.json (docs/PROTOCOL.md, appendix A).

Everything is derived from fixed inputs: Ed25519 seeds, body salts, times and contents. Ed25519
signatures are deterministic, so running this again gives byte-identical files. Each vector holds
its inputs and the expected outputs (hex), so an implementation in another language can recompute
every output from the inputs and compare.

    .venv/bin/python scripts/make_vectors.py          # (re)write the files
    .venv/bin/python scripts/make_vectors.py --check  # exit 1 if the files are not up to date

The story the vectors tell: stations Alpha and Bravo pair (pairing.json: token, JOIN, REVEAL,
safety code) and share one line. Alpha sends seven envelopes (TEXT, FLASH, NOTICE, TEST, TEXT in
Russian, TRANSLATION and WEATHER, a kind this version does not know); Bravo sends one READ after
storing Alpha's first three, and Alpha's later envelopes name it as seen. Bravo receipts Alpha's
chain up to seq 7; Alpha proposes checkpoint 1 over both chains and Bravo countersigns it. The
Merkle vectors are Alpha's chain as a tree of 7 leaves. kinds.json is a second line with one
envelope of every kind of envelope.KINDS, its person-signed kinds signed by people on the
senders' ROSTERs.

The ``examples`` of each docs/schemas/<KIND>.json are the content of that kind's envelope in
kinds.json, written here too, so the schemas' examples are real, signed content.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import nacl.signing

from redline import canonical, envelope, identity, media, merkle, pairing, persons, revocation, rootrotation
from redline.identity import KeyCert
from redline.protocol.framing import FrameType, encode_frame
from redline.statements import Checkpoint, Cosign, Head, Receipt, Signed

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
SCHEMAS = ROOT / "docs" / "schemas"

LINE = "5e1ec7ed0123456789abcdef0a1b2c3d"
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in ms since the Unix epoch


def seed(name: str) -> bytes:
    """A fixed Ed25519 seed. Never use these keys for anything but tests."""
    return hashlib.sha256(b"redline test vector seed: " + name.encode()).digest()


def salt(name: str) -> bytes:
    return hashlib.sha256(b"redline test vector salt: " + name.encode()).digest()[:16]


def _station(label: str, name: str) -> dict[str, str]:
    root = nacl.signing.SigningKey(seed(f"{label} root"))
    signing = nacl.signing.SigningKey(seed(f"{label} signing"))
    root_public = root.verify_key.encode()
    signing_public = signing.verify_key.encode()
    return {
        "label": label,
        "name": name,
        "root_seed": seed(f"{label} root").hex(),
        "root_public": root_public.hex(),
        "fingerprint": identity.fingerprint(root_public),
        "signing_seed": seed(f"{label} signing").hex(),
        "signing_public": signing_public.hex(),
        "key_id": identity.key_id(signing_public),
    }


def _signed_outputs(kind: str, data: bytes, sig: bytes) -> dict[str, str]:
    signed = identity.domain(kind) + data
    return {
        "canonical": data.hex(),
        "signed": signed.hex(),
        "digest": hashlib.sha256(signed).hexdigest(),
        "signature": sig.hex(),
        "wire": Signed(data, sig).encode().hex(),
    }


def _keycert(station: dict[str, str]) -> dict[str, Any]:
    cert = KeyCert(
        station=station["fingerprint"], name=station["name"], role="signing", key=station["signing_public"],
        key_id=station["key_id"], issued_at=T0 - 86_400_000,
    )  # fmt: skip
    root = nacl.signing.SigningKey(bytes.fromhex(station["root_seed"]))
    sc = identity.certify(root, cert)
    return {
        "name": f"{station['label']} signing key certificate",
        "input": {"root_seed": station["root_seed"], "domain": "keycert", "object": cert.to_obj()},
        "output": _signed_outputs(identity.DOMAIN_KEYCERT, sc.data, sc.sig),
    }


def _seal(name: str, station: dict[str, str], **fields: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "signing_seed": station["signing_seed"],
        "line": LINE,
        "sender": station["fingerprint"],
        "key": station["key_id"],
        **fields,
        "salt": salt(name).hex(),
    }
    signer = nacl.signing.SigningKey(bytes.fromhex(inputs["signing_seed"]))
    args = {k: v for k, v in inputs.items() if k != "signing_seed"}
    args["salt"] = bytes.fromhex(args["salt"])
    env = envelope.seal(signer, **args)
    assert env.body_bytes is not None
    return {
        "name": name,
        "input": inputs,
        "output": {
            "body": env.body_bytes.hex(),
            "body_hash": env.header.body_hash,
            "header": env.header_bytes.hex(),
            "signed": (envelope.SIGNED_PREFIX + env.header_bytes).hex(),
            "id": env.id,
            "signature": env.sig.hex(),
            "wire": env.encode().hex(),
            "redacted_wire": env.redacted().encode().hex(),
        },
    }


def _envelopes(alpha: dict[str, str], bravo: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []  # in the order they were sent
    out_alpha: list[dict[str, Any]] = []

    def link(seq: int) -> dict[str, Any]:
        return {"seq": seq, "prev": None if seq == 1 else out_alpha[-1]["output"]["id"]}

    def alpha_env(name: str, seq: int, seen: tuple[int, str | None], **fields: Any) -> None:
        v = _seal(name, alpha, **link(seq), seen_seq=seen[0], seen_id=seen[1], **fields)
        out_alpha.append(v)
        out.append(v)

    no_seen: tuple[int, str | None] = (0, None)
    alpha_env(
        "alpha-1-text", 1, no_seen, sent_at=T0, kind="TEXT", prio="ROUTINE", lang="en",
        content={"text": "Line check. Please confirm you read me."},
    )  # fmt: skip
    alpha_env(
        "alpha-2-flash", 2, no_seen, sent_at=T0 + 60_000, kind="FLASH", prio="FLASH", lang="en",
        content={"text": "Unannounced launch detected 14:02Z. Confirm it is yours.", "ack_within_ms": 300_000},
    )  # fmt: skip
    alpha_env(
        "alpha-3-notice", 3, no_seen, sent_at=T0 + 120_000, kind="NOTICE", prio="PRIORITY", lang="en",
        content={
            "kind": "exercise",
            "area": {"type": "Polygon", "coordinates": [[["30.5", "50.4"], ["30.9", "50.4"], ["30.9", "50.7"],
                                                         ["30.5", "50.4"]]]},
            "floor_m": 0, "ceiling_m": 12000, "start": T0 + 3_600_000, "end": T0 + 7_200_000, "margin_m": 5000,
            "text": "Air exercise, four aircraft.",
        },
    )  # fmt: skip
    bravo_1 = _seal(
        "bravo-1-read", bravo, seq=1, prev=None, seen_seq=3, seen_id=out_alpha[2]["output"]["id"],
        sent_at=T0 + 150_000, kind="READ", prio="FLASH", lang="en",
        content={
            "ref": {"sender": alpha["fingerprint"], "seq": 2, "id": out_alpha[1]["output"]["id"]},
            "by": "Duty officer Petrova",
        },
    )  # fmt: skip
    out.append(bravo_1)
    seen_b1 = (1, bravo_1["output"]["id"])
    alpha_env(
        "alpha-4-test", 4, seen_b1, sent_at=T0 + 200_000, kind="TEST", prio="PRIORITY", lang="en",
        content={"text": "Line test. What is the third word of today's page?", "answer_within_ms": 600_000},
    )  # fmt: skip
    alpha_env(
        "alpha-5-text-ru", 5, seen_b1, sent_at=T0 + 260_000, kind="TEXT", prio="ROUTINE", lang="ru",
        content={"text": "Проверка связи \u2014 «приём» \U0001f4de\ttab, quote \" and \\"},
    )  # fmt: skip
    alpha_env(
        "alpha-6-translation", 6, seen_b1, sent_at=T0 + 300_000, kind="TRANSLATION", prio="ROUTINE", lang="en",
        content={
            "ref": {"sender": alpha["fingerprint"], "seq": 5, "id": out_alpha[4]["output"]["id"]},
            "text": "Line check \u2014 \u201cover\u201d", "lang": "en", "translator": "Lt. Smith",
        },
    )  # fmt: skip
    alpha_env(
        "alpha-7-unknown-kind", 7, seen_b1, sent_at=T0 + 360_000, kind="WEATHER", prio="ROUTINE", lang="en",
        content={"wind": "NW 20 kt", "visibility_m": 9000},
    )  # fmt: skip
    return out


def _statements(alpha: dict[str, str], bravo: dict[str, str], envs: list[dict[str, Any]]) -> dict[str, Any]:
    a_ids = [e["output"]["id"] for e in envs if e["input"]["sender"] == alpha["fingerprint"]]
    b_ids = [e["output"]["id"] for e in envs if e["input"]["sender"] == bravo["fingerprint"]]
    a_sign = nacl.signing.SigningKey(bytes.fromhex(alpha["signing_seed"]))
    b_sign = nacl.signing.SigningKey(bytes.fromhex(bravo["signing_seed"]))

    rc = Receipt(
        line=LINE, by=bravo["fingerprint"], key=bravo["key_id"], of=alpha["fingerprint"], seq=7, id=a_ids[6],
        received_at=T0 + 360_450,
    )  # fmt: skip
    rs = rc.sign(b_sign)

    def head(station: dict[str, str], ids: list[str]) -> Head:
        leaves = [merkle.leaf_hash(bytes.fromhex(i)) for i in ids]
        return Head(station=station["fingerprint"], size=len(ids), root=merkle.root(leaves).hex())

    pair = sorted([head(alpha, a_ids), head(bravo, b_ids)], key=lambda h: h.station)
    cp = Checkpoint(
        line=LINE, n=1, prev=None, heads=(pair[0], pair[1]), by=alpha["fingerprint"], key=alpha["key_id"],
        time=T0 + 361_000,
    )  # fmt: skip
    cps = cp.sign(a_sign)
    co = Cosign(
        line=LINE, checkpoint=cps.digest(Checkpoint.DOMAIN), by=bravo["fingerprint"], key=bravo["key_id"],
        time=T0 + 361_200,
    )  # fmt: skip
    cos = co.sign(b_sign)
    return {
        "receipt": {
            "name": "bravo receipts alpha up to seq 7",
            "input": {"signing_seed": bravo["signing_seed"], "domain": Receipt.DOMAIN, "object": rc.to_obj()},
            "output": _signed_outputs(Receipt.DOMAIN, rs.data, rs.sig),
        },
        "checkpoint": {
            "name": "alpha proposes checkpoint 1 over alpha[1..7] and bravo[1]",
            "input": {"signing_seed": alpha["signing_seed"], "domain": Checkpoint.DOMAIN, "object": cp.to_obj()},
            "output": _signed_outputs(Checkpoint.DOMAIN, cps.data, cps.sig),
        },
        "cosign": {
            "name": "bravo countersigns checkpoint 1",
            "input": {"signing_seed": bravo["signing_seed"], "domain": Cosign.DOMAIN, "object": co.to_obj()},
            "output": _signed_outputs(Cosign.DOMAIN, cos.data, cos.sig),
        },
    }


def _merkle(alpha: dict[str, str], envs: list[dict[str, Any]]) -> dict[str, Any]:
    ids = [e["output"]["id"] for e in envs if e["input"]["sender"] == alpha["fingerprint"]]
    leaves = [merkle.leaf_hash(bytes.fromhex(i)) for i in ids]
    return {
        "description": "Alpha's chain as an RFC 9162 tree: leaf i = SHA-256(0x00 || envelope id of seq i+1)",
        "envelope_ids": ids,
        "leaf_hashes": [h.hex() for h in leaves],
        "roots": {str(n): merkle.root(leaves[:n]).hex() for n in range(1, len(leaves) + 1)},
        "inclusion": [
            {"index": i, "size": 7, "proof": [p.hex() for p in merkle.inclusion_proof(i, leaves)]} for i in (2, 6)
        ],
        "consistency": [
            {"size1": m, "size2": 7, "proof": [p.hex() for p in merkle.consistency_proof(m, leaves)]} for m in (3, 4)
        ],
    }


# --- pairing (PROTOCOL.md section 9) -------------------------------------------------------------

PAIRED_AT = T0 - 3_600_000  # the ceremony, an hour before the first envelope
INVITE_TTL = 600_000


def nonce(name: str) -> bytes:
    """32 fixed bytes standing in for a random nonce."""
    return hashlib.sha256(b"redline test vector nonce: " + name.encode()).digest()


def tls_certificate(label: str, name: str) -> bytes:
    """A station's self-signed Ed25519 TLS certificate (DER), as identity.new_tls_identity makes one,
    but from a fixed seed, serial and validity so that its bytes are fixed (Ed25519 is deterministic)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.x509.oid import NameOID

    key = Ed25519PrivateKey.from_private_bytes(seed(f"{label} tls"))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tag = hashlib.sha256(spki).hexdigest()[:16]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"redline station {name} {tag}")])
    issued = datetime.datetime.fromtimestamp((T0 - 86_400_000) // 1000, datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(int.from_bytes(seed(f"{label} tls serial")[:16], "big") >> 1)
        .not_valid_before(issued - datetime.timedelta(days=1))
        .not_valid_after(issued + datetime.timedelta(days=3650))
        .sign(key, None)
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.DER)


def _party(station: dict[str, str], lang: str, addrs: list[str]) -> tuple[pairing.Party, dict[str, Any]]:
    root = nacl.signing.SigningKey(bytes.fromhex(station["root_seed"]))
    der = tls_certificate(station["label"], station["name"])
    spki = identity.spki_hash(der)
    issued = T0 - 86_400_000
    signing_cert = identity.certify(root, KeyCert(
        station=station["fingerprint"], name=station["name"], role="signing", key=station["signing_public"],
        key_id=station["key_id"], issued_at=issued,
    ))  # fmt: skip
    tls_cert = identity.certify(root, KeyCert(
        station=station["fingerprint"], name=station["name"], role="tls", key=spki, key_id=spki[:32], issued_at=issued,
    ))  # fmt: skip
    party = pairing.Party(
        root=bytes.fromhex(station["root_public"]), signing_cert=signing_cert, tls_cert=tls_cert, tls_der=der,
        name=station["name"], lang=lang, addrs=tuple(addrs),
    )  # fmt: skip
    described = {
        "label": station["label"],
        "tls_seed": seed(f"{station['label']} tls").hex(),
        "tls_der": der.hex(),
        "tls_spki_hash": spki,
        "tls_key_id": spki[:32],
        "tls_cert": {"object": KeyCert.from_obj(canonical.decode_object(tls_cert.data, "cert")).to_obj(),
                     **_signed_outputs(identity.DOMAIN_KEYCERT, tls_cert.data, tls_cert.sig)},
        "signing_cert": {"object": KeyCert.from_obj(canonical.decode_object(signing_cert.data, "cert")).to_obj(),
                         **_signed_outputs(identity.DOMAIN_KEYCERT, signing_cert.data, signing_cert.sig)},
        "party": party.to_obj(),
    }
    return party, described


def _pair_frame(msg: dict[str, Any]) -> dict[str, str]:
    data = canonical.encode(msg)
    return {"canonical": data.hex(), "frame": encode_frame(FrameType.PAIR, data).hex()}


def _pairing(alpha: dict[str, str], bravo: dict[str, str]) -> dict[str, Any]:
    """Alpha invites, Bravo joins: every message of the ceremony from fixed keys and nonces."""
    party_a, described_a = _party(alpha, "en", ["192.0.2.10:7401", "198.51.100.10:7401"])
    party_b, described_b = _party(bravo, "ru", ["203.0.113.20:7501"])
    invite = pairing.Invite(
        id=nonce("invite id")[:8].hex(), secret=nonce("invite secret")[:16], nonce=nonce("alpha nonce_i"), line=LINE,
        expires=PAIRED_AT + INVITE_TTL,
    )  # fmt: skip
    token = pairing.Token(
        id=invite.id, name=alpha["name"], addrs=party_a.addrs, pair_addr="192.0.2.10:7400",
        station=alpha["fingerprint"], spki=identity.spki_hash(party_a.tls_der), secret=invite.secret,
        commit=pairing.commitment(invite.nonce, LINE), expires=invite.expires,
    )  # fmt: skip
    text = token.encode()
    token_obj = canonical.decode_object(base64.urlsafe_b64decode(text[4:] + "=" * (-len(text) % 4)), "token")
    nonce_j = nonce("bravo nonce_j")
    join = pairing.join_message(token, party_b, nonce_j)
    unsigned = {k: v for k, v in join.items() if k != "proof"}
    reveal = pairing.reveal_message(invite, party_a)
    error = {"step": "error", "message": "this pairing token was already used; issue a new one with 'redline invite'"}
    hashed = (identity.domain("safety") + bytes.fromhex(LINE) + party_a.root + party_b.root + invite.nonce + nonce_j)
    digest = hashlib.sha256(hashed).digest()
    code = pairing.safety_code(LINE, party_a.root, party_b.root, invite.nonce, nonce_j)
    return {
        "stations": {"alpha": described_a, "bravo": described_b},
        "invite": {
            "name": "Alpha invites: the token (section 9.2)",
            "input": {
                "id": invite.id, "secret": invite.secret.hex(), "nonce_i": invite.nonce.hex(), "line": LINE,
                "now": PAIRED_AT, "expires": invite.expires, "name": token.name, "addrs": list(token.addrs),
                "pair": token.pair_addr, "station": token.station, "spki": token.spki,
            },
            "output": {
                "commit_input": (identity.domain("commit") + invite.nonce + bytes.fromhex(LINE)).hex(),
                "commit": token.commit,
                "token_object": token_obj,
                "token_canonical": canonical.encode(token_obj).hex(),
                "token": text,
            },
        },
        "join": {
            "name": "Bravo joins: the JOIN message (section 9.5)",
            "input": {
                "token": text, "nonce_j": nonce_j.hex(), "party": "stations.bravo.party", "now": PAIRED_AT + 5_000,
            },
            "output": {
                "unsigned_canonical": canonical.encode(unsigned).hex(),
                "proof": join["proof"],
                "message": join,
                **_pair_frame(join),
            },
        },
        "reveal": {
            "name": "Alpha reveals: the REVEAL message (section 9.6)",
            "input": {"nonce_i": invite.nonce.hex(), "line": LINE, "party": "stations.alpha.party"},
            "output": {"message": reveal, **_pair_frame(reveal)},
        },
        "error": {
            "name": "an inviter's refusal (section 9.6)",
            "input": {"message": error["message"]},
            "output": {"message": error, **_pair_frame(error)},
        },
        "safety_code": {
            "name": "the safety code both operators read aloud (section 9.8)",
            "input": {"line": LINE, "root_inviter": alpha["root_public"], "root_joiner": bravo["root_public"],
                      "nonce_i": invite.nonce.hex(), "nonce_j": nonce_j.hex()},
            "output": {
                "hashed": hashed.hex(), "digest": digest.hex(), "first8": digest[:8].hex(),
                "integer": int.from_bytes(digest[:8], "big"), "mod": int.from_bytes(digest[:8], "big") % 100_000_000,
                "code": code,
            },
        },
    }


# --- one envelope of every kind (PROTOCOL.md section 5.9) ---------------------------------------

KINDS_LINE = "0ddba11cafe0123456789abcdef01234"
K0 = T0 + 86_400_000  # the day after the first line's story
PEOPLE = {
    "alpha": [("Duty Officer Miller", "duty"), ("Col. Hayes", "supervisor")],
    "bravo": [("Dezhurny Orlov", "duty"), ("Polkovnik Volkov", "supervisor")],
}


def person(
    label: str, name: str, role: str, root_seed: str | None = None
) -> tuple[persons.Person, nacl.signing.SigningKey]:
    """A test person; with ``root_seed``, certified by that root (section 5.10) at K0."""
    key = nacl.signing.SigningKey(seed(f"{label} person {name}"))
    p = persons.Person(name=name, role=role, key=bytes(key.verify_key).hex())
    if root_seed is not None:
        root = nacl.signing.SigningKey(bytes.fromhex(root_seed))
        p = persons.Person(name=name, role=role, key=p.key, cert=persons.certify_person(root, p, issued_at=K0))
    return p, key


def _kinds(alpha: dict[str, str], bravo: dict[str, str]) -> dict[str, Any]:
    stations = {"alpha": alpha, "bravo": bravo}
    chains: dict[str, list[dict[str, Any]]] = {"alpha": [], "bravo": []}
    story: list[dict[str, Any]] = []
    people = {label: {n: person(label, n, r, stations[label]["root_seed"]) for n, r in ppl}
              for label, ppl in PEOPLE.items()}  # fmt: skip
    clock = [K0]

    def ref(label: str, seq: int) -> dict[str, Any]:
        return {"sender": stations[label]["fingerprint"], "seq": seq, "id": chains[label][seq - 1]["output"]["id"]}

    def send(label: str, kind: str, prio: str, content: dict[str, Any], signer: str | None = None,
             station: dict[str, str] | None = None) -> int:  # fmt: skip
        if signer is not None:
            p, key = people[label][signer]
            content = persons.sign_content(content, p, key)
        other = "bravo" if label == "alpha" else "alpha"
        chain, seen = chains[label], chains[other]
        seq = len(chain) + 1
        clock[0] += 60_000
        v = _seal(
            f"{label}-{seq}-{kind.lower()}", station or stations[label], line=KINDS_LINE, seq=seq,
            prev=chain[-1]["output"]["id"] if chain else None, seen_seq=len(seen),
            seen_id=seen[-1]["output"]["id"] if seen else None, sent_at=clock[0], kind=kind, prio=prio,
            lang="en" if label == "alpha" else "ru", content=content,
        )  # fmt: skip
        chain.append(v)
        story.append(v)
        return seq

    send("alpha", "ROSTER", "PRIORITY", persons.roster_content([p for p, _ in people["alpha"].values()]))
    send("bravo", "ROSTER", "PRIORITY", persons.roster_content([p for p, _ in people["bravo"].values()]))
    text = send("alpha", "TEXT", "ROUTINE", {"text": "Line check. Please confirm you read me."})
    send("bravo", "READ", "FLASH", {"ref": ref("alpha", text), "by": "Dezhurny Orlov"})
    flash = send("alpha", "FLASH", "FLASH", {"text": "FLASH: aircraft approaching the border at 14:02Z. Confirm."})
    send("bravo", "ESCALATED", "FLASH", {"flash": ref("alpha", flash), "level": "deputy", "step": 1})
    send("bravo", "ACK", "FLASH", {"ref": ref("alpha", flash)}, signer="Dezhurny Orlov")
    test = send("alpha", "TEST", "PRIORITY", {
        "text": "Line test. Please answer to confirm the line is attended.", "answer_within_ms": 300_000,
        "slot": "2023-11-15T22:00Z",
    })  # fmt: skip
    answer = {"test": ref("alpha", test), "text": "Проверка принята. Дежурный на связи."}
    send("bravo", "TEST_ANSWER", "PRIORITY", answer, signer="Dezhurny Orlov")
    send("alpha", "TEST_RESULT", "PRIORITY", {
        "test": ref("alpha", test), "result": "passed", "answered_by": "Dezhurny Orlov", "answer_ms": 60_000,
    })  # fmt: skip
    request = send("alpha", "CALL_REQUEST", "PRIORITY", {
        "from_role": "Secretary", "to_role": "Minister", "subject": "Keeping lines of communication open",
        "windows": [[K0 + 86_400_000, K0 + 100_800_000]], "expires": K0 + 3 * 86_400_000,
    })  # fmt: skip
    reply = {"request": ref("alpha", request), "answer": "accept", "time": K0 + 90_000_000}
    send("bravo", "CALL_REPLY", "PRIORITY", reply)
    record = send("alpha", "CALL_RECORD", "PRIORITY", {
        "request": ref("alpha", request), "start": K0 + 90_000_000, "end": K0 + 93_600_000,
        "principals": ["Secretary", "Minister"], "participants": ["Secretary", "Minister", "interpreters"],
    }, signer="Col. Hayes")  # fmt: skip
    ours = {"call": ref("alpha", record), "text": "The call lasted an hour; no issue was resolved."}
    send("alpha", "READOUT", "PRIORITY", ours, signer="Col. Hayes")
    theirs = {"call": ref("alpha", record), "text": "Обсуждены актуальные вопросы."}
    send("bravo", "READOUT", "PRIORITY", theirs, signer="Polkovnik Volkov")
    lapsed = send("alpha", "CALL_REQUEST", "PRIORITY", {
        "from_role": "Chairman", "to_role": "Chief of General Staff", "subject": "Request for a call", "windows": [],
        "expires": K0 + 7 * 86_400_000,
    })  # fmt: skip
    send("alpha", "CALL_EXPIRED", "PRIORITY", {"request": ref("alpha", lapsed)})
    notice = send("alpha", "NOTICE", "PRIORITY", {
        "kind": "air",
        "area": {"type": "Polygon", "coordinates": [[["28.1", "45.1"], ["28.9", "45.1"], ["28.9", "45.6"],
                                                     ["28.1", "45.6"], ["28.1", "45.1"]]]},
        "floor_m": 6000, "ceiling_m": 12000, "start": K0 + 7_200_000, "end": K0 + 21_600_000, "margin_m": 10000,
        "text": "Air policing patrol, two aircraft, west of the border.",
    })  # fmt: skip
    send("bravo", "NOTICE", "PRIORITY", {
        "kind": "strike", "area": {"type": "Point", "coordinates": ["29.05", "45.45"]}, "radius_m": 15000,
        "floor_m": 0, "ceiling_m": 10000, "start": K0 + 10_800_000, "end": K0 + 18_000_000, "margin_m": 5000,
        "text": "Удары по объектам в районе.",
    })  # fmt: skip
    send("alpha", "NOTICE_WITHDRAW", "PRIORITY", {"notice": ref("alpha", notice)})
    send("bravo", "TRANSLATION", "ROUTINE", {
        "ref": ref("alpha", text), "text": "Проверка связи. Подтвердите приём.", "lang": "ru",
        "translator": "Lt. Ivanova",
    })  # fmt: skip
    heads = []
    for label in ("alpha", "bravo"):
        leaves = [merkle.leaf_hash(bytes.fromhex(v["output"]["id"])) for v in chains[label]]
        heads.append(Head(station=stations[label]["fingerprint"], size=len(leaves), root=merkle.root(leaves).hex()))
    heads.sort(key=lambda h: h.station)
    cp = Checkpoint(line=KINDS_LINE, n=1, prev=None, heads=(heads[0], heads[1]), by=alpha["fingerprint"],
                    key=alpha["key_id"], time=clock[0] + 1000)  # fmt: skip
    cps = cp.sign(nacl.signing.SigningKey(bytes.fromhex(alpha["signing_seed"])))
    co = Cosign(line=KINDS_LINE, checkpoint=cps.digest(Checkpoint.DOMAIN), by=bravo["fingerprint"],
                key=bravo["key_id"], time=clock[0] + 2000)  # fmt: skip
    cos = co.sign(nacl.signing.SigningKey(bytes.fromhex(bravo["signing_seed"])))
    # A voice line test (issue 16): the ring names the test, the pick-up answers it, both ends file
    # the audio digests (section 8.9) of two real-looking packet streams; then a busy decline and a
    # ring that timed out.
    voice_test = send("alpha", "TEST", "PRIORITY", {"text": "Voice line test. Please pick up."})
    ring = send("alpha", "CALL_RING", "PRIORITY", {"test": ref("alpha", voice_test)}, signer="Col. Hayes")
    pickup = send("bravo", "CALL_ANSWER", "PRIORITY", {"ring": ref("alpha", ring)}, signer="Dezhurny Orlov")
    send("alpha", "CALL_HANGUP", "PRIORITY", {"ring": ref("alpha", ring), "answer": ref("bravo", pickup)})
    call_id = ref("alpha", ring)["id"]
    said = {label: [(i, 20 * i, hashlib.sha256(f"{label} opus {i}".encode()).digest()[:40]) for i in range(50)]
            for label in ("alpha", "bravo")}  # fmt: skip
    direction = {
        label: {"digest": media.digest_of(call_id, stations[label]["fingerprint"], said[label]), "packets": 50,
                "ms": 980}
        for label in ("alpha", "bravo")
    }  # fmt: skip
    send("alpha", "CALL_AUDIO", "PRIORITY",
         {"ring": ref("alpha", ring), "sent": direction["alpha"], "received": direction["bravo"]})  # fmt: skip
    send("bravo", "CALL_AUDIO", "PRIORITY",
         {"ring": ref("alpha", ring), "sent": direction["bravo"], "received": direction["alpha"]})  # fmt: skip
    busy = send("bravo", "CALL_RING", "PRIORITY", {}, signer="Polkovnik Volkov")
    send("alpha", "CALL_DECLINE", "PRIORITY", {"ring": ref("bravo", busy), "reason": "busy"})
    lapsed_ring = send("alpha", "CALL_RING", "PRIORITY", {}, signer="Duty Officer Miller")
    send("alpha", "CALL_UNANSWERED", "PRIORITY", {"ring": ref("alpha", lapsed_ring)})
    # Alpha's signing key rotates last: from the KEY on, its chain is signed by the new key (the
    # window rule, PROTOCOL.md §7.5), and these vectors sign with one key only.
    root = nacl.signing.SigningKey(bytes.fromhex(alpha["root_seed"]))
    new_signing = nacl.signing.SigningKey(seed("alpha signing 2")).verify_key.encode()
    rotated = identity.certify(root, KeyCert(
        station=alpha["fingerprint"], name=alpha["name"], role="signing", key=new_signing.hex(),
        key_id=identity.key_id(new_signing), issued_at=clock[0],
    ))  # fmt: skip
    key_seq = send("alpha", "KEY", "PRIORITY", {"certs": [rotated.to_obj()]})
    # Then Alpha's root revokes the first key (stolen, say, after checkpoint 1): the REVOKE is
    # signed by the new key and carries checkpoint 1 with Bravo's cosign; it needs no next key,
    # since the KEY already retired the revoked one. Alpha's envelopes after checkpoint 1 up to the
    # KEY are flagged "signed by a revoked key" (PROTOCOL.md section 5.9, REVOKE).
    second = {**alpha, "signing_seed": seed("alpha signing 2").hex(), "key_id": identity.key_id(new_signing)}
    rev = revocation.Revocation(
        station=alpha["fingerprint"], line=KINDS_LINE, key=alpha["key_id"], checkpoint_n=1,
        checkpoint_digest=cps.digest(Checkpoint.DOMAIN), reason="signing key copied off the station",
        issued_at=clock[0] + 3000,
    )  # fmt: skip
    revs = rev.sign(root)
    revoke_seq = send("alpha", "REVOKE", "FLASH", revocation.content(revs, cps, cos, []), station=second)
    # Last, Bravo's root rotates (section 5.9, ROOT): the statement naming root version 2, signed
    # by Bravo's first root and by the new one; Alpha's operator compares the new safety code by
    # voice and Alpha files the ROOT_CONFIRM (signed by Alpha's second key) that makes it trusted.
    bravo_root = nacl.signing.SigningKey(bytes.fromhex(bravo["root_seed"]))
    bravo_root2 = nacl.signing.SigningKey(seed("bravo root 2"))
    rot = rootrotation.RootRotation(station=bravo["fingerprint"], version=2, prev=bravo["root_public"],
                                    root=bytes(bravo_root2.verify_key).hex(), issued_at=clock[0] + 4000)  # fmt: skip
    rot_signed = rot.sign(bravo_root, bravo_root2)
    root_seq = send("bravo", "ROOT", "FLASH", rootrotation.content(rot_signed))
    rot_digest = rootrotation.digest(rot_signed)
    confirm = rootrotation.confirm_content(ref("bravo", root_seq), rot_digest)
    confirm_seq = send("alpha", "ROOT_CONFIRM", "FLASH", confirm, station=second)
    return {
        "line": KINDS_LINE,
        "people": {
            label: [{"name": p.name, "role": p.role, "seed": bytes(k).hex(), "key": p.key}
                    for p, k in people[label].values()]
            for label in people
        },
        "envelopes": story,
        "checkpoint": {
            "name": "the checkpoint the REVOKE names: Alpha's checkpoint 1 over both chains before it",
            "input": {"signing_seed": alpha["signing_seed"], "domain": Checkpoint.DOMAIN, "object": cp.to_obj()},
            "output": _signed_outputs(Checkpoint.DOMAIN, cps.data, cps.sig),
        },
        "person_certificate": _person_cert(alpha, next(iter(people["alpha"].values()))[0]),
        "cosign": {
            "name": "Bravo's countersignature of that checkpoint, carried in the REVOKE",
            "input": {"signing_seed": bravo["signing_seed"], "domain": Cosign.DOMAIN, "object": co.to_obj()},
            "output": _signed_outputs(Cosign.DOMAIN, cos.data, cos.sig),
        },
        "root_rotation": {
            "name": "Bravo's root version 2, signed by Bravo's first root (prev_sig) and by itself (root_sig)",
            "input": {"prev_seed": bravo["root_seed"], "root_seed": seed("bravo root 2").hex(),
                      "domain": rootrotation.DOMAIN, "object": rot.to_obj()},
            "output": {"content": rootrotation.content(rot_signed), "digest": rot_digest,
                       "safety_code": rootrotation.safety_code(KINDS_LINE, bytes.fromhex(bravo["root_public"]),
                                                               bytes(bravo_root2.verify_key), rot_digest),
                       "root_seq": root_seq, "confirm_seq": confirm_seq},
        },
        "revocation": {
            "name": "Alpha's root revokes Alpha's first signing key after checkpoint 1",
            "input": {"root_seed": alpha["root_seed"], "domain": revocation.DOMAIN, "object": rev.to_obj()},
            "output": _signed_outputs(revocation.DOMAIN, revs.data, revs.sig),
            "flagged": {"station": alpha["fingerprint"], "first": cp.head(alpha["fingerprint"]).size + 1,
                        "last": key_seq, "revoke_seq": revoke_seq},
        },
    }


def _person_cert(station: dict[str, str], p: persons.Person) -> dict[str, Any]:
    """A person certificate (section 5.10) as Alpha's root made it for its ROSTER."""
    assert p.cert is not None
    obj = canonical.decode_object(p.cert.data, "person certificate")
    return {
        "name": f"Alpha's root certifies {p.name}'s name, role and key",
        "input": {"root_seed": station["root_seed"], "domain": persons.DOMAIN_CERT, "object": obj},
        "output": _signed_outputs(persons.DOMAIN_CERT, p.cert.data, p.cert.sig),
    }


def schema_examples(kinds: dict[str, Any]) -> dict[str, str]:
    """docs/schemas/<KIND>.json with ``examples`` set to that kind's content in kinds.json."""
    first: dict[str, Any] = {}
    for v in kinds["envelopes"]:
        first.setdefault(v["input"]["kind"], v["input"]["content"])
    out = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        if path.stem in first:
            schema["examples"] = [first[path.stem]]
        out[path.name] = render(schema)
    return out


def build() -> dict[str, Any]:
    """File name -> content of every vector file."""
    alpha = _station("alpha", "Station Alpha")
    bravo = _station("bravo", "Station Bravo")
    envs = _envelopes(alpha, bravo)
    note = "Generated by scripts/make_vectors.py; do not edit. Hex is lower-case; times are ms since 1970 UTC."
    return {
        "keys.json": {
            "note": note,
            "stations": [alpha, bravo],
            "key_certificates": [_keycert(alpha), _keycert(bravo)],
        },
        "envelopes.json": {
            "note": note + " Each content is valid under docs/schemas/<KIND>.json (WEATHER is an unknown kind).",
            "envelopes": envs,
        },
        "statements.json": {"note": note, **_statements(alpha, bravo, envs)},
        "merkle.json": {"note": note, **_merkle(alpha, envs)},
        "pairing.json": {"note": note + " Nonces, secret and invite id stand in for random bytes.",
                         **_pairing(alpha, bravo)},
        "kinds.json": {"note": note + " One envelope of every kind; people's seeds are public test keys too.",
                       **_kinds(alpha, bravo)},
    }


def render(content: Any) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file would change")
    args = parser.parse_args(argv)
    stale = []
    built = build()
    files = {VECTORS / name: render(content) for name, content in built.items()}
    files |= {SCHEMAS / name: text for name, text in schema_examples(built["kinds.json"]).items()}
    for path, text in files.items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(str(path.relative_to(ROOT)))
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run scripts/make_vectors.py", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
