#!/usr/bin/env python3
"""Write redline's own test vectors to tests/vectors/*.json (docs/PROTOCOL.md, appendix A).

Everything is derived from fixed inputs: Ed25519 seeds, body salts, times and contents. Ed25519
signatures are deterministic, so running this again gives byte-identical files. Each vector holds
its inputs and the expected outputs (hex), so an implementation in another language can recompute
every output from the inputs and compare.

    .venv/bin/python scripts/make_vectors.py          # (re)write the files
    .venv/bin/python scripts/make_vectors.py --check  # exit 1 if the files are not up to date

The story the vectors tell: stations Alpha and Bravo share one line. Alpha sends seven envelopes
(TEXT, FLASH, NOTICE, TEST, TEXT in Russian, READ and WEATHER, a kind this version does not know);
Bravo sends one ACK after storing Alpha's first three, and Alpha's later envelopes name it as
seen. Bravo receipts Alpha's chain up to seq 7; Alpha proposes checkpoint 1 over both chains and
Bravo countersigns it. The Merkle vectors are Alpha's chain as a tree of 7 leaves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import nacl.signing

from redline import envelope, identity, merkle
from redline.identity import KeyCert
from redline.statements import Checkpoint, Cosign, Head, Receipt, Signed

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"

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
        content={"text": "Unannounced launch detected 14:02Z. Confirm it is yours.", "ack_within_s": 300},
    )  # fmt: skip
    alpha_env(
        "alpha-3-notice", 3, no_seen, sent_at=T0 + 120_000, kind="NOTICE", prio="PRIORITY", lang="en",
        content={
            "activity": "air exercise",
            "area": {"type": "Polygon", "coordinates": [[["30.5", "50.4"], ["30.9", "50.4"], ["30.9", "50.7"],
                                                         ["30.5", "50.4"]]]},
            "altitude_m": [0, 12000],
            "window": [T0 + 3_600_000, T0 + 7_200_000],
        },
    )  # fmt: skip
    bravo_1 = _seal(
        "bravo-1-ack", bravo, seq=1, prev=None, seen_seq=3, seen_id=out_alpha[2]["output"]["id"],
        sent_at=T0 + 150_000, kind="ACK", prio="FLASH", lang="en",
        content={
            "ref": {"sender": alpha["fingerprint"], "seq": 2, "id": out_alpha[1]["output"]["id"]},
            "by": "Duty officer Petrova", "text": "Not ours. Investigating.",
        },
    )  # fmt: skip
    out.append(bravo_1)
    seen_b1 = (1, bravo_1["output"]["id"])
    alpha_env(
        "alpha-4-test", 4, seen_b1, sent_at=T0 + 200_000, kind="TEST", prio="PRIORITY", lang="en",
        content={"challenge": "What is the third word of today's page?", "answer_within_s": 600},
    )  # fmt: skip
    alpha_env(
        "alpha-5-text-ru", 5, seen_b1, sent_at=T0 + 260_000, kind="TEXT", prio="ROUTINE", lang="ru",
        content={"text": "Проверка связи \u2014 «приём» \U0001f4de", "note": "tab\there, quote \" and \\"},
    )  # fmt: skip
    alpha_env(
        "alpha-6-read", 6, seen_b1, sent_at=T0 + 300_000, kind="READ", prio="ROUTINE", lang="en",
        content={"ref": {"sender": bravo["fingerprint"], "seq": 1, "id": bravo_1["output"]["id"]}},
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
            "note": note + " Envelope contents are illustrative; kind-specific body schemas are not part of these.",
            "envelopes": envs,
        },
        "statements.json": {"note": note, **_statements(alpha, bravo, envs)},
        "merkle.json": {"note": note, **_merkle(alpha, envs)},
    }


def render(content: Any) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file would change")
    args = parser.parse_args(argv)
    stale = []
    for name, content in build().items():
        path = VECTORS / name
        text = render(content)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run scripts/make_vectors.py", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote tests/vectors/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
