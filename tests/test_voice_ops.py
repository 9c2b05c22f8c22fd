"""Voice calls, pure: signalling outcomes at both ends (ops/voice.py), the voice line test, and the
audio evidence hash (media.py). Time is driven explicitly; two LineOps joined by ``tests.test_ops.Line``."""

from __future__ import annotations

import pytest

from redline import kinds as kinds_mod
from redline.errors import LocalProtocolError
from redline.media import RESEND_PACKETS, AudioPacket, CallMedia, digest_of
from redline.ops.engine import check_operator_content
from redline.ops.model import Entry
from tests.test_ops import DEZHURNY, DUTY_EUCOM, EUCOM, NDMC, SECOND, Line, kinds, rosters


def ring(line: Line, test: Entry | None = None) -> Entry:
    content = {"test": test.ref} if test is not None else {}
    return line.file(line.a, "CALL_RING", DUTY_EUCOM.sign(content))


def pick_up(line: Line, r: Entry) -> Entry:
    return line.file(line.b, "CALL_ANSWER", DEZHURNY.sign({"ring": r.ref}))


def states(line: Line, r: Entry) -> tuple[str, str]:
    return line.a.ops.voice.calls[r.id].state, line.b.ops.voice.calls[r.id].state


def test_ring_pick_up_hang_up_same_state_at_both_ends() -> None:
    line = Line()
    rosters(line)
    r = ring(line)
    assert states(line, r) == ("ringing", "ringing")
    assert any("VOICE CALL ringing from the peer (Duty EUCOM)" in t for t in line.b.texts())
    p = pick_up(line, r)
    assert states(line, r) == ("live", "live")
    assert line.a.ops.voice.live() is not None and line.a.ops.voice.calls[r.id].answered_by == "Dezhurny"
    line.file(line.a, "CALL_HANGUP", {"ring": r.ref, "answer": p.ref})
    assert states(line, r) == ("ended", "ended")
    assert line.a.ops.voice.live() is None is line.b.ops.voice.live()


def test_unanswered_ring_is_recorded_by_the_caller_once() -> None:
    line = Line()
    rosters(line)
    r = ring(line)
    line.advance(60 * SECOND)
    assert line.ticks() == ([], [])  # exactly at the deadline it still rings
    line.advance(1)
    a, b = line.ticks()
    assert kinds(a) == ["CALL_UNANSWERED"] and b == []
    assert a[0].content == {"ring": r.ref}
    assert states(line, r) == ("unanswered", "unanswered")
    line.advance(60 * SECOND)
    assert line.ticks() == ([], [])  # once


def test_the_callers_unanswered_stands_over_a_pick_up_that_crossed_it() -> None:
    line = Line()
    rosters(line)
    r = ring(line)
    line.cut()
    line.advance(61 * SECOND)
    assert kinds(line.tick(line.a)) == ["CALL_UNANSWERED"]
    pick_up(line, r)  # NDMC picks up, not knowing: the two cross
    assert states(line, r) == ("unanswered", "live")
    line.restore()
    assert states(line, r) == ("unanswered", "unanswered")
    assert line.a.ops.voice.live() is None is line.b.ops.voice.live()


def test_a_call_whose_line_is_lost_is_ended_lost_by_the_survivor_and_that_stands_at_both_ends() -> None:
    line = Line()
    rosters(line)
    r = ring(line)
    p = pick_up(line, r)
    line.cut()  # a partition: both stations stay up, neither hears the other
    line.a.ops.voice.line_quiet(line.now)
    line.b.ops.voice.line_quiet(line.now)
    line.advance(30 * SECOND - 1)
    assert line.ticks() == ([], [])  # under call_lost_seconds: still live at both
    # A person at NDMC hangs up meanwhile: stored there first, crossing EUCOM's verdict.
    line.file(line.b, "CALL_HANGUP", {"ring": r.ref, "answer": p.ref})
    line.advance(1)
    a, b = line.ticks()
    assert kinds(a) == ["CALL_HANGUP"] and a[0].content == {"ring": r.ref, "answer": p.ref, "reason": "lost"}
    assert b == []  # NDMC's call was already over (its person hung up)
    assert line.a.ops.voice.calls[r.id].audio_ready  # EUCOM files its CALL_AUDIO at once
    assert any("this station lost the line" in t for t in line.a.texts())
    line.restore()
    assert states(line, r) == ("ended", "ended")
    assert line.a.ops.voice.calls[r.id].reason == "lost" == line.b.ops.voice.calls[r.id].reason
    assert line.a.ops.voice.calls[r.id].view().ended_at is not None


