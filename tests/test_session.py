"""Line sessions end to end (redline.session over redline.testing.SessionPair): two stations with
real keys and real SQLite ledgers, simulated paths and a simulated clock.

Guarantees 1 (nothing accepted is lost), 2 (one history per sender) and 3 (co-signed
checkpoints), and the refusals of guarantee 5. Security tests are named after the attack they
block and check that the trusted state (ledger heads, chains, outbox) is unchanged afterwards.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from redline import canonical, identity
from redline.config import Limits
from redline.envelope import Envelope, seal, split
from redline.errors import IdempotencyConflictError, LocalProtocolError, ReceiptMismatchError
from redline.ledger.sqlite import Ledger
from redline.ledger.verify import verify_line
from redline.protocol.framing import FrameDecoder, FrameType, encode_frame
from redline.session import LineSession
from redline.statements import Checkpoint, Receipt
from redline.testing import SessionPair, SimPath


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[SessionPair]:
    pair = SessionPair(tmp_path)
    pair.run()
    yield pair
    pair.close()


def session(sp: SessionPair, who: str) -> LineSession:
    return sp.a if who == "a" else sp.b


def texts(ledger: Ledger, line: str, sender: str) -> list[str]:
    """The chain of ``sender`` as held in ``ledger``, in seq order, checking seqs run 1..n."""
    rows = list(ledger.raw_envelopes(line, sender))
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))
    out = []
    for _, raw in rows:
        body = split(raw).body_bytes
        assert body is not None
        out.append(canonical.decode_object(body, "body")["content"]["text"])
    return out


def heads(sp: SessionPair) -> dict[str, Any]:
    line, a, b = sp.line, sp.a.us, sp.b.us
    return {
        "a holds a": sp.a.ledger.head(line, a), "a holds b": sp.a.ledger.head(line, b),
        "b holds a": sp.b.ledger.head(line, a), "b holds b": sp.b.ledger.head(line, b),
    }  # fmt: skip


def assert_verifies(sp: SessionPair) -> None:
    roots = {sp.a.us: sp.a.keys.root_public, sp.b.us: sp.b.keys.root_public}
    for s in (sp.a, sp.b):
        report = verify_line(s.ledger.line_data(sp.line), roots)
        assert report.ok, report.problems


def alarms(sp: SessionPair, level: str = "alarm") -> list[tuple[str, str, str]]:
    return [a for a in sp.alarms if a[1] == level]


def frames(queue: Any) -> list[tuple[FrameType, bytes]]:
    out: list[tuple[FrameType, bytes]] = []
    for data in queue:
        out += FrameDecoder(1 << 24).feed(data)
    return out


def envelope_seqs(queue: Any) -> list[int]:
    return [
        canonical.decode_object(split(p).header_bytes, "h")["seq"] for t, p in frames(queue) if t is FrameType.ENVELOPE
    ]


def take_envelopes(path: SimPath, direction: str, seqs: set[int]) -> dict[int, bytes]:
    """Remove the ENVELOPE frames of ``seqs`` from one direction of a path; return them by seq."""
    queue = path.a_to_b if direction == "a_to_b" else path.b_to_a
    kept, taken = [], {}
    for data in queue:
        ((t, payload),) = FrameDecoder(1 << 24).feed(data)
        seq = canonical.decode_object(split(payload).header_bytes, "h")["seq"] if t is FrameType.ENVELOPE else None
        if seq in seqs:
            taken[seq] = data
        else:
            kept.append(data)
    queue.clear()
    queue.extend(kept)
    return taken


def deliver(sp: SessionPair, who: str, path: str, data: bytes) -> list[Any]:
    """Hand bytes to one station as if they arrived on ``path``; route what it answers."""
    actions = session(sp, who).receive(path, data, sp.clock.now, sp.clock.wall)
    sp._do(who, actions)
    return actions


def inject(sp: SessionPair, who: str, raw: bytes, path: str = "path0") -> list[Any]:
    actions = deliver(sp, who, path, encode_frame(FrameType.ENVELOPE, raw))
    sp.flush()
    return actions


def pump(
    sp: SessionPair, drop: Callable[[str, str, FrameType], bool], held: list[tuple[str, bytes]] | None = None
) -> None:
    """Like ``sp.run()``, but frames for which ``drop(receiver, path, type)`` is true are lost, or
    kept in ``held`` as (path, bytes): taken off their path, not delivered."""
    sp.flush()
    moved = True
    while moved:
        moved = False
        for p in sp.paths:
            for queue, who in ((p.a_to_b, "b"), (p.b_to_a, "a")):
                while queue:
                    data = queue.popleft()
                    moved = True
                    if not any(drop(who, p.name, t) for t, _ in FrameDecoder(1 << 24).feed(data)):
                        deliver(sp, who, p.name, data)
                    elif held is not None:
                        held.append((p.name, data))
        sp.flush()
        sp.flush()


def forge(sp: SessionPair, *, seq: int, text: str, signer: nacl.signing.SigningKey | None = None,
          key_id: str | None = None, line: str | None = None, prev: str | None = None) -> Envelope:  # fmt: skip
    """An envelope in station A's name, signed with A's real signing key unless told otherwise."""
    keys = sp.dir_a.load_keys()
    if prev is None and seq > 1:
        prev = split(sp.b.ledger.raw_envelope(sp.line, sp.a.us, seq - 1)).id
    return seal(
        signer or keys.signing, line=line or sp.line, sender=keys.fingerprint, key=key_id or keys.key_id, seq=seq,
        sent_at=sp.clock.wall, kind="TEXT", prio="ROUTINE", prev=prev, seen_seq=0, seen_id=None, lang="en",
        content={"text": text}, salt=os.urandom(16),
    )  # fmt: skip


# -- delivery -------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_messages_both_ways_are_delivered_exactly_once_in_order_over_two_paths(
    sp: SessionPair, chunk: int | None
) -> None:
    sent: dict[str, list[int]] = {"a": [], "b": []}
    for i in range(6):
        sent["a"].append(sp.send("a", f"a{i}"))
        sent["b"].append(sp.send("b", f"b{i}"))
    sp.flush()
    # Every envelope travels on both paths: two copies of each reach the peer.
    for p in sp.paths:
        assert envelope_seqs(p.a_to_b) == [1, 2, 3, 4, 5, 6]
        assert envelope_seqs(p.b_to_a) == [1, 2, 3, 4, 5, 6]
    sp.run(chunk=chunk)

    assert texts(sp.b.ledger, sp.line, sp.a.us) == texts(sp.a.ledger, sp.line, sp.a.us) == [f"a{i}" for i in range(6)]
    assert texts(sp.a.ledger, sp.line, sp.b.us) == texts(sp.b.ledger, sp.line, sp.b.us) == [f"b{i}" for i in range(6)]
    h = heads(sp)
    assert h["a holds a"] == h["b holds a"] and h["a holds a"][0] == 6
    assert h["a holds b"] == h["b holds b"] and h["b holds b"][0] == 6
    for who, peer in (("a", sp.b), ("b", sp.a)):
        me = session(sp, who)
        for n, local in enumerate(sent[who], start=1):
            item = me.ledger.outbox_item(local)
            assert item.seq == n and item.envelope_id is not None
            assert peer.ledger.has_id(sp.line, item.envelope_id)
            chain = peer.ledger.raw_envelopes(sp.line, me.us)
            stored = [seq for seq, raw in chain if split(raw).id == item.envelope_id]
            assert stored == [n]  # in the peer's ledger exactly once
        st = me.status().to_obj()
        assert st["outbox"] == 0 and st["unreceipted"] == 0 and not st["halted"]
        latest = me.ledger.latest_receipt(sp.line, peer.us)
        assert latest is not None and latest[0] == 6  # the peer's signed receipt is kept
    assert sp.alarms == []
    assert_verifies(sp)


def test_a_gap_is_requested_and_filled_and_storage_stays_in_order(sp: SessionPair) -> None:
    """Path0 loses everything; on path1 envelopes 1 and 2 are lost: b gets 3..5 first."""
    for i in range(5):
        sp.send("a", f"m{i}")
    sp.flush()
    p0, p1 = sp.paths
    p0.a_to_b.clear()
    take_envelopes(p1, "a_to_b", {1, 2})
    answers: list[Any] = []
    while p1.a_to_b:
        answers += deliver(sp, "b", "path1", p1.a_to_b.popleft())
    sp.flush()
    assert sp.b.status().to_obj()["their_seq"] == 0  # nothing stored out of order
    gaps = [canonical.decode_object(p, "gap") for t, p in frames(p1.b_to_a) if t is FrameType.GAP]
    assert gaps == [{"station": sp.a.us, "from": 1, "to": 2}]
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [f"m{i}" for i in range(5)]
    assert sp.a.status().to_obj()["unreceipted"] == 0
    assert sp.alarms == []
    assert_verifies(sp)


def test_adversarial_order_across_paths_is_stored_in_order(sp: SessionPair) -> None:
    """Path0 is cut while path1 carries the envelopes last-first."""
    for i in range(6):
        sp.send("a", f"m{i}")
    sp.flush()
    p0, p1 = sp.paths
    sp.disconnect(p0)
    taken = take_envelopes(p1, "a_to_b", set(range(1, 7)))
    for seq in sorted(taken, reverse=True):
        deliver(sp, "b", "path1", taken[seq])
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [f"m{i}" for i in range(6)]
    assert sp.alarms == []
    sp.connect(p0)
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [f"m{i}" for i in range(6)]
    assert_verifies(sp)


def test_frames_moved_between_paths_and_duplicated_are_stored_once(sp: SessionPair) -> None:
    for i in range(4):
        sp.send("a", f"m{i}")
    sp.flush()
    p0, p1 = sp.paths
    # Everything from path0 is moved to the front of path1 twice over, reversed.
    moved = list(reversed(p0.a_to_b))
    p0.a_to_b.clear()
    p1.a_to_b.extendleft(moved + moved)
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [f"m{i}" for i in range(4)]
    assert sp.alarms == []


# -- guarantee 1: nothing accepted is lost ------------------------------------------------------
def test_messages_accepted_while_every_path_is_down_wait_unsigned_then_go(sp: SessionPair) -> None:
    for p in sp.paths:
        sp.disconnect(p)
    for i in range(20):
        sp.send("a", f"m{i}")
    sp.run()
    st = sp.a.status().to_obj()
    assert st["outbox"] == 20 and st["our_seq"] == 0 and not st["synced"]
    assert sp.a.ledger.head(sp.line, sp.a.us) == (0, None)  # durable, but nothing signed
    for p in sp.paths:
        sp.connect(p)
    sp.run()
    assert sp.a.status().to_obj()["outbox"] == 0
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [f"m{i}" for i in range(20)]
    assert sp.a.status().to_obj()["unreceipted"] == 0
    assert_verifies(sp)


def test_signed_envelopes_lost_in_flight_are_resent_after_reconnect(sp: SessionPair) -> None:
    for i in range(5):
        sp.send("a", f"m{i}")
    sp.flush()
    for p in sp.paths:
        sp.disconnect(p)  # every frame in flight is lost
    assert sp.a.status().to_obj()["our_seq"] == 5 and sp.a.status().to_obj()["unreceipted"] == 5
    assert sp.b.status().to_obj()["their_seq"] == 0
    for p in sp.paths:
        sp.connect(p)
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [f"m{i}" for i in range(5)]
    assert sp.a.status().to_obj()["unreceipted"] == 0


def test_switching_paths_mid_traffic_loses_nothing(sp: SessionPair) -> None:
    p0, p1 = sp.paths
    sp.disconnect(p1)
    for i in range(3):
        sp.send("a", f"m{i}")
    sp.flush()
    sp.disconnect(p0)
    sp.connect(p1)
    for i in range(3, 6):
        sp.send("a", f"m{i}")
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [f"m{i}" for i in range(6)]


@pytest.mark.parametrize("who", ["a", "b"])
def test_restart_mid_traffic_loses_nothing_and_duplicates_nothing(sp: SessionPair, who: str) -> None:
    for i in range(10):
        sp.send("a", f"a{i}")
        sp.send("b", f"b{i}")
    sp.flush()
    sp.step()  # some of it stored and receipted, some still in flight
    sp.send("a", "late a")
    sp.send("b", "late b")
    sp.restart(who)
    sp.run()
    want_a, want_b = [*(f"a{i}" for i in range(10)), "late a"], [*(f"b{i}" for i in range(10)), "late b"]
    assert texts(sp.b.ledger, sp.line, sp.a.us) == texts(sp.a.ledger, sp.line, sp.a.us) == want_a
    assert texts(sp.a.ledger, sp.line, sp.b.us) == texts(sp.b.ledger, sp.line, sp.b.us) == want_b
    for s in (sp.a, sp.b):
        assert s.status().to_obj()["outbox"] == 0 and s.status().to_obj()["unreceipted"] == 0
    assert alarms(sp) == []
    assert_verifies(sp)


def _reconnect(sp: SessionPair, term: int | None) -> None:
    """The peer's process (a) comes back on every path, its HELLO telling ``term`` (§8.3)."""
    sp.a.link.term = term
    for p in sp.paths:
        sp.disconnect(p, "the peer's process went away")
        sp.connect(p)
    sp.run()


