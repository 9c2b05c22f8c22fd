"""The link state machine (redline.protocol.link): two ``Link`` objects wired back to back in
memory (h11's ``tests/helpers.py`` way), time passed in, no sockets and no sleeping.

Security tests are named after the attack they block and check that, after a refusal, the path
is in ERROR, the peer was told, and nothing more is accepted on it.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from redline import canonical, identity
from redline.config import Limits
from redline.envelope import Envelope, seal
from redline.errors import LocalProtocolError
from redline.protocol import events as ev
from redline.protocol.events import EMPTY, ChainHead, Close, Send
from redline.protocol.framing import FrameDecoder, FrameType, encode_frame
from redline.protocol.link import VERSIONS, Link
from redline.protocol.state import ALLOWED, TRAFFIC, PathState, next_state
from redline.testing import SessionPair


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"redline link test " + name.encode()).digest())


A_SIGN, B_SIGN, X_SIGN = _key("a"), _key("b"), _key("x")
A = identity.fingerprint(_key("a root").verify_key.encode())
B = identity.fingerprint(_key("b root").verify_key.encode())
X = identity.fingerprint(_key("x root").verify_key.encode())
LINE = "0123456789abcdef0123456789abcdef"
OTHER_LINE = "fedcba9876543210fedcba9876543210"
WALL = 1_652_443_200_000
LIMITS = Limits()


def chain(signer: nacl.signing.SigningKey, sender: str, n: int, *, line: str = LINE, tag: str = "") -> list[Envelope]:
    """``n`` envelopes of ``sender``'s chain, properly linked (the link checks no signature)."""
    out: list[Envelope] = []
    prev: str | None = None
    for seq in range(1, n + 1):
        env = seal(
            signer, line=line, sender=sender, key=identity.key_id(signer.verify_key.encode()), seq=seq,
            sent_at=WALL + seq, kind="TEXT", prio="ROUTINE", prev=prev, seen_seq=0, seen_id=None, lang="en",
            content={"text": f"{tag}message {seq}"}, salt=bytes(16),
        )  # fmt: skip
        out.append(env)
        prev = env.id
    return out


def head(env: Envelope | None) -> ChainHead:
    return EMPTY if env is None else ChainHead(seq=env.seq, id=env.id)


def frame(ftype: FrameType, obj: Any) -> bytes:
    return encode_frame(ftype, obj if isinstance(obj, bytes) else canonical.encode(obj))


def decode_sends(outputs: list[ev.Output]) -> list[tuple[FrameType, bytes]]:
    frames: list[tuple[FrameType, bytes]] = []
    for o in outputs:
        if isinstance(o, Send):
            frames += FrameDecoder(LIMITS.max_frame_bytes).feed(o.data)
    return frames


def hello(**over: Any) -> dict[str, Any]:
    """A HELLO as station B would send it to station A on an empty line."""
    obj: dict[str, Any] = {
        "versions": list(VERSIONS), "line": LINE, "station": B, "mine": {"seq": 0, "id": None},
        "yours": {"seq": 0, "id": None}, "time": WALL, "confirmed": True,
    }  # fmt: skip
    obj.update(over)
    return obj


def make_link(us: str, peer: str, *, limits: Limits = LIMITS, our: ChainHead = EMPTY, their: ChainHead = EMPTY,
              active: bool = True, confirmed: bool = True) -> Link:  # fmt: skip
    return Link(
        line=LINE, us=us, peer=peer, limits=limits, our_head=our, their_head=their, active=active, confirmed=confirmed
    )


@dataclass
class Duo:
    """Station A's and station B's links joined by in-memory paths; one shared simulated clock."""

    a: Link
    b: Link
    now: float = 10.0
    wall: int = WALL
    queues: deque[tuple[str, str, bytes]] = field(default_factory=deque)  # (to, path, data)
    events: dict[str, list[ev.Output]] = field(default_factory=lambda: {"a": [], "b": []})
    drop_from: set[str] = field(default_factory=set)  # sides whose frames are lost in flight

    def link(self, who: str) -> Link:
        return self.a if who == "a" else self.b

    def route(self, who: str, outputs: list[ev.Output]) -> list[ev.Output]:
        other = "b" if who == "a" else "a"
        for o in outputs:
            if isinstance(o, Send):
                if who not in self.drop_from:
                    self.queues.append((other, o.path, o.data))
            else:
                self.events[who].append(o)
        return outputs

    def up(self, path: str = "p0") -> None:
        self.route("a", self.a.path_up(path, self.now, self.wall))
        self.route("b", self.b.path_up(path, self.now, self.wall))

    def pump(self, chunk: int | None = None) -> None:
        while self.queues:
            to, path, data = self.queues.popleft()
            pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
            for piece in pieces:
                self.route(to, self.link(to).receive(path, piece, self.now, self.wall))

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.wall += int(seconds * 1000)
        self.route("a", self.a.tick(self.now, self.wall))
        self.route("b", self.b.tick(self.now, self.wall))

    def of(self, who: str, kind: type) -> list[Any]:
        return [e for e in self.events[who] if isinstance(e, kind)]


def duo(**kw: Any) -> Duo:
    a_kw = {k[2:]: v for k, v in kw.items() if k.startswith("a_")}
    b_kw = {k[2:]: v for k, v in kw.items() if k.startswith("b_")}
    shared = {k: v for k, v in kw.items() if not k.startswith(("a_", "b_"))}
    return Duo(make_link(A, B, **shared, **a_kw), make_link(B, A, **shared, **b_kw))


