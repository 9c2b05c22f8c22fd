"""Bundles (redline.bundle): a line's record that a third party checks with no station at hand.

One real transcript is built once with ``SessionPair`` (two stations, real keys and ledgers, FLASH
messages that force co-signed checkpoints, then a one-sided tail) and snapshotted at three moments:
the bundle is exported at the first, and the other side's checkpoint is taken at each of them, so
a bundle can be checked against a checkpoint that is the same, later and consistent, or later than
the bundle holds. Every attack edits a copy of the bundle's JSON the way someone holding the file
would, and must be found with a problem naming the entry. Fingerprints always come from the station
directories, never from the bundle (guarantee 4). Tests are named after what they block.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from redline import canonical, identity
from redline.bundle import (
    BUNDLE_FORMAT,
    BundleError,
    BundleReport,
    CheckpointFile,
    build_bundle,
    export_checkpoint,
    parse_checkpoint,
    read_bundle,
    verify_bundle,
    write_bundle,
)
from redline.envelope import split
from redline.home import StationKeys
from redline.identity import KeyCert
from redline.ledger.verify import LineData
from redline.statements import Checkpoint, Cosign, Receipt, Signed
from redline.testing import SessionPair

EXPORTED_AT = 1_652_450_000_000
DEEP = "[" * 3000 + "]" * 3000  # 6 KB: nothing about it is large but its nesting (json raises RecursionError)


@dataclass(frozen=True)
class World:
    line: str
    keys_a: StationKeys  # EUCOM
    keys_b: StationKeys  # NDMC
    early_a: LineData  # both stations' holdings once EUCOM has a one-sided tail
    early_b: LineData
    final_a: LineData  # after more traffic and a checkpoint over all of it
    cp_early: CheckpointFile  # NDMC's latest checkpoint at each moment
    cp_mid: CheckpointFile  # covers EUCOM's tail, no new envelopes
    cp_late: CheckpointFile  # covers envelopes the early bundle does not hold
    dir_a: Path  # the station directories, closed, holding the final state
    dir_b: Path

    @property
    def a(self) -> str:
        return self.keys_a.fingerprint

    @property
    def b(self) -> str:
        return self.keys_b.fingerprint

    @property
    def fps(self) -> list[str]:
        return [self.a, self.b]

    @property
    def roots(self) -> dict[str, bytes]:
        return {self.a: self.keys_a.root_public, self.b: self.keys_b.root_public}

    def bundle(self, data: LineData | None = None, redact: tuple[str, ...] = (), exporter: str = "") -> dict[str, Any]:
        return build_bundle(
            data or self.early_a, self.roots, exporter or self.a, set(redact), exported_at=EXPORTED_AT
        )


def _settle(pair: SessionPair, seconds: int = 61) -> None:
    """Let the line run long enough for a timed checkpoint over everything both hold."""
    for _ in range(seconds):
        pair.tick(1.0)
        pair.run()


def _checkpoint_of(pair: SessionPair) -> CheckpointFile:
    data = pair.b.ledger.line_data(pair.line, "NDMC")
    return parse_checkpoint(export_checkpoint(data, pair.b.us, exported_at=EXPORTED_AT))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pair = SessionPair(tmp_path_factory.mktemp("bundle"))
    pair.run()
    for i in range(3):
        pair.send("a", f"EUCOM routine {i}")
        pair.send("b", f"NDMC routine {i}")
        pair.run()
    pair.send("a", "FLASH: unannounced launch detected, confirm", kind="FLASH", prio="FLASH")
    pair.run()
    pair.send("b", "Reading you. Checking.")
    pair.run()
    pair.send("b", "FLASH: it is a scheduled test, notice attached", kind="FLASH", prio="FLASH")
    pair.run()
    _settle(pair)
    for i in range(3):  # EUCOM's one-sided tail: receipted by NDMC, not yet co-signed or seen
        pair.send("a", f"EUCOM tail {i}")
    pair.run()
    early_a = pair.a.ledger.line_data(pair.line, "EUCOM")
    early_b = pair.b.ledger.line_data(pair.line, "NDMC")
    cp_early = _checkpoint_of(pair)
    _settle(pair)
    cp_mid = _checkpoint_of(pair)
    pair.send("b", "Understood, thank you.")
    pair.send("a", "FLASH: second launch, same area", kind="FLASH", prio="FLASH")
    pair.run()
    _settle(pair)
    final_a = pair.a.ledger.line_data(pair.line, "EUCOM")
    cp_late = _checkpoint_of(pair)
    assert not [a for a in pair.alarms if a[1] == "alarm"], pair.alarms
    keys_a, keys_b = pair.dir_a.load_keys(), pair.dir_b.load_keys()
    pair.close()
    dirs = (pair.dir_a.path, pair.dir_b.path)
    w = World(pair.line, keys_a, keys_b, early_a, early_b, final_a, cp_early, cp_mid, cp_late, *dirs)
    # The moments are what the tests rely on: a tail at first, then co-signed, then outgrown.
    assert [len(early_a.chains[fp]) for fp in w.fps] == [7, 5]
    assert [Checkpoint.peek(cp_mid.proposal).head(fp).size for fp in w.fps] == [7, 5]
    assert [Checkpoint.peek(cp_late.proposal).head(fp).size for fp in w.fps] == [8, 6]
    return w


def _ok(report: BundleReport) -> BundleReport:
    assert report.ok, report.summary()
    return report


def _first(report: BundleReport) -> str:
    assert not report.ok, "the change went unnoticed: the bundle still verifies"
    return str(report.all_problems[0])


def _station(bundle: dict[str, Any], fp: str) -> dict[str, Any]:
    (s,) = [s for s in bundle["stations"] if s["fingerprint"] == fp]
    assert isinstance(s, dict)
    return s


def _entries(bundle: dict[str, Any], fp: str) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = _station(bundle, fp)["chain"]
    return chain


def _env(bundle: dict[str, Any], fp: str, seq: int) -> bytes:
    return bytes.fromhex(_entries(bundle, fp)[seq - 1]["envelope"])


def _set_env(bundle: dict[str, Any], fp: str, seq: int, raw: bytes) -> None:
    _entries(bundle, fp)[seq - 1]["envelope"] = raw.hex()


def _header(raw: bytes) -> dict[str, Any]:
    return canonical.decode_object(split(raw).header_bytes, "header")


def _wire(header_bytes: bytes, body: bytes | None, sig: bytes) -> bytes:
    b = body or b""
    return len(header_bytes).to_bytes(4, "big") + header_bytes + len(b).to_bytes(4, "big") + b + sig


# -- what a good bundle proves ------------------------------------------------------------------------


@pytest.mark.parametrize("exporter", ["EUCOM", "NDMC"])
def test_bundle_from_either_station_verifies_against_the_fingerprints_given(world: World, exporter: str) -> None:
    data, fp = (world.early_a, world.a) if exporter == "EUCOM" else (world.early_b, world.b)
    report = _ok(verify_bundle(world.bundle(data, exporter=fp), world.fps))
    r = report.line_report
    assert r is not None
    assert r.chain_sizes == {world.a: 7, world.b: 5}
    assert r.cosigned_sizes == {world.a: 4, world.b: 5}
    assert r.checkpoints >= 2 and r.receipts >= 8
    assert report.receipted[world.a] == 7
    summary = report.summary()
    assert summary[0].startswith("VERIFIED: line ")
    assert f"exported by {exporter}" in summary[0]
    assert any(s.startswith("co-signed prefix: EUCOM 1..4, NDMC 1..5 (checkpoint ") for s in summary), summary
    assert "one-sided tail: EUCOM 5..7 (signed by EUCOM only; receipted by NDMC up to 7)" in summary
    assert any("not checked against a checkpoint from outside" in s for s in summary)


def test_both_stations_export_the_same_transcript(world: World) -> None:
    a, b = world.bundle(world.early_a), world.bundle(world.early_b, exporter=world.b)
    assert a["checkpoints"] == b["checkpoints"]
    for fp in world.fps:  # each keeps only the peer certificates it was given; the chains are the same
        assert _entries(a, fp) == _entries(b, fp)
    # Each station keeps every receipt it issued; a receipt it received is stored with its next
    # commit, so the latest one may not be in its copy yet. Whatever one bundle has and the other
    # lacks must be a receipt the other side received, not one it issued.
    assert set(a["receipts"]) & set(b["receipts"])
    for mine, other, exporter in ((a, b, world.a), (b, a, world.b)):
        for r in set(other["receipts"]) - set(mine["receipts"]):
            assert Receipt.peek(Signed.decode(bytes.fromhex(r))).by != exporter


def test_fingerprints_may_be_given_in_any_order_and_as_read_aloud(world: World) -> None:
    spoken = identity.show_fingerprint(world.b)  # the first 32 hex digits, in groups of four
    assert len(spoken.replace(" ", "")) == 32
    _ok(verify_bundle(world.bundle(), [spoken.upper(), world.a]))


def test_a_fingerprint_too_short_to_be_safe_is_refused(world: World) -> None:
    with pytest.raises(BundleError, match="at least the first 32"):
        verify_bundle(world.bundle(), [world.a, world.b[:16]])
    with pytest.raises(BundleError, match="give the fingerprints of both stations"):
        verify_bundle(world.bundle(), [])


# -- roots: only fingerprints from outside the bundle count --------------------------------------------


def test_wrong_fingerprint_fails_naming_the_station(world: World) -> None:
    third = identity.fingerprint(bytes(nacl.signing.SigningKey.generate().verify_key))
    report = verify_bundle(world.bundle(), [world.a, third])
    problem = _first(report)
    assert "station 'NDMC'" in problem
    assert "is not one of the fingerprints given" in problem
    assert identity.show_fingerprint(third) in problem
    # Nothing was verified under keys the verifier did not choose.
    assert not report.trusted and report.line_report is None
    assert any(s.startswith("NOT VERIFIED") for s in report.summary())


def test_one_fingerprint_is_not_enough(world: World) -> None:
    report = verify_bundle(world.bundle(), [world.b])
    assert "station 'EUCOM'" in _first(report)
    assert len(report.all_problems) == 1


def test_swapped_roots_fail_naming_both_stations(world: World) -> None:
    bundle = world.bundle()
    sa, sb = _station(bundle, world.a), _station(bundle, world.b)
    sa["root"], sb["root"] = sb["root"], sa["root"]
    report = verify_bundle(bundle, world.fps)
    problems = [str(p) for p in report.all_problems]
    assert len(problems) == 2
    assert "'EUCOM'" in problems[0] or "'EUCOM'" in problems[1]
    assert all("root keys were swapped or replaced" in p for p in problems)
    assert report.line_report is None


def test_impostor_root_with_its_own_fingerprint_fails(world: World) -> None:
    # A bundle re-made by someone with their own root key, claiming to be NDMC: self-consistent,
    # and worthless, because its fingerprint is not the one the verifier holds for NDMC.
    bundle = world.bundle()
    fake = bytes(nacl.signing.SigningKey.generate().verify_key)
    s = _station(bundle, world.b)
    s["root"], s["fingerprint"] = fake.hex(), identity.fingerprint(fake)
    bundle["stations"].sort(key=lambda x: x["fingerprint"])
    problem = _first(verify_bundle(bundle, world.fps))
    assert "station 'NDMC'" in problem and "is not one of the fingerprints given" in problem


def test_renamed_station_is_found(world: World) -> None:
    bundle = world.bundle()
    _station(bundle, world.b)["name"] = "EUCOM"
    problem = _first(verify_bundle(bundle, world.fps))
    assert "station NDMC" in problem and "its root certified the name 'NDMC'" in problem


# -- tampering: each kind fails, naming the entry -----------------------------------------------------


def _edit_body(w: World, b: dict[str, Any]) -> None:
    raw = _env(b, w.a, 2)
    assert b"routine 1" in raw
    _set_env(b, w.a, 2, raw.replace(b"routine 1", b"routine 9"))


def _edit_body_and_hash(w: World, b: dict[str, Any]) -> None:
    parts = split(_env(b, w.b, 2))
    assert parts.body_bytes is not None
    body = parts.body_bytes.replace(b"routine 1", b"routine 9")
    header = _header(_env(b, w.b, 2))
    header["body"] = hashlib.sha256(body).hexdigest()
    _set_env(b, w.b, 2, _wire(canonical.encode(header), body, parts.sig))


def _delete(w: World, b: dict[str, Any]) -> None:
    del _entries(b, w.a)[2]


def _swap(w: World, b: dict[str, Any]) -> None:
    chain = _entries(b, w.b)
    chain[1], chain[2] = chain[2], chain[1]


def _swap_bytes_only(w: World, b: dict[str, Any]) -> None:
    chain = _entries(b, w.b)
    chain[1]["envelope"], chain[2]["envelope"] = chain[2]["envelope"], chain[1]["envelope"]


def _renumber(w: World, b: dict[str, Any]) -> None:
    _entries(b, w.a)[2]["seq"] = 9


def _renumber_last(w: World, b: dict[str, Any]) -> None:
    _entries(b, w.a)[-1]["seq"] = 70


def _forge_signature(w: World, b: dict[str, Any]) -> None:
    raw = bytearray(_env(b, w.a, 3))
    raw[-10] ^= 0x01
    _set_env(b, w.a, 3, bytes(raw))


def _edit_id(w: World, b: dict[str, Any]) -> None:
    _entries(b, w.b)[3]["id"] = "0" * 64


def _alter_checkpoint(w: World, b: dict[str, Any]) -> None:
    raw = bytearray(bytes.fromhex(b["checkpoints"][0]["proposal"]))
    i = bytes(raw).index(b'"time":') + len(b'"time":') + 5  # not the leading digit
    raw[i] ^= 0x01  # a digit of the clock: still canonical JSON, no longer what was signed
    b["checkpoints"][0]["proposal"] = raw.hex()


def _alter_cosign(w: World, b: dict[str, Any]) -> None:
    raw = bytearray(bytes.fromhex(b["checkpoints"][0]["cosign"]))
    raw[-5] ^= 0x80
    b["checkpoints"][0]["cosign"] = raw.hex()


def _drop_first_checkpoint(w: World, b: dict[str, Any]) -> None:
    del b["checkpoints"][0]


def _alter_receipt(w: World, b: dict[str, Any]) -> None:
    raw = bytearray(bytes.fromhex(b["receipts"][2]))
    i = bytes(raw).index(b'"received_at":') + len(b'"received_at":') + 5  # not the leading digit
    raw[i] ^= 0x01
    b["receipts"][2] = raw.hex()


def _other_line(w: World, b: dict[str, Any]) -> None:
    b["line"] = "f" * 32


def _substitute_key(w: World, b: dict[str, Any]) -> None:
    # Replace NDMC's signing certificate with one for a key of our own, made by a root of our own
    # that claims NDMC's fingerprint, and re-sign NDMC's whole chain with that key.
    fake_root, fake = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    pub = bytes(fake.verify_key)
    kid = identity.key_id(pub)
    cert = identity.certify(
        fake_root, KeyCert(station=w.b, name="NDMC", role="signing", key=pub.hex(), key_id=kid, issued_at=1)
    )
    station = _station(b, w.b)
    (i,) = [
        i for i, c in enumerate(station["certs"])
        if canonical.decode_object(bytes.fromhex(c["data"]), "cert")["role"] == "signing"
    ]  # fmt: skip
    station["certs"][i] = cert.to_obj()
    prev = None
    for entry in station["chain"]:
        parts = split(bytes.fromhex(entry["envelope"]))
        header = _header(bytes.fromhex(entry["envelope"]))
        header["key"], header["prev"] = kid, prev
        hb = canonical.encode(header)
        raw = _wire(hb, parts.body_bytes, identity.sign(fake, "envelope", hb))
        prev = entry["id"] = split(raw).id
        entry["envelope"] = raw.hex()


ATTACKS: dict[str, tuple[Callable[[World, dict[str, Any]], None], str, str]] = {
    # name: (edit, where the first problem must point, what it must say)
    "edited body": (_edit_body, "EUCOM chain, entry 2", "body does not match the hash its header signs"),
    "edited body with its hash": (_edit_body_and_hash, "NDMC chain, entry 2", "signature does not verify"),
    "deleted entry": (_delete, "EUCOM chain, entry 3", "seq 3 is missing: the entry before seq 4 was deleted"),
    "swapped entries": (_swap, "NDMC chain, entry 2", "holds seq 3, and seq 2 comes later: entries were swapped"),
    "swapped envelopes": (_swap_bytes_only, "NDMC chain, entry 2", "stored as seq 2 but signed as seq 3"),
    "changed seq": (_renumber, "EUCOM chain, entry 3", "stored as seq 9 but signed as seq 3"),
    "changed last seq": (_renumber_last, "EUCOM chain, entry 7", "stored as seq 70 but signed as seq 7"),
    "changed id": (_edit_id, "NDMC chain, entry 4", "is not the envelope's id"),
    "forged signature": (_forge_signature, "EUCOM chain, entry 3", "signature does not verify"),
    "altered checkpoint": (_alter_checkpoint, "checkpoint 1", "altered or forged checkpoint"),
    "altered cosign": (_alter_cosign, "checkpoint 1", "altered or forged checkpoint"),
    "deleted checkpoint": (_drop_first_checkpoint, "checkpoint 2", "does not extend the previous checkpoint"),
    "altered receipt": (_alter_receipt, "receipt 3", "signature does not verify"),
    "moved to another line": (_other_line, "chain, entry 1", "belongs to line"),
    "substituted key certificate": (_substitute_key, "NDMC (name not certified) key certificate", "not signed by"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_tampering_fails_naming_the_entry(world: World, attack: str) -> None:
    edit, where, what = ATTACKS[attack]
    bundle = world.bundle()
    edit(world, bundle)
    report = verify_bundle(bundle, world.fps)
    problem = _first(report)
    assert where in problem and what in problem, problem
    summary = report.summary()
    assert summary[0].startswith("PROBLEM: ") and any(s.startswith("FAILED: ") for s in summary)


def test_substituted_key_leaves_nothing_of_that_chain_verified(world: World) -> None:
    bundle = world.bundle()
    _substitute_key(world, bundle)
    report = verify_bundle(bundle, world.fps)
    assert report.line_report is not None and report.line_report.chain_sizes[world.b] == 0
    assert any("never certified (substituted key?)" in str(p) for p in report.all_problems)


def _blobs(bundle: dict[str, Any]) -> list[tuple[list[Any] | dict[str, Any], int | str]]:
    """Every signed object in a bundle, as (container, key) of its hex string."""
    out: list[tuple[list[Any] | dict[str, Any], int | str]] = []
    for s in bundle["stations"]:
        out += [(c, k) for c in s["certs"] for k in ("data", "sig")]
        out += [(e, "envelope") for e in s["chain"]]
    out += [(bundle["receipts"], i) for i in range(len(bundle["receipts"]))]
    out += [(c, k) for c in bundle["checkpoints"] for k in ("proposal", "cosign")]
    return out


def test_any_single_flipped_bit_in_any_signed_object_fails(world: World) -> None:
    rng = random.Random(4)
    bundle = world.bundle()
    blobs = _blobs(bundle)
    assert len(blobs) > 30
    for i in range(len(blobs)):
        for _ in range(3):
            tampered = copy.deepcopy(bundle)
            container, key = _blobs(tampered)[i]
            raw = bytearray(bytes.fromhex(container[key]))  # type: ignore[index]
            bit = rng.randrange(len(raw) * 8)
            raw[bit // 8] ^= 1 << (bit % 8)
            container[key] = raw.hex()  # type: ignore[index]
            report = verify_bundle(tampered, world.fps)
            assert not report.ok, f"bit {bit} of {key} in blob {i} flipped unnoticed"


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda b: b.update(format="redline-bundle/2"), "bundle: format is 'redline-bundle/2'"),
        (lambda b: b.update(extra=1), "unexpected fields ['extra']"),
        (lambda b: b["stations"][0]["chain"][1].update(envelope="ABCD"), "bundle stations[0].chain[1] envelope"),
        (lambda b: b["stations"][1]["chain"][0].update(envelope="abc"), "bundle stations[1].chain[0] envelope"),
        (lambda b: b["stations"].pop(), "bundle stations: holds 1 stations"),
        (lambda b: b["stations"].reverse(), "not two different stations in fingerprint order"),
        (lambda b: b["checkpoints"][0].pop("cosign"), "bundle checkpoints[0]: missing fields ['cosign']"),
        (lambda b: b.update(exported_by="0" * 64), "bundle exported_by"),
    ],
)
def test_malformed_bundle_fails_naming_the_place(
    world: World, edit: Callable[[dict[str, Any]], Any], where: str
) -> None:
    bundle = world.bundle()
    edit(bundle)
    assert where in _first(verify_bundle(bundle, world.fps))


def test_not_a_bundle_at_all(world: World) -> None:
    assert "is not a JSON object" in _first(verify_bundle([1, 2], world.fps))


# -- a cut tail and a split view, found with the other side's checkpoint ------------------------------


def test_bundle_is_consistent_with_the_checkpoint_it_holds_and_a_later_one(world: World) -> None:
    bundle = world.bundle()
    same = _ok(verify_bundle(bundle, world.fps, world.cp_early.signed))
    assert same.consistency is not None and [c.state for c in same.consistency.chains] == ["consistent"] * 2
    later = _ok(verify_bundle(bundle, world.fps, world.cp_mid.signed))
    assert later.consistency is not None
    assert {c.station: c.checkpoint_size for c in later.consistency.chains} == {world.a: 7, world.b: 5}
    summary = later.summary()
    assert any("covers EUCOM 1..7, NDMC 1..5: the bundle is consistent with it" in s for s in summary), summary
    assert "so the co-signed prefix extends to EUCOM 1..7, NDMC 1..5" in summary


def test_old_bundle_against_a_later_checkpoint_is_found_cut(world: World) -> None:
    report = verify_bundle(world.bundle(), world.fps, world.cp_late.signed)
    assert report.line_report is not None and report.line_report.ok  # the bundle itself is intact
    problems = [str(p) for p in report.all_problems]
    assert (
        "the bundle's tail was cut: the other side holds a checkpoint over 8 envelopes of EUCOM, the bundle has 7"
        in problems[0]
    )
    assert "over 6 envelopes of NDMC, the bundle has 5" in problems[1]
    assert report.consistency is not None and {c.state for c in report.consistency.chains} == {"cut"}
    assert any("the bundle is NOT consistent with it" in s for s in report.summary())


def _cut_cleanly(w: World, bundle: dict[str, Any], station: str, drop: int) -> None:
    """Cut the newest ``drop`` envelopes of ``station`` the way a careful forger would: with every
    later envelope of the other side that saw them, and every receipt and checkpoint that would
    betray them. What is left is a valid transcript, only shorter."""
    keep = {station: len(_entries(bundle, station)) - drop}
    other = w.b if station == w.a else w.a
    chain = _entries(bundle, other)
    seen = [_header(bytes.fromhex(e["envelope"]))["seen"]["seq"] for e in chain]
    keep[other] = next((i for i, s in enumerate(seen) if s > keep[station]), len(chain))
    for fp, n in keep.items():
        del _entries(bundle, fp)[n:]
    bundle["receipts"] = [
        r for r in bundle["receipts"]
        if (rc := Receipt.peek(Signed.decode(bytes.fromhex(r)))).seq <= keep[rc.of]
    ]  # fmt: skip
    bundle["checkpoints"] = [
        c for c in bundle["checkpoints"]
        if all(h.size <= keep[h.station] for h in Checkpoint.peek(Signed.decode(bytes.fromhex(c["proposal"]))).heads)
    ]  # fmt: skip


@pytest.mark.parametrize(("station", "drop"), [("EUCOM", 1), ("EUCOM", 3), ("NDMC", 2)])
def test_cut_tail_is_found_given_the_other_sides_checkpoint(world: World, station: str, drop: int) -> None:
    fp = world.a if station == "EUCOM" else world.b
    bundle = world.bundle(world.final_a)
    held = len(_entries(bundle, fp))
    _cut_cleanly(world, bundle, fp, drop)
    # Alone, the shortened bundle proves what it holds and nothing is wrong with it: that is why a
    # checkpoint from outside is needed...
    alone = _ok(verify_bundle(bundle, world.fps))
    assert alone.line_report is not None and alone.line_report.chain_sizes[fp] == held - drop
    # ...and with it, the cut is found.
    report = verify_bundle(bundle, world.fps, world.cp_late.signed)
    cut = (
        f"the bundle's tail was cut: the other side holds a checkpoint over {held} envelopes of {station}, "
        f"the bundle has {held - drop}"
    )
    assert not report.ok and any(cut in str(p) for p in report.all_problems), report.summary()


def _resign_checkpoint(w: World, cp: CheckpointFile, **changes: Any) -> tuple[Signed, Signed]:
    """A checkpoint both stations really signed (the test holds both signing keys), with changes."""
    keys = {w.a: w.keys_a, w.b: w.keys_b}
    proposal = dataclasses.replace(Checkpoint.peek(cp.proposal), **changes)
    signed = proposal.sign(keys[proposal.by].signing)
    other = w.b if proposal.by == w.a else w.a
    cosign = Cosign(
        line=proposal.line, checkpoint=signed.digest(Checkpoint.DOMAIN), by=other, key=keys[other].key_id, time=1
    ).sign(keys[other].signing)
    return signed, cosign


def test_split_view_is_found_from_a_checkpoint_with_another_root(world: World) -> None:
    cp = Checkpoint.peek(world.cp_mid.proposal)
    heads = tuple(dataclasses.replace(h, root="ab" * 32) if h.station == world.b else h for h in cp.heads)
    report = verify_bundle(world.bundle(), world.fps, _resign_checkpoint(world, world.cp_mid, heads=heads))
    problem = _first(report)
    assert "SPLIT VIEW: the checkpoint's tree head of NDMC at size 5 is not a prefix of the bundle's chain" in problem
    assert report.consistency is not None
    assert {c.name: c.state for c in report.consistency.chains} == {"EUCOM": "consistent", "NDMC": "split"}


def test_split_view_is_found_when_the_exporter_rewrites_its_own_tail(world: World) -> None:
    # EUCOM holds its own signing key, so it can re-sign a different story for its one-sided tail
    # (no checkpoint covers it and NDMC never cited it) and drop NDMC's receipts that name the
    # originals. The bundle is then valid on its own; NDMC's later checkpoint shows the split.
    bundle = world.bundle()
    prev = _entries(bundle, world.a)[4]["id"]
    for entry in _entries(bundle, world.a)[5:]:
        raw = bytes.fromhex(entry["envelope"])
        header = _header(raw)
        body = canonical.encode({"content": {"text": "nothing to report"}, "salt": "00" * 16})
        header["body"], header["prev"] = hashlib.sha256(body).hexdigest(), prev
        hb = canonical.encode(header)
        new = _wire(hb, body, identity.sign(world.keys_a.signing, "envelope", hb))
        prev = entry["id"] = split(new).id
        entry["envelope"] = new.hex()
    bundle["receipts"] = [
        r for r in bundle["receipts"]
        if not ((rc := Receipt.peek(Signed.decode(bytes.fromhex(r)))).of == world.a and rc.seq >= 6)
    ]  # fmt: skip
    _ok(verify_bundle(bundle, world.fps))
    problem = _first(verify_bundle(bundle, world.fps, world.cp_mid.signed))
    assert "SPLIT VIEW: the checkpoint's tree head of EUCOM at size 7" in problem
    assert "the proof does not lead to the old root" in problem or "different roots" in problem


def test_a_checkpoint_numbered_like_the_bundles_but_different_is_a_split_view(world: World) -> None:
    bundle = world.bundle()
    n = Checkpoint.peek(world.cp_early.proposal).n
    forged = _resign_checkpoint(world, world.cp_early, time=Checkpoint.peek(world.cp_early.proposal).time + 1)
    assert f"SPLIT VIEW: both stations signed a different checkpoint {n}" in _first(
        verify_bundle(bundle, world.fps, forged)
    )


def test_altered_checkpoint_given_is_refused(world: World) -> None:
    proposal, cosign = world.cp_late.signed
    bad = Signed(proposal.data, proposal.sig[:-1] + bytes([proposal.sig[-1] ^ 1]))
    problem = _first(verify_bundle(world.bundle(), world.fps, (bad, cosign)))
    assert "checkpoint" in problem and "given" in problem and "altered or forged checkpoint" in problem


def test_checkpoint_signed_by_an_unknown_key_is_refused(world: World) -> None:
    stranger = nacl.signing.SigningKey.generate()
    cp = Checkpoint.peek(world.cp_late.proposal)
    forged = dataclasses.replace(cp, key=identity.key_id(bytes(stranger.verify_key))).sign(stranger)
    problem = _first(verify_bundle(world.bundle(), world.fps, (forged, world.cp_late.cosign)))
    assert "neither trusted root certified" in problem


def test_checkpoint_of_another_line_is_refused(world: World) -> None:
    other = _resign_checkpoint(world, world.cp_mid, line="e" * 32)
    assert "is for line eeeeeeee, not this bundle's line" in _first(verify_bundle(world.bundle(), world.fps, other))


# -- redaction ----------------------------------------------------------------------------------------


def _body_of(data: LineData, fp: str, seq: int) -> bytes:
    body = split(data.chains[fp][seq - 1].raw).body_bytes
    assert body is not None
    return body


def test_redacted_body_keeps_the_bundle_valid_and_is_gone_from_the_file(world: World, tmp_path: Path) -> None:
    target = world.early_a.chains[world.b][1]  # NDMC seq 2: "NDMC routine 1"
    body = _body_of(world.early_a, world.b, 2)
    assert b"NDMC routine 1" in body
    bundle = world.bundle(redact=(target.id[:10],))
    path = tmp_path / "redacted.json"
    write_bundle(path, bundle)
    text = path.read_text()
    assert body.hex() not in text and b"NDMC routine 1".hex() not in text and "NDMC routine 1" not in text
    report = _ok(verify_bundle(read_bundle(path), world.fps))
    assert report.redacted == [target.id]
    assert report.line_report is not None and report.line_report.chain_sizes == {world.a: 7, world.b: 5}
    assert f"1 body redacted (id {target.id[:12]}) — its hash is still covered by the signature" in report.summary()
    # The one who holds the body can still show it is the one that was signed.
    assert hashlib.sha256(body).hexdigest() == _header(target.raw)["body"]


def test_redacting_several_bodies_by_full_id(world: World) -> None:
    ids = {world.early_a.chains[world.a][i].id for i in (0, 4)} | {world.early_a.chains[world.b][2].id}
    report = _ok(verify_bundle(world.bundle(redact=tuple(ids)), world.fps))
    assert set(report.redacted) == ids
    assert any(s.startswith("3 bodies redacted") for s in report.summary())


def test_redacting_then_editing_another_body_fails(world: World) -> None:
    bundle = world.bundle(redact=(world.early_a.chains[world.b][1].id,))
    _edit_body(world, bundle)
    problem = _first(verify_bundle(bundle, world.fps))
    assert "EUCOM chain, entry 2" in problem and "body does not match the hash its header signs" in problem


def test_a_body_put_back_must_be_the_one_signed(world: World) -> None:
    target = world.early_a.chains[world.b][1]
    bundle = world.bundle(redact=(target.id,))
    parts = split(_env(bundle, world.b, 2))
    wrong = canonical.encode({"content": {"text": "NDMC routine 7"}, "salt": "00" * 16})
    _set_env(bundle, world.b, 2, _wire(parts.header_bytes, wrong, parts.sig))
    assert "NDMC chain, entry 2" in _first(verify_bundle(bundle, world.fps))
    _set_env(bundle, world.b, 2, _wire(parts.header_bytes, _body_of(world.early_a, world.b, 2), parts.sig))
    assert _ok(verify_bundle(bundle, world.fps)).redacted == []


@pytest.mark.parametrize(
    ("wanted", "message"),
    [("0123456789abcdef", "no envelope with that id"), ("abc", "at least its first 8 hex digits"),
     ("not-hex-at-all", "at least its first 8 hex digits")],
)  # fmt: skip
def test_redacting_an_unknown_id_is_refused(world: World, wanted: str, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        world.bundle(redact=(wanted,))


# -- files ---------------------------------------------------------------------------------------------


def test_bundle_round_trips_through_a_file(world: World, tmp_path: Path) -> None:
    bundle = world.bundle()
    path = tmp_path / "line.bundle.json"
    write_bundle(path, bundle)
    assert read_bundle(path) == bundle
    assert json.loads(path.read_text())["format"] == BUNDLE_FORMAT
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    _ok(verify_bundle(read_bundle(path), world.fps))


def test_checkpoint_file_round_trips_and_checks_the_bundle(world: World, tmp_path: Path) -> None:
    path = tmp_path / "ndmc.checkpoint.json"
    write_bundle(path, export_checkpoint(world.final_a, world.b, exported_at=EXPORTED_AT))
    cp = parse_checkpoint(read_bundle(path))
    assert cp.signed == world.final_a.checkpoints[-1][1:]
    assert cp.certs[world.b] == world.final_a.certs[world.b]
    _ok(verify_bundle(world.bundle(world.final_a), world.fps, cp.signed, other_certs=cp.certs))
    with pytest.raises(BundleError, match="format is"):
        parse_checkpoint({**read_bundle(path), "format": BUNDLE_FORMAT})


def test_line_without_checkpoints_has_none_to_export(world: World) -> None:
    with pytest.raises(BundleError, match="no co-signed checkpoint yet"):
        export_checkpoint(dataclasses.replace(world.early_a, checkpoints=[]), world.a, exported_at=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [('{"a": 1, "a": 2}', "appears twice"), ("[1]", "does not hold a JSON object"), ("{nope", "is not JSON"),
     ('{"a": NaN}', "NaN is not a JSON number"), ('{"format": ' + DEEP + "}", "nested more than 64 levels"),
     ('{"format": ' + "[" * 100 + "]" * 100 + "}", "nested more than 64 levels")],
)  # fmt: skip
def test_unreadable_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(BundleError, match=message):
        read_bundle(path)


def test_a_bundle_with_a_byte_order_mark_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf{}")
    with pytest.raises(BundleError, match="byte order mark"):
        read_bundle(path)


@pytest.mark.parametrize(
    ("text", "keys"), [("\ufeff{}", 2), ('{"a": 1, "a": 2}', 2), ("{nope", 2), ("{}", 1), ("{}", 3), (DEEP, 2)]
)
def test_input_errors_exit_1_and_say_so_in_one_line(tmp_path: Path, text: str, keys: int) -> None:
    """Exit codes as BUNDLE.md says: 1 for an input error (a BOM, a member twice, not JSON, nested
    past Python's recursion limit, not exactly two fingerprints), never a traceback; 2 is kept for
    a problem found in a bundle."""
    path = tmp_path / "in.json"
    path.write_text(text, encoding="utf-8")
    out = _rl("verify", "--bundle", str(path), *(["--key", "ab" * 32] * keys), cwd=tmp_path)
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read"):
        read_bundle(tmp_path / "nothing.json")


def test_a_bundle_read_stops_at_its_size_limit_even_without_a_size(tmp_path: Path) -> None:
    """read_bundle checked st_size, which is 0 for a pipe or a device: a pipe was read whole
    whatever its length. Now anything is refused as soon as it passes the limit."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def write() -> None:
        with contextlib.suppress(BrokenPipeError):  # the reader stops and closes its end
            fifo.write_bytes(b" " * (3 << 20))

    writer = threading.Thread(target=write)
    writer.start()
    with pytest.raises(BundleError, match="holds more than the 1048576-byte limit"):
        read_bundle(fifo, max_bytes=1 << 20)
    writer.join(5)
    assert not writer.is_alive()
    big = tmp_path / "big.json"
    big.write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(BundleError, match="over the 1048576-byte limit"):
        read_bundle(big, max_bytes=1 << 20)


def test_verify_bundle_of_dev_zero_is_one_line_not_a_read_without_end(tmp_path: Path) -> None:
    """'verify --bundle /dev/zero' read until memory ran out (size 0 to stat). A device is refused
    unread. Run with its address space held to 2 GiB, so that before the fix it fails here
    (MemoryError) instead of taking the machine's memory."""
    import resource

    cap = functools.partial(resource.setrlimit, resource.RLIMIT_AS, (2 << 30, 2 << 30))
    out = subprocess.run([sys.executable, "-m", "redline", "verify", "--bundle", "/dev/zero", "--key", "ab" * 32,
                          "--key", "cd" * 32], capture_output=True, text=True, timeout=60, preexec_fn=cap)  # fmt: skip
    assert out.returncode == 1 and out.stderr.strip() == "error: /dev/zero is a device, not a bundle file", out.stderr


def test_bundle_is_unchanged_by_verification(world: World) -> None:
    bundle = world.bundle()
    before = copy.deepcopy(bundle)
    verify_bundle(bundle, world.fps, world.cp_late.signed)
    assert bundle == before


# -- the command line (runs once `redline export` and `verify --bundle` are in redline/cli.py) ------------


def _rl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env, timeout=60, cwd=cwd
    )


