"""The one trust gate (redline/gate.py), attacked through all three of its users.

Each attack below is a well-signed item a dishonest peer (or a bundle forger) can make. Each is
run against the live session (two in-memory stations, real keys and ledgers: the item arrives as
a frame), against ``verify_line`` over a store's bytes, and against bundle verification. A rule
accepted live but refused by ``verify`` (the drift the review found) fails here by construction:
the same attack must be refused, with the same error class, at all three, and the live station's
trusted state must be unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from redline import errors
from redline.bundle import build_bundle, verify_bundle
from redline.envelope import Envelope, seal, split
from redline.gate import TrustedLine
from redline.ledger.verify import LineData, StoredRow, verify_line
from redline.protocol.framing import FrameType, encode_frame
from redline.statements import Checkpoint, Cosign, Head, Receipt, Signed
from redline.testing import SessionPair


@pytest.fixture
def sp(tmp_path: Any) -> Iterator[SessionPair]:
    """EUCOM (a) and NDMC (b) after traffic both ways, with a co-signed checkpoint."""
    pair = SessionPair(tmp_path)
    pair.run()
    for i in range(3):
        pair.send("a", f"EUCOM {i}")
        pair.send("b", f"NDMC {i}")
        pair.run()
    pair.send("a", "flash", kind="FLASH", prio="FLASH")  # operational: a checkpoint follows
    pair.run()
    pair.tick(1.5)
    pair.run()
    assert pair.a.ledger.last_checkpoint(pair.line) is not None
    yield pair
    pair.close()


@dataclass
class Attack:
    """What a dishonest NDMC sends EUCOM: a frame (live) and the same item in a transcript."""

    frame: tuple[FrameType, bytes]
    add: Callable[[LineData], LineData]  # the transcript EUCOM would hold had it accepted the item
    error: type[errors.VerificationError]
    words: str  # what the verify/bundle report says


def b_keys(sp: SessionPair) -> Any:
    return sp.dir_b.load_keys()


def next_b(sp: SessionPair, **override: Any) -> Envelope:
    """NDMC's next envelope, properly linked unless ``override`` says otherwise."""
    keys = b_keys(sp)
    seq, prev = sp.a.ledger.head(sp.line, sp.b.us)
    our_seq, our_id = sp.a.ledger.head(sp.line, sp.a.us)
    fields: dict[str, Any] = {
        "line": sp.line, "sender": keys.fingerprint, "key": keys.key_id, "seq": seq + 1, "sent_at": sp.clock.wall,
        "kind": "TEXT", "prio": "ROUTINE", "prev": prev, "seen_seq": our_seq, "seen_id": our_id, "lang": "ru",
        "content": {"text": "forged"}, "salt": os.urandom(16),
    }  # fmt: skip
    fields.update(override)
    return seal(keys.signing, **fields)


def with_envelope(env: Envelope) -> Callable[[LineData], LineData]:
    def add(data: LineData) -> LineData:
        chains = dict(data.chains)
        chains[env.header.sender] = [*chains[env.header.sender], StoredRow(env.seq, env.id, env.encode())]
        return dataclasses.replace(data, chains=chains)

    return add


def with_receipt(signed: Signed) -> Callable[[LineData], LineData]:
    return lambda data: dataclasses.replace(data, receipts=[*data.receipts, signed])


def attack_seen_id(sp: SessionPair) -> Attack:
    env = next_b(sp, seen_id="ab" * 32)
    return Attack((FrameType.ENVELOPE, env.encode()), with_envelope(env), errors.SeenIdError, "with an id that is not")


def attack_seen_backwards(sp: SessionPair) -> Attack:
    first = split(sp.a.ledger.raw_envelope(sp.line, sp.a.us, 1)).id
    env = next_b(sp, seen_seq=1, seen_id=first)
    return Attack((FrameType.ENVELOPE, env.encode()), with_envelope(env), errors.SeenBackwardsError, "seen goes back")