def opened(**kw: Any) -> Duo:
    d = duo(**kw)
    d.up()
    d.pump()
    d.events = {"a": [], "b": []}
    return d


def assert_refused(link: Link, out: list[ev.Output], path: str = "p0", match: str = "") -> None:
    """The path is in ERROR, the peer was sent an ERROR frame, and the transport told to close."""
    assert link.paths[path] is PathState.ERROR
    frames = decode_sends(out)
    assert [t for t, _ in frames] == [FrameType.ERROR]
    closes = [o for o in out if isinstance(o, Close)]
    assert len(closes) == 1 and closes[0].path == path
    assert match.lower() in closes[0].reason.lower()
    assert match.lower() in canonical.decode_object(frames[0][1], "error")["message"].lower()


def assert_dead(link: Link, path: str = "p0") -> None:
    """Nothing at all is accepted on the path any more: not even a well-formed HELLO."""
    before = link.paths[path]
    assert link.receive(path, frame(FrameType.HELLO, hello()), 99.0, WALL) == []
    assert link.receive(path, frame(FrameType.HEARTBEAT, {"t": WALL, "echo": None, "hold": 0}), 99.0, WALL) == []
    assert link.paths[path] is before


# -- the transition table -----------------------------------------------------------------------
def test_state_table_rules() -> None:
    assert ALLOWED[PathState.AWAIT_HELLO] == {FrameType.HELLO, FrameType.HEARTBEAT, FrameType.ERROR}
    assert FrameType.HELLO not in ALLOWED[PathState.OPEN]
    assert all(FrameType.PAIR not in allowed for allowed in ALLOWED.values())
    assert ALLOWED[PathState.ERROR] == ALLOWED[PathState.CLOSED] == frozenset()
    assert next_state(PathState.AWAIT_HELLO, FrameType.HELLO) is PathState.OPEN
    assert next_state(PathState.OPEN, FrameType.ERROR) is PathState.ERROR
    assert next_state(PathState.OPEN, FrameType.ENVELOPE) is PathState.OPEN
    assert ALLOWED[PathState.OPEN] >= TRAFFIC


# -- HELLO ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_hello_exchange_opens_the_path_and_syncs(chunk: int | None) -> None:
    d = duo()
    d.up()
    assert d.a.paths == {"p0": PathState.AWAIT_HELLO}
    assert not d.a.can_send()
    d.pump(chunk)
    for who, peer in (("a", B), ("b", A)):
        link = d.link(who)
        assert link.paths == {"p0": PathState.OPEN}
        assert link.synced and link.can_send()
        (opened_ev,) = d.of(who, ev.PathOpen)
        assert opened_ev == ev.PathOpen(path="p0", peer_head=EMPTY, peer_has_ours=EMPTY, peer_time=WALL,
                                        peer_confirmed=True)  # fmt: skip
        assert len(d.of(who, ev.Synced)) == 1
        assert not d.of(who, Close)
        assert link.peer == peer


def test_hello_on_a_second_path_does_not_sync_twice() -> None:
    d = opened()
    d.up("p1")
    d.pump()
    assert d.a.paths == {"p0": PathState.OPEN, "p1": PathState.OPEN}
    assert len(d.of("a", ev.PathOpen)) == 1
    assert d.of("a", ev.Synced) == []


def test_hello_reports_both_heads_as_held() -> None:
    a_env, b_env = chain(A_SIGN, A, 3), chain(B_SIGN, B, 2)
    d = duo(a_our=head(a_env[2]), a_their=head(b_env[1]), b_our=head(b_env[1]), b_their=head(a_env[2]))
    d.up()
    d.pump()
    (po,) = d.of("a", ev.PathOpen)
    assert po.peer_head == head(b_env[1]) and po.peer_has_ours == head(a_env[2])
    assert d.of("a", ev.ResendFrom) == [] and len(d.of("a", ev.Synced)) == 1


def test_hello_from_a_peer_that_holds_less_asks_for_a_resend() -> None:
    a_env = chain(A_SIGN, A, 5)
    d = duo(a_our=head(a_env[4]), b_their=head(a_env[1]))
    d.up()
    d.pump()
    assert d.of("a", ev.ResendFrom) == [ev.ResendFrom(path="p0", seq=2)]
    assert d.a.peer_has_ours == 2
    assert d.a.synced


def test_protocol_version_mismatch_is_refused_and_the_path_stays_in_error() -> None:
    """Downgrade/mismatch: a HELLO offering only version 2 gets an ERROR frame and a Close."""
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    out = d.a.receive("p0", frame(FrameType.HELLO, hello(versions=[2])), d.now, d.wall)
    assert_refused(d.a, out, match="versions")
    assert not any(isinstance(o, (ev.PathOpen, ev.Synced)) for o in out)
    assert not d.a.synced and not d.a.can_send()
    assert_dead(d.a)


@pytest.mark.parametrize(
    "bad",
    [
        {"versions": None}, {"versions": []}, {"versions": "1"},
        {"mine": {"seq": 1, "id": None}}, {"yours": {"seq": -1, "id": None}}, {"yours": None},
        {"time": "now"}, {"time": True}, {"confirmed": 1},
        {"mine": {"seq": True, "id": "ab"}}, {"yours": {"seq": 1, "id": 5}}, {"mine": {"seq": "1", "id": "ab"}},
        {"mine": {"seq": 1, "id": "ab"}}, {"mine": {"seq": 2, "id": "A" * 64}}, {"yours": {"seq": 0, "id": "0" * 64}},
        {"term": 0}, {"term": "2"}, {"term": True}, {"term": -1},
        {"addresses": []}, {"addresses": "10.0.0.2:7401"}, {"addresses": ["10.0.0.2"]}, {"addresses": [7401]},
        {"addresses": ["10.0.0.2:70000"]}, {"addresses": ["h" * 300 + ":1"]},
        {"addresses": [f"10.0.0.{i}:7401" for i in range(9)]},
    ],
    ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()),
)  # fmt: skip
def test_malformed_hello_is_refused(bad: dict[str, Any]) -> None:
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    out = d.a.receive("p0", frame(FrameType.HELLO, hello(**bad)), d.now, d.wall)
    assert_refused(d.a, out)
    assert_dead(d.a)