def test_the_peer_station_failing_over_is_an_alarm_here_once_per_new_term(sp: SessionPair) -> None:
    _reconnect(sp, 3)  # the first term we learn is no failover
    assert alarms(sp) == []
    sp.restart("a")  # the other process of a's pair took over: a higher term on both paths
    _reconnect(sp, 4)
    assert [(w, level, t) for w, level, t in sp.alarms if "PEER FAILOVER" in t] == [
        ("b", "alarm", "PEER FAILOVER: the peer station failed over (term 3 -> 4): another process of its HA "
                       "pair took over; check the line is back in sync")]  # fmt: skip
    sp.alarms.clear()
    _reconnect(sp, 4)  # the same process reconnecting: no failover
    _reconnect(sp, 2)  # a stale lower term (a HELLO that crossed the takeover) is only compared
    _reconnect(sp, None)  # nor does a HELLO without one (a SQLite station) change anything
    assert alarms(sp) == [] and sp.b.peer_term == 4
    sp.restart("b")  # the term is kept with the line: a failover while b was down alarms at b too
    _reconnect(sp, 5)
    assert [t for w, _, t in alarms(sp) if w == "b"] == [
        "PEER FAILOVER: the peer station failed over (term 4 -> 5): another process of its HA pair took over; "
        "check the line is back in sync"]  # fmt: skip
    sp.send("a", "after the failover")
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us)[-1] == "after the failover"


