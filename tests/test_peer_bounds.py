"""Numbers a paired, authenticated peer controls must never become our loop bounds, allocation
sizes or the size of one burst (attack_peer review). SessionPair: real keys, real SQLite, real
frames; only the sockets and the clock are simulated."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any

from redline import canonical
from redline.config import Limits
from redline.envelope import split
from redline.protocol.events import Close, Send
from redline.protocol.framing import FrameDecoder, FrameType, encode_frame
from redline.session import LineSession
from redline.testing import SessionPair
from tests.test_session import _backup, _restore_a, alarms, assert_verifies, texts


def hello(sp: SessionPair, sender: LineSession, *, yours_seq: int, yours_id: str | None) -> bytes:
    """A HELLO in ``sender``'s name, as its station would write it, but claiming ``yours``."""
    mine = sender.ledger.head(sp.line, sender.us)
    obj: dict[str, Any] = {
        "versions": [1], "line": sp.line, "station": sender.us,
        "mine": {"seq": mine[0], "id": mine[1]}, "yours": {"seq": yours_seq, "id": yours_id},
        "time": sp.clock.wall, "confirmed": True, "checkpoint": sender.link.checkpoint_n,
    }  # fmt: skip
    return encode_frame(FrameType.HELLO, canonical.encode(obj))


def test_a_replayed_old_checkpoint_proposal_reads_one_row_whatever_the_history(tmp_path: Path) -> None:
    """The peer sends its own validly signed proposal n=1 again, as often as it likes: we answer
    with the stored pair, read by its key. Before, each copy loaded and decoded every checkpoint
    row of the line (O(history) on the event loop per ~400-byte frame). The history is grown with
    copies of the real rows (the store does not check them; the replay path only reads)."""
    sp = SessionPair(tmp_path, paths=1, limits=Limits(checkpoint_every_envelopes=1, test_times_utc=()))
    try:
        sp.run()
        sp.send("a", "x")
        sp.run()
        proposer, victim = (sp.a, sp.b) if sp.a.is_proposer else (sp.b, sp.a)
        first = victim.ledger.checkpoint(sp.line, 1)
        assert first is not None
        replay = encode_frame(FrameType.CHECKPOINT, first[1].encode())
        head = victim.ledger.head(sp.line, victim.us)
        victim.path_up("evil", sp.clock.now, sp.clock.wall)
        victim.receive("evil", hello(sp, proposer, yours_seq=head[0], yours_id=head[1]), sp.clock.now, sp.clock.wall)

        def cost() -> float:  # the fastest of a few: noise on a shared machine only adds
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                out = victim.receive("evil", replay, sp.clock.now, sp.clock.wall)
                best = min(best, time.perf_counter() - t0)
                sent = [a.data for a in out if isinstance(a, Send)]
                assert sent == [replay, encode_frame(FrameType.COSIGN, first[2].encode())]  # the stored pair
            return best

        small = cost()
        last = victim.ledger.last_checkpoint(sp.line)
        assert last is not None
        with victim.ledger.batch():
            for n in range(last[0] + 1, last[0] + 1 + 5_000):
                victim.ledger.add_checkpoint(sp.line, n, last[1], last[2])
        big = cost()
        # Before: ~6 us per stored row, 5,000 rows ~ 200x the one-row cost.
        assert big < 10 * small, f"{big / small:.0f}x the cost with 5,000 more checkpoints held"
    finally:
        sp.close()


def _junk_own(sp: SessionPair, seq: int, body: int, seen: int) -> bytes:
    """Bytes routed as one of A's own envelopes (sender = A), seen = ``seen``; never signed."""
    header = canonical.encode({"seq": seq, "sender": sp.a.us, "seen": {"seq": seen, "id": "00" * 32}})
    payload = os.urandom(body)
    return struct.pack(">I", len(header)) + header + struct.pack(">I", len(payload)) + payload + b"\0" * 64


