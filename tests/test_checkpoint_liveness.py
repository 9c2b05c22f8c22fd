"""Co-signed checkpoints converge when a proposal or its countersignature is lost with one path
while another path keeps the line in sync (chaos seed 499194816: the two stations ended one
co-signed checkpoint apart, messages all fine).

The proposer sent its outstanding proposal again only when the line *became* in sync (the
``Synced`` event); a path that closed with the proposal or the COSIGN in flight, while another
path stayed open, never brought that event, so the proposal stayed outstanding for good: the
countersigner held checkpoint n, the proposer n - 1, and the proposer proposed nothing more
until it restarted (PROTOCOL.md 8.7).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from redline.ledger.verify import verify_line
from redline.protocol.framing import FrameType
from redline.testing import SessionPair
from tests.test_session import pump


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[SessionPair]:
    pair = SessionPair(tmp_path)
    pair.run()
    yield pair
    pair.close()


def _roles(sp: SessionPair) -> tuple[str, str]:
    return ("a", "b") if sp.a.is_proposer else ("b", "a")


def _run_holding(sp: SessionPair, lost: FrameType, to: str, path: str | None = None) -> list[tuple[str, bytes]]:
    """Like ``sp.run()``, but every ``lost`` frame on its way to ``to`` (on ``path``, or on any)
    is taken out of its path and returned (path name, bytes): in flight, not delivered."""
    held: list[tuple[str, bytes]] = []
    pump(sp, lambda who, name, t: who == to and path in (None, name) and t is lost, held)
    return held


Rows = list[tuple[int, bytes, bytes]]


def _checkpoints(sp: SessionPair) -> tuple[Rows, Rows]:
    """Each end's co-signed checkpoints, as the bytes it stored."""
    a, b = ([(n, p.encode(), c.encode()) for n, p, c in s.ledger.checkpoints(sp.line)] for s in (sp.a, sp.b))
    return a, b


@pytest.mark.parametrize("lost", [FrameType.COSIGN, FrameType.CHECKPOINT])
def test_a_checkpoint_frame_lost_with_one_path_while_another_stays_up_is_sent_again(
    sp: SessionPair, lost: FrameType
) -> None:
    proposer, other = _roles(sp)
    path0, path1 = sp.paths
    sp.disconnect(path1)  # the proposal goes out on path0 alone
    sp.send(other, "FLASH", kind="FLASH", prio="FLASH")
    held = _run_holding(sp, lost, proposer if lost is FrameType.COSIGN else other)
    assert [name for name, _ in held] == ["path0"]  # in flight on path0
    sp.connect(path1)  # path1 opens while path0 keeps the line in sync: no new Synced
    sp.run()
    sp.disconnect(path0)  # what was in flight on path0 is lost with it
    sp.run()
    for _ in range(int(sp.limits.checkpoint_every_seconds) + 1):  # time alone did not mend it
        sp.tick(1.0)
        sp.run()
    cp_a, cp_b = _checkpoints(sp)
    assert cp_a == cp_b and len(cp_a) == 1, (len(cp_a), len(cp_b))
    # and the proposer goes on: the next FLASH is checkpointed too, at both ends
    sp.send(other, "FLASH 2", kind="FLASH", prio="FLASH")
    sp.run()
    cp_a, cp_b = _checkpoints(sp)
    assert cp_a == cp_b and len(cp_a) == 2, (len(cp_a), len(cp_b))
    assert [a for a in sp.alarms if a[1] == "alarm"] == []
    roots = {sp.a.us: sp.a.keys.root_public, sp.b.us: sp.b.keys.root_public}
    for s in (sp.a, sp.b):
        report = verify_line(s.ledger.line_data(sp.line), roots)
        assert report.ok, report.problems