def test_hello_members_a_station_does_not_know_are_ignored_and_a_term_is_passed_on() -> None:
    """§8.3: an unknown member (a later version's) changes nothing; ``term`` reaches the station."""
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    told = ["10.0.0.1:7401", "[2001:db8::2]:7401", "eucom-b.example:7401"]
    out = d.a.receive("p0", frame(FrameType.HELLO, hello(term=7, addresses=told, later={"x": 1})), d.now, d.wall)
    (po,) = [o for o in out if isinstance(o, ev.PathOpen)]
    assert po.peer_term == 7 and po.peer_addresses == tuple(told) and d.a.paths == {"p0": PathState.OPEN}


def test_non_canonical_hello_is_refused() -> None:
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    text = b'{ "versions": [1] }'
    assert_refused(d.a, d.a.receive("p0", encode_frame(FrameType.HELLO, text), d.now, d.wall))


def test_hello_for_another_line_is_refused() -> None:
    """Cross-line misbinding: a connection authenticated for one line speaks for another."""
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    out = d.a.receive("p0", frame(FrameType.HELLO, hello(line=OTHER_LINE)), d.now, d.wall)
    assert_refused(d.a, out, match="another line")
    assert d.a.peer_has_ours == 0 and not d.a.synced


def test_hello_from_another_station_is_refused() -> None:
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    out = d.a.receive("p0", frame(FrameType.HELLO, hello(station=X)), d.now, d.wall)
    assert_refused(d.a, out, match="another line or station")


def test_second_hello_on_an_open_path_is_refused() -> None:
    d = opened()
    out = d.a.receive("p0", frame(FrameType.HELLO, hello()), d.now, d.wall)
    assert_refused(d.a, out, match="not allowed")
    assert_dead(d.a)


def test_envelope_before_hello_is_refused() -> None:
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    env = chain(B_SIGN, B, 1)[0]
    out = d.a.receive("p0", frame(FrameType.ENVELOPE, env.encode()), d.now, d.wall)
    assert_refused(d.a, out, match="ENVELOPE frame is not allowed while the path is await-hello")
    assert not any(isinstance(o, ev.EnvelopeIn) for o in out)
    assert d.a.next_in == 1
    assert_dead(d.a)


@pytest.mark.parametrize("ftype", [FrameType.RECEIPT, FrameType.GAP, FrameType.CHECKPOINT, FrameType.COSIGN,
                                   FrameType.CONFIRM, FrameType.PAIR])  # fmt: skip
def test_frames_other_than_hello_before_hello_are_refused(ftype: FrameType) -> None:
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    assert_refused(d.a, d.a.receive("p0", frame(ftype, {"x": 1}), d.now, d.wall), match="not allowed")


def test_heartbeat_before_hello_is_allowed() -> None:
    d = duo()
    d.a.path_up("p0", d.now, d.wall)
    assert d.a.receive("p0", frame(FrameType.HEARTBEAT, {"t": WALL, "echo": None, "hold": 0}), d.now, d.wall) == []
    assert d.a.paths["p0"] is PathState.AWAIT_HELLO


def test_pair_frame_on_a_paired_line_is_refused() -> None:
    """Re-pairing hijack: PAIR frames never travel on a paired line."""
    d = opened()
    assert_refused(d.a, d.a.receive("p0", frame(FrameType.PAIR, {"step": "join"}), d.now, d.wall))


def test_garbage_bytes_close_the_path() -> None:
    d = opened()
    out = d.a.receive("p0", b"\x00\x00\x00\x02\xee\x00", d.now, d.wall)
    assert_refused(d.a, out, match="unknown frame type")
    assert_dead(d.a)


def test_error_frame_from_the_peer_closes_the_path() -> None:
    d = opened()
    out = d.a.receive("p0", frame(FrameType.ERROR, {"message": "going away"}), d.now, d.wall)
    assert ev.PeerError(path="p0", message="going away") in out
    assert [o for o in out if isinstance(o, Close)] == [Close(path="p0", reason="peer reported an error")]
    assert decode_sends(out) == []  # no ERROR in answer to an ERROR
    assert d.a.paths["p0"] is PathState.ERROR
    assert_dead(d.a)


def test_frames_after_an_error_in_the_same_burst_are_not_handled() -> None:
    d = opened()
    env = chain(B_SIGN, B, 1)[0]
    data = frame(FrameType.ERROR, {"message": "bye"}) + frame(FrameType.ENVELOPE, env.encode())
    out = d.a.receive("p0", data, d.now, d.wall)
    assert not any(isinstance(o, ev.EnvelopeIn) for o in out)
    assert d.a.next_in == 1


def test_bytes_on_an_unknown_path_are_ignored() -> None:
    d = opened()
    assert d.a.receive("nowhere", frame(FrameType.HELLO, hello()), d.now, d.wall) == []
    assert "nowhere" not in d.a.paths