def test_a_peer_claiming_more_of_our_chain_cannot_park_unverified_bytes_beyond_the_gap_buffer(tmp_path: Path) -> None:
    """A fake recovery: one HELLO saying the peer holds our chain up to 10^12, then our 'own'
    envelopes whose ``seen`` is beyond what we hold of the peer's, so each must wait unverified.
    They wait within max_gap_buffer_bytes (before: 64 x 200 kB held against 1 MiB, 4 GiB with the
    defaults), and not across reconnects."""
    limits = Limits(max_gap_buffer=64, max_gap_buffer_bytes=1 << 20, test_times_utc=())
    sp = SessionPair(tmp_path, paths=1, limits=limits)
    try:
        sp.run()
        a = sp.a
        a.path_up("evil", sp.clock.now, sp.clock.wall)
        a.receive("evil", hello(sp, sp.b, yours_seq=10**12, yours_id="ab" * 32), sp.clock.now, sp.clock.wall)
        assert a.link.recover_to == 10**12
        for seq in range(1, 65):
            frame = encode_frame(FrameType.ENVELOPE, _junk_own(sp, seq, 200_000, seen=10**9))
            a.receive("evil", frame, sp.clock.now, sp.clock.wall)
        held = sum(len(raw) for _, raw in a._own_waiting)
        assert 0 < held <= limits.max_gap_buffer_bytes, f"{held:,} unverified bytes held from the peer"
        for path in ("evil", "path0"):
            a.path_down(path, "cut", sp.clock.wall)
        assert not a._own_waiting
    finally:
        sp.close()


def test_our_own_envelope_refused_in_recovery_is_asked_for_again_and_recovery_finishes(
    tmp_path: Path,
) -> None:
    """A returned envelope of ours that fails verification (here: junk with a zero signature,
    arriving before the peer's real answer) closes every path, and the next HELLO asks for it
    again. Before, the link had handed that seq over and never asked again: recovery, and with
    it all signing on the line, stalled until a restart."""
    sp = SessionPair(tmp_path, paths=1, limits=Limits(test_times_utc=()))
    try:
        sp.run()
        backup = tmp_path / "a-backup.sqlite"
        _backup(sp.dir_a.ledger_path, backup)
        for i in range(4):
            sp.send("a", f"m{i}")
        sp.run()
        _restore_a(sp, backup)
        sp.step()  # HELLOs cross: A asks B for its seqs 1..4
        junk = encode_frame(FrameType.ENVELOPE, _junk_own(sp, 1, 10, seen=0))
        sp.paths[0].b_to_a.appendleft(junk)  # before B's real answer
        sp.run()
        assert any("could not recover our envelope seq 1" in t for _, _, t in alarms(sp))
        sp.connect(sp.paths[0])
        sp.send("a", "after restore")
        sp.run()
        assert texts(sp.a.ledger, sp.line, sp.a.us) == [*(f"m{i}" for i in range(4)), "after restore"]
        assert texts(sp.b.ledger, sp.line, sp.a.us) == texts(sp.a.ledger, sp.line, sp.a.us)
        assert_verifies(sp)
    finally:
        sp.close()


def _sent(actions: list[Any], path: str) -> int:
    return sum(len(x.data) for x in actions if isinstance(x, Send) and x.path == path)


def test_one_gap_request_for_the_peers_own_chain_is_answered_within_the_gap_buffer_bytes(tmp_path: Path) -> None:
    """One ~100-byte GAP frame for the peer's own chain (its recovery): before, capped at
    max_gap_buffer envelopes only, so with envelopes of up to max_body_bytes one frame made us build
    ~1 GiB with the defaults (here 16 x 60 kB against a 256 KiB bound). The peer asks again for the
    rest once it has stored what came."""
    limits = Limits(max_gap_buffer=64, max_gap_buffer_bytes=256 * 1024, test_times_utc=())
    sp = SessionPair(tmp_path, paths=1, limits=limits)
    try:
        sp.run()
        for i in range(16):
            sp.send("b", "x" * 60_000 + str(i))
        sp.run()
        gap = encode_frame(FrameType.GAP, canonical.encode({"station": sp.b.us, "from": 1, "to": 16}))
        out = _sent(sp.a.receive("path0", gap, sp.clock.now, sp.clock.wall), "path0")
        assert 0 < out <= limits.max_gap_buffer_bytes, f"{out:,} bytes answered to one {len(gap)}-byte frame"
    finally:
        sp.close()