def test_the_joiner_adds_addresses_the_inviters_hello_announces_bounded_and_kept(sp: SessionPair) -> None:
    """a invited b, so b dials: a's HELLO tells a's addresses (§8.3), b adds the new ones to the
    line's paths in its store (at most 8 in all, none removed); a, which only listens, ignores b's."""
    first = sp.b.record.paths
    sp.a.link.addresses = (*first, "10.9.0.2:7401")
    sp.b.link.addresses = ("10.9.9.9:7501",)
    _reconnect(sp, None)
    assert sp.b.record.paths == (*first, "10.9.0.2:7401") == sp.b.ledger.line(sp.line).paths
    assert sp.b.new_paths == ["10.9.0.2:7401"]
    assert sp.a.record.paths == sp.a.ledger.line(sp.line).paths and "10.9.9.9:7501" not in sp.a.record.paths
    assert [t for w, level, t in sp.alarms if level == "info" and "announced" in t] == [
        "the peer announced an address this line did not dial yet: 10.9.0.2:7401; dialling it too"]
    sp.a.link.addresses = tuple(f"10.9.1.{i}:7401" for i in range(8))  # a full list, none of them known
    _reconnect(sp, None)
    assert len(sp.b.record.paths) == 8 and sp.b.record.paths[: len(first) + 1] == (*first, "10.9.0.2:7401")
    sp.a.link.addresses = ("10.9.2.1:7401",)
    _reconnect(sp, None)  # no room: nothing more is added, however often it is told
    assert len(sp.b.ledger.line(sp.line).paths) == 8


def test_restart_before_anything_was_signed_keeps_the_outbox(sp: SessionPair) -> None:
    for p in sp.paths:
        sp.disconnect(p)
    for i in range(3):
        sp.send("a", f"m{i}")
    sp.restart("a")  # restart reconnects every path
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["m0", "m1", "m2"]
    assert sp.a.status().to_obj()["outbox"] == 0


def test_idempotency_key_accepts_a_retried_message_once(sp: SessionPair) -> None:
    with sp.a.ledger.batch():
        first = sp.a.accept("TEXT", "ROUTINE", {"text": "once"}, "req-1", sp.clock.wall)
    with sp.a.ledger.batch():
        again = sp.a.accept("TEXT", "ROUTINE", {"text": "once"}, "req-1", sp.clock.wall)
    assert again.local == first.local
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["once"]


def test_a_retried_idempotency_key_in_the_same_batch_is_one_message(sp: SessionPair) -> None:
    with sp.a.ledger.batch():
        first = sp.a.accept("TEXT", "ROUTINE", {"text": "once"}, "req-2", sp.clock.wall)
        again = sp.a.accept("TEXT", "ROUTINE", {"text": "once"}, "req-2", sp.clock.wall)
        assert again == first and sp.a.ledger.pending_count(sp.line) == 1
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["once"]


def test_a_retried_key_with_other_content_in_the_same_batch_signs_the_first(sp: SessionPair) -> None:
    """The content is encoded once, at acceptance, for the seal: a second request under the same
    key with other content is refused (IdempotencyConflictError), and must not lend the first its
    own encoding either; the same content again returns the first acceptance."""
    with sp.a.ledger.batch():
        first = sp.a.accept("TEXT", "ROUTINE", {"text": "first"}, "req-4", sp.clock.wall)
        with pytest.raises(IdempotencyConflictError, match="already used for a different message"):
            sp.a.accept("TEXT", "ROUTINE", {"text": "second"}, "req-4", sp.clock.wall)
        assert sp.a.accept("TEXT", "ROUTINE", {"text": "first"}, "req-4", sp.clock.wall).local == first.local
        sent = sp.a.flush(sp.clock.wall)
    sp._do("a", sent)
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == texts(sp.a.ledger, sp.line, sp.a.us) == ["first"]
    assert_verifies(sp)


def outbox_writes(ledger: Ledger) -> list[str]:
    """The statements that write the outbox, as SQLite runs them from now on."""
    seen: list[str] = []
    ledger._db.set_trace_callback(lambda sql: seen.append(sql) if "outbox" in sql and "SELECT" not in sql else None)
    return seen