def attack_seen_beyond(sp: SessionPair) -> Attack:
    env = next_b(sp, seen_seq=sp.a.ledger.head(sp.line, sp.a.us)[0] + 5, seen_id="cd" * 32)
    return Attack((FrameType.ENVELOPE, env.encode()), with_envelope(env), errors.SeenBeyondError, "does not hold")


def attack_prev(sp: SessionPair) -> Attack:
    env = next_b(sp, prev="ef" * 32)
    return Attack((FrameType.ENVELOPE, env.encode()), with_envelope(env), errors.PrevLinkError, "previous envelope")


def attack_other_line(sp: SessionPair) -> Attack:
    env = next_b(sp, line="12" * 16)
    return Attack((FrameType.ENVELOPE, env.encode()), with_envelope(env), errors.WrongLineError, "another line")


def _receipt(sp: SessionPair, **override: Any) -> Signed:
    keys = b_keys(sp)
    seq, eid = sp.a.ledger.head(sp.line, sp.a.us)
    fields: dict[str, Any] = {"line": sp.line, "by": keys.fingerprint, "key": keys.key_id, "of": sp.a.us,
                              "seq": seq, "id": eid, "received_at": sp.clock.wall}  # fmt: skip
    fields.update(override)
    return Receipt(**fields).sign(keys.signing)


def attack_receipt_mismatch(sp: SessionPair) -> Attack:
    # EUCOM signs one more, so the receipt is for a seq NDMC has not receipted yet
    sp.send("a", "one more")
    sp.flush()
    seq = sp.a.ledger.head(sp.line, sp.a.us)[0]
    signed = _receipt(sp, seq=seq, id="99" * 32)
    return Attack((FrameType.RECEIPT, signed.encode()), with_receipt(signed), errors.ReceiptMismatchError,
                  "receipted a different envelope")  # fmt: skip


def attack_self_receipt(sp: SessionPair) -> Attack:
    seq, eid = sp.a.ledger.head(sp.line, sp.b.us)
    signed = _receipt(sp, of=sp.b.us, seq=seq, id=eid)
    return Attack((FrameType.RECEIPT, signed.encode()), with_receipt(signed), errors.SelfReceiptError,
                  "its own chain")  # fmt: skip


def _checkpoint_pair(
    sp: SessionPair, n_delta: int, prev: str | None = "same", *, size_delta: int = 0, root: str | None = None
) -> tuple[Signed, Signed]:
    """A checkpoint over what is held, proposed by NDMC and countersigned... by NDMC's forger, who
    holds only NDMC's key: for the transcript users it comes with a real EUCOM cosign made by the
    test (what a forged store would hold)."""
    ka, kb = sp.dir_a.load_keys(), b_keys(sp)
    n_last, last, _ = sp.a.ledger.last_checkpoint(sp.line)  # type: ignore[misc]
    heads = []
    for fp in sorted((sp.a.us, sp.b.us)):
        held = sp.a.ledger.head(sp.line, fp)[0]
        size = held + size_delta if fp == sp.a.us else held  # the forger's changes are to EUCOM's chain
        tree_root = sp.a.ledger.log(sp.line, fp).root(min(size, held)).hex()  # a true root where one exists
        if fp == sp.a.us and root is not None:
            tree_root = root
        heads.append(Head(station=fp, size=size, root=tree_root))
    cp = Checkpoint(
        line=sp.line, n=n_last + n_delta, prev=last.digest(Checkpoint.DOMAIN) if prev == "same" else prev,
        heads=(heads[0], heads[1]), by=kb.fingerprint, key=kb.key_id, time=sp.clock.wall,
    ).sign(kb.signing)  # fmt: skip
    cs = Cosign(line=sp.line, checkpoint=cp.digest(Checkpoint.DOMAIN), by=ka.fingerprint, key=ka.key_id,
                time=sp.clock.wall).sign(ka.signing)  # fmt: skip
    return cp, cs


