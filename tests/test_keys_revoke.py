"""Revocation after a compromise (guarantee 6, issue 13): a REVOKE signed by the station's root names
the last checkpoint both sides co-signed before the compromise; everything the revoked key signed
after it is flagged "signed by a revoked key", at both ends, by ``verify`` and in every bundle (one
gate rule). Forged or malformed REVOKEs are refused live, by ``verify`` and in a bundle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from redline import errors, identity, revocation, rotation
from redline import keys as keyfiles
from redline.bundle import build_bundle, verify_bundle
from redline.envelope import split
from redline.gate import Flagged
from redline.ledger.verify import verify_line
from redline.protocol.framing import FrameType, encode_frame
from redline.statements import Checkpoint, Cosign, Receipt, Signed
from redline.testing import SessionPair, StationPair
from tests.test_keys import in_loop, next_b, refused_everywhere, root_of, roots


def cosigned(sp: SessionPair) -> list[tuple[int, Signed, Signed]]:
    return sp.a.ledger.checkpoints(sp.line)


def checkpoint_now(sp: SessionPair) -> int:
    """Let the pair co-sign a checkpoint over NDMC's chain as held now; its number."""
    size = sp.b.ledger.head(sp.line, sp.b.us)[0]
    for _ in range(4):
        held = cosigned(sp)
        if held and Checkpoint.peek(held[-1][1]).head(sp.b.us).size == size:
            break
        sp.send("a", "EUCOM operational", kind="FLASH", prio="FLASH")  # a checkpoint follows
        sp.run()
        sp.tick(1.5)
        sp.run()
    held = cosigned(sp)
    assert Checkpoint.peek(held[-1][1]).head(sp.b.us).size == size
    assert len(sp.b.ledger.checkpoints(sp.line)) == len(held)
    return held[-1][0]


def revoke_in_session(sp: SessionPair, n: int, reason: str = "signing key copied off the station") -> str:
    """What ``redline keys revoke --checkpoint n`` does at NDMC, in a SessionPair: the root signs the
    revocation of the current key and certifies the next one; the REVOKE is filed. Returns the
    revoked key id."""
    root = root_of(sp.dir_b)
    key, cert = keyfiles.prepare_signing(sp.dir_b.keys, root, "NDMC")
    s = sp.b
    revoked = s.keys.key_id
    content = revocation.build(root, line=sp.line, key=revoked, checkpoint=cosigned(sp)[n - 1], reason=reason,
                               issued_at=sp.clock.wall, certs=[cert])  # fmt: skip
    s.keys = dataclasses.replace(s.keys, next_signing=key, next_cert=cert)
    with s.ledger.batch():
        s.ledger.put_cert(s.us, identity.key_id(bytes(key.verify_key)), "signing", cert)
        s.accept("REVOKE", "FLASH", content, None, sp.clock.wall)
    return revoked


def b_seq_of(sp: SessionPair, text: str) -> int:
    for seq, raw in sp.b.ledger.raw_envelopes(sp.line, sp.b.us):
        if text.encode() in raw:
            return seq
    raise AssertionError(text)