def test_a_message_signed_in_the_batch_that_accepts_it_is_written_once_and_signed(sp: SessionPair) -> None:
    """The line is up: the outbox row is written when the batch commits, already signed (one
    INSERT, no UPDATE); what the store holds is what it held with an INSERT and an UPDATE (the
    content as the canonical JSON the session encoded once, not encoded a second time)."""
    writes = outbox_writes(sp.a.ledger)
    with sp.a.ledger.batch():
        local = sp.a.accept("TEXT", "ROUTINE", {"text": "hello"}, None, sp.clock.wall).local
        assert [i.local for i in sp.a.ledger.pending(sp.line)] == [local]
        sent = sp.a.flush(sp.clock.wall)  # the frames go after the commit
        assert writes == [] and sp.a.ledger.pending(sp.line) == [] and sp.a.ledger.pending_count(sp.line) == 0
    assert len(writes) == 1 and writes[0].startswith("INSERT INTO outbox")
    held = sp.a.ledger._db.execute("SELECT seq, envelope_id, content FROM outbox WHERE local=?", (local,)).fetchone()
    assert held[0] == 1 and held[1] == sp.a.ledger.envelope_id(sp.line, sp.a.us, 1)
    assert held[2] == '{"text":"hello"}'  # the content's canonical JSON, from the member sealed into the body
    sp._do("a", sent)
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["hello"]


def test_a_message_accepted_while_the_line_is_down_is_written_unsigned_and_signed_later(sp: SessionPair) -> None:
    for p in sp.paths:
        sp.disconnect(p)
    first = sp.send("a", "waits")
    row = sp.a.ledger._db.execute("SELECT seq FROM outbox WHERE local=?", (first,)).fetchone()
    assert row == (None,)  # committed, unsigned: durable before it is signed
    writes = outbox_writes(sp.a.ledger)
    for p in sp.paths:
        sp.connect(p)
    sp.run()  # in sync: the waiting one is signed
    with sp.a.ledger.batch():  # as the station accepts: signed in the batch that accepts it
        second = sp.a.accept("TEXT", "ROUTINE", {"text": "goes"}, None, sp.clock.wall).local
        sent = sp.a.flush(sp.clock.wall)
    sp._do("a", sent)
    sp.run()
    assert sp.a.ledger.outbox_item(first).seq == 1 and sp.a.ledger.outbox_item(second).seq == 2
    assert [w.split()[0] for w in writes] == ["UPDATE", "INSERT"]  # the waiting one signed; the new one once
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["waits", "goes"]


def test_a_batch_rolled_back_leaves_no_outbox_row_and_numbers_on(sp: SessionPair) -> None:
    before = sp.a.ledger.max_outbox_local()
    with pytest.raises(RuntimeError), sp.a.ledger.batch():
        sp.a.accept("TEXT", "ROUTINE", {"text": "lost with the batch"}, "req-3", sp.clock.wall)
        raise RuntimeError("the batch fails")
    assert sp.a.ledger.max_outbox_local() == before and sp.a.ledger.pending(sp.line) == []
    again = sp.send("a", "kept")
    assert again > before
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["kept"]


# -- guarantee 2: a restored backup recovers its tail before signing ----------------------------
def _backup(ledger_path: Path, to: Path) -> None:
    src, dst = sqlite3.connect(ledger_path), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _restore_a(sp: SessionPair, backup: Path) -> None:
    """Put an old copy of station A's store in place (sqlite file, no WAL) and restart A."""
    sp.a.ledger.close()
    live = sp.dir_a.ledger_path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, live)
    sp.restart("a")


def test_restored_backup_recovers_its_tail_from_the_peer_before_signing_anything(
    sp: SessionPair, tmp_path: Path
) -> None:
    for i in range(3):
        sp.send("a", f"m{i}")
    sp.run()
    backup = tmp_path / "a-backup.sqlite"
    _backup(sp.dir_a.ledger_path, backup)
    for i in range(3, 10):
        sp.send("a", f"m{i}")
    sp.run()
    held_by_b = sp.b.ledger.head(sp.line, sp.a.us)
    assert held_by_b[0] == 10

    _restore_a(sp, backup)
    assert sp.a.status().to_obj()["our_seq"] == 3
    local = sp.send("a", "after restore")
    sp.run()

    assert any("recovering our own envelopes 4..10" in text for _, _, text in sp.alarms)
    item = sp.a.ledger.outbox_item(local)
    assert item.seq == 11  # old head + 1 after recovery: no seq reused
    want = [*(f"m{i}" for i in range(10)), "after restore"]
    assert texts(sp.a.ledger, sp.line, sp.a.us) == texts(sp.b.ledger, sp.line, sp.a.us) == want
    assert sp.a.ledger.head(sp.line, sp.a.us) == sp.b.ledger.head(sp.line, sp.a.us)
    assert sp.b.ledger.equivocations(sp.line) == [] and sp.a.ledger.equivocations(sp.line) == []
    assert alarms(sp) == []
    assert_verifies(sp)


def test_restored_backup_recovers_while_the_peer_keeps_sending(sp: SessionPair, tmp_path: Path) -> None:
    """The peer signs while we recover: its envelopes name our seqs we do not hold yet. They must
    wait for our recovery instead of being refused (which used to close the line for good)."""
    for i in range(3):
        sp.send("a", f"a{i}")
    sp.run()
    backup = tmp_path / "a-backup.sqlite"
    _backup(sp.dir_a.ledger_path, backup)
    for i in range(3, 6):
        sp.send("a", f"a{i}")
    sp.run()
    _restore_a(sp, backup)
    sp.send("b", "b0")  # seen = a's seq 6, which a does not hold yet
    sp.send("a", "after restore")
    sp.run()
    sp.send("b", "b1")
    sp.run()
    assert all(p.up for p in sp.paths)
    assert texts(sp.a.ledger, sp.line, sp.b.us) == ["b0", "b1"]
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [*(f"a{i}" for i in range(6)), "after restore"]
    assert alarms(sp) == []
    assert_verifies(sp)