def test_a_gap_in_our_chain_bigger_than_the_gap_buffer_bytes_is_answered_in_parts_until_filled(
    tmp_path: Path,
) -> None:
    """The peer lost our seqs 2..9 on the way (it holds 1 and 10) and asks for them: the answer is
    at most max_gap_buffer_bytes, the rest follows as its receipts come, and the whole gap is
    filled in order."""
    limits = Limits(max_gap_buffer_bytes=200_000, test_times_utc=())
    sp = SessionPair(tmp_path, paths=1, limits=limits)
    try:
        sp.run()
        for i in range(10):
            sp.send("a", "x" * 60_000 + str(i))
        sp.flush()  # A signs all ten; their frames wait on the path
        queue = sp.paths[0].a_to_b
        lost = [d for d in queue if FrameType(d[4]) is FrameType.ENVELOPE][1:9]
        assert len(lost) == 8
        for d in lost:
            queue.remove(d)
        got: list[Any] = []
        while queue:
            got += sp.b.receive("path0", queue.popleft(), sp.clock.now, sp.clock.wall)
        (ask,) = [x for x in got if isinstance(x, Send) and FrameType(x.data[4]) is FrameType.GAP]
        answer = sp.a.receive("path0", ask.data, sp.clock.now, sp.clock.wall)  # B holds 1 and 10, asks for 2..9
        assert 0 < _sent(answer, "path0") <= limits.max_gap_buffer_bytes
        sp._do("a", answer)
        sp.run()
        assert texts(sp.b.ledger, sp.line, sp.a.us) == ["x" * 60_000 + str(i) for i in range(10)]
        assert alarms(sp) == []
        assert_verifies(sp)
    finally:
        sp.close()


def test_a_restored_peer_recovers_its_own_chain_in_parts_of_the_gap_buffer_bytes(tmp_path: Path) -> None:
    """A lost its last 10 envelopes (a restore from backup) and asks B for them: each of B's
    answers is at most max_gap_buffer_bytes, and A asks again for the rest once it has stored each
    part, until it holds its whole chain again."""
    limits = Limits(max_gap_buffer_bytes=200_000, test_times_utc=())
    sp = SessionPair(tmp_path, paths=1, limits=limits)
    try:
        sp.run()
        backup = tmp_path / "a-backup.sqlite"
        _backup(sp.dir_a.ledger_path, backup)
        for i in range(10):
            sp.send("a", "x" * 60_000 + str(i))
            sp.run()
        _restore_a(sp, backup)
        biggest = 0
        for _ in range(100):  # the steps of SessionPair.run, watching each burst B writes
            for p in sp.paths:
                while p.a_to_b and p.up:
                    out = sp.b.receive(p.name, p.a_to_b.popleft(), sp.clock.now, sp.clock.wall)
                    biggest = max(biggest, _sent(out, p.name))
                    sp._do("b", out)
                while p.b_to_a and p.up:
                    sp._do("a", sp.a.receive(p.name, p.b_to_a.popleft(), sp.clock.now, sp.clock.wall))
            sp.flush()
            if not any(p.a_to_b or p.b_to_a for p in sp.paths):
                break
        assert biggest <= limits.max_gap_buffer_bytes
        assert texts(sp.a.ledger, sp.line, sp.a.us) == ["x" * 60_000 + str(i) for i in range(10)]
        assert alarms(sp) == []
    finally:
        sp.close()


def _envelopes(actions: list[Any], path: str) -> list[int]:
    """The seqs of the ENVELOPE frames ``actions`` put on ``path``."""
    seqs: list[int] = []
    for act in actions:
        if isinstance(act, Send) and act.path == path:
            for t, payload in FrameDecoder(1 << 30).feed(act.data):
                if t is FrameType.ENVELOPE:
                    seqs.append(canonical.decode_object(split(payload).header_bytes, "header")["seq"])
    return seqs


def test_one_hello_claiming_nothing_held_resends_at_most_a_window_at_once(tmp_path: Path) -> None:
    """A HELLO saying ``yours.seq = 0``: before, we read our whole chain and framed all of it in one
    synchronous step (120 envelopes here; a year of traffic for real), the peer's number as the
    loop bound. Now at most ``window`` past what it says it holds, the rest as its receipts come."""
    sp = SessionPair(tmp_path, paths=1, limits=Limits(window=16, max_gap_buffer=16, test_times_utc=()))
    try:
        sp.run()
        for i in range(120):
            sp.send("a", f"m{i}")
            sp.run()
        sp.a.path_up("evil", sp.clock.now, sp.clock.wall)
        out = sp.a.receive("evil", hello(sp, sp.b, yours_seq=0, yours_id=None), sp.clock.now, sp.clock.wall)
        assert _envelopes(out, "evil") == list(range(1, 17))
        again = sp.a.receive("evil", hello(sp, sp.b, yours_seq=0, yours_id=None), sp.clock.now, sp.clock.wall)
        assert _envelopes(again, "evil") == []  # a second HELLO is a protocol error on an open path
    finally:
        sp.close()