def test_a_call_with_audio_or_a_path_is_never_ended_as_lost() -> None:
    line = Line()
    rosters(line)
    r = ring(line)
    pick_up(line, r)
    line.a.ops.voice.line_quiet(line.now)
    line.advance(20 * SECOND)
    line.a.ops.voice.line_quiet(None)  # a path is back
    line.advance(20 * SECOND)
    assert line.ticks() == ([], []) and states(line, r) == ("live", "live")


def test_decline_and_busy() -> None:
    line = Line()
    rosters(line)
    r = ring(line)
    line.file(line.b, "CALL_DECLINE", {"ring": r.ref, "reason": "not now"})
    assert states(line, r) == ("declined", "declined")
    assert any("declined by the peer: not now" in t for t in line.a.texts())
    # Crossing rings: both stations decline the other's ring busy.
    line.cut()
    ra = ring(line)
    rb = line.file(line.b, "CALL_RING", DEZHURNY.sign({}))
    line.restore()
    a, b = line.ticks()
    assert [(i.kind, i.content) for i in a] == [("CALL_DECLINE", {"ring": rb.ref, "reason": "busy"})]
    assert [(i.kind, i.content) for i in b] == [("CALL_DECLINE", {"ring": ra.ref, "reason": "busy"})]
    assert states(line, ra) == ("declined", "declined") == states(line, rb)


def test_filings_the_call_state_does_not_allow_are_refused() -> None:
    line = Line()
    rosters(line)
    r = ring(line)
    with pytest.raises(LocalProtocolError, match="already ringing or live"):
        check_operator_content(line.a.ops, "CALL_RING", {})
    with pytest.raises(LocalProtocolError, match="declined, not hung up"):
        check_operator_content(line.b.ops, "CALL_HANGUP", {"ring": r.id[:12]})
    p = pick_up(line, r)
    with pytest.raises(LocalProtocolError, match="only a ringing call"):
        check_operator_content(line.b.ops, "CALL_ANSWER", {"ring": r.id[:12]})
    with pytest.raises(LocalProtocolError, match="names its pick-up"):
        check_operator_content(line.a.ops, "CALL_HANGUP", {"ring": r.id[:12]})
    ok = check_operator_content(line.a.ops, "CALL_HANGUP", {"ring": r.id[:12], "answer": p.id[:12]})
    assert ok == line.a.ops.voice.hangup_content(line.a.ops.voice.calls[r.id])


def test_voice_line_test_is_answered_by_picking_up_signed_by_that_person() -> None:
    line = Line()
    rosters(line)
    test = line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)
    r = ring(line, test)
    assert any("VOICE LINE TEST ringing" in t for t in line.b.texts())
    line.advance(5 * SECOND)
    pick_up(line, r)
    (result,) = line.tick(line.a)
    assert result.kind == "TEST_RESULT"
    assert result.content == {"test": test.ref, "result": "passed", "answered_by": "Dezhurny", "answer_ms": 5000}
    assert line.b.ops.tests.theirs[test.id].answered_by == "Dezhurny"


def test_a_pick_up_signed_by_a_person_not_on_the_roster_is_refused() -> None:
    from tests.test_ops import OUTSIDER

    line = Line()
    rosters(line)
    r = ring(line)
    line.file(line.b, "CALL_ANSWER", OUTSIDER.sign({"ring": r.ref}))
    assert states(line, r) == ("ringing", "ringing")
    assert any("refused CALL_ANSWER" in t for t in line.a.texts())


# --- the audio evidence ---------------------------------------------------------------------------


CALL = "ab" * 32


def media_pair() -> tuple[CallMedia, CallMedia]:
    a = CallMedia(call=CALL, us=EUCOM, peer=NDMC, started_at=0, max_bytes=1500, max_rate=100)
    b = CallMedia(call=CALL, us=NDMC, peer=EUCOM, started_at=0, max_bytes=1500, max_rate=100)
    return a, b


def test_digests_agree_per_direction_when_every_packet_arrives_even_reordered_and_duplicated() -> None:
    a, b = media_pair()
    frames = [a.packet(bytes([i]) * 60, now=20 * i).encode() for i in range(30)]
    # Two paths: the second delivers 10..29 first, then the first path 0..29 (duplicates).
    played = []
    for f in frames[10:]:
        played += b.receive("backup", f, now=1000)
    for f in frames:
        played += b.receive("primary", f, now=1001)
    assert [p.seq for p in played] == list(range(30))
    assert b.counters.duplicates == 20
    assert a.end()["sent"] == b.end()["received"]
    want = digest_of(CALL, EUCOM, [(i, 20 * i, bytes([i]) * 60) for i in range(30)])
    assert a.sent.digest() == want and a.sent.result()["packets"] == 30 and a.sent.result()["ms"] == 580