def test_helping_the_peer_recover_does_not_stall_our_own_sending(tmp_path: Path) -> None:
    """B returns 6 of A's envelopes with a window of 4; that must not count as B's own in flight."""
    sp = SessionPair(tmp_path, limits=Limits(window=4))
    try:
        sp.run()
        backup = tmp_path / "a-backup.sqlite"
        _backup(sp.dir_a.ledger_path, backup)
        for i in range(6):
            sp.send("a", f"a{i}")
            sp.run()
        _restore_a(sp, backup)
        sp.run()
        sp.send("b", "b0")
        sp.run()
        assert sp.b.status().to_obj()["outbox"] == 0
        assert texts(sp.a.ledger, sp.line, sp.b.us) == ["b0"]
    finally:
        sp.close()


@pytest.mark.parametrize("cut", ["every path", "the path that asked"])
def test_recovery_is_asked_again_when_the_path_that_asked_goes_down(
    sp: SessionPair, tmp_path: Path, cut: str
) -> None:
    """The recovery request (or its answer) is lost with its path: recovery must not stall, or
    the restored station could never sign again."""
    backup = tmp_path / "a-backup.sqlite"
    _backup(sp.dir_a.ledger_path, backup)
    for i in range(5):
        sp.send("a", f"m{i}")
    sp.run()
    _restore_a(sp, backup)
    sp.step()  # HELLOs cross; a's recovery request is now in flight on one path
    (asked,) = [p for p in sp.paths if any(t is FrameType.GAP for t, _ in frames(p.a_to_b))]
    if cut == "every path":
        for p in sp.paths:
            sp.disconnect(p)
        for p in sp.paths:
            sp.connect(p)
    else:
        sp.disconnect(asked)
    local = sp.send("a", "after restore")
    sp.run()
    assert sp.a.ledger.outbox_item(local).seq == 6
    assert texts(sp.b.ledger, sp.line, sp.a.us) == [*(f"m{i}" for i in range(5)), "after restore"]
    assert alarms(sp) == []
    assert_verifies(sp)


def test_restored_backup_with_a_pending_outbox_does_not_send_twice(sp: SessionPair, tmp_path: Path) -> None:
    for i in range(3):
        sp.send("a", f"m{i}")
    sp.run()
    for p in sp.paths:
        sp.disconnect(p)
    sp.send("a", "pending 1")
    sp.send("a", "pending 2")
    backup = tmp_path / "a-backup.sqlite"
    _backup(sp.dir_a.ledger_path, backup)  # the two wait, unsigned, in this copy
    for p in sp.paths:
        sp.connect(p)
    sp.run()  # now signed as seq 4 and 5 and held by b
    _restore_a(sp, backup)
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["m0", "m1", "m2", "pending 1", "pending 2"]
    assert sp.a.status().to_obj()["outbox"] == 0


# -- guarantee 2: equivocation --------------------------------------------------------------------
def test_equivocation_is_kept_as_evidence_and_halts_the_direction(sp: SessionPair) -> None:
    """A signs a second, different envelope at seq 2, which B already holds."""
    for i in range(3):
        sp.send("a", f"m{i}")
    sp.run()
    before = heads(sp)
    original = sp.b.ledger.raw_envelope(sp.line, sp.a.us, 2)
    forged = forge(sp, seq=2, text="we never said m1")
    inject(sp, "b", forged.encode())

    (evidence,) = sp.b.ledger.equivocations(sp.line)
    assert evidence.sender == sp.a.us and evidence.seq == 2
    assert evidence.first == original and evidence.second == forged.encode()
    assert sp.b.status().to_obj()["halted"]
    assert any(level == "alarm" and "EQUIVOCATION" in text for who, level, text in sp.alarms if who == "b")
    assert heads(sp) == before
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["m0", "m1", "m2"]

    # Nothing more is accepted from A, over the wire or after a restart.
    sp.send("a", "m3")
    sp.run()
    assert sp.b.ledger.head(sp.line, sp.a.us) == before["b holds a"]
    sp.restart("b")
    sp.run()
    assert sp.b.status().to_obj()["halted"]
    assert sp.b.ledger.head(sp.line, sp.a.us) == before["b holds a"]
    # The evidence is in the transcript: verification shows the fork.
    roots = {sp.a.us: sp.a.keys.root_public, sp.b.us: sp.b.keys.root_public}
    report = verify_line(sp.b.ledger.line_data(sp.line), roots)
    assert any("EQUIVOCATION" in p.what for p in report.problems)


def test_equivocation_sent_on_two_paths_at_once_is_detected(sp: SessionPair) -> None:
    """The fork attack proper: path0 carries A's seq 2, path1 a different seq 2, in one burst."""
    sp.send("a", "m0")
    sp.run()
    sp.send("a", "m1")
    sp.flush()  # seq 2 is queued on both paths
    prev = split(sp.a.ledger.raw_envelope(sp.line, sp.a.us, 1)).id
    other = forge(sp, seq=2, text="the other m1", prev=prev)
    sp.paths[1].a_to_b.clear()
    sp.paths[1].a_to_b.append(encode_frame(FrameType.ENVELOPE, other.encode()))
    sp.run()
    assert len(sp.b.ledger.equivocations(sp.line)) == 1
    assert sp.b.status().to_obj()["halted"]


def test_equivocation_alarms_both_ends(sp: SessionPair) -> None:
    sp.send("a", "m0")
    sp.run()
    inject(sp, "b", forge(sp, seq=1, text="forked").encode())
    sp.run()
    assert any("equivocat" in text.lower() for who, _, text in sp.alarms if who == "a")


def test_copy_of_a_stored_envelope_with_a_corrupted_signature_is_dropped_unchecked(sp: SessionPair) -> None:
    """A copy is recognised by (seq, id); the id does not cover the signature, so a copy whose
    signature was damaged in transit is the same envelope and is dropped before verification:
    no alarm, no evidence, no closed path."""
    for i in range(3):
        sp.send("a", f"m{i}")
    sp.run()
    before = heads(sp)
    raw = sp.b.ledger.raw_envelope(sp.line, sp.a.us, 2)
    corrupted = raw[:-64] + bytes(b ^ 0xFF for b in raw[-64:])
    inject(sp, "b", corrupted)  # the link still remembers seq 2's id
    sp.restart("b")
    sp.run()
    inject(sp, "b", corrupted)  # after a restart the ledger knows the id
    assert sp.alarms == []
    assert all(p.up for p in sp.paths)
    assert sp.b.ledger.equivocations(sp.line) == [] and not sp.b.status().to_obj()["halted"]
    assert heads(sp) == before
    assert sp.b.ledger.raw_envelope(sp.line, sp.a.us, 2) == raw


