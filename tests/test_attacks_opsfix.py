"""Holes in the domain layer's budgets and references found by the attack_ops review, each
attacked here the way the review did (sans-IO sessions or stations on a simulated clock)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from redline import persons
from redline.config import Limits
from redline.errors import LimitError
from redline.ops.engine import LineOps
from redline.ops.model import Entry
from redline.testing import SessionPair, StationPair
from tests.test_voice import FAST, PASSWORD, stored


def test_an_outbox_filled_while_the_line_was_down_is_never_signed_past_the_budget(tmp_path: Path) -> None:
    """attack_ops F2: accept checked the budget against what was signed only, with the content's
    size: 300 x 1 KB accepted while the line was down were all taken under a 200 KB budget and
    signed past it when the line came back; the peer refused the first envelope over its budget of
    our chain and closed the path, on every reconnect, for good."""
    limits = Limits(test_times_utc=(), max_line_disk_bytes=200_000, line_disk_reserve_bytes=20_000)
    sp = SessionPair(tmp_path, limits=limits)
    try:
        sp.run()
        for p in sp.paths:
            sp.disconnect(p)
        taken = refused = 0
        for _ in range(300):
            try:
                sp.send("a", "x" * 1000)
                taken += 1
            except LimitError:
                refused += 1
        assert refused > 0 and taken > 100
        # the reserve still takes a FLASH, within the whole budget
        sp.send("a", "fire", kind="FLASH", prio="FLASH")
        for p in sp.paths:
            sp.connect(p)
        sp.run()
        a, b = sp.a, sp.b
        assert a.outbox_count == 0 and a.ledger.head(sp.line, a.us)[0] == b.ledger.head(sp.line, a.us)[0]
        assert a.outbox_bytes == 0  # each item's bound taken back exactly when it was signed
        assert a.link.synced and b.link.synced
        assert a.disk_ours <= limits.max_line_disk_bytes
        assert not [t for who, _, t in sp.alarms if "refused" in t or "held" in t], sp.alarms
    finally:
        sp.close()


def test_an_outbox_over_the_budget_is_held_unsigned_with_one_alarm(tmp_path: Path) -> None:
    """attack_ops F2, the signing side: an outbox taken under a larger limit (or by an older
    version) is signed up to the budget and the rest held, unsigned, with one alarm; the peer
    never sees an envelope past its budget of our chain, so the line stays up."""
    sp = SessionPair(tmp_path, limits=Limits(test_times_utc=(), max_line_disk_bytes=1_000_000))
    try:
        sp.run()
        for p in sp.paths:
            sp.disconnect(p)
        for _ in range(300):
            sp.send("a", "x" * 1000)
        sp.limits = Limits(test_times_utc=(), max_line_disk_bytes=200_000, line_disk_reserve_bytes=20_000)
        sp.restart("a")
        sp.restart("b")
        sp.run()
        sp.tick(1)
        sp.run()
        a, b = sp.a, sp.b
        held = [t for who, _, t in sp.alarms if who == "a" and "held, not signed" in t]
        assert len(held) == 1, sp.alarms
        assert not [t for who, _, t in sp.alarms if who == "b" and "refused" in t], sp.alarms
        assert 0 < a.outbox_count < 300 and a.disk_ours <= 200_000
        assert b.ledger.head(sp.line, a.us)[0] == a.ledger.head(sp.line, a.us)[0] > 100
        assert all(p.up for p in sp.paths)
    finally:
        sp.close()


def test_the_peers_flashes_cannot_spend_our_budget_faster_than_theirs(tmp_path: Path) -> None:
    """attack_ops F1: each FLASH from the peer made us sign one ESCALATED per level (3 by
    default), on our budget and our reserve: the peer spent ours 4.4x faster than its own. Now the
    ESCALATED we sign take at most what the peer's FLASHes took plus an allowance (a quarter of the
    reserve); a step past it is alerted here and alarmed, never silently lost."""
    limits = Limits(test_times_utc=(), flash_ack_seconds=30.0, line_disk_reserve_bytes=40_000)
    allowance = 10_000  # a quarter of the reserve

    async def main() -> None:
        async with StationPair(tmp_path, limits=limits) as sp:
            a, b = sp.a.sessions[sp.line], sp.b.sessions[sp.line]
            a0, b0 = a.disk_ours, b.disk_ours
            await asyncio.gather(*(sp.b.send(sp.line, f"f{i}", prio="FLASH") for i in range(40)))
            await sp.synced()
            await sp.advance(31)  # every step of every FLASH falls due: deputy, supervisor, deadline missed
            await sp.advance(1)
            await sp.synced()
            peer, us = b.disk_ours - b0, a.disk_ours - a0
            assert us <= peer + allowance, (us, peer)
            unfiled = [t for who, _, t in sp.alarms if who == "a" and "NOT filed" in t]
            missed = [t for who, _, t in sp.alarms if who == "a" and "was not acknowledged in time" in t]
            assert unfiled and len(missed) == 40  # every FLASH alarmed here, filed or not

    asyncio.run(main())


async def _signed(sp: StationPair, who: str, kind: str, content: dict[str, Any], name: str) -> dict[str, Any]:
    st = sp.station(who)
    person = next(p for p in persons.load_users(st.home.path) if p.name == name)
    resolved = await st.control({"op": "resolve", "line": sp.line, "kind": kind, "content": content})
    sig = persons.sign_content(resolved, person, persons.unlock(st.home.path, name, PASSWORD))
    return dict((await st.act(sp.line, kind, sig)).to_obj())


@pytest.mark.parametrize("restart", [False, True], ids=["live", "restarted"])
def test_an_ack_accepted_while_the_line_is_down_stops_the_escalation(tmp_path: Path, restart: bool) -> None:
    """attack_ops F3: our duty officer's ACK, accepted in time while the line was down, waited
    unsigned in the outbox; ops saw an ACK only once signed, so the FLASH went on escalating and
    we filed ESCALATED deputy, supervisor, deadline-missed AFTER our ACK (PROTOCOL 5.9: never), and
    the peer alarmed 'NOT acknowledged in time'. Also after a restart of ours with the ACK waiting."""

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            persons.add_user(sp.dir_a.path, "Duty EUCOM", "duty", PASSWORD, **FAST)
            flash = await sp.send("b", "FLASH: missile launch detected", prio="FLASH")
            await sp.crash("b", start_again=False)  # the line goes down
            # ... once A has seen its paths close: before that, A signs the ACK at once (a
            # different case, and a flaky test: about one run in four under load)
            for _ in range(2000):
                if not sp.a.session(sp.line).link.can_send():
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("A never saw the line go down")
            sp.sim.advance(10)
            await sp.a.tick()
            ack = await _signed(sp, "a", "ACK", {"ref": flash["id"]}, "Duty EUCOM")  # in time: 10 s of 120
            assert ack["seq"] is None  # accepted, durable, not signed: the line is down
            if restart:  # kill -9 and start again from the store, the peer still away
                await sp.crash("a", start_again=False)
                sp.a = sp._new("a")
                await sp.a.start()
            sp.sim.advance(150)  # past the FLASH's deadline on our clock
            await sp.a.tick()
            await sp.start("b")
            await sp.advance(1)
            await sp.synced()
            escalated = [c.get("level") for ours, c in stored(sp.a, sp.line, "ESCALATED") if ours]
            assert escalated == []
            assert [c["ref"]["id"] for ours, c in stored(sp.a, sp.line, "ACK") if ours] == [flash["id"]]
            assert not [t for who, _, t in sp.alarms if who == "b" and "NOT acknowledged" in t]
            assert not [t for who, _, t in sp.alarms if who == "a" and "not acknowledged" in t]

    asyncio.run(main())


def test_a_reference_whose_seq_names_another_envelope_than_its_id_is_refused() -> None:
    """attack_ops N1: a reference's sender and seq were never checked against the envelope its id
    names; NOTICE_WITHDRAW acts on sender:seq, so a withdraw with notice A's id and notice B's seq
    passed the check on A and dropped B. Now such a reference is refused (stored, not acted on),
    for every kind: here a withdraw and an ACK."""
    us, peer = "a" * 64, "b" * 64
    notice = json.loads((Path(__file__).parent.parent / "docs/schemas/NOTICE.json").read_text())["examples"][0]
    t = notice["start"] - 1000

    def entry(seq: int, kind: str, content: dict[str, Any], prio: str = "PRIORITY") -> Entry:
        return Entry(sender=peer, ours=False, seq=seq, id=f"{seq:064x}", kind=kind, prio=prio, sent_at=t,
                     stored_at=t, lang="ru", content=content)  # fmt: skip

    ops = LineOps(us=us, peer=peer, limits=Limits(test_times_utc=()), since=0)
    ops.observe(entry(1, "NOTICE", notice))  # notice A
    ops.observe(entry(2, "NOTICE", {**notice, "text": "notice B"}))  # notice B
    alarms = ops.observe(entry(3, "NOTICE_WITHDRAW", {"notice": {"sender": peer, "seq": 2, "id": f"{1:064x}"}}))
    assert {n.ref for n in ops.board.active(0, 10)} == {f"{peer}:1", f"{peer}:2"}
    assert any("names the id of the peer's NOTICE seq 1 but says seq 2" in a.text for a in alarms), alarms
    # the same reference with the right seq withdraws A
    ops.observe(entry(4, "NOTICE_WITHDRAW", {"notice": {"sender": peer, "seq": 1, "id": f"{1:064x}"}}))
    assert {n.ref for n in ops.board.active(0, 10)} == {f"{peer}:2"}
    # an id of ours with the peer's name as sender: refused too (here a READ of our FLASH)
    ours = Entry(sender=us, ours=True, seq=1, id="f" * 64, kind="FLASH", prio="FLASH", sent_at=t, stored_at=t,
                 lang="en", content={"text": "fire"})  # fmt: skip
    ops.observe(ours)
    alarms = ops.observe(entry(5, "READ", {"ref": {"sender": peer, "seq": 1, "id": "f" * 64}, "by": "x"}, "FLASH"))
    assert any("says seq 1 of another station" in a.text for a in alarms), alarms
    assert ops.flash.flashes["f" * 64].read == []