def test_a_lost_or_altered_packet_changes_the_digest() -> None:
    a, b = media_pair()
    frames = [a.packet(b"x" * 40 + bytes([i]), now=20 * i) for i in range(10)]
    for p in frames[:5] + frames[6:]:
        b.receive("primary", p.encode(), now=0)
    assert b.end()["received"] != a.end()["sent"]
    a2, b2 = media_pair()
    frames = [a2.packet(b"x" * 40 + bytes([i]), now=20 * i) for i in range(10)]
    for p in frames:
        data = p.data if p.seq != 3 else b"y" * 41
        b2.receive("primary", AudioPacket(call=p.call, seq=p.seq, ts=p.ts, data=data).encode(), now=0)
    assert b2.end()["received"]["packets"] == 10 and b2.end()["received"] != a2.end()["sent"]


def test_a_peers_oversized_audio_frame_is_dropped_and_counted() -> None:
    _, b = media_pair()
    assert b.receive("primary", AudioPacket(call=CALL, seq=0, ts=0, data=b"z" * 1600).encode(), now=0) == []
    assert b.counters.oversized == 1 and b.received.packets == 0


def test_audio_for_another_call_or_after_the_end_is_dropped() -> None:
    _, b = media_pair()
    other = AudioPacket(call="cd" * 32, seq=0, ts=0, data=b"q").encode()
    assert b.receive("primary", other, now=0) == [] and b.counters.not_live == 1
    b.end()
    assert b.receive("primary", AudioPacket(call=CALL, seq=0, ts=0, data=b"q").encode(), now=0) == []
    assert b.counters.not_live == 2 and b.received.packets == 0


def test_audio_faster_than_the_rate_limit_is_dropped_beyond_one_resend_burst() -> None:
    a, b = media_pair()
    for _ in range(RESEND_PACKETS + 150):  # a flood: one resend burst's worth gets in, no more
        b.receive("primary", a.packet(b"r", now=0).encode(), now=5)
    assert b.received.packets == RESEND_PACKETS and b.counters.too_fast == 150
    for _ in range(150):  # a second later the bucket has refilled by max_audio_packets_per_second
        b.receive("primary", a.packet(b"r", now=0).encode(), now=1005)
    b.end()  # what waits behind the dropped ones' gap is taken at the end
    assert b.received.packets == RESEND_PACKETS + 100 and b.counters.too_fast == 200


def test_call_audio_mismatch_is_alarmed_at_both_ends() -> None:
    line = Line()
    rosters(line)
    r = ring(line)
    p = pick_up(line, r)
    line.cut()
    line.file(line.b, "CALL_HANGUP", {"ring": r.ref, "answer": p.ref})
    assert line.b.ops.voice.audio_due() == []  # our hang-up: only once the peer receipted it
    line.restore()
    assert [c.id for c in line.a.ops.voice.audio_due()] == [r.id]  # the peer hung up: at once
    assert [c.id for c in line.b.ops.voice.audio_due()] == [r.id]
    d = {"digest": "11" * 32, "packets": 3, "ms": 40}
    e = {"digest": "22" * 32, "packets": 3, "ms": 40}
    line.file(line.a, "CALL_AUDIO", {"ring": r.ref, "sent": d, "received": e})
    line.file(line.b, "CALL_AUDIO", {"ring": r.ref, "sent": e, "received": {**d, "digest": "33" * 32}})
    for side in (line.a, line.b):
        assert side.ops.voice.calls[r.id].evidence == "mismatch"
        assert any("AUDIO EVIDENCE MISMATCH" in t for t in side.texts())
    assert kinds_mod.parse("CALL_AUDIO", {"ring": r.ref, "sent": d, "received": e}, strict=True).sent.packets == 3


def test_copies_sent_again_for_the_record_fill_the_digest_and_are_marked_not_for_playout() -> None:
    a, b = media_pair()
    frames = [a.packet(bytes([i]) * 30, now=20 * i).encode() for i in range(5)]
    for f in frames[:2]:
        assert [p.resent for p in b.receive("primary", f, now=50)] == [False]
    # frames 2..4 were swallowed by a dying path; the sender sends its recent packets again on a new one
    again = [p for payload in a.resend() for p in b.receive("backup", payload, now=3000)]
    assert [(p.seq, p.resent) for p in again] == [(2, True), (3, True), (4, True)]
    assert [p.ts for p in again] == [40, 60, 80]  # the mark is not part of the timestamp
    assert b.counters.duplicates == 2 and b.received.digest() == a.sent.digest()
    assert AudioPacket.decode(a.resend()[0]).resent and not AudioPacket.decode(frames[0]).resent