def attack_checkpoint_skips_a_number(sp: SessionPair) -> Attack:
    cp, cs = _checkpoint_pair(sp, 2)
    return Attack((FrameType.CHECKPOINT, cp.encode()),
                  lambda d: dataclasses.replace(d, checkpoints=[*d.checkpoints, (Checkpoint.peek(cp).n, cp, cs)]),
                  errors.CheckpointNumberError, "does not extend the previous checkpoint")  # fmt: skip


def attack_checkpoint_breaks_the_chain(sp: SessionPair) -> Attack:
    cp, cs = _checkpoint_pair(sp, 1, prev="77" * 32)
    return Attack((FrameType.CHECKPOINT, cp.encode()),
                  lambda d: dataclasses.replace(d, checkpoints=[*d.checkpoints, (Checkpoint.peek(cp).n, cp, cs)]),
                  errors.CheckpointChainError, "does not extend the previous checkpoint")  # fmt: skip


def _with_checkpoint(cp: Signed, cs: Signed) -> Callable[[LineData], LineData]:
    return lambda d: dataclasses.replace(d, checkpoints=[*d.checkpoints, (Checkpoint.peek(cp).n, cp, cs)])


def attack_checkpoint_split_view(sp: SessionPair) -> Attack:
    """NDMC proposes a tree head over EUCOM's chain that is not the chain EUCOM holds."""
    cp, cs = _checkpoint_pair(sp, 1, root="66" * 32)
    return Attack((FrameType.CHECKPOINT, cp.encode()), _with_checkpoint(cp, cs), errors.SplitViewError, "split view")


def attack_checkpoint_covers_more_than_held(sp: SessionPair) -> Attack:
    cp, cs = _checkpoint_pair(sp, 1, size_delta=5)
    return Attack((FrameType.CHECKPOINT, cp.encode()), _with_checkpoint(cp, cs), errors.CheckpointCoverageError,
                  "envelopes of EUCOM but only")  # fmt: skip


def attack_checkpoint_shrinks_a_chain(sp: SessionPair) -> Attack:
    """A true tree head, but of a shorter prefix of EUCOM's chain than the last checkpoint covered."""
    cp, cs = _checkpoint_pair(sp, 1, size_delta=-1)
    return Attack((FrameType.CHECKPOINT, cp.encode()), _with_checkpoint(cp, cs), errors.CheckpointShrinkError,
                  "shrinks")  # fmt: skip


def attack_seq_gap(sp: SessionPair) -> Attack:
    """NDMC skips a seq: the next envelope claims seq + 2 (its prev the last one held)."""
    seq = sp.a.ledger.head(sp.line, sp.b.us)[0]
    env = next_b(sp, seq=seq + 2)
    return Attack((FrameType.ENVELOPE, env.encode()), with_envelope(env), errors.SeqOrderError, "seq")


def attack_unknown_key(sp: SessionPair) -> Attack:
    """An envelope signed by a key NDMC's pinned root never certified (a substituted key)."""
    from nacl.signing import SigningKey

    rogue = SigningKey.generate()
    env = next_b(sp)
    forged = seal(rogue, **{**_fields_of(env), "key": "ee" * 16})
    return Attack((FrameType.ENVELOPE, forged.encode()), with_envelope(forged), errors.UnknownKeyError,
                  "never certified")  # fmt: skip


def _altered(sp: SessionPair, env: Envelope, raw: bytes) -> Callable[[LineData], LineData]:
    def add(data: LineData) -> LineData:
        chains = dict(data.chains)
        chains[sp.b.us] = [*chains[sp.b.us], StoredRow(env.seq, env.id, raw)]
        return dataclasses.replace(data, chains=chains)

    return add


def attack_body_altered_after_signing(sp: SessionPair) -> Attack:
    """NDMC's own key, but the body is not the one the signed header's hash names ("A" -> "B")."""
    env = next_b(sp, content={"text": "forged A"})
    raw = bytearray(env.encode())
    raw[bytes(raw).rindex(b"forged A") + len("forged ")] ^= 0x03
    return Attack((FrameType.ENVELOPE, bytes(raw)), _altered(sp, env, bytes(raw)), errors.EncodingError,
                  "body does not match")  # fmt: skip