def test_forged_equivocation_with_a_bad_signature_is_not_evidence(sp: SessionPair) -> None:
    """Framing the peer: a different envelope at a used seq that A never signed must not be kept
    as proof that A equivocated, nor halt the line."""
    for i in range(2):
        sp.send("a", f"m{i}")
    sp.run()
    before = heads(sp)
    forged = forge(sp, seq=2, text="framed", signer=nacl.signing.SigningKey.generate(),
                   key_id=sp.dir_a.load_keys().key_id)  # fmt: skip
    inject(sp, "b", forged.encode())
    assert sp.b.ledger.equivocations(sp.line) == []
    assert not sp.b.status().to_obj()["halted"]
    assert heads(sp) == before


def test_envelope_replayed_from_another_line_is_refused(sp: SessionPair) -> None:
    for i in range(2):
        sp.send("a", f"m{i}")
    sp.run()
    before = heads(sp)
    other_line = os.urandom(16).hex()
    replay = forge(sp, seq=3, text="said on another line", line=other_line)
    inject(sp, "b", replay.encode())
    assert heads(sp) == before
    assert not sp.b.ledger.has_id(sp.line, replay.id)
    assert any(who == "b" and "another line" in text for who, _, text in alarms(sp))
    assert not any(p.up for p in sp.paths)  # the paths that carried it were closed
    # The line recovers on reconnect; the real seq 3 goes through.
    for p in sp.paths:
        sp.connect(p)
    sp.send("a", "m2")
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["m0", "m1", "m2"]
    assert_verifies(sp)


def test_envelope_signed_by_an_unpaired_key_is_refused(sp: SessionPair) -> None:
    """A key the peer's pinned root never certified, under its own key id."""
    sp.send("a", "m0")
    sp.run()
    before = heads(sp)
    rogue = nacl.signing.SigningKey.generate()
    env = forge(sp, seq=2, text="rogue", signer=rogue, key_id=identity.key_id(rogue.verify_key.encode()))
    inject(sp, "b", env.encode())
    assert heads(sp) == before and not sp.b.ledger.has_id(sp.line, env.id)
    assert any(who == "b" and "never certified" in text for who, _, text in alarms(sp))
    assert sp.b.ledger.equivocations(sp.line) == [] and not sp.b.status().to_obj()["halted"]


def test_envelope_signed_by_another_key_under_the_peers_key_id_is_refused(sp: SessionPair) -> None:
    sp.send("a", "m0")
    sp.run()
    before = heads(sp)
    env = forge(sp, seq=2, text="substituted", signer=nacl.signing.SigningKey.generate())
    inject(sp, "b", env.encode())
    assert heads(sp) == before and not sp.b.ledger.has_id(sp.line, env.id)
    assert any(who == "b" and "signature does not verify" in text for who, _, text in alarms(sp))


def test_envelope_that_does_not_extend_the_chain_is_refused(sp: SessionPair) -> None:
    """A validly signed seq 2 whose prev is not our seq 1: a spliced history."""
    sp.send("a", "m0")
    sp.run()
    before = heads(sp)
    env = forge(sp, seq=2, text="spliced", prev="ab" * 32)
    inject(sp, "b", env.encode())
    assert heads(sp) == before
    assert any(who == "b" and "does not name the previous envelope" in text for who, _, text in alarms(sp))


# -- bad input from our own side --------------------------------------------------------------------
def test_oversized_message_is_refused_and_the_outbox_is_unchanged(sp: SessionPair) -> None:
    sp.send("a", "fits")
    before = sp.a.ledger.pending_count(sp.line)
    with pytest.raises(LocalProtocolError, match="max_body_bytes"):
        sp.send("a", "x" * (sp.limits.max_body_bytes + 1))
    assert sp.a.ledger.pending_count(sp.line) == before
    sp.run()
    assert texts(sp.b.ledger, sp.line, sp.a.us) == ["fits"]


def test_full_outbox_refuses_more(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path, limits=Limits(max_outbox=2))
    try:
        for p in sp.paths:
            sp.disconnect(p)
        sp.send("a", "1")
        sp.send("a", "2")
        with pytest.raises(LocalProtocolError, match="outbox"):
            sp.send("a", "3")
        assert sp.a.ledger.pending_count(sp.line) == 2
    finally:
        sp.close()


def test_a_retry_of_an_accepted_key_is_answered_when_the_outbox_is_full(tmp_path: Path) -> None:
    """The message under the key is in the outbox already: its retry (an answer lost to a timeout)
    gets the first acceptance, not "the outbox is full", and another message under it is refused."""
    sp = SessionPair(tmp_path, limits=Limits(max_outbox=2))
    try:
        for p in sp.paths:
            sp.disconnect(p)
        sp.send("a", "1")
        with sp.a.ledger.batch():
            first = sp.a.accept("TEXT", "ROUTINE", {"text": "2"}, "req-full", sp.clock.wall)
        with sp.a.ledger.batch():
            assert sp.a.accept("TEXT", "ROUTINE", {"text": "2"}, "req-full", sp.clock.wall) == first
            with pytest.raises(IdempotencyConflictError, match=r"outbox #\d+, not signed yet"):
                sp.a.accept("TEXT", "ROUTINE", {"text": "3"}, "req-full", sp.clock.wall)
            with pytest.raises(LocalProtocolError, match="outbox"):
                sp.a.accept("TEXT", "ROUTINE", {"text": "3"}, "req-other", sp.clock.wall)
        assert sp.a.ledger.pending_count(sp.line) == 2
    finally:
        sp.close()


# -- guarantee 3: checkpoints -------------------------------------------------------------------
def _flash_from(sp: SessionPair, role: str) -> tuple[str, LineSession]:
    """The station that proposes checkpoints (lower fingerprint) or the other one."""
    who = "a" if sp.a.is_proposer == (role == "proposer") else "b"
    return who, session(sp, who)