def test_path_down_reports_once_and_unsyncs_when_no_path_is_left() -> None:
    d = opened()
    d.up("p1")
    d.pump()
    assert d.a.path_down("p0", "cut") == [ev.PathDown(path="p0", reason="cut")]
    assert d.a.synced
    assert d.a.path_down("p0", "cut") == []
    d.a.path_down("p1", "cut")
    assert not d.a.synced and not d.a.can_send()


# -- confirmation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ftype", sorted(TRAFFIC))
def test_traffic_before_both_operators_confirmed_is_refused(ftype: FrameType) -> None:
    """Unconfirmed pairing (possible MITM): nothing of the transcript flows until both operators
    compared the safety code."""
    d = opened(a_active=False, a_confirmed=False, b_active=False)
    assert d.a.paths["p0"] is PathState.OPEN
    payload = chain(B_SIGN, B, 1)[0].encode() if ftype is FrameType.ENVELOPE else canonical.encode({"x": 1})
    out = d.a.receive("p0", encode_frame(ftype, payload), d.now, d.wall)
    assert_refused(d.a, out, match="before both operators confirmed")
    assert not any(isinstance(o, (ev.EnvelopeIn, ev.ReceiptIn, ev.CheckpointIn, ev.CosignIn, ev.GapRequest))
                   for o in out)  # fmt: skip
    assert d.a.next_in == 1


def test_unconfirmed_link_may_not_send() -> None:
    d = opened(a_active=False, b_active=False)
    assert d.a.synced and not d.a.can_send()
    with pytest.raises(LocalProtocolError, match="not confirmed"):
        d.a.send_envelope(1, chain(A_SIGN, A, 1)[0].encode())
    assert d.a.sent_hi == 0


def test_confirm_travels_to_the_peer_and_heartbeats_flow_meanwhile() -> None:
    d = opened(a_active=False, a_confirmed=False, b_active=False)
    d.tick(1.0)
    d.pump()
    assert d.a.paths["p0"] is d.b.paths["p0"] is PathState.OPEN
    d.route("a", d.a.confirm(d.wall))
    d.pump()
    assert d.a.confirmed
    assert d.of("b", ev.ConfirmIn) == [ev.ConfirmIn()]
    assert d.b.paths["p0"] is PathState.OPEN


def test_hello_tells_whether_our_operator_confirmed() -> None:
    d = duo(a_confirmed=False)
    d.up()
    d.pump()
    assert d.of("b", ev.PathOpen)[0].peer_confirmed is False
    assert d.of("a", ev.PathOpen)[0].peer_confirmed is True


# -- heartbeats ---------------------------------------------------------------------------------
def test_heartbeats_are_sent_every_interval() -> None:
    d = opened()
    sent: list[float] = []
    for _ in range(8):
        out = d.a.tick(d.now, d.wall)
        if decode_sends(out):
            assert [t for t, _ in decode_sends(out)] == [FrameType.HEARTBEAT]
            sent.append(d.now)
        d.pump()
        d.now += 0.25
        d.wall += 250
        d.b.receive("p0", frame(FrameType.HEARTBEAT, {"t": d.wall, "echo": None, "hold": 0}), d.now, d.wall)
    assert sent == [10.0, 11.0]


def test_heartbeat_timeout_closes_a_silent_path() -> None:
    """A peer that stops answering: after more than path_dead_after without any frame the path is
    closed; exactly at the limit it is not yet."""
    d = opened()
    d.drop_from.add("b")
    d.tick(1.0)
    d.pump()
    d.tick(1.0)
    d.pump()
    d.tick(LIMITS.path_dead_after - 2.0)  # exactly path_dead_after since the last frame from b
    d.pump()
    assert d.a.paths["p0"] is PathState.OPEN
    assert not d.of("a", Close)
    d.tick(0.01)
    (close,) = d.of("a", Close)
    assert close.path == "p0" and f"no frames for {LIMITS.path_dead_after:g} s" in close.reason
    assert d.a.paths["p0"] is PathState.CLOSED
    assert d.b.paths["p0"] is PathState.OPEN  # b still hears a's heartbeats
    assert d.a.tick(d.now + 5, d.wall) == []  # a closed path sends nothing more
    assert d.a.receive("p0", frame(FrameType.HEARTBEAT, {"t": 1, "echo": None, "hold": 0}), d.now, d.wall) == []
    assert d.a.path_down("p0", close.reason) == [ev.PathDown(path="p0", reason=close.reason)]
    assert not d.a.synced


def test_a_path_that_hears_heartbeats_stays_open() -> None:
    d = opened()
    for _ in range(30):
        d.tick(1.0)
        d.pump()
    assert d.a.paths["p0"] is d.b.paths["p0"] is PathState.OPEN
    assert not d.of("a", Close) and not d.of("b", Close)


def test_tick_before_next_due_does_nothing_and_at_it_does_something() -> None:
    """The station ticks an idle line only when ``next_due`` says (issue 12): before it, a tick
    sends nothing and closes nothing; once it passes, a tick sends the heartbeat or closes the path
    that fell silent. b answers for 3 s and then falls silent; a path opens in the middle."""
    d = opened()
    acted: list[float] = []
    for step in range(1, 140):
        d.now, d.wall = 10.0 + step * 0.0497, WALL + step * 50
        if d.now < 13.0:
            d.a.receive("p0", frame(FrameType.HEARTBEAT, {"t": d.wall, "echo": None, "hold": 0}), d.now, d.wall)
        if step == 40:
            d.a.path_up("p1", d.now, d.wall)  # its first heartbeat is due at once
        due = d.a.next_due()
        out = d.a.tick(d.now, d.wall)
        assert bool(out) == (d.now >= due), (d.now, due, out)
        if out:
            acted.append(round(d.now, 2))
    assert d.a.paths == {"p0": PathState.CLOSED, "p1": PathState.CLOSED}
    assert d.a.next_due() == float("inf")  # nothing more to do until a path opens
    # p0: heartbeats each second from 10.05, closed 2.5 s after b's last frame (12.98); p1 (up at
    # 11.99, never hears b): heartbeats from 11.99, closed 2.5 s after it opened
    assert acted == [10.05, 11.09, 11.99, 12.14, 13.03, 13.18, 14.08, 14.22, 14.52, 15.27, 15.52]