def attack_forged_signature(sp: SessionPair) -> Attack:
    """The right header and body under a signature NDMC's key did not make (its last byte changed)."""
    env = next_b(sp)
    raw = env.encode()[:-1] + bytes([env.encode()[-1] ^ 0x01])
    return Attack((FrameType.ENVELOPE, raw), _altered(sp, env, raw), errors.SignatureError, "signature")


def attack_receipt_beyond_chain(sp: SessionPair) -> Attack:
    seq = sp.a.ledger.head(sp.line, sp.a.us)[0]
    signed = _receipt(sp, seq=seq + 3, id="88" * 32)
    return Attack((FrameType.RECEIPT, signed.encode()), with_receipt(signed), errors.ReceiptBeyondChainError,
                  "which the transcript does not hold")  # fmt: skip


def _fields_of(env: Envelope) -> dict[str, Any]:
    h = env.header
    return {
        "line": h.line, "sender": h.sender, "key": h.key, "seq": h.seq, "sent_at": h.sent_at, "kind": h.kind,
        "prio": h.prio, "prev": h.prev, "seen_seq": h.seen_seq, "seen_id": h.seen_id, "lang": h.lang,
        "content": {"text": "forged"}, "salt": os.urandom(16),
    }  # fmt: skip


ATTACKS = [
    attack_seen_id, attack_seen_backwards, attack_seen_beyond, attack_prev, attack_other_line,
    attack_receipt_mismatch, attack_self_receipt, attack_receipt_beyond_chain, attack_checkpoint_skips_a_number,
    attack_checkpoint_breaks_the_chain, attack_checkpoint_split_view, attack_checkpoint_covers_more_than_held,
    attack_checkpoint_shrinks_a_chain, attack_unknown_key, attack_body_altered_after_signing,
    attack_forged_signature,
]  # fmt: skip


def trusted_state(sp: SessionPair) -> tuple[Any, ...]:
    ledger, line = sp.a.ledger, sp.line
    return (
        ledger.head(line, sp.a.us), ledger.head(line, sp.b.us), ledger.latest_receipt(line, sp.b.us),
        [n for n, _, _ in ledger.checkpoints(line)], sp.a.gate.tails, sp.a.gate.seen, sp.a.gate.last_checkpoint,
        sp.a.receipted_seq,
    )  # fmt: skip


@pytest.mark.parametrize("make", ATTACKS, ids=lambda f: f.__name__)
def test_attack_is_refused_live_with_the_trusted_state_unchanged(sp: SessionPair, make: Any) -> None:
    attack = make(sp)
    before = trusted_state(sp)
    sp.alarms.clear()
    ftype, payload = attack.frame
    sp.a.receive("path0", encode_frame(ftype, payload), sp.clock.now, sp.clock.wall)
    sp.a.flush(sp.clock.wall)
    assert trusted_state(sp) == before
    assert [t for who, _, t in sp.alarms if who == "a"], "refused with an alarm"
    # the same rule, asked of the gate directly, raises the class named after it
    with pytest.raises(attack.error):
        _gate_accepts(sp.a.gate, ftype, payload, sp)
    # and the line still flows (the refusal closed the paths: they are dialled again)
    for path in sp.paths:
        sp.disconnect(path)
        sp.connect(path)
    sp.run()
    sp.send("b", "NDMC after the attack")
    sp.run()
    assert sp.a.ledger.head(sp.line, sp.b.us) == sp.b.ledger.head(sp.line, sp.b.us)


def test_a_seq_gap_is_held_not_stored_live_and_refused_by_verify_and_in_a_bundle(sp: SessionPair) -> None:
    """A skipped seq is not an attack on the wire (section 8.5: held, a GAP asked for, no alarm), but
    the gate never takes it out of order, and a transcript holding it fails verify and bundles."""
    attack = attack_seq_gap(sp)
    before = trusted_state(sp)
    ftype, payload = attack.frame
    sp.a.receive("path0", encode_frame(ftype, payload), sp.clock.now, sp.clock.wall)
    sp.a.flush(sp.clock.wall)
    assert trusted_state(sp) == before
    with pytest.raises(errors.SeqOrderError):
        _gate_accepts(sp.a.gate, ftype, payload, sp)
    roots = _roots(sp)
    data = attack.add(sp.a.ledger.line_data(sp.line, "EUCOM"))
    assert not verify_line(data, roots).ok
    assert not verify_bundle(build_bundle(data, roots, sp.a.us, exported_at=sp.clock.wall), sorted(roots)).ok