@pytest.mark.parametrize("role", ["proposer", "other"])
def test_flash_is_followed_by_the_same_cosigned_checkpoint_on_both_ledgers(sp: SessionPair, role: str) -> None:
    sp.send("a", "routine a")
    sp.send("b", "routine b")
    sp.run()
    who, _ = _flash_from(sp, role)
    sp.send(who, "FLASH: launch detected", kind="FLASH", prio="FLASH")
    sp.run()
    cp_a, cp_b = sp.a.ledger.checkpoints(sp.line), sp.b.ledger.checkpoints(sp.line)
    assert cp_a and cp_a == cp_b
    n, proposal, cosign = cp_a[-1]
    assert proposal != cosign
    roots = {sp.a.us: sp.a.keys.root_public, sp.b.us: sp.b.keys.root_public}
    for s in (sp.a, sp.b):
        report = verify_line(s.ledger.line_data(sp.line), roots)
        assert report.ok, report.problems
        assert report.checkpoints == n


@pytest.mark.parametrize("role", ["proposer", "other"])
def test_checkpoint_after_a_flash_covers_the_flash(sp: SessionPair, role: str) -> None:
    sp.send("a", "routine a")
    sp.send("b", "routine b")
    sp.run()
    who, sender = _flash_from(sp, role)
    sp.send(who, "FLASH: launch detected", kind="FLASH", prio="FLASH")
    sp.run()
    flash_seq = sender.ledger.head(sp.line, sender.us)[0]
    last = sp.a.ledger.last_checkpoint(sp.line)
    assert last is not None
    assert Checkpoint.peek(last[1]).head(sender.us).size == flash_seq


def test_checkpoints_extend_each_other(sp: SessionPair) -> None:
    for i in range(3):
        sp.send("a", f"FLASH {i}", kind="FLASH", prio="FLASH")
        sp.send("b", f"ACK {i}", kind="ACK")
        sp.run()
    cps = sp.a.ledger.checkpoints(sp.line)
    assert [n for n, _, _ in cps] == list(range(1, len(cps) + 1))
    assert len(cps) >= 2 and cps == sp.b.ledger.checkpoints(sp.line)
    assert_verifies(sp)


def test_periodic_checkpoint_after_checkpoint_every_seconds(sp: SessionPair) -> None:
    sp.send("a", "m0")
    sp.send("b", "n0")
    sp.run()
    for _ in range(int(sp.limits.checkpoint_every_seconds) + 1):
        sp.tick(1.0)
        sp.run()
    cps = sp.a.ledger.checkpoints(sp.line)
    assert cps and cps == sp.b.ledger.checkpoints(sp.line)
    last = Checkpoint.peek(cps[-1][1])
    assert last.head(sp.a.us).size == 1 and last.head(sp.b.us).size == 1
    assert_verifies(sp)


def test_an_idle_line_past_checkpoint_every_seconds_is_left_alone_until_something_new(sp: SessionPair) -> None:
    """Issue 12: once the last checkpoint covers both chains, the checkpoint timer no longer marks a
    checkpoint due at every tick (each flush then opened a transaction, only for the proposal to be
    declined), and the line's next tick is not due for it; the first tick after something new
    still checkpoints it."""
    sp.send("a", "m0")
    sp.send("b", "n0")
    sp.run()
    every = int(sp.limits.checkpoint_every_seconds)
    for _ in range(every + 1):
        sp.tick(1.0)
        sp.run()
    proposer = sp.a if sp.a.is_proposer else sp.b
    cps = proposer.ledger.checkpoints(sp.line)
    for _ in range(2 * every):
        sp.tick(1.0)
        assert proposer._idle(sp.clock.wall) and proposer.next_due(sp.clock.now)[1] == float("inf")
        sp.run()
    assert proposer.ledger.checkpoints(sp.line) == cps
    sp.send("b", "n1")
    sp.run()
    assert proposer.next_due(sp.clock.now)[1] <= sp.clock.wall  # the timer has long passed
    sp.tick(0.1)
    sp.run()
    (*_, last) = proposer.ledger.checkpoints(sp.line)
    assert len(cps) + 1 == last[0] and Checkpoint.peek(last[1]).head(sp.b.us).size == 2
    assert_verifies(sp)


def test_a_held_receipt_costs_no_transaction_until_it_is_due_and_is_counted_once(sp: SessionPair) -> None:
    """The peer's receipt alone is not worth an fsync: it is kept for the next commit or the next
    second. Meanwhile every flush (each copy of a frame, each tick) opened an empty transaction and
    counted the same receipt again; now it costs nothing until it is due, and a flush once it is (the
    tick's) saves it."""
    counted: list[int] = []
    sp.a.on_receipted = lambda seq, at: counted.append(seq)
    for text in ("m0", "m1"):  # the first receipt is saved (none was for a second); the next one is held
        sp.send("a", text)
        sp.run()
    assert counted == [1, 2] and sp.a.receipted_seq == 2

    def stored() -> int:
        held = sp.a.ledger.latest_receipt(sp.line, sp.b.us)
        return held[0] if held else 0

    statements: list[str] = []
    sp.a.ledger._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    for _ in range(5):
        assert sp.a.flush(sp.clock.wall) == []
    assert statements == [] and counted == [1, 2] and stored() == 1
    sp.clock.advance(1.0)
    sp.a.flush(sp.clock.wall)
    assert stored() == 2 and counted == [1, 2]
    assert any(s.startswith("INSERT OR IGNORE INTO receipts") for s in statements)
    statements.clear()
    sp.a.flush(sp.clock.wall)
    assert statements == []  # saved: idle again


def test_a_receipt_alone_is_taken_without_a_transaction(sp: SessionPair) -> None:
    """With one message in flight each receipt comes alone. The flush that takes it counts it and
    holds it in memory without a transaction (it opened and committed one that wrote nothing, once
    per message); the sender's own commit is the only one, and a receipt due to be saved is."""
    counted: list[int] = []
    sp.a.on_receipted = lambda seq, at: counted.append(seq)
    sp.send("a", "m0")
    sp.run()  # the first receipt is saved (none was for a second)
    statements: list[str] = []
    sp.a.ledger._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    for n in (2, 3):
        statements.clear()
        sp.send("a", f"m{n}")
        sp.run()
        assert sp.a.receipted_seq == n and counted[-1] == n
        assert statements.count("BEGIN IMMEDIATE") == 2  # accepting it, and signing it: not the receipt
    assert counted == [1, 2, 3] and sp.a.ledger.latest_receipt(sp.line, sp.b.us)[0] == 1  # type: ignore[index]
    sp.clock.advance(1.0)
    statements.clear()
    sp.a.flush(sp.clock.wall)
    assert sp.a.ledger.latest_receipt(sp.line, sp.b.us)[0] == 3  # type: ignore[index]
    assert statements.count("BEGIN IMMEDIATE") == 1 and counted == [1, 2, 3]