def test_a_revoke_marks_exactly_the_envelopes_after_the_named_checkpoint(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    sp.run()
    for i in range(3):
        sp.send("a", f"EUCOM {i}")
        sp.send("b", f"NDMC {i}")
        sp.run()
    n = checkpoint_now(sp)  # the last checkpoint co-signed before the compromise
    size_b = Checkpoint.peek(cosigned(sp)[n - 1][1]).head(sp.b.us).size
    size_a = Checkpoint.peek(cosigned(sp)[n - 1][1]).head(sp.a.us).size
    for i in range(3):  # the key is stolen here: these are what the thief might have signed
        sp.send("b", f"NDMC after the theft {i}", kind="FLASH", prio="FLASH")
        sp.send("a", f"EUCOM after the theft {i}")
        sp.run()
    checkpoint_now(sp)  # a later checkpoint, co-signed by the stolen key: not the one named
    sp.send("b", "NDMC later still")
    sp.run()
    revoked = revoke_in_session(sp, n)
    sp.run()
    sp.send("b", "NDMC under the new key")
    sp.run()
    revoke_seq = b_seq_of(sp, '"revocation"')
    want = [(sp.b.us, size_b + 1, revoke_seq - 1)]
    assert revoke_seq - 1 > size_b + 2
    assert b_seq_of(sp, "NDMC under the new key") == revoke_seq + 1

    def runs(flagged: list[Flagged]) -> list[tuple[str, int, int]]:
        return [(f.station, f.first, f.last) for f in flagged]

    # live, at both ends: the same runs, said in an alarm at each end
    assert runs(sp.a.gate.flagged()) == runs(sp.b.gate.flagged()) == want
    assert all(f.revoked.key_id == revoked and f.revoked.checkpoint == n for f in sp.a.gate.flagged())
    for who in ("a", "b"):
        said = [t for w, _, t in sp.alarms if w == who and t.startswith("REVOKE")]
        assert len(said) == 1 and f"seqs {size_b + 1}-{revoke_seq - 1}: signed by a revoked key" in said[0], said
    # exactly those: nothing of EUCOM's, nothing of NDMC's up to the checkpoint, the REVOKE itself or after
    gate = sp.a.gate
    marked = {seq for seq in range(1, gate.tails[sp.b.us].seq + 1) if gate.revoked_at(sp.b.us, seq)}
    assert marked == set(range(size_b + 1, revoke_seq))
    assert not any(gate.revoked_at(sp.a.us, seq) for seq in range(1, gate.tails[sp.a.us].seq + 1))
    # by verify, over either store, and in a bundle: the same runs, and the record still verifies
    for ledger in (sp.a.ledger, sp.b.ledger):
        report = verify_line(ledger.line_data(sp.line, "x"), roots(sp))
        assert report.ok and runs(report.flagged) == want, [str(p) for p in report.problems]
    bundle = build_bundle(sp.a.ledger.line_data(sp.line, "EUCOM"), roots(sp), sp.a.us, exported_at=sp.clock.wall)
    breport = verify_bundle(bundle, sorted(roots(sp)))
    assert breport.ok and runs(breport.line_report.flagged) == want  # type: ignore[union-attr]
    assert any(s.startswith("REVOKED: NDMC seqs") and "signed by a revoked key" in s for s in breport.summary())
    assert breport.to_obj()["revoked"][0]["first"] == size_b + 1
    # NDMC's receipts and checkpoint signatures: the stolen key's, after the named checkpoint, by the same rule
    by_key = [Receipt.peek(s) for s in sp.a.ledger.line_data(sp.line, "x").iter_receipts()]
    ndmc = [r for r in by_key if r.by == sp.b.us and r.key == revoked]
    after = {r.seq for r in ndmc if r.seq > size_a}
    assert after and any(r.seq <= size_a for r in ndmc)  # receipts by the key both before and after the checkpoint
    signed = [(c, what, s) for c, p, cs in cosigned(sp) for what, s in (("proposal", Checkpoint.peek(p)),
              ("countersignature", Cosign.peek(cs)))]  # fmt: skip
    cps_after = [f"{what} of checkpoint {c}" for c, what, s in signed if s.by == sp.b.us and s.key == revoked and c > n]
    assert cps_after and any(s.key == revoked for c, _, s in signed if c <= n)
    for ledger in (sp.a.ledger, sp.b.ledger):
        report = verify_line(ledger.line_data(sp.line, "x"), roots(sp))
        stmts = report.flagged_statements
        assert report.ok and all(s.station == sp.b.us and s.revoked.key_id == revoked for s in stmts)
        assert {int(s.what.rsplit(" ", 1)[1]) for s in stmts if s.what.startswith("receipt")} == after
        assert [s.what for s in stmts if "checkpoint" in s.what] == cps_after
        assert report.receipted[sp.a.us] < min(after)  # what the thief's key receipted does not count
    said = breport.summary()
    assert any(s.startswith(f"REVOKED: NDMC's receipt of the other station's seq {max(after)}: signed by a revoked key")
               for s in said), said  # fmt: skip
    assert breport.to_obj()["revoked_statements"][-1]["what"] == cps_after[-1]
    # Live: a receipt the old key signs after the REVOKE (a thief's) is said in an alarm and not taken
    # as delivery: the envelope is still unreceipted until NDMC's own receipt, under its new key.
    sp.send("a", "EUCOM after the revoke")
    sp.flush()  # sealed and stored at EUCOM, its frames not delivered yet
    seq, eid = sp.a.ledger.head(sp.line, sp.a.us)
    forged = Receipt(line=sp.line, by=sp.b.us, key=revoked, of=sp.a.us, seq=seq, id=str(eid),
                     received_at=sp.clock.wall).sign(_old(sp, revoked))  # fmt: skip
    sp.alarms.clear()
    for _ in range(4):  # and again: said once, verified once, nothing kept growing
        sp.a.receive("path0", encode_frame(FrameType.RECEIPT, forged.encode()), sp.clock.now, sp.clock.wall)
    said = [t for w, _, t in sp.alarms if w == "a" and "signed by a revoked key" in t]
    assert len(said) == 1 and f"NDMC's receipt of the other station's seq {seq}" in said[0], said
    assert sp.a.receipted_seq < seq and sp.a.gate.receipted[sp.a.us] < seq and sp.a.gate.flagged_statements == []
    sp.run()
    assert sp.a.receipted_seq == seq == sp.a.gate.receipted[sp.a.us]
    # A second envelope at a seq of the revoked run (the thief's) proves nothing against NDMC: live it
    # is refused with an alarm and the line does not halt; verify lists it with the key's other work.
    def second_envelope_refused(s: int, text: str) -> bytes:
        """NDMC's envelope at ``s`` signed again by the stolen key, presented live: refused, said,
        and nothing halts. Its bytes."""
        for p in sp.paths:  # a refusal closes every path: the line comes back first
            sp.connect(p)
        sp.run()
        prev = split(sp.a.ledger.raw_envelope(sp.line, sp.b.us, s - 1)).id
        other = next_b(sp, _old(sp, revoked), seq=s, prev=prev, content={"text": text})
        sp.alarms.clear()
        sp.a.receive("path0", encode_frame(FrameType.ENVELOPE, other.encode()), sp.clock.now, sp.clock.wall)
        sp.a.flush(sp.clock.wall)
        assert sp.a.ledger.equivocations(sp.line) == [] and not sp.a.halted
        said = [t for w, _, t in sp.alarms if w == "a"]
        assert any(f"NDMC's second envelope at seq {s}: signed by a revoked key" in t for t in said), said
        return other.encode()

    s = size_b + 1
    held = sp.a.ledger.raw_envelope(sp.line, sp.b.us, s)
    other = second_envelope_refused(s, "the thief's other word")
    data = sp.a.ledger.line_data(sp.line, "x")
    data.equivocations.append((sp.b.us, s, held, other))  # as if stored before the REVOKE came
    report = verify_line(data, roots(sp))
    assert report.ok and f"second envelope at seq {s}" in [f.what for f in report.flagged_statements]
    # ... nor at a seq the named checkpoint covers, presented after the REVOKE: the thief signs old
    # seqs as easily as new ones (a record kept from before the REVOKE would stay evidence).
    second_envelope_refused(size_b, "an old seq, signed today")
    # A checkpoint proposed under the revoked key after the REVOKE is not countersigned: it would
    # spend the number NDMC's real proposal (under its next key) needs.
    for p in sp.paths:
        sp.connect(p)
    sp.run()
    before_cps = sp.a.ledger.checkpoints(sp.line)
    n_last, last_prop, _ = before_cps[-1]
    heads = sp.b._heads(sp.b.ledger.head(sp.line, sp.b.us)[0], sp.b.ledger.head(sp.line, sp.a.us)[0])
    stolen = Checkpoint(line=sp.line, n=n_last + 1, prev=last_prop.digest(Checkpoint.DOMAIN), heads=heads,
                        by=sp.b.us, key=revoked, time=sp.clock.wall).sign(_old(sp, revoked))  # fmt: skip
    sp.alarms.clear()
    sp.a.receive("path0", encode_frame(FrameType.CHECKPOINT, stolen.encode()), sp.clock.now, sp.clock.wall)
    sp.a.flush(sp.clock.wall)
    said = [t for w, _, t in sp.alarms if w == "a"]
    assert any(f"refused to countersign checkpoint {n_last + 1}: proposed under NDMC's revoked key" in t
               for t in said), said  # fmt: skip
    assert sp.a.ledger.checkpoints(sp.line) == before_cps
    # a restart rebuilds them from the chains
    sp.restart("a")
    sp.restart("b")
    sp.run()
    assert runs(sp.a.gate.flagged()) == runs(sp.b.gate.flagged()) == want
    # the old key is out: an envelope it signs now is refused everywhere
    refused_everywhere(sp, next_b(sp, _old(sp, revoked)), errors.KeyWindowError, f"window closed at seq {revoke_seq}")
    sp.close()


def _old(sp: SessionPair, key_id: str) -> nacl.signing.SigningKey:
    key = sp.dir_b.load_keys().signing
    assert identity.key_id(bytes(key.verify_key)) == key_id  # not promoted in a SessionPair
    return key


@pytest.fixture
def compromised(tmp_path: Path) -> Any:
    """A pair with one co-signed checkpoint, NDMC's key still in use; (pair, its checkpoint)."""
    sp = SessionPair(tmp_path)
    sp.run()
    sp.send("a", "EUCOM 1")
    sp.send("b", "NDMC 1")
    sp.run()
    checkpoint_now(sp)
    sp.send("b", "NDMC 2")
    sp.run()
    yield sp, cosigned(sp)[0]
    sp.close()


def _next_cert(sp: SessionPair) -> identity.SignedCert:
    return keyfiles.prepare_signing(sp.dir_b.keys, root_of(sp.dir_b), "NDMC")[1]


def _revoke_env(sp: SessionPair, content: dict[str, Any]) -> Any:
    return next_b(sp, sp.b.keys.signing, kind="REVOKE", prio="FLASH", content=content)


def test_revoke_signed_by_another_root_than_the_pinned_one_is_refused(compromised: Any) -> None:
    sp, cp = compromised
    thief_root = nacl.signing.SigningKey.generate()
    content = revocation.build(thief_root, line=sp.line, key=sp.b.keys.key_id, checkpoint=cp, reason="forged",
                               issued_at=1, certs=[_next_cert(sp)])  # fmt: skip
    refused_everywhere(sp, _revoke_env(sp, content), errors.RevocationError, "not signed by the station's pinned root")


def test_revoke_naming_a_checkpoint_the_peer_never_countersigned_is_refused(compromised: Any) -> None:
    sp, (n, proposal, _) = compromised
    # NDMC (or its thief) countersigns a checkpoint itself: a cosign by the proposer's own side
    peek = Checkpoint.peek(proposal)
    own = Cosign(line=sp.line, checkpoint=proposal.digest(Checkpoint.DOMAIN), by=sp.b.us, key=sp.b.keys.key_id,
                 time=1).sign(sp.b.keys.signing)  # fmt: skip
    if peek.by == sp.b.us:
        cp = (n, proposal, own)
    else:  # NDMC's own proposal over the same heads, "countersigned" by NDMC
        mine = dataclasses.replace(peek, by=sp.b.us, key=sp.b.keys.key_id).sign(sp.b.keys.signing)
        cp = (n, mine, Cosign(line=sp.line, checkpoint=mine.digest(Checkpoint.DOMAIN), by=sp.b.us,
                              key=sp.b.keys.key_id, time=1).sign(sp.b.keys.signing))  # fmt: skip
    content = revocation.build(root_of(sp.dir_b), line=sp.line, key=sp.b.keys.key_id, checkpoint=cp, reason="x",
                               issued_at=1, certs=[_next_cert(sp)])  # fmt: skip
    refused_everywhere(sp, _revoke_env(sp, content), errors.RevocationError, "not one both stations signed")


def test_revoke_of_the_key_in_use_without_a_next_key_is_refused(compromised: Any) -> None:
    sp, cp = compromised
    content = revocation.build(root_of(sp.dir_b), line=sp.line, key=sp.b.keys.key_id, checkpoint=cp, reason="x",
                               issued_at=1, certs=[])  # fmt: skip
    refused_everywhere(sp, _revoke_env(sp, content), errors.RevocationError, "without naming the next signing key")


def test_revoke_whose_revocation_names_another_checkpoint_than_the_one_it_carries_is_refused(
    compromised: Any,
) -> None:
    sp, (n, proposal, cosign) = compromised
    root = root_of(sp.dir_b)
    rev = revocation.Revocation(station=sp.b.us, line=sp.line, key=sp.b.keys.key_id, checkpoint_n=n,
                                checkpoint_digest="ab" * 32, reason="x", issued_at=1)  # fmt: skip
    content = revocation.content(rev.sign(root), proposal, cosign, [_next_cert(sp)])
    refused_everywhere(sp, _revoke_env(sp, content), errors.RevocationError, "not the one carried")


# -- a whole station: the procedure of 'redline keys revoke' -------------------------------------------


@in_loop
async def test_keys_revoke_in_a_running_station_flags_at_both_ends_and_rotates(tmp_path: Path) -> None:
    async with StationPair(tmp_path) as sp:
        await sp.send("a", "EUCOM 1")
        await sp.send("b", "NDMC 1", kind="FLASH", prio="FLASH")  # operational: a checkpoint follows
        await sp.advance(3)
        ledger = sp.b.ledger
        assert ledger.checkpoints(sp.line), "no checkpoint was co-signed"
        n = ledger.checkpoints(sp.line)[-1][0]
        await sp.send("b", "NDMC after the theft")
        old = sp.b.keys.key_id
        root = root_of(sp.dir_b)
        _, cert = keyfiles.prepare_signing(sp.dir_b.keys, root, "NDMC")
        contents, bare = rotation.revoke_contents(ledger, root, key=old, cert=cert, reason="stolen", issued_at=1,
                                                  checkpoint=n)  # fmt: skip
        assert list(contents) == [sp.line] and bare == []
        result = await rotation.file_running(sp.b, revokes=contents)
        await sp.synced()
        await sp.send("b", "NDMC with the new key")
        await sp.advance(2)
        assert result["revoked"] == [sp.line]
        fa, fb = sp.a.sessions[sp.line].gate.flagged(), sp.b.sessions[sp.line].gate.flagged()
        assert [(f.first, f.last) for f in fa] == [(f.first, f.last) for f in fb] and len(fa) == 1
        assert fa[0].revoked.key_id == old and fa[0].station == sp.b.keys.fingerprint
        assert sp.dir_b.load_keys().key_id == result["key_id"] != old  # the files were promoted
        for s in (sp.a, sp.b):
            report = verify_line(s.ledger.line_data(sp.line, "x"), roots(sp))
            assert report.ok and [(f.first, f.last) for f in report.flagged] == [(fa[0].first, fa[0].last)]


def test_keys_revoke_without_naming_a_checkpoint_says_so_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from redline.cli.common import main

    sp = SessionPair(tmp_path)
    sp.close()
    res = CliRunner().invoke(main, ["keys", "revoke", "--station", str(sp.dir_b.path), "--root-key",
                                    str(sp.dir_b.keys / "root.key"), "--reason", "stolen"])  # fmt: skip
    assert res.exit_code == 1 and "--checkpoint N or --before TIME" in res.output, res.output
    assert "Traceback" not in res.output and not (sp.dir_b.keys / keyfiles.NEXT_KEY).exists()