@pytest.mark.parametrize("killed", ["proposer", "countersigner"])
def test_a_station_killed_with_a_countersignature_in_flight_ends_with_the_same_checkpoints(
    sp: SessionPair, killed: str
) -> None:
    """The first guess for seed 499194816 (kill -9 between the countersigner storing checkpoint n
    and its COSIGN reaching the proposer): this held before the fix too. Every path of the killed
    station closes, so the line comes back in sync after the restart: the proposer's outstanding
    proposal goes out again, or a restarted proposer proposes n again and is given back the stored
    pair."""
    proposer, other = _roles(sp)
    sp.send(other, "FLASH", kind="FLASH", prio="FLASH")
    assert _run_holding(sp, FrameType.COSIGN, proposer)
    assert [len(c) for c in _checkpoints(sp)] == ([0, 1] if proposer == "a" else [1, 0])
    sp.restart(proposer if killed == "proposer" else other)  # kill -9: memory gone, in-flight frames lost
    sp.run()
    for _ in range(3):
        sp.tick(1.0)
        sp.run()
    cp_a, cp_b = _checkpoints(sp)
    assert cp_a == cp_b and len(cp_a) == 1
    assert [a for a in sp.alarms if a[1] == "alarm"] == []


def test_the_chaos_checker_waits_for_the_last_cosign_not_only_the_last_receipt(sp: SessionPair) -> None:
    """tests/chaos.py's heal condition: the line converged (heads equal, nothing unreceipted) is
    not the line settled while the checkpoint after a FLASH, or its COSIGN, is in flight; the
    checker reads that from both stores, and it settles once the round trip is over."""
    from tests import chaos

    proposer, other = _roles(sp)
    homes = (sp.dir_a.path, sp.dir_b.path)
    assert chaos._checkpoints_settled(*homes, sp.line, running=True) is None
    sp.send(other, "FLASH", kind="FLASH", prio="FLASH")
    held = _run_holding(sp, FrameType.COSIGN, proposer)  # the COSIGN still in flight
    sa, sb = sp.a.status(), sp.b.status()
    assert held and sa.our_seq == sb.their_seq and sb.our_seq == sa.their_seq  # what _converged saw
    assert sa.unreceipted == sb.unreceipted == 0 and sa.synced and sb.synced
    assert "last co-signed checkpoint is" in (chaos._checkpoints_settled(*homes, sp.line, running=True) or "")
    for name, data in held:  # the round trip ends
        sp._do(proposer, (sp.a if proposer == "a" else sp.b).receive(name, data, sp.clock.now, sp.clock.wall))
    sp.run()
    assert chaos._checkpoints_settled(*homes, sp.line, running=True) is None
    sp.send(other, "FLASH 2", kind="FLASH", prio="FLASH")
    _run_holding(sp, FrameType.CHECKPOINT, other)  # the proposal in flight: the FLASH is not covered
    assert "not covered by a co-signed checkpoint" in (chaos._checkpoints_settled(*homes, sp.line, running=True) or "")


def test_a_countersignature_copy_delayed_past_later_checkpoints_is_dropped_quietly(sp: SessionPair) -> None:
    """The proposer sends each proposal on every open path and the peer answers every copy; the
    copy on a slow path (chaos: a delay fault, +236 ms) may come back after later checkpoints
    were completed on the fast one, while another proposal is out. That is no refusal to warn
    the operator about (seen in chaos runs: "refused a checkpoint countersignature: the
    countersignature is not over checkpoint 190 of this line"): it is dropped quietly."""
    proposer, other = _roles(sp)
    late: list[tuple[str, bytes]] = []
    for i in range(3):  # path1's COSIGNs to the proposer are slow
        sp.send(other, f"FLASH {i}", kind="FLASH", prio="FLASH")
        late += _run_holding(sp, FrameType.COSIGN, proposer, "path1")
    cp_a, cp_b = _checkpoints(sp)
    assert cp_a == cp_b and len(cp_a) == 3 and len(late) == 3
    sp.send(other, "FLASH 3", kind="FLASH", prio="FLASH")
    fourth = _run_holding(sp, FrameType.COSIGN, proposer)  # checkpoint 4 is out when the copies come
    assert fourth
    target = sp.a if proposer == "a" else sp.b
    for name, data in late + fourth:
        sp._do(proposer, target.receive(name, data, sp.clock.now, sp.clock.wall))
    sp.run()
    assert [a for a in sp.alarms if a[1] in ("warning", "alarm")] == []
    cp_a, cp_b = _checkpoints(sp)
    assert cp_a == cp_b and len(cp_a) == 4