def test_a_receipt_is_parsed_once_and_its_id_checked_without_a_query(
    sp: SessionPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session parses a receipt to drop copies and old ones, and hands that parse to the gate
    (which parsed it again); the gate's check that it names the id held at its seq is answered by
    the chain's head kept in memory, not a query. Every rule is still the gate's: a receipt naming
    another id at that seq is refused."""
    sp.send("a", "m0")
    sp.run()
    peeks: list[bytes] = []
    real_peek = Receipt.peek.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Receipt, "peek", classmethod(lambda cls, signed: (peeks.append(signed.data),
                                                                          real_peek(cls, signed))[1]))  # fmt: skip
    statements: list[str] = []
    sp.a.ledger._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    sp.send("a", "m1")
    sp.run()
    assert sp.a.receipted_seq == 2 and len(peeks) == 1
    assert not [s for s in statements if s.startswith("SELECT id FROM envelopes")]
    forged = Receipt(line=sp.line, by=sp.b.us, key=sp.b.keys.key_id, of=sp.a.us, seq=2, id="ab" * 32,
                     received_at=sp.clock.wall).sign(sp.b.keys.signing)  # fmt: skip
    with pytest.raises(ReceiptMismatchError):
        sp.a.gate.accept_receipt(forged, by=sp.b.us, peeked=Receipt.peek(forged))


def test_the_side_that_does_not_propose_checkpoints_opens_no_transaction_for_one(tmp_path: Path) -> None:
    """Only the proposer proposes checkpoints. The other side's flush counted its envelopes since
    the last checkpoint as due once past checkpoint_every_envelopes, and until the proposer's next
    checkpoint (up to checkpoint_every_seconds) every flush, each receipt's and each tick's, opened
    and committed a write transaction for nothing; now only what it has to store or sign does. The
    proposer still proposes at that count."""
    sp = SessionPair(tmp_path, limits=Limits(checkpoint_every_envelopes=2))
    try:
        sp.run()
        proposer, other = _proposer(sp)
        quiet = sp.a if other == "a" else sp.b
        for i in range(3):
            sp.send(other, f"m{i}")
            sp.run()
        statements: list[str] = []
        quiet.ledger._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        for _ in range(3):
            assert quiet.flush(sp.clock.wall) == []
        assert statements == []
        sp.send(other, "m3")
        statements.clear()
        before = quiet.ledger.last_checkpoint(sp.line)
        sp.run()  # signed in one transaction; the receipt that comes back is taken without one
        after = quiet.ledger.last_checkpoint(sp.line)
        cosigned = (after[0] if after else 0) - (before[0] if before else 0)  # one transaction each
        assert statements.count("BEGIN IMMEDIATE") == 1 + cosigned and quiet.receipted_seq == 4
        for i in range(3):
            sp.send(proposer, f"p{i}")
            sp.run()
        assert sp.a.ledger.last_checkpoint(sp.line) is not None  # the proposer's count still proposes
    finally:
        sp.close()


def test_the_other_sides_envelopes_bring_a_checkpoint_by_count_too(tmp_path: Path) -> None:
    """PROTOCOL.md 8.7: the proposer proposes at least every checkpoint_every_envelopes envelopes
    of either chain. It counted only its own, so a side that does not propose could send any number
    of TEXT envelopes with none co-signed until the proposer's timer (60 s by default)."""
    sp = SessionPair(tmp_path, limits=Limits(checkpoint_every_envelopes=3))
    try:
        sp.run()
        _, other = _proposer(sp)
        for i in range(3):
            assert sp.a.ledger.last_checkpoint(sp.line) is None
            sp.send(other, f"m{i}")
            sp.run()
        last = sp.a.ledger.last_checkpoint(sp.line)
        assert last is not None and last == sp.b.ledger.last_checkpoint(sp.line)
        sender = (sp.a if other == "a" else sp.b).us
        assert Checkpoint.peek(last[1]).head(sender).size == 3  # the other side's three, co-signed
    finally:
        sp.close()


def _proposer(sp: SessionPair) -> tuple[str, str]:
    return ("a", "b") if sp.a.is_proposer else ("b", "a")


def test_lost_countersignature_is_answered_again_after_reconnect(sp: SessionPair) -> None:
    proposer, other = _proposer(sp)
    sp.send(other, "FLASH", kind="FLASH", prio="FLASH")
    pump(sp, drop=lambda who, _, t: who == proposer and t is FrameType.COSIGN)
    assert len(session(sp, other).ledger.checkpoints(sp.line)) == 1
    assert session(sp, proposer).ledger.checkpoints(sp.line) == []
    for p in sp.paths:
        sp.disconnect(p)
    for p in sp.paths:
        sp.connect(p)
    sp.run()
    assert sp.a.ledger.checkpoints(sp.line) == sp.b.ledger.checkpoints(sp.line) != []
    assert alarms(sp) == []
    assert_verifies(sp)


def test_checkpoints_resume_after_the_proposer_restarts_with_a_countersignature_lost(sp: SessionPair) -> None:
    proposer, other = _proposer(sp)
    sp.send(other, "FLASH", kind="FLASH", prio="FLASH")
    pump(sp, drop=lambda who, _, t: who == proposer and t is FrameType.COSIGN)
    sp.restart(proposer)
    sp.run()
    sp.send(other, "FLASH 2", kind="FLASH", prio="FLASH")
    sp.run()
    cps = sp.a.ledger.checkpoints(sp.line)
    assert cps == sp.b.ledger.checkpoints(sp.line) and len(cps) >= 2
    assert alarms(sp) == []


def test_simulated_clock_keeps_wall_time_in_step_with_monotonic_time(sp: SessionPair) -> None:
    now, wall = sp.clock.now, sp.clock.wall
    for _ in range(100):
        sp.clock.advance(2.01)
    assert sp.clock.now - now == pytest.approx(201.0)
    assert sp.clock.wall - wall == 201_000