def _gate_accepts(gate: TrustedLine, ftype: FrameType, payload: bytes, sp: SessionPair) -> None:
    if ftype is FrameType.ENVELOPE:
        gate.accept_envelope(payload, sender=sp.b.us)
    elif ftype is FrameType.RECEIPT:
        gate.accept_receipt(Signed.decode(payload))
    else:
        gate.check_proposal(Signed.decode(payload))


def _roots(sp: SessionPair) -> dict[str, bytes]:
    ka, kb = sp.dir_a.load_keys(), b_keys(sp)
    return {ka.fingerprint: ka.root_public, kb.fingerprint: kb.root_public}


@pytest.mark.parametrize("make", ATTACKS, ids=lambda f: f.__name__)
def test_attack_in_a_store_is_found_by_verify(sp: SessionPair, make: Any) -> None:
    attack = make(sp)
    data = sp.a.ledger.line_data(sp.line, "EUCOM")
    assert verify_line(data, _roots(sp)).ok
    report = verify_line(attack.add(data), _roots(sp))
    assert not report.ok
    assert any(attack.words in str(p) for p in report.problems), [str(p) for p in report.problems]


@pytest.mark.parametrize("make", ATTACKS, ids=lambda f: f.__name__)
def test_attack_in_a_bundle_is_found_by_bundle_verification(sp: SessionPair, make: Any) -> None:
    attack = make(sp)
    roots = _roots(sp)
    fps = sorted(roots)
    data = attack.add(sp.a.ledger.line_data(sp.line, "EUCOM"))
    bundle = build_bundle(data, roots, sp.a.us, exported_at=sp.clock.wall)
    report = verify_bundle(bundle, fps)
    assert not report.ok
    assert any(attack.words in str(p) for p in report.all_problems), report.summary()


# -- bundle-only evidence rules ----------------------------------------------------------------------


def test_two_envelopes_of_two_lines_at_one_seq_cannot_frame_a_station(sp: SessionPair) -> None:
    """The same station's envelope at seq N of another line is not equivocation on this one."""
    roots = _roots(sp)
    data = sp.a.ledger.line_data(sp.line, "EUCOM")
    seq = 2
    held = data.chains[sp.b.us][seq - 1].raw
    elsewhere = next_b(sp, line="34" * 16, seq=seq, prev=split(data.chains[sp.b.us][0].raw).id)
    framed = dataclasses.replace(data, equivocations=[(sp.b.us, seq, held, elsewhere.encode())])
    report = verify_bundle(build_bundle(framed, roots, sp.a.us, exported_at=1), sorted(roots))
    assert not any("EQUIVOCATION" in str(p) for p in report.all_problems), report.summary()
    assert any("proves nothing" in str(p) for p in report.all_problems)


def test_equivocation_of_this_line_is_reported(sp: SessionPair) -> None:
    roots = _roots(sp)
    data = sp.a.ledger.line_data(sp.line, "EUCOM")
    held = data.chains[sp.b.us][1].raw
    other = next_b(sp, seq=2, prev=split(data.chains[sp.b.us][0].raw).id, content={"text": "the other history"})
    evidence = dataclasses.replace(data, equivocations=[(sp.b.us, 2, held, other.encode())])
    report = verify_line(evidence, roots)
    assert any("EQUIVOCATION" in str(p) for p in report.problems)