def test_a_peer_restored_without_more_than_a_window_of_our_envelopes_gets_them_all_in_order(tmp_path: Path) -> None:
    """B is restored from a copy that lacks A's last 40 envelopes (window 16): A resends a window at
    a time, paced by B's receipts (which B makes again from seq 1 up, below what it had receipted
    before), and B ends up with all of them in order, and with what A signs meanwhile."""
    sp = SessionPair(tmp_path, paths=2, limits=Limits(window=16, test_times_utc=()))
    try:
        sp.run()
        backup = tmp_path / "b-backup.sqlite"
        _backup(sp.dir_b.ledger_path, backup)
        for i in range(40):
            sp.send("a", f"m{i}")
            sp.run()
        sp.b.ledger.close()
        live = sp.dir_b.ledger_path
        for suffix in ("", "-wal", "-shm"):
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, live)
        sp.restart("b")
        sp.send("a", "after restore")
        sp.run()
        want = [*(f"m{i}" for i in range(40)), "after restore"]
        assert texts(sp.b.ledger, sp.line, sp.a.us) == texts(sp.a.ledger, sp.line, sp.a.us) == want
        assert alarms(sp) == []
        assert_verifies(sp)
    finally:
        sp.close()


def test_a_gap_for_a_seq_behind_a_resend_under_way_is_answered_at_once(tmp_path: Path) -> None:
    """While a resend waits for the peer's receipts (a window out), the peer asks for one it had no
    room to hold: it goes out at once, or neither side could move again (the peer cannot receipt
    past the hole)."""
    sp = SessionPair(tmp_path, paths=1, limits=Limits(window=16, max_gap_buffer=16, test_times_utc=()))
    try:
        sp.run()
        for i in range(40):
            sp.send("a", f"m{i}")
            sp.run()
        sp.a.path_up("evil", sp.clock.now, sp.clock.wall)
        out = sp.a.receive("evil", hello(sp, sp.b, yours_seq=0, yours_id=None), sp.clock.now, sp.clock.wall)
        assert _envelopes(out, "evil") == list(range(1, 17))
        gap = encode_frame(FrameType.GAP, canonical.encode({"station": sp.a.us, "from": 3, "to": 3}))
        assert _envelopes(sp.a.receive("evil", gap, sp.clock.now, sp.clock.wall), "evil")[:1] == [3]
    finally:
        sp.close()


def test_a_refused_envelope_after_a_good_one_in_the_same_burst_leaves_no_spurious_refusal(tmp_path: Path) -> None:
    """Seq 2 (good) and seq 3 (signature broken) arrive in one burst: 3 is refused and the link
    rewinds. Before, it rewound to the stored head (1), past 2, which was verified and waiting for
    the commit: on the next connection the peer resent from 3, we held it as a gap, asked for 2
    again and refused it as out of order, an alarm for an envelope we had stored and receipted, and
    every path closed once more."""
    sp = SessionPair(tmp_path, paths=1, limits=Limits(test_times_utc=()))
    try:
        sp.run()
        sp.send("b", "one")
        sp.run()
        sp.send("b", "two")
        sp.send("b", "three")
        sp.flush()  # B signs 2 and 3; both frames wait on the path
        p = sp.paths[0]
        envs = [d for d in p.b_to_a if FrameType(d[4]) is FrameType.ENVELOPE]
        p.b_to_a.clear()
        assert len(envs) == 2
        bad = envs[1][:-1] + bytes([envs[1][-1] ^ 1])  # seq 3, signature broken
        sp._do("a", sp.a.receive(p.name, envs[0] + bad, sp.clock.now, sp.clock.wall))
        sp.flush()
        assert sp.a.ledger.head(sp.line, sp.b.us)[0] == 2  # seq 2 stored and receipted
        refused = [t for w, _, t in sp.alarms if w == "a" and "refused envelope" in t]
        assert len(refused) == 1 and "seq 3" in refused[0]
        sp.connect(p)
        sp.run()
        sp.tick(1.5)
        sp.run()
        assert texts(sp.a.ledger, sp.line, sp.b.us) == ["one", "two", "three"]
        assert [t for w, _, t in sp.alarms if w == "a" and "refused envelope" in t] == refused
        assert p.up
    finally:
        sp.close()