def test_heartbeat_timeout_in_a_session_pair_takes_the_path_down(tmp_path: Path) -> None:
    """The same with two real sessions: b's frames on path0 are lost, a gives up on path0 only."""
    sp = SessionPair(tmp_path)
    try:
        sp.run()
        p0 = sp.paths[0]
        last_rx = sp.a.link.path_info("path0")[3]
        while p0.up:
            last_rx = sp.a.link.path_info("path0")[3]
            assert sp.clock.now - last_rx <= sp.limits.path_dead_after, "path0 outlived its deadline"
            sp.tick(1.0)
            p0.b_to_a.clear()  # b's heartbeats on path0 are lost
            sp.run()
        assert sp.clock.now - last_rx > sp.limits.path_dead_after
        status = sp.a.status().to_obj()
        assert status["paths"]["path0"]["up"] is False
        assert "no frames" in status["paths"]["path0"]["reason"]
        assert status["paths"]["path1"]["up"] is True
        assert status["synced"]  # path1 still carries the line
        assert sp.b.status().to_obj()["paths"]["path0"]["up"] is False
        sp.send("a", "still here")
        sp.run()
        assert sp.b.status().to_obj()["their_seq"] == 1
    finally:
        sp.close()


def test_all_paths_silent_in_a_session_pair_unsyncs_and_holds_the_outbox(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    try:
        sp.run()
        for _ in range(4):
            sp.tick(1.0)
            for p in sp.paths:
                p.a_to_b.clear()
                p.b_to_a.clear()
        assert not any(p.up for p in sp.paths)
        assert not sp.a.status().to_obj()["synced"] and not sp.b.status().to_obj()["synced"]
        sp.send("a", "waits")
        sp.run()
        assert sp.a.status().to_obj()["outbox"] == 1 and sp.a.status().to_obj()["our_seq"] == 0
    finally:
        sp.close()


@pytest.mark.parametrize("skew_ms", [0, 500, -2000])
def test_rtt_and_skew_are_measured_from_heartbeats(skew_ms: int) -> None:
    """a sends at t=10.0; 125 ms each way; b holds the echo 250 ms; b's clock runs skew_ms ahead."""
    a, b = make_link(A, B), make_link(B, A)
    wall_a0, now_b0 = WALL, 500.0
    a.path_up("p0", 10.0, wall_a0)
    b.path_up("p0", now_b0, wall_a0 + skew_ms)
    a.receive("p0", frame(FrameType.HELLO, hello()), 10.0, wall_a0)
    b.receive("p0", frame(FrameType.HELLO, hello(station=A)), now_b0, wall_a0 + skew_ms)

    (hb_a,) = [o for o in a.tick(10.0, wall_a0) if isinstance(o, Send)]
    assert b.receive("p0", hb_a.data, now_b0 + 0.125, wall_a0 + 125 + skew_ms) == []  # no echo yet: no measure
    (hb_b,) = [o for o in b.tick(now_b0 + 0.375, wall_a0 + 375 + skew_ms) if isinstance(o, Send)]
    (_, payload), = FrameDecoder(LIMITS.max_frame_bytes).feed(hb_b.data)  # fmt: skip
    assert canonical.decode_object(payload, "hb") == {"t": wall_a0 + 375 + skew_ms, "echo": wall_a0, "hold": 250}
    out = a.receive("p0", hb_b.data, 10.5, wall_a0 + 500)
    (m,) = out
    assert isinstance(m, ev.Measured) and m.path == "p0"
    assert m.rtt_ms == pytest.approx(250.0)
    assert m.skew_ms == pytest.approx(skew_ms)
    state, rtt, skew, last_rx = a.path_info("p0")
    assert state is PathState.OPEN and rtt == pytest.approx(250.0) and skew == pytest.approx(skew_ms)
    assert last_rx == 10.5


def test_session_pair_reports_rtt_and_skew_per_path(tmp_path: Path) -> None:
    """In a SessionPair both clocks are the one simulated clock and frames arrive at once: every
    path measures a round trip of 0 ms and no skew, on the second heartbeat (the first has no echo)."""
    sp = SessionPair(tmp_path)
    try:
        sp.run()
        sp.tick(1.0)
        sp.run()
        assert all(v["rtt_ms"] is None for v in sp.a.status().to_obj()["paths"].values())
        sp.tick(1.0)
        sp.run()
        for s in (sp.a, sp.b):
            for info in s.status().to_obj()["paths"].values():
                assert info["rtt_ms"] == 0.0 and info["skew_ms"] == 0.0
                assert info["last_rx"] == sp.clock.wall
    finally:
        sp.close()


def test_heartbeat_echoing_a_time_we_never_sent_measures_nothing() -> None:
    d = opened()
    out = d.a.receive("p0", frame(FrameType.HEARTBEAT, {"t": WALL, "echo": 12345, "hold": 0}), d.now, d.wall)
    assert out == []
    assert d.a.path_info("p0")[1] is None


@pytest.mark.parametrize("bad", [{"t": "x", "echo": None, "hold": 0}, {"t": 1, "echo": "y", "hold": 0},
                                 {"t": 1, "echo": None, "hold": None}, {"t": 1}, {"t": True, "echo": None, "hold": 0},
                                 {"t": 1, "echo": None, "hold": False}])  # fmt: skip
def test_malformed_heartbeat_is_refused(bad: dict[str, Any]) -> None:
    d = opened()
    assert_refused(d.a, d.a.receive("p0", frame(FrameType.HEARTBEAT, bad), d.now, d.wall), match="heartbeat")


# -- envelopes: order, gaps, copies -------------------------------------------------------------
def env_frame(env: Envelope) -> bytes:
    return frame(FrameType.ENVELOPE, env.encode())


def test_envelopes_in_order_are_handed_on_in_order() -> None:
    d = opened()
    envs = chain(B_SIGN, B, 3)
    out: list[ev.Output] = []
    for env in envs:
        out += d.a.receive("p0", env_frame(env), d.now, d.wall)
    assert out == [ev.EnvelopeIn(seq=e.seq, raw=e.encode()) for e in envs]
    assert d.a.next_in == 4
    # each goes on split, with the header the link read to route it: the station parses it no more
    assert [o.split.header for o in out if isinstance(o, ev.EnvelopeIn) and o.split] == [e.header for e in envs]


def test_a_header_not_in_the_plain_form_is_routed_and_left_to_the_station() -> None:
    """A header with a space in it is JSON the pattern does not read: the link routes it by JSON
    and hands it on unparsed, for the station to refuse (not canonical) with its own words."""
    d = opened()
    env = chain(B_SIGN, B, 1)[0]
    spaced = env.header_bytes.replace(b'"seq":1,', b'"seq": 1,')
    raw = len(spaced).to_bytes(4, "big") + spaced + env.encode()[4 + len(env.header_bytes) :]
    out = d.a.receive("p0", frame(FrameType.ENVELOPE, raw), d.now, d.wall)
    assert out == [ev.EnvelopeIn(seq=1, raw=raw)]
    assert isinstance(out[0], ev.EnvelopeIn) and out[0].split is not None and out[0].split.header is None


def test_several_envelopes_in_one_burst_byte_by_byte() -> None:
    d = opened()
    envs = chain(B_SIGN, B, 4)
    data = b"".join(env_frame(e) for e in envs)
    out: list[ev.Output] = []
    for i in range(len(data)):
        out += d.a.receive("p0", data[i : i + 1], d.now, d.wall)
    assert out == [ev.EnvelopeIn(seq=e.seq, raw=e.encode()) for e in envs]


def test_a_gap_is_requested_and_filled_in_order() -> None:
    d = opened()
    e1, e2, e3, e4 = chain(B_SIGN, B, 4)
    out = d.a.receive("p0", env_frame(e3), d.now, d.wall)
    assert not any(isinstance(o, ev.EnvelopeIn) for o in out)
    (gap,) = decode_sends(out)
    assert gap[0] is FrameType.GAP
    assert canonical.decode_object(gap[1], "gap") == {"station": B, "from": 1, "to": 2}
    # A later one while the gap is open: buffered, not asked again within a second.
    assert decode_sends(d.a.receive("p0", env_frame(e4), d.now + 0.5, d.wall)) == []
    assert d.a.receive("p0", env_frame(e1), d.now, d.wall) == [ev.EnvelopeIn(seq=1, raw=e1.encode())]
    out = d.a.receive("p0", env_frame(e2), d.now, d.wall)
    assert out == [ev.EnvelopeIn(seq=s.seq, raw=s.encode()) for s in (e2, e3, e4)]
    assert d.a.next_in == 5


def test_the_gap_is_asked_again_after_a_second() -> None:
    d = opened()
    envs = chain(B_SIGN, B, 4)
    assert decode_sends(d.a.receive("p0", env_frame(envs[2]), 10.0, WALL))
    assert decode_sends(d.a.receive("p0", env_frame(envs[3]), 10.5, WALL)) == []
    (gap,) = decode_sends(d.a.receive("p0", env_frame(envs[3]), 11.2, WALL))
    assert canonical.decode_object(gap[1], "gap") == {"station": B, "from": 1, "to": 3}


def test_gap_request_goes_to_the_peer_and_comes_back_as_an_event() -> None:
    d = opened()
    envs = chain(B_SIGN, B, 3)
    d.route("a", d.a.receive("p0", env_frame(envs[2]), d.now, d.wall))
    d.pump()
    assert d.of("b", ev.GapRequest) == [ev.GapRequest(path="p0", station=B, from_seq=1, to_seq=2)]


def test_a_copy_of_a_delivered_envelope_is_dropped_by_seq_and_id() -> None:
    """Each path carries every envelope: the second copy is dropped before anything checks it."""
    d = opened()
    (e1,) = chain(B_SIGN, B, 1)
    assert d.a.receive("p0", env_frame(e1), d.now, d.wall) == [ev.EnvelopeIn(seq=1, raw=e1.encode())]
    d.up("p1")
    d.pump()
    assert d.a.receive("p1", env_frame(e1), d.now, d.wall) == []
    # The id excludes the signature: a copy with a damaged signature is the same envelope.
    damaged = e1.encode()[:-1] + bytes([e1.encode()[-1] ^ 1])
    assert d.a.receive("p1", frame(FrameType.ENVELOPE, damaged), d.now, d.wall) == []
    assert d.a.paths == {"p0": PathState.OPEN, "p1": PathState.OPEN}


def test_a_different_envelope_at_a_delivered_seq_is_suspect() -> None:
    d = opened()
    (e1,) = chain(B_SIGN, B, 1)
    (other,) = chain(B_SIGN, B, 1, tag="other ")
    d.a.receive("p0", env_frame(e1), d.now, d.wall)
    assert d.a.receive("p0", env_frame(other), d.now, d.wall) == [ev.SuspectDuplicate(seq=1, raw=other.encode())]
    assert d.a.next_in == 2


def test_envelope_from_a_station_not_on_the_line_is_refused() -> None:
    """Injection by a third station: sender must be the paired peer."""
    d = opened()
    (e1,) = chain(X_SIGN, X, 1)
    out = d.a.receive("p0", env_frame(e1), d.now, d.wall)
    assert_refused(d.a, out, match="not on this line")
    assert d.a.next_in == 1


@pytest.mark.parametrize("raw", [b"", b"\x00" * 71, b"\x00\x00\x00\x05hello\x00\x00\x00\x00" + b"s" * 64])
def test_malformed_envelope_is_refused(raw: bytes) -> None:
    d = opened()
    out = d.a.receive("p0", frame(FrameType.ENVELOPE, raw), d.now, d.wall)
    assert_refused(d.a, out, match="envelope")
    assert d.a.next_in == 1


def test_late_copy_of_our_own_envelope_is_ignored() -> None:
    d = opened()
    (mine,) = chain(A_SIGN, A, 1)
    assert d.a.receive("p0", env_frame(mine), d.now, d.wall) == []
    assert d.a.paths["p0"] is PathState.OPEN


def test_a_halted_link_accepts_no_more_envelopes() -> None:
    d = opened()
    e1, e2 = chain(B_SIGN, B, 2)
    d.a.receive("p0", env_frame(e1), d.now, d.wall)
    assert d.a.halt() == []
    assert d.a.receive("p0", env_frame(e2), d.now, d.wall) == []
    assert d.a.next_in == 2


def test_rejected_envelope_resets_and_closes_every_path() -> None:
    d = opened()
    d.up("p1")
    d.pump()
    e1, e2, e3 = chain(B_SIGN, B, 3)
    d.a.receive("p0", env_frame(e1), d.now, d.wall)
    d.a.receive("p0", env_frame(e3), d.now, d.wall)  # buffered behind the gap at 2
    d.a.stored(head(e1))
    d.a.receive("p0", env_frame(e2), d.now, d.wall)
    out = d.a.rejected(2, "bad signature", held=1)
    assert {o.path for o in out if isinstance(o, Close)} == {"p0", "p1"}
    assert [t for t, _ in decode_sends(out)] == [FrameType.ERROR, FrameType.ERROR]
    assert d.a.next_in == 2 and d.a.paths == {"p0": PathState.ERROR, "p1": PathState.ERROR}


# -- heads that disagree ------------------------------------------------------------------------
def test_peer_holding_more_of_our_chain_starts_recovery_and_blocks_signing() -> None:
    """Restored backup: we hold our chain to 2, the peer holds it to 5. We sign nothing until
    3..5 came back; the peer's own envelopes meanwhile wait while they name our seqs we do not
    hold again, and are handed over, in order, as soon as we do (causal order, both chains)."""
    a_env = chain(A_SIGN, A, 5)
    b1 = seal(
        B_SIGN, line=LINE, sender=B, key=identity.key_id(B_SIGN.verify_key.encode()), seq=1, sent_at=WALL,
        kind="TEXT", prio="ROUTINE", prev=None, seen_seq=4, seen_id=a_env[3].id, lang="en",
        content={"text": "saw EUCOM 4"}, salt=bytes(16),
    )  # fmt: skip
    d = duo(a_our=head(a_env[1]), b_their=head(a_env[4]))
    d.up()
    d.route("b", d.b.path_up("p1", d.now, d.wall))  # a second path: one recovery only
    d.pump()
    assert d.of("a", ev.Recovering) == [ev.Recovering(from_seq=3, to_seq=5)]
    assert d.of("a", ev.Synced) == []
    assert not d.a.synced and not d.a.can_send()
    assert d.of("b", ev.GapRequest) == [ev.GapRequest(path="p0", station=A, from_seq=3, to_seq=5)]
    # Our own envelopes come back as OwnEnvelopeIn; the peer's wait while they name our seq 4.
    assert d.a.receive("p0", env_frame(b1), d.now, d.wall) == []
    assert d.a.receive("p0", env_frame(a_env[2]), d.now, d.wall) == [ev.OwnEnvelopeIn(seq=3, raw=a_env[2].encode())]
    assert d.a.receive("p0", env_frame(a_env[4]), d.now, d.wall) == [ev.OwnEnvelopeIn(seq=5, raw=a_env[4].encode())]
    assert d.a.signed(head(a_env[2])) == []  # we hold seq 3 again: the peer's seq 1 still waits
    assert d.a.signed(head(a_env[3])) == [ev.EnvelopeIn(seq=1, raw=b1.encode())]  # seq 4: now it may go
    assert not d.a.can_send()
    out = d.a.signed(head(a_env[4]))
    assert out == [ev.Synced()]
    assert d.a.synced and d.a.can_send()
    # Once recovered, copies of our own envelopes are late copies again.
    assert d.a.receive("p0", env_frame(a_env[3]), d.now, d.wall) == []


def test_recovery_is_asked_again_on_another_path_when_its_path_goes_down() -> None:
    a_env = chain(A_SIGN, A, 4)
    d = duo(b_their=head(a_env[3]))
    d.up("p0")
    d.up("p1")
    d.pump()
    assert len(d.of("b", ev.GapRequest)) == 1  # one request, on the first path that heard HELLO
    assert d.a.receive("p0", env_frame(a_env[0]), d.now, d.wall) == [ev.OwnEnvelopeIn(seq=1, raw=a_env[0].encode())]
    out = d.a.path_down("p0", "cut")
    gaps = [canonical.decode_object(p, "gap") for t, p in decode_sends(out) if t is FrameType.GAP]
    assert gaps == [{"station": A, "from": 2, "to": 4}]  # seq 1 was already handed over
    assert [o.path for o in out if isinstance(o, Send)] == ["p1"]
    # Asked twice, each of our envelopes is still handed over once.
    assert d.a.receive("p1", env_frame(a_env[0]), d.now, d.wall) == []
    assert d.a.receive("p1", env_frame(a_env[1]), d.now, d.wall) == [ev.OwnEnvelopeIn(seq=2, raw=a_env[1].encode())]
    assert d.a.receive("p1", env_frame(a_env[1]), d.now, d.wall) == []


def test_recovery_is_asked_again_by_the_next_hello_when_no_path_is_left() -> None:
    a_env = chain(A_SIGN, A, 3)
    d = duo(b_their=head(a_env[2]))
    d.up()
    d.queues.clear()  # a's HELLO reaches b, b's reaches a ...
    d.route("a", d.a.receive("p0", frame(FrameType.HELLO, hello(yours={"seq": 3, "id": a_env[2].id})), d.now,
                             d.wall))  # fmt: skip
    assert d.of("a", ev.Recovering) == [ev.Recovering(from_seq=1, to_seq=3)]
    d.queues.clear()  # ... but a's recovery request is lost with the path
    d.a.path_down("p0", "cut")
    d.b.path_down("p0", "cut")
    d.events = {"a": [], "b": []}
    d.up()
    d.pump()
    assert d.of("a", ev.Recovering) == []  # the same recovery, not a new one
    assert d.of("b", ev.GapRequest) == [ev.GapRequest(path="p0", station=A, from_seq=1, to_seq=3)]
    assert not d.a.can_send()


def test_peer_holding_a_different_envelope_at_our_head_is_a_fork() -> None:
    """Split history: the peer's view of our seq 2 is not our seq 2."""
    ours = chain(A_SIGN, A, 2)
    theirs = chain(A_SIGN, A, 2, tag="forked ")
    d = duo(a_our=head(ours[1]), b_their=head(theirs[1]))
    d.up()
    d.pump()
    assert d.of("a", ev.Forked) == [ev.Forked(seq=2, ours=ours[1].id, theirs=theirs[1].id)]
    assert d.a.paths["p0"] is PathState.ERROR
    assert not d.a.synced and not d.a.can_send()


# -- sending --------------------------------------------------------------------------------------
def test_send_envelope_goes_on_every_open_path_and_counts_the_window() -> None:
    d = opened(limits=Limits(window=2))
    d.up("p1")
    d.pump()
    e1, e2 = chain(A_SIGN, A, 2)
    assert {s.path for s in d.a.send_envelope(1, e1.encode())} == {"p0", "p1"}
    assert d.a.can_send()
    d.a.send_envelope(2, e2.encode())
    assert not d.a.can_send()  # two in flight, none receipted
    d.a.receipted(1)
    assert d.a.can_send()
    assert [s.path for s in d.a.send_envelope(1, e1.encode(), "p1")] == ["p1"]


def test_resending_the_peers_own_envelopes_does_not_use_our_window() -> None:
    """Helping a restored peer recover returns its envelopes; they are not ours in flight.
    (Before the fix, one such resend of the peer's seq 600 stalled our sending for good.)"""
    d = opened(limits=Limits(window=4))
    theirs = chain(B_SIGN, B, 6)
    for env in theirs:
        d.a.send_envelope(env.seq, env.encode(), "p0", ours=False)
    assert d.a.sent_hi == 0
    assert d.a.can_send()


def test_gap_request_for_our_chain_is_capped() -> None:
    d = opened(limits=Limits(max_gap_buffer=10))
    out = d.a.receive("p0", frame(FrameType.GAP, {"station": A, "from": 1, "to": 1000}), d.now, d.wall)
    assert out == [ev.GapRequest(path="p0", station=A, from_seq=1, to_seq=10)]


@pytest.mark.parametrize("bad", [{"station": X, "from": 1, "to": 2}, {"station": A, "from": 0, "to": 2},
                                 {"station": A, "from": 3, "to": 2}, {"station": A, "from": "1", "to": 2}])  # fmt: skip
def test_malformed_gap_request_is_refused(bad: dict[str, Any]) -> None:
    d = opened()
    assert_refused(d.a, d.a.receive("p0", frame(FrameType.GAP, bad), d.now, d.wall), match="gap request")


def test_receipts_checkpoints_and_cosigns_are_passed_on_as_bytes() -> None:
    d = opened()
    data = frame(FrameType.RECEIPT, b"r") + frame(FrameType.CHECKPOINT, b"c") + frame(FrameType.COSIGN, b"s")
    assert d.a.receive("p0", data, d.now, d.wall) == [
        ev.ReceiptIn(raw=b"r"), ev.CheckpointIn(path="p0", raw=b"c"), ev.CosignIn(raw=b"s")
    ]