def _cli_has_bundles() -> bool:
    from redline.cli import main

    return "export" in getattr(main, "commands", {})


@pytest.mark.skipif(not _cli_has_bundles(), reason="redline/cli.py has no export command yet")
def test_cli_export_and_verify_on_another_machine(world: World, tmp_path: Path) -> None:
    redact = world.final_a.chains[world.b][1].id
    out = _rl("export", world.line[:8], "--station", str(world.dir_a), "--out", "b.json", "--redact", redact[:12],
              cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 body redacted" in out.stdout and f"--key {world.b}" in out.stdout
    out = _rl("export", "EUCOM", "--station", str(world.dir_b), "--checkpoint", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    (cp,) = tmp_path.glob("*.checkpoint.json")
    # The verifier needs no station: only the two files and the fingerprints.
    keys = ["--key", world.a, "--key", identity.show_fingerprint(world.b)]
    good = _rl("verify", "--bundle", "b.json", *keys, "--checkpoint", cp.name, cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("VERIFIED") and "the bundle is consistent with it" in good.stdout
    as_json = json.loads(_rl("verify", "--bundle", "b.json", *keys, "--json", cwd=tmp_path).stdout)
    assert as_json["ok"] and as_json["redacted"] == [redact]

    third = identity.fingerprint(bytes(nacl.signing.SigningKey.generate().verify_key))
    wrong = _rl("verify", "--bundle", "b.json", "--key", world.a, "--key", third, cwd=tmp_path)
    assert wrong.returncode == 2 and "station 'NDMC'" in wrong.stdout and "NOT VERIFIED" in wrong.stdout
    few = _rl("verify", "--bundle", "b.json", "--key", world.a, cwd=tmp_path)
    assert few.returncode == 1 and "--key FINGERPRINT --key FINGERPRINT" in few.stderr

    bundle = read_bundle(tmp_path / "b.json")
    del _entries(bundle, world.a)[1]
    write_bundle(tmp_path / "cut.json", bundle)
    bad = _rl("verify", "--bundle", "cut.json", *keys, cwd=tmp_path)
    assert bad.returncode == 2 and "EUCOM chain, entry 2: seq 2 is missing" in bad.stdout