def test_a_hello_claiming_a_fork_is_alarmed_as_a_claim_and_closes_its_path(tmp_path: Path) -> None:
    """A HELLO is not signed: one naming another id at our head is the peer's word, not evidence.
    The alarm said "line halted", and nothing halted (PROTOCOL 8.4 said the same). Now it says what
    happens: this path closes with ERROR (and every path will, while the peer says so), and what to
    do; nothing else changes, so our next message is signed and goes out on the other path."""
    sp = SessionPair(tmp_path, paths=2, limits=Limits(test_times_utc=()))
    try:
        sp.run()
        sp.send("a", "one")
        sp.run()
        a = sp.a
        seq = a.ledger.head(sp.line, a.us)[0]
        a.path_up("evil", sp.clock.now, sp.clock.wall)
        out = a.receive("evil", hello(sp, sp.b, yours_seq=seq, yours_id="ee" * 32), sp.clock.now, sp.clock.wall)
        forks = [t for w, lvl, t in sp.alarms if w == "a" and "FORK" in t]
        assert len(forks) == 1 and "says" in forks[0] and "not signed" in forks[0] and "halted" not in forks[0]
        assert any(isinstance(o, Close) and o.path == "evil" for o in out)
        sp.send("a", "two")
        sp.run()
        assert a.ledger.head(sp.line, a.us)[0] == seq + 1 == sp.b.ledger.head(sp.line, a.us)[0]
    finally:
        sp.close()


def test_a_resend_started_by_a_stale_hello_does_not_stop_the_line_on_that_path(tmp_path: Path) -> None:
    """review_s8 H1. A resend goes on as the peer's receipts come; our new envelopes wait behind it on
    its path. If the HELLO that started it is older than a receipt that came on the other path (a
    slow path), the peer already holds what is still to go, receipts nothing more, and the resend
    stood still for ever: when the other path died, the line was up and in sync, and nothing new
    reached the peer. Now a resend that has not moved for path_dead_after goes on from what the
    peer receipted, and the envelope that waited behind it goes out."""
    limits = Limits(test_times_utc=(), max_gap_buffer_bytes=20_000)
    sp = SessionPair(tmp_path, limits=limits)
    try:
        sp.run()
        p0, p1 = sp.paths
        sp.disconnect(p1)
        for i in range(20):
            sp.send("a", f"{i} " + "x" * 5000)
        sp.connect(p1)  # the HELLOs made now: b's says it holds none of these 20
        held = list(p1.b_to_a)  # b's frames on path1 are late: its HELLO comes after its receipts
        p1.b_to_a.clear()
        for _ in range(100):  # everything else flows: b stores the 20 (over path0) and receipts them
            moved = False
            for q, target, who, name in ((p0.a_to_b, sp.b, "b", "path0"), (p0.b_to_a, sp.a, "a", "path0"),
                                         (p1.a_to_b, sp.b, "b", "path1")):  # fmt: skip
                while q:
                    moved = True
                    sp._do(who, target.receive(name, q.popleft(), sp.clock.now, sp.clock.wall))
            held += list(p1.b_to_a)
            p1.b_to_a.clear()
            sp.flush()
            if not moved:
                break
        head = sp.a.ledger.head(sp.line, sp.a.us)[0]
        assert sp.b.ledger.head(sp.line, sp.a.us)[0] == head == sp.a.receipted_seq
        p1.b_to_a.extend(held)  # now b's stale HELLO on path1 reaches a: a resend from seq 1 starts
        sp.run()
        sp.disconnect(p0)  # the other path dies
        sp.send("a", "after path0 died")
        sp.run()
        for _ in range(8):  # a second each (path_dead_after is 2.5): the heartbeats keep path1 up
            sp.tick(1)
            sp.run()
        assert p1.up and sp.b.ledger.head(sp.line, sp.a.us)[0] == head + 1
    finally:
        sp.close()