def test_receipt_contradicting_the_chain_is_kept_as_evidence_in_the_bundle(sp: SessionPair) -> None:
    roots = _roots(sp)
    seq = sp.a.ledger.head(sp.line, sp.a.us)[0]
    signed = _receipt(sp, seq=seq, id="99" * 32)
    data = with_receipt(signed)(sp.a.ledger.line_data(sp.line, "EUCOM"))
    report = verify_bundle(build_bundle(data, roots, sp.a.us, exported_at=1), sorted(roots))
    assert report.line_report is not None and report.line_report.evidence
    assert any(f"receipted a different envelope ({'99' * 6}) at EUCOM {seq}" in s for s in report.summary())


def test_a_later_outside_checkpoint_must_extend_the_bundles(sp: SessionPair) -> None:
    roots = _roots(sp)
    data = sp.a.ledger.line_data(sp.line, "EUCOM")
    bundle = build_bundle(data, roots, sp.a.us, exported_at=1)
    cp, cs = _checkpoint_pair(sp, 1, prev="55" * 32)  # the next number, not chained to the bundle's last
    report = verify_bundle(bundle, sorted(roots), (cp, cs))
    assert report.consistency is not None and not report.consistency.ok
    assert any("does not extend the bundle's checkpoints" in str(p) for p in report.consistency.problems)
    good_cp, good_cs = _checkpoint_pair(sp, 1)
    assert verify_bundle(bundle, sorted(roots), (good_cp, good_cs)).ok


# -- rules with no transcript form: each refused live (state unchanged), or found by verify and bundles --


def _refused_live(
    sp: SessionPair, ftype: FrameType, payload: bytes, error: type[errors.VerificationError], *, alarm: bool = True
) -> None:
    before = trusted_state(sp)
    sp.alarms.clear()
    sp.a.receive("path0", encode_frame(ftype, payload), sp.clock.now, sp.clock.wall)
    sp.a.flush(sp.clock.wall)
    assert trusted_state(sp) == before
    assert bool([t for who, _, t in sp.alarms if who == "a"]) is alarm
    with pytest.raises(error):
        _gate_accepts(sp.a.gate, ftype, payload, sp)


def test_our_own_envelope_reflected_back_by_the_peer_changes_nothing_and_is_not_the_peers(sp: SessionPair) -> None:
    """NDMC sends EUCOM one of EUCOM's own envelopes (validly signed, by EUCOM): a copy of what EUCOM
    holds, dropped without an alarm (section 8.5), and never the peer's to send (the gate's rule)."""
    seq = sp.a.ledger.head(sp.line, sp.a.us)[0]
    raw = sp.a.ledger.raw_envelope(sp.line, sp.a.us, seq)
    _refused_live(sp, FrameType.ENVELOPE, raw, errors.WrongSenderError, alarm=False)


def test_an_envelope_without_its_body_on_the_wire_is_refused(sp: SessionPair) -> None:
    """Only stored copies may be redacted (section 5.6): a body-less envelope on the wire is refused."""
    _refused_live(sp, FrameType.ENVELOPE, next_b(sp).redacted().encode(), errors.RedactedBodyError)


def test_a_checkpoint_countersigned_by_its_own_proposer_is_found_by_verify_and_in_a_bundle(sp: SessionPair) -> None:
    kb = b_keys(sp)
    cp, _ = _checkpoint_pair(sp, 1)
    own = Cosign(line=sp.line, checkpoint=cp.digest(Checkpoint.DOMAIN), by=kb.fingerprint, key=kb.key_id,
                 time=sp.clock.wall).sign(kb.signing)  # fmt: skip
    with pytest.raises(errors.CosignError):
        sp.a.gate.accept_checkpoint(cp, own)
    roots = _roots(sp)
    data = _with_checkpoint(cp, own)(sp.a.ledger.line_data(sp.line, "EUCOM"))
    report = verify_line(data, roots)
    assert not report.ok and any("countersigned" in str(p) for p in report.problems), report.problems
    bundle = verify_bundle(build_bundle(data, roots, sp.a.us, exported_at=sp.clock.wall), sorted(roots))
    assert not bundle.ok and any("countersigned" in str(p) for p in bundle.all_problems)
