"""Voice calls on the line: ring, pick up, decline, hang up, unanswered, and the audio evidence.

Signalling is envelopes on the signed line (PROTOCOL.md section 5.9): a person rings (CALL_RING,
person-signed), a person at the peer picks up (CALL_ANSWER, person-signed) or declines
(CALL_DECLINE); either side hangs up (CALL_HANGUP, naming the pick-up it ends); the caller alone
records a ring that timed out (CALL_UNANSWERED) or cancels its ring (CALL_HANGUP without
``answer``). When the call is over each station files CALL_AUDIO, its digests of the audio it sent
and received (``redline.media``); the two stations' digests of each direction must be equal, and a
difference is alarmed at both ends as evidence of a fault or tampering.

One side decides each outcome (guarantee 7), so both ends show the same:

- the ring's receiver decides pick-up and decline, first one stored wins;
- the caller decides "unanswered" (its ring timed out on its clock with no pick-up stored) and
  "cancelled"; either stands over a pick-up or decline that crossed it, at both ends;
- a ring that arrives while a call is ringing or live here is declined ``busy`` by the station
  (crossing rings are both declined: ring again);
- the call ends with the first CALL_HANGUP naming its pick-up;
- a live call whose line is lost (no path up and no audio for ``call_lost_seconds`` on this
  station's clock) is ended by the station that sees it so, the survivor: its CALL_HANGUP says
  ``reason: "lost"`` and stands at both ends over a hang-up that crossed it (the restarted peer's
  ``interrupted``, or a person's), so both ends show the same end once the line is back; in a
  partition both sides may decide it, and both say the same. The survivor files its CALL_AUDIO at
  once: nothing more of the call can reach it.

A station may send audio only while the call is live here (picked up, not ended); the console and
``media`` drop everything else. Each station files its CALL_AUDIO once the call is over and it
cannot receive more of it: at once when the peer hung up (the peer's packets travel on the same
paths ahead of its hang-up), and once the peer receipted our hang-up when it was ours (the peer
stops sending when it stores the hang-up, and its receipt comes after its last packets on every
path). That wait is bounded on this station's clock: the peer decides when, or whether, its
receipt comes, and a peer's behaviour is never a resource bound here. An ended call whose
hang-up was ours and is still unreceipted ``receipt_wait_ms`` (twice ``call_lost_seconds``) after
we stored it has its CALL_AUDIO filed anyway, from what arrived by then. Twice, because an honest
peer cut off from us ends the call itself within ``call_lost_seconds`` of seeing no path (a few
seconds, ``path_dead_after``), and sends again what a dying path swallowed only while the call is
live there: whatever it can still send for the record reaches us inside the bound. A receipt or
packet after the bound changes nothing (the station drops a packet for a call whose CALL_AUDIO is
filed). A voice line test is a CALL_RING naming the caller's TEST: picking it up answers the test,
signed by the person who picked up (``linetests``).

Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from redline import kinds
from redline.alarmtext import AlarmCode
from redline.errors import LocalProtocolError
from redline.ops.model import Entry, Intent, Outbox
from redline.ops.views import AudioEvidenceView, VoiceCallView, VoiceView

BUSY: Final = "busy"
LOST: Final = "lost"  # CALL_HANGUP's reason: this station lost the line mid-call and ended it
INTERRUPTED: Final = "interrupted"  # CALL_HANGUP's reason: this station stopped mid-call (found at restart)
VOICE_KINDS: Final = frozenset(
    {"CALL_RING", "CALL_ANSWER", "CALL_DECLINE", "CALL_UNANSWERED", "CALL_HANGUP", "CALL_AUDIO"}
)
MAX_CALLS_KEPT = 500  # finished calls kept in memory for the views (the ledger keeps them all)


@dataclass
class VoiceCall:
    ring: Entry
    body: kinds.CallRing
    deadline: int  # ms on this station's clock: the ring times out here (the caller's copy decides)
    answer: Entry | None = None
    answered_by: str | None = None
    outcome: str | None = None  # declined | unanswered | cancelled | ended
    outcome_entry: Entry | None = None
    reason: str | None = None
    busy: bool = False  # a peer ring that arrived while another call was ringing or live here
    hangup_receipted: bool = False  # our own hang-up was receipted by the peer
    audio: dict[bool, tuple[Entry, kinds.CallAudio]] = field(default_factory=dict)  # ours? -> CALL_AUDIO
    evidence: str | None = None  # match | mismatch, once both CALL_AUDIO are held
    interrupted: bool = False  # picked up before this station's process started: its audio here is over
    quiet_since: int | None = None  # ms: the line has had no path up and no audio since (the station says)
    lost_at: int | None = None  # ms: this station ended the call as lost (its CALL_HANGUP may wait for the line)
    # ms: the peer had not receipted our hang-up ``Voice.receipt_wait_ms`` after it: we stopped waiting
    # and file the call's audio as it arrived (a peer's silence bounds nothing here)
    receipt_waited_out_at: int | None = None

    @property
    def id(self) -> str:
        return self.ring.id

    @property
    def ours(self) -> bool:
        """We rang."""
        return self.ring.ours

    @property
    def state(self) -> str:
        if self.outcome is not None:
            return self.outcome
        return "live" if self.answer is not None else "ringing"

    @property
    def test(self) -> kinds.Ref | None:
        return self.body.test

    @property
    def audio_ready(self) -> bool:
        """Over, it was picked up, and no more of its audio can arrive here."""
        if self.answer is None or self.outcome is None or True in self.audio:
            return False
        if self.interrupted:  # we take no more of its audio: file as soon as it is over
            return True
        end = self.outcome_entry
        if self.reason == LOST and (end is None or end.ours):
            return True  # we ended it because nothing of it can reach us any more
        return (end is None or not end.ours or self.hangup_receipted or self.outcome != "ended"
                or self.receipt_waited_out_at is not None)  # fmt: skip

    def view(self) -> VoiceCallView:
        ours_audio = self.audio.get(True)
        theirs_audio = self.audio.get(False)
        return VoiceCallView(
            id=self.id, seq=self.ring.seq, ours=self.ours, state=self.state, caller=self.body.person.name,
            rang_at=self.ring.stored_at, deadline=self.deadline, answered_by=self.answered_by,
            answered_at=self.answer.stored_at if self.answer else None,
            ended_at=self.outcome_entry.stored_at if self.outcome_entry else self.lost_at,
            test=self.test.id if self.test else None, reason=self.reason,
            audio=AudioEvidenceView(
                ours=ours_audio[1].to_content() if ours_audio else None,
                theirs=theirs_audio[1].to_content() if theirs_audio else None, evidence=self.evidence,
            ),
        )  # fmt: skip


class Voice:
    def __init__(self, *, ring_ms: int, max_calls: int = 1, lost_ms: int = 30_000) -> None:
        self.ring_ms = ring_ms
        self.lost_ms = lost_ms
        # An ended call's audio waits at most this long after our hang-up for the peer's receipt of it.
        self.receipt_wait_ms = 2 * lost_ms
        self.max_calls = max_calls
        self.calls: dict[str, VoiceCall] = {}
        self._by_our_seq: dict[str, VoiceCall] = {}  # our hang-up's id -> its call (waiting for a receipt)

    # -- what is going on ---------------------------------------------------------------------------
    def open_calls(self) -> list[VoiceCall]:
        """Calls ringing or live here."""
        return [c for c in self.calls.values() if c.outcome is None and not c.busy]

    def live(self) -> VoiceCall | None:
        """The call whose audio may flow now (picked up, not over), if any."""
        return next((c for c in self.calls.values() if c.state == "live"), None)

    def test_of(self, ring_id: str) -> kinds.Ref | None:
        call = self.calls.get(ring_id)
        return None if call is None else call.test

    # -- the transcript -----------------------------------------------------------------------------
    def observe(self, e: Entry, body: kinds.Body, out: Outbox) -> None:
        call: VoiceCall | None
        match body:
            case kinds.CallRing():
                busy = not e.ours and len(self.open_calls()) >= self.max_calls
                self.calls[e.id] = VoiceCall(e, body, e.stored_at + self.ring_ms, busy=busy)
                self._trim()
                if busy:
                    out.alarm("warning", "voice.busy", e.stored_at, name=body.person.name)
                elif not e.ours:
                    ring: AlarmCode = "voice.ring_test" if body.test else "voice.ring"
                    out.alarm("alarm", ring, e.stored_at, name=body.person.name)
            case kinds.CallAnswer():
                call = self.calls.get(body.ring.id)
                if call is not None and call.answer is None and call.outcome is None and e.ours != call.ours:
                    call.answer, call.answered_by = e, body.person.name
                    if not e.ours:
                        out.alarm("info", "voice.picked_up", e.stored_at, name=body.person.name)
            case kinds.CallDecline():
                call = self.calls.get(body.ring.id)
                if call is not None and call.answer is None and call.outcome is None and e.ours != call.ours:
                    call.outcome, call.outcome_entry, call.reason = "declined", e, body.reason
                    if not e.ours:
                        if body.reason:
                            out.alarm("warning", "voice.declined_why", e.stored_at, words=body.reason)
                        else:
                            out.alarm("warning", "voice.declined", e.stored_at)
            case kinds.CallUnanswered():
                call = self.calls.get(body.ring.id)
                if call is not None and e.ours == call.ours and call.outcome != "cancelled":
                    # The caller's decision stands over a pick-up or decline that crossed it.
                    call.outcome, call.outcome_entry = "unanswered", e
                    if not e.ours:
                        out.alarm("warning", "voice.unanswered", e.stored_at)
            case kinds.CallHangup():
                call = self.calls.get(body.ring.id)
                if call is None:
                    return
                if body.answer is None:
                    if e.ours == call.ours and call.outcome not in ("unanswered", "cancelled"):
                        call.outcome, call.outcome_entry = "cancelled", e
                elif call.answer is not None and body.answer.id == call.answer.id and call.outcome is None:
                    call.outcome, call.outcome_entry, call.reason = "ended", e, body.reason
                    if e.ours:
                        self._by_our_seq[e.id] = call
                    if body.reason == LOST and not e.ours:
                        out.alarm("alarm", "voice.peer_lost", e.stored_at)
                    elif not e.ours:
                        out.alarm("info", "voice.peer_hung_up", e.stored_at)
                elif (call.answer is not None and body.answer.id == call.answer.id and call.outcome == "ended"
                      and body.reason == LOST and (call.reason != LOST or call.outcome_entry is None)):  # fmt: skip
                    # The survivor's verdict stands over a hang-up that crossed it, at both ends (and
                    # our own, decided while the line was down, is now signed and stored).
                    call.outcome_entry, call.reason = e, body.reason
            case kinds.CallAudio():
                call = self.calls.get(body.ring.id)
                if call is None or e.ours in call.audio:
                    return
                call.audio[e.ours] = (e, body)
                if len(call.audio) == 2:
                    self._compare(call, out, e.stored_at)

    def _compare(self, call: VoiceCall, out: Outbox, at: int) -> None:
        ours, theirs = call.audio[True][1], call.audio[False][1]
        bad = []
        if ours.sent != theirs.received:
            bad.append(f"what we sent ({ours.sent.packets} packets) is not what the peer received "
                       f"({theirs.received.packets})")  # fmt: skip
        if ours.received != theirs.sent:
            bad.append(f"what the peer sent ({theirs.sent.packets} packets) is not what we received "
                       f"({ours.received.packets})")  # fmt: skip
        call.evidence = "mismatch" if bad else "match"
        if bad:
            cut = " (a station was interrupted mid-call)" if ours.interrupted or theirs.interrupted else ""
            if not cut and call.reason == LOST:
                cut = " (the line was lost mid-call)"
            if not cut and call.receipt_waited_out_at is not None:
                cut = " (the peer did not receipt our hang-up in time: our record stops where we stopped waiting)"
            out.alarm("alarm", "voice.audio_mismatch", at, seq=call.ring.seq, details="; ".join(bad) + cut)

    def line_quiet(self, since: int | None) -> None:
        """The station's word on the live call's line: since when (ms, its clock) no path has been up
        and no audio has come, or None while it works. ``due`` ends the call after ``lost_ms``."""
        call = self.live()
        if call is not None:
            call.quiet_since = since

    def receipted(self, our_id: str) -> None:
        call = self._by_our_seq.pop(our_id, None)
        if call is not None and call.receipt_waited_out_at is None:  # after the bound: changes nothing
            call.hangup_receipted = True

    def due(self, now: int, out: Outbox) -> None:
        for call in self.calls.values():
            if call.ours and call.state == "ringing" and now > call.deadline:
                body = kinds.CallUnanswered(ring=call.ring.reference())
                out.intents.append(Intent(kind="CALL_UNANSWERED", prio=kinds.default_priority("CALL_UNANSWERED"),
                                          content=body.to_content(), idem=f"call-unanswered:{call.id}"))  # fmt: skip
            if call.interrupted and call.state == "live" and call.answer is not None:
                # This station stopped mid-call: the call is over; say so on the line.
                hangup = kinds.CallHangup(ring=call.ring.reference(), answer=call.answer.reference(),
                                          reason=INTERRUPTED)  # fmt: skip
                out.intents.append(Intent(kind="CALL_HANGUP", prio=kinds.default_priority("CALL_HANGUP"),
                                          content=hangup.to_content(), idem=f"call-interrupted:{call.id}"))  # fmt: skip
            elif (call.state == "live" and call.answer is not None and call.quiet_since is not None
                  and now - call.quiet_since >= self.lost_ms):  # fmt: skip
                # The line is lost mid-call (the peer killed, or cut off): this station ends the call
                # here at once, on its own clock. Its CALL_HANGUP waits, durable, in the outbox (nothing
                # is signed until the peer's HELLO agrees again) and is sent when the line is back.
                call.outcome, call.reason, call.lost_at = "ended", LOST, now
                out.alarm("alarm", "voice.lost_here", now, seconds=self.lost_ms // 1000)
            if call.lost_at is not None and call.outcome_entry is None and call.answer is not None:
                hangup = kinds.CallHangup(ring=call.ring.reference(), answer=call.answer.reference(), reason=LOST)
                out.intents.append(Intent(kind="CALL_HANGUP", prio=kinds.default_priority("CALL_HANGUP"),
                                          content=hangup.to_content(), idem=f"call-lost:{call.id}"))  # fmt: skip
            self._wait_out_receipt(call, now, out)
            if call.busy and call.outcome is None:
                decline = kinds.CallDecline(ring=call.ring.reference(), reason=BUSY)
                out.intents.append(Intent(kind="CALL_DECLINE", prio=kinds.default_priority("CALL_DECLINE"),
                                          content=decline.to_content(), idem=f"call-busy:{call.id}"))  # fmt: skip

    def _wait_out_receipt(self, call: VoiceCall, now: int, out: Outbox) -> None:
        """Our hang-up of ``call`` unreceipted ``receipt_wait_ms`` after we stored it (on our clock):
        stop waiting for the peer and let the station seal the recordings and file CALL_AUDIO with
        what arrived (``audio_ready``). A peer that withholds its receipts would otherwise keep the
        call's audio and its two recording files open here until it chose to receipt."""
        end = call.outcome_entry
        if (call.answer is None or True in call.audio or call.outcome != "ended" or end is None or not end.ours
                or call.audio_ready or now - end.stored_at < self.receipt_wait_ms):  # fmt: skip
            return
        call.receipt_waited_out_at = now
        self._by_our_seq.pop(end.id, None)  # a late receipt finds nothing to change
        out.alarm("warning", "voice.hangup_unreceipted", now, seq=call.ring.seq,
                  seconds=f"{self.receipt_wait_ms / 1000:g}")  # fmt: skip

    def next_due(self, now: int) -> float:
        """``now`` while any call is not over, or over without everything filed that ``due`` and
        ``audio_due`` file (its hang-up when lost, its CALL_AUDIO): the station then looks at
        every tick, as it watches the live call's line anyway; else nothing is due until the next
        call is observed."""
        for c in self.calls.values():
            if c.outcome is None or (c.answer is not None and True not in c.audio):
                return now
            if c.lost_at is not None and c.outcome_entry is None:
                return now
        return float("inf")

    def audio_due(self) -> list[VoiceCall]:
        """Calls whose CALL_AUDIO this station should file now (``station`` adds the digests)."""
        return [c for c in self.calls.values() if c.audio_ready]

    # -- what an operator may file ------------------------------------------------------------------
    def check_filing(self, kind: str, content: dict[str, Any]) -> None:
        """Refuse a voice filing that the call's state does not allow (the content's references are
        already resolved and checked against the registry)."""
        if kind == "CALL_RING":
            if self.open_calls():
                raise LocalProtocolError("a voice call is already ringing or live on this line; hang up first")
            return
        ring = content.get("ring")
        call = self.calls.get(ring["id"]) if isinstance(ring, dict) else None
        if call is None:
            raise LocalProtocolError(f"{kind} must name a voice call (its CALL_RING) held on this line")
        if kind in ("CALL_ANSWER", "CALL_DECLINE") and call.state != "ringing":
            raise LocalProtocolError(f"that call is {call.state}; only a ringing call can be picked up or declined")
        if kind == "CALL_HANGUP":
            if call.state not in ("ringing", "live"):
                raise LocalProtocolError(f"that call is already {call.state}")
            if call.state == "ringing" and not call.ours:
                raise LocalProtocolError("the peer's ringing call is declined, not hung up")
            answer = content.get("answer")
            live = call.state == "live" and call.answer is not None
            if live and (not isinstance(answer, dict) or call.answer is None or answer.get("id") != call.answer.id):
                raise LocalProtocolError("hanging up a live call names its pick-up ('answer')")

    def hangup_content(self, call: VoiceCall) -> dict[str, Any]:
        """What CALL_HANGUP of ``call`` says in its current state (a cancel while it rings)."""
        body = kinds.CallHangup(ring=call.ring.reference(),
                                answer=call.answer.reference() if call.answer is not None else None)  # fmt: skip
        return body.to_content()

    # -- views --------------------------------------------------------------------------------------
    def view(self) -> VoiceView:
        """The calls of the line (the station adds its live audio: ``Station.voice_view``)."""
        calls = sorted(self.calls.values(), key=lambda c: c.ring.stored_at)
        live = [c.view() for c in calls if c.outcome is None and not c.busy]
        return VoiceView(current=live[-1] if live else None, calls=tuple(c.view() for c in calls[-50:]))

    def _trim(self) -> None:
        if len(self.calls) <= MAX_CALLS_KEPT:
            return
        for cid in [c.id for c in self.calls.values() if c.outcome is not None][: len(self.calls) - MAX_CALLS_KEPT]:
            del self.calls[cid]
