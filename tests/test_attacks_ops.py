"""Attacks on operations by a hostile peer (or a careless operator), each named for what it tries.

Pure tests of redline.ops over the two-station ``Line`` of tests/test_ops.py: time is an explicit
integer clock, work is counted rather than timed. Each test checks that the attack was refused (at
the sender, or at the receiver: stored as evidence, kept in ``refused`` with the reason, alarmed),
that our trusted state is what it was, and that the line still works afterwards.

- Our deadlines are ours: numbers in the peer's bodies (``ack_within_ms``, ``answer_within_ms``,
  ``expires``, a call's ``start``/``end``, a notice's numbers) never move our deadlines, counts or
  sizes beyond our ``Limits``.
- A peer cannot stall our event loop or drown our alarms with notices: points per notice and active
  notices per side are bounded, the notices view is paginated and built from small outlines, and a
  new notice's conflicts give one alarm.
- A person is who the roster said: keys are pinned on first sight (a swap or a removal is refused
  and alarmed, and survives a replay), and a person does only what the role allows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import nacl.pwhash
import nacl.signing
import pytest

from redline import kinds, persons
from redline.errors import LocalProtocolError, RoleError, SchemaError
from redline.ops import notices as notices_mod
from redline.ops.engine import NOTICES_PAGE_MAX, REFUSED_KEPT, check_operator_content
from redline.ops.notices import LIMITS as NOTICE_LIMITS
from redline.ops.notices import OUTLINE_POINTS
from redline.ops.views import NoticeDetail, NoticesPage
from redline.persons import Person, RosterPins, parse_roster, roster_content
from redline.readmodel import to_obj
from tests.test_ops import (
    DAY,
    DEZHURNY,
    DUTY_EUCOM,
    EUCOM,
    NACHALNIK,
    NDMC,
    QUIET,
    SECOND,
    T0,
    ZAMESTITEL,
    Line,
    Officer,
    Side,
    flash_view,
    levels,
    officer,
    rebuild,
    rosters,
    snapshot,
)

# Every kind of wrong number a peer can put where we expect a duration or a time. Canonical JSON
# carries no floats and no integers past 2**53 - 1, but ops must not rely on that: those are kept.
HOSTILE: list[Any] = [-1, -(2**53), 0, 1, 2**53, 2**63, 10**30, True, False, None, "60000", 1.5, [1000], {"ms": 1}]
ON_THE_WIRE = [-1, -(2**53 - 1), 0, 1, 2**53 - 1, True, False, None, "60000", [1000], {"ms": 1}]


def page_of(view: NoticesPage | NoticeDetail) -> NoticesPage:
    """The notices view asked for a page (no ``notice``) is a page."""
    assert isinstance(view, NoticesPage)
    return view


def texts(side: Side, part: str) -> list[str]:
    return [t for t in side.texts() if part in t]


def parses(kind: str, content: dict[str, Any]) -> bool:
    try:
        kinds.parse(kind, content)
    except SchemaError:
        return False
    return True


# --- 3. our deadlines are ours ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
def test_peer_flash_ack_window_cannot_escalate_us(bad: Any) -> None:
    """NDMC's FLASH asks EUCOM to acknowledge within ``bad`` ms: EUCOM escalates on its own window
    (120 s: deputy at 40 s), never sooner or later, and a valid ACK still stops it."""
    line = Line()
    rosters(line)
    f = line.file(line.b, "FLASH", {"text": "FLASH", "ack_within_ms": bad}, prio="FLASH")
    if not parses("FLASH", {"text": "FLASH", "ack_within_ms": bad}):
        # Not a window at all (PROTOCOL.md 5.9: an integer from 1): refused with the reason at both
        # ends and alarmed, never tracked with a guess, so nothing is ever escalated for it.
        for side in (line.a, line.b):
            assert [(e.id, "ack_within_ms" in why) for e, why in side.ops.refused] == [(f.id, True)]
        assert texts(line.a, f"refused FLASH seq {f.seq} from the peer's station")
        line.advance(DAY)
        assert line.tick(line.a) == [] and f.id not in line.a.ops.flash.flashes
        return
    assert flash_view(line.a, f).deadline == T0 + 120 * SECOND
    assert texts(line.a, "must acknowledge within 120 s")
    line.advance(1)
    assert line.tick(line.a) == []  # nothing signed within milliseconds
    line.at(T0 + 40 * SECOND - 1)
    assert line.tick(line.a) == []
    line.at(T0 + 40 * SECOND)
    assert levels(line.tick(line.a)) == ["deputy"]
    line.file(line.a, "ACK", DUTY_EUCOM.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by == flash_view(line.b, f).acked_by == "Duty EUCOM"
    line.advance(DAY)
    assert line.tick(line.a) == []
    assert not texts(line.a, "was not acknowledged in time")


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
def test_peer_test_answer_window_cannot_make_us_alarm_a_miss(bad: Any) -> None:
    """NDMC's TEST asks for an answer within ``bad`` ms: EUCOM's own copy of the deadline is its
    300 s, and an answer in that time passes at NDMC too (which also runs on its own window)."""
    line = Line()
    rosters(line)
    t = line.file(line.b, "TEST", {"text": "Line test", "answer_within_ms": bad})
    if not parses("TEST", {"text": "Line test", "answer_within_ms": bad}):
        for side in (line.a, line.b):  # refused at both ends: no deadline runs on it anywhere
            assert [(e.id, "answer_within_ms" in why) for e, why in side.ops.refused] == [(t.id, True)]
        line.advance(DAY)
        assert line.ticks() == ([], []) and not texts(line.a, "MISSED") and not texts(line.b, "MISSED")
        return
    assert line.a.ops.tests.theirs[t.id].deadline == T0 + 300 * SECOND
    assert line.b.ops.tests.ours[t.id].deadline == T0 + 300 * SECOND
    line.at(T0 + 300 * SECOND)
    assert line.ticks() == ([], [])
    assert not texts(line.a, "MISSED")
    line.file(line.a, "TEST_ANSWER", DUTY_EUCOM.sign({"test": t.ref, "text": "Received."}))
    did = line.tick(line.b)
    assert [(i.kind, i.content["result"]) for i in did] == [("TEST_RESULT", "passed")]
    line.advance(DAY)
    line.ticks()
    assert not texts(line.a, "MISSED") and not texts(line.b, "MISSED")


@pytest.mark.parametrize(
    ("requested", "flash_ms", "test_ms"),
    [
        (1, 60_000, 60_000), (59_999, 60_000, 60_000), (90_000, 90_000, 90_000), (600_001, 600_000, 600_000),
        (2**53 - 1, 600_000, 600_000), (-5, None, None), (0, None, None), (10**30, None, None), (True, None, None),
        ("90000", None, None), (None, None, None),
    ],
)  # fmt: skip
def test_honoured_peer_windows_are_clamped_to_our_bounds(requested: Any, flash_ms: int | None,
                                                         test_ms: int | None) -> None:  # fmt: skip
    """A station that chooses to honour the peer's requested windows takes them only within its
    own configured bounds; anything not a window (PROTOCOL.md 5.9: an integer from 1 to 2**53-1)
    is refused whole, so no deadline runs on it."""
    limits = replace(QUIET, honour_peer_windows=True, peer_window_min_seconds=60, peer_window_max_seconds=600)
    line = Line(limits=limits)
    f = line.file(line.b, "FLASH", {"text": "x", "ack_within_ms": requested}, prio="FLASH")
    t = line.file(line.b, "TEST", {"text": "x", "answer_within_ms": requested})
    if flash_ms is None:
        assert [e.id for e, _ in line.a.ops.refused] == [f.id, t.id]
        return
    assert flash_view(line.a, f).deadline - T0 == flash_ms
    assert line.a.ops.tests.theirs[t.id].deadline - T0 == test_ms


def test_honoured_peer_windows_are_never_under_a_second_whatever_the_config() -> None:
    limits = replace(QUIET, honour_peer_windows=True)
    for name, value in (("peer_window_min_seconds", -10), ("peer_window_max_seconds", -20)):
        object.__setattr__(limits, name, value)  # config.json refuses these now; the engine keeps its floor
    line = Line(limits=limits)
    f = line.file(line.b, "FLASH", {"text": "x", "ack_within_ms": 1}, prio="FLASH")
    assert flash_view(line.a, f).deadline - T0 == 1000


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
def test_our_operator_cannot_file_a_window_or_expiry_outside_our_bounds(bad: Any) -> None:
    """What we send is held to the bounds we hold the peer to, with a clear error, nothing filed."""
    ops = Line().a.ops
    with pytest.raises(LocalProtocolError, match="ack_within_ms must be a whole number of milliseconds"):
        check_operator_content(ops, "FLASH", {"text": "x", "ack_within_ms": bad})
    with pytest.raises(LocalProtocolError, match="answer_within_ms must be"):
        check_operator_content(ops, "TEST", {"text": "x", "answer_within_ms": bad})
    good = {"from_role": "Secretary", "to_role": "Minister", "subject": "x", "windows": []}
    if bad in (0, 1) and not isinstance(bad, bool):  # these are times (in 1970)
        check_operator_content(ops, "CALL_REQUEST", {**good, "expires": bad})
    else:
        with pytest.raises(LocalProtocolError, match="expires must be a time"):
            check_operator_content(ops, "CALL_REQUEST", {**good, "expires": bad})
    assert check_operator_content(ops, "FLASH", {"text": "x", "ack_within_ms": 120_000})["ack_within_ms"] == 120_000


def test_peer_call_numbers_cannot_expire_our_view_or_break_the_summary() -> None:
    """A peer's expiry is never run here (the requester alone decides); one that is not a time is
    refused with the request. A call record's start and end are shown only when they are dates: a
    huge one (a valid protocol integer) used to make the calls view raise."""
    line = Line()
    rosters(line)
    request = {"from_role": "Minister", "to_role": "Secretary", "subject": "x", "windows": []}
    for bad in HOSTILE:
        line.file(line.b, "CALL_REQUEST", {**request, "expires": bad})
    for bad in ON_THE_WIRE:  # a record is signed by a person: only what canonical JSON carries
        line.file(line.b, "CALL_RECORD", NACHALNIK.sign({"start": bad, "end": bad, "principals": ["A", "B"],
                                                         "participants": ["A"]}))  # fmt: skip
    huge = 2**53 - 1  # a time the protocol carries, past the year 9999
    line.file(line.b, "CALL_RECORD", NACHALNIK.sign({"start": huge - 1, "end": huge, "principals": ["A", "B"],
                                                     "participants": ["A"]}))  # fmt: skip
    line.file(line.b, "CALL_RECORD", NACHALNIK.sign({"start": 0, "end": 1, "participants": ["A"],
                                                     "principals": [str(i) for i in range(100_000)]}))  # fmt: skip
    accepted = list(line.a.ops.calls.requests.values())
    assert sorted(r.expires for r in accepted) == [0, 1]  # the two that are times
    assert len(line.a.ops.calls.calls) == 2  # start == end is no call: every ON_THE_WIRE one is refused
    assert len(line.a.ops.refused) == len(HOSTILE) - 2 + len(ON_THE_WIRE)
    assert all(why.startswith(("CALL_REQUEST content", "CALL_RECORD content")) for _, why in line.a.ops.refused)
    line.advance(30 * DAY)
    assert line.tick(line.a) == []  # we never expire the peer's requests
    assert all(r.state == "open" for r in line.a.ops.calls.requests.values())
    summary = line.a.ops.calls.summary(line.now, EUCOM, NDMC)
    json.dumps(to_obj(summary))  # it is built, and every time in it is a time or None
    for pair in summary:
        for call in pair.calls:
            for time in (call.start, call.end):
                assert time is None or 0 <= time <= 253_402_300_799_999
        for outcome in pair.outcomes:
            assert outcome.expires is None or 0 <= outcome.expires <= 253_402_300_799_999
    assert {p.principals for p in summary} >= {("A", "B"), ("0", "9")}  # of the first 16


def test_peer_read_and_escalated_floods_are_kept_once_per_reader_and_level() -> None:
    """READ and ESCALATED the peer may repeat without end are kept once per reader and level
    (32 at most): the FLASH view stays small; the receiver's deadline-missed still counts."""
    line = Line()
    rosters(line)
    f = line.file(line.a, "FLASH", {"text": "FLASH"}, prio="FLASH")
    for i in range(300):
        line.file(line.b, "READ", {"ref": f.ref, "by": "Dezhurny" if i % 2 else f"reader {i}"})
        line.file(line.b, "ESCALATED", {"flash": f.ref, "level": "deputy" if i % 2 else f"level {i}", "step": i + 1})
    line.file(line.b, "ESCALATED", {"flash": f.ref, "level": "deadline-missed", "step": 3})
    view = flash_view(line.a, f)
    assert len(view.read) == 32 and view.read[0].by == "reader 0"
    assert len(view.escalations) == 33 and view.state == "deadline missed"
    assert len(texts(line.a, "NOT acknowledged by the peer in time")) == 1


@pytest.mark.parametrize("field", ["floor_m", "ceiling_m", "start", "end", "margin_m", "radius_m"])
def test_peer_notice_numbers_cannot_pass_our_notice_limits(field: str) -> None:
    """Every number of a notice, hostile or not, is either refused (stored, not on the board) or
    within the documented bounds; observing never raises and the board stays consistent."""
    line = Line()
    for bad in HOSTILE:
        line.file(line.b, "NOTICE", {**disc_notice(30.0, 50.0), field: bad})
    for n in line.a.ops.board.active():
        assert NOTICE_LIMITS.min_floor_m <= n.floor_m < n.ceiling_m <= NOTICE_LIMITS.max_ceiling_m
        assert 0 <= n.start < n.end <= n.start + NOTICE_LIMITS.max_window_ms
        assert 0 <= n.margin_m <= NOTICE_LIMITS.max_margin_m and 0 < n.radius_m <= NOTICE_LIMITS.max_radius_m
    assert len(line.a.ops.board) + len(line.a.ops.refused) == len(HOSTILE)
    assert len(line.a.ops.refused) >= len(HOSTILE) - 4  # the few in-range values (0, 1, ...) are fine
    line.file(line.b, "NOTICE", disc_notice(31.0, 50.0))  # the line still works
    assert line.a.ops.board.count(NDMC) == len(line.a.ops.board)


def test_peer_flood_of_refused_envelopes_keeps_only_the_latest_refusals() -> None:
    """Every refused envelope stays in the ledger; ops keeps the reasons of the latest 1,000."""
    line = Line()
    rosters(line)
    f = line.file(line.a, "FLASH", {"text": "FLASH"}, prio="FLASH")
    for _ in range(1500):
        line.file(line.b, "ACK", {"ref": f.ref}, prio="FLASH")  # no person signature: refused
    assert len(line.a.ops.refused) == REFUSED_KEPT and line.a.ops.refused[-1][0].seq == line.b.seq
    line.file(line.b, "ACK", DEZHURNY.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by == "Dezhurny"


# --- 4. notices cannot stall our loop or drown our alarms --------------------------------------------


def ring(lon: float, lat: float, radius_deg: float, points: int) -> list[list[str]]:
    pts = [[f"{lon + radius_deg * math.cos(2 * math.pi * i / points):.7f}",
            f"{lat + radius_deg * math.sin(2 * math.pi * i / points):.7f}"] for i in range(points)]  # fmt: skip
    return [*pts, pts[0]]


def polygon_notice(lon: float, lat: float, points: int, **kw: Any) -> dict[str, Any]:
    return {"kind": "air", "area": {"type": "Polygon", "coordinates": [ring(lon, lat, 0.5, points)]}, "floor_m": 0,
            "ceiling_m": 10_000, "start": T0, "end": T0 + DAY, "margin_m": 1000, "text": "exercise", **kw}  # fmt: skip


def disc_notice(lon: float, lat: float, **kw: Any) -> dict[str, Any]:
    return {"kind": "air", "area": {"type": "Point", "coordinates": [str(lon), str(lat)]}, "radius_m": 5000,
            "floor_m": 0, "ceiling_m": 10_000, "start": T0, "end": T0 + DAY, "margin_m": 0, "text": "x",
            **kw}  # fmt: skip


def test_peer_40_notices_of_8000_points_are_refused_cheaply(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack that built a 156 MB view on the event loop: 40 overlapping notices of 8,000
    points. Each is refused on a count of its positions, before a single polygon is built; it is
    stored (the envelope is evidence), kept in ``refused`` with the reason and alarmed once."""
    built: list[int] = []
    real = notices_mod._polygon

    def counting(value: object, label: str) -> Any:
        built.append(1)
        return real(value, label)

    monkeypatch.setattr(notices_mod, "_polygon", counting)
    line = Line()
    for i in range(40):
        line.file(line.b, "NOTICE", polygon_notice(28.0 + i * 0.01, 45.0, 8000))
    assert built == []  # no geometry was built from them, at either end
    for side in (line.a, line.b):
        assert len(side.ops.board) == 0 and side.ops.notice_refs == {}
        assert len(side.ops.refused) == 40
        assert all("at most 2000 (PROTOCOL.md 5.9)" in why for _, why in side.ops.refused)
        assert len(texts(side, "refused, not on the board")) == 40 and not texts(side, "CONFLICT")
    assert len(json.dumps(to_obj(line.a.ops.notices_view(line.now)))) < 200
    # The line still works: a notice within the limits is checked and shown.
    line.file(line.b, "NOTICE", polygon_notice(28.0, 45.0, 1000))
    assert built and len(line.a.ops.board) == 1


def test_peer_multipolygon_of_many_small_parts_is_counted_before_it_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    real = notices_mod._polygon
    monkeypatch.setattr(notices_mod, "_polygon", lambda v, label: built.append(1) or real(v, label))
    parts = [[[[str(i), "10"], [str(i), "10.5"], [f"{i}.5", "10.5"], [str(i), "10"]]] for i in range(600)]
    line = Line()
    line.file(line.b, "NOTICE", {**disc_notice(0, 0), "radius_m": 0, "area": {"type": "MultiPolygon",
                                                                              "coordinates": parts}})  # fmt: skip
    assert built == [] and len(line.a.ops.board) == 0
    assert "at most 2000 (PROTOCOL.md 5.9)" in line.a.ops.refused[0][1]


def strip(lon: float, points: int = 2000) -> dict[str, Any]:
    """A long thin area, 0.005 degree wide and 2.5 degrees tall, given by ``points`` positions."""
    half = points // 2
    side = [[f"{lon:.7f}", f"{40 + k * 2.5 / half:.7f}"] for k in range(half)]
    other = [[f"{lon + 0.005:.7f}", y] for _, y in reversed(side)]
    area = {"type": "Polygon", "coordinates": [[*side, *other, side[0]]]}
    return {**polygon_notice(0, 0, 10, margin_m=100_000), "area": area}


def test_peer_notices_drawn_as_parallel_strips_are_measured_through_an_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long strips side by side, each within the others' margin but apart: measured whole, every
    pair compared every segment of one with every segment of the other (20 ms a pair, seconds per
    notice on a full board). Every nearest-point search now runs on prepared (indexed) edges and
    no whole-polygon distance is taken; the conflicts found are the same."""
    calls: list[bool] = []
    real = notices_mod.shapely.shortest_line

    def shortest_line(a: Any, b: Any, **kw: Any) -> Any:
        calls.append(bool(notices_mod.shapely.is_prepared(a)))
        return real(a, b, **kw)

    monkeypatch.setattr(notices_mod.shapely, "shortest_line", shortest_line)
    monkeypatch.setattr(notices_mod.shapely, "distance", lambda *a, **kw: pytest.fail("a whole-area distance"))
    line = Line()
    for i in range(12):
        line.file(line.b, "NOTICE", strip(20.0 + i * 0.01, 1998))
    assert len(line.a.ops.board) == 12 and line.a.ops.board.conflict_count() == 66  # every pair: 0.5 km apart
    assert calls and all(calls)


def test_our_operator_cannot_file_a_notice_over_the_point_limit() -> None:
    ops = Line().a.ops
    with pytest.raises(Exception, match=r"more than 2000 points; at most 2000 \(PROTOCOL.md 5.9\)"):
        check_operator_content(ops, "NOTICE", polygon_notice(28.0, 45.0, 2000))
    assert check_operator_content(ops, "NOTICE", polygon_notice(28.0, 45.0, 1999))


def test_peer_cannot_pass_the_active_notices_per_side_limit() -> None:
    """NDMC may hold at most ``MAX_ACTIVE_NOTICES_PER_SIDE`` (200, the protocol's) active notices
    on our board; ours are counted apart; an amendment replaces, and a withdrawal or an expiry makes
    room again."""
    most = notices_mod.MAX_ACTIVE_NOTICES_PER_SIDE
    line = Line()
    for i in range(most - 5):  # far from the notices below: no conflicts
        line.file(line.b, "NOTICE", disc_notice(-20.0 + (i % 20) * 0.5, 30.0 + (i // 20) * 0.5))
    filed = [line.file(line.b, "NOTICE", disc_notice(20.0 + i, 50.0)) for i in range(8)]
    for side in (line.a, line.b):
        assert side.ops.board.count(NDMC) == most
        assert [e.id for e, why in side.ops.refused if f"at most {most} per side" in why] == [f.id for f in filed[5:]]
    with pytest.raises(LocalProtocolError, match=f"at most {most} per side"):
        check_operator_content(line.b.ops, "NOTICE", disc_notice(40.0, 50.0))
    line.file(line.a, "NOTICE", disc_notice(20.0, 50.0))  # our side is counted apart
    assert line.a.ops.board.count(EUCOM) == 1 and len(texts(line.a, "NOTICE CONFLICT")) == 1
    line.file(line.b, "NOTICE", disc_notice(25.5, 50.0, amends=f"{NDMC}:{filed[4].seq}"))  # at the cap: replaces
    assert line.a.ops.board.count(NDMC) == most and f"{NDMC}:{filed[4].seq}" not in line.a.ops.board
    line.file(line.b, "NOTICE_WITHDRAW", {"notice": filed[0].ref})
    line.file(line.b, "NOTICE", disc_notice(30.0, 50.0))
    assert line.a.ops.board.count(NDMC) == most and f"{NDMC}:{line.b.seq}" in line.a.ops.board
    line.at(T0 + DAY)  # every window has ended: they no longer count
    line.file(line.b, "NOTICE", disc_notice(31.0, 50.0, start=T0 + DAY, end=T0 + 2 * DAY))
    assert line.a.ops.board.count(NDMC) == 1


def test_many_conflicting_notices_give_one_alarm_per_notice() -> None:
    """30 notices all over each other: 435 conflicting pairs, but each new notice gives one alarm
    naming its nearest three and counting the rest, at both ends."""
    line = Line()
    for i in range(30):
        line.file(line.b, "NOTICE", disc_notice(30.0 + i * 0.001, 50.0))
    for side in (line.a, line.b):
        conflict_alarms = texts(side, "NOTICE CONFLICT")
        assert len(conflict_alarms) == 29
        assert "conflicts with 29 active notices" in conflict_alarms[-1] and "and 26 more" in conflict_alarms[-1]
        assert conflict_alarms[0].count("notice seq") == 2  # the new one and the one it meets
        assert side.ops.board.conflict_count() == 435


def test_notices_view_is_paginated_and_bounded_in_bytes_whatever_the_areas() -> None:
    """40 overlapping notices of 2,000 points (within the limit): the default view holds each area
    as an outline of at most OUTLINE_POINTS points, pages the 780 conflicts and works their
    ``where`` out on the outlines (no exact overlap is computed); one notice in full on request."""
    line = Line()
    for i in range(40):
        line.file(line.b, "NOTICE", polygon_notice(28.0 + i * 0.01, 45.0, 1999))
    ops = line.a.ops
    view = page_of(ops.notices_view(line.now))
    assert (view.total, view.offset, view.limit, view.conflicts_total) == (40, 0, 100, 780)
    assert len(view.active) == 40 and len(view.conflicts) == 100
    for n in view.active:
        assert n.area_outline and n.points == 2000 and n.conflicts == 39
        assert len(n.area["coordinates"][0]) <= OUTLINE_POINTS
    assert all(c.where_outline for c in view.conflicts)
    assert not any("where" in c.__dict__ for c in ops.board.conflicts())  # no exact overlap computed
    assert len(json.dumps(to_obj(view))) < 600_000
    page = page_of(ops.notices_view(line.now, offset=770, limit=50))
    assert len(page.active) == 0 and len(page.conflicts) == 10 and page.conflicts_total == 780
    assert page_of(ops.notices_view(line.now, limit=10**9)).limit == NOTICES_PAGE_MAX
    assert page_of(ops.notices_view(line.now, offset=-5, limit=-5)).limit == 1
    first = view.active[0].id
    assert first is not None
    one = ops.notices_view(line.now, notice=first[:10])
    assert isinstance(one, NoticeDetail)
    assert len(one.notice.area["coordinates"][0]) == 2000 and len(one.conflicts) == 39
    with pytest.raises(Exception, match="no single active notice"):
        ops.notices_view(line.now, notice="0000")


def test_small_areas_are_shown_exactly_in_the_view() -> None:
    line = Line()
    line.file(line.b, "NOTICE", disc_notice(30.0, 50.0))
    line.file(line.a, "NOTICE", polygon_notice(30.05, 50.0, 40))
    view = page_of(line.a.ops.notices_view(line.now))
    assert [n.area["type"] for n in view.active] == ["Point", "Polygon"]
    assert not any(n.area_outline for n in view.active)
    assert len(view.conflicts) == 1 and not view.conflicts[0].where_outline


# --- 8. a person is who the roster said, and does only what the role allows ----------------------


def impostor(name: str, role: str) -> Officer:
    """Someone else's key under a rostered person's name."""
    key = nacl.signing.SigningKey(hashlib.sha256(f"impostor {name}".encode()).digest())
    return Officer(Person(name=name, role=role, key=bytes(key.verify_key).hex()), key)


AUDITOR = officer("Revizor", "auditor")
ADMIN = officer("Admin NDMC", "admin")


def test_peer_roster_key_swap_is_refused_and_alarmed() -> None:
    """NDMC's admin publishes a roster giving Dezhurny another key: refused for Dezhurny (the pin
    stays), alarmed at both ends naming him; the swapped key's ACK counts nowhere and escalation
    runs on; the real Dezhurny still acknowledges; a replay of the transcript gives the same pins."""
    line = Line()
    rosters(line)
    fake = impostor("Dezhurny", "duty")
    roster = line.file(line.b, "ROSTER", roster_content([fake.person, ZAMESTITEL.person, NACHALNIK.person]))
    for side in (line.a, line.b):
        [alarm] = texts(side, "PINNED KEY")
        assert "changes the pinned key of Dezhurny" in alarm and "key rotation" in alarm
        assert [(e.id, "Dezhurny" in why) for e, why in side.ops.refused] == [(roster.id, True)]
        assert side.ops.pins[side is line.b].people["Dezhurny"] == DEZHURNY.person
    f = line.file(line.a, "FLASH", {"text": "FLASH"}, prio="FLASH")
    line.file(line.b, "ACK", fake.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by is None and flash_view(line.b, f).acked_by is None
    assert "not the one on the roster" in line.a.ops.refused[-1][1]
    line.advance(40 * SECOND)
    assert levels(line.tick(line.b)) == ["deputy"]
    line.file(line.b, "ACK", DEZHURNY.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by == "Dezhurny"
    for side in (line.a, line.b):  # the pins survive a restart: replayed, they come out the same
        fresh = rebuild(side)
        assert snapshot(fresh, line.now) == snapshot(side.ops, line.now)
        assert fresh.pins[side is line.b].people["Dezhurny"].key == DEZHURNY.person.key


def test_peer_roster_removing_a_pinned_person_is_refused_and_alarmed() -> None:
    """Dropping a pinned person is refused (else drop-then-re-add would swap the key in two steps):
    the pin stays in force, both ends alarm naming the person, and re-adding with another key is
    still a swap."""
    line = Line()
    rosters(line)
    line.file(line.b, "ROSTER", roster_content([ZAMESTITEL.person, NACHALNIK.person]))
    for side in (line.a, line.b):
        assert any("drops Dezhurny, whose key is pinned" in t for t in texts(side, "PINNED KEY"))
    line.file(line.b, "ROSTER", roster_content([impostor("Dezhurny", "duty").person, ZAMESTITEL.person,
                                                NACHALNIK.person]))  # fmt: skip
    assert any("changes the pinned key of Dezhurny" in t for t in texts(line.a, "PINNED KEY"))
    f = line.file(line.a, "FLASH", {"text": "FLASH"}, prio="FLASH")
    line.file(line.b, "ACK", DEZHURNY.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by == "Dezhurny"


def test_peer_roster_role_change_is_taken_and_alarmed() -> None:
    line = Line()
    rosters(line)
    line.file(line.b, "ROSTER", roster_content([DEZHURNY.person, replace(ZAMESTITEL.person, role="auditor"),
                                                NACHALNIK.person]))  # fmt: skip
    assert texts(line.a, "changes Zamestitel's role from deputy to auditor")
    f = line.file(line.a, "FLASH", {"text": "FLASH"}, prio="FLASH")
    line.file(line.b, "ACK", ZAMESTITEL.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by is None  # an auditor now: the ACK counts nowhere


def test_peer_auditor_ack_answer_record_and_readout_have_no_effect_at_the_receiver() -> None:
    """An auditor (or admin) on NDMC's roster signs an ACK, a TEST_ANSWER, a CALL_RECORD and a
    READOUT: each is stored and refused with the reason at both ends; the FLASH escalates on, the
    test misses, no call or readout is shown; a duty officer's ACK then still counts."""
    line = Line()
    line.file(line.a, "ROSTER", roster_content([DUTY_EUCOM.person]))
    line.file(line.b, "ROSTER", roster_content([DEZHURNY.person, AUDITOR.person, ADMIN.person]))
    f = line.file(line.a, "FLASH", {"text": "FLASH"}, prio="FLASH")
    t = line.file(line.a, "TEST", {"text": "Line test"})
    for signer in (AUDITOR, ADMIN):
        line.file(line.b, "ACK", signer.sign({"ref": f.ref}), prio="FLASH")
        line.file(line.b, "TEST_ANSWER", signer.sign({"test": t.ref, "text": "Received."}))
        rec = line.file(line.b, "CALL_RECORD", signer.sign({"start": T0, "end": T0 + 1, "principals": ["A", "B"],
                                                            "participants": ["A", "B"]}))  # fmt: skip
        line.file(line.b, "READOUT", signer.sign({"call": rec.ref, "text": "readout"}))
    for side in (line.a, line.b):
        assert [e.kind for e, _ in side.ops.refused] == ["ACK", "TEST_ANSWER", "CALL_RECORD", "READOUT"] * 2
        assert all(isinstance(why, str) and "may sign" in why for _, why in side.ops.refused)
        assert "Revizor is auditor: only duty, deputy, supervisor may sign ACK" in side.ops.refused[0][1]
        assert flash_view(side, f).acked_by is None and side.ops.calls.calls == {}
    line.advance(40 * SECOND)
    assert levels(line.tick(line.b)) == ["deputy"]
    line.advance(5 * 60 * SECOND)
    assert [i.content["result"] for i in line.tick(line.a) if i.kind == "TEST_RESULT"] == ["missed"]
    line.file(line.b, "ACK", DEZHURNY.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by == "Dezhurny"


def crowd(n: int, prefix: str = "P") -> list[Person]:
    """``n`` people named ``prefix``0, 1, ... (keys made up: a roster's size is what is tested)."""
    return [Person(name=f"{prefix}{i}", role="duty", key=hashlib.sha256(f"{prefix}{i}".encode()).hexdigest())
            for i in range(n)]  # fmt: skip


def test_roster_tricks_are_refused_whole() -> None:
    """A roster naming someone twice (which key would be pinned?) or listing more people than the
    protocol's ``MAX_ROSTER_PEOPLE`` is ignored whole; the pins stay as they were."""
    line = Line()
    rosters(line)
    before = dict(line.a.ops.pins[False].people)
    twice = {"users": [DEZHURNY.person.to_obj(), impostor("Dezhurny", "duty").person.to_obj()]}
    line.file(line.b, "ROSTER", twice)
    many = roster_content(crowd(persons.MAX_ROSTER_PEOPLE + 1))
    line.file(line.b, "ROSTER", many)
    assert line.a.ops.pins[False].people == before
    assert [why for _, why in line.a.ops.refused] == [
        "ROSTER content lists Dezhurny twice", "ROSTER lists 501 people; at most 500 (PROTOCOL.md 5.10)"]  # fmt: skip
    with pytest.raises(SchemaError):
        parse_roster(twice)
    with pytest.raises(SchemaError, match="ROSTER lists 501 people; at most 500"):
        parse_roster(many)


def test_our_own_roster_over_the_limit_is_refused_but_counts_as_published() -> None:
    """Both ends refuse it alike; our side still records it as published, so the station (which
    publishes whenever its users differ from the last ROSTER) does not publish it on every tick."""
    line = Line()
    people = [DUTY_EUCOM.person, *crowd(persons.MAX_ROSTER_PEOPLE)]
    line.file(line.a, "ROSTER", roster_content(people))
    assert line.a.ops.person_roster() == {p.name: p for p in people}
    for side in (line.a, line.b):
        assert side.ops.pins[side is line.a].people == {} and "PROTOCOL.md 5.10" in side.ops.refused[0][1]


def test_peer_cannot_pin_more_people_than_the_limit_by_rotating_names() -> None:
    """Pins are never dropped, so new names in roster after roster would grow them without end:
    past ``MAX_ROSTER_PEOPLE`` in all, new names are not pinned (and alarmed), though no roster
    lists more than that."""
    most = persons.MAX_ROSTER_PEOPLE
    pins = RosterPins()
    first = pins.apply(parse_roster(roster_content(crowd(most - 2))))
    assert len(first.added) == most - 2 and first.refusal() is None
    rotated = crowd(3, "Q") + crowd(most - 3)  # 500 listed: three new names, P497 left out
    change = pins.apply(parse_roster(roster_content(rotated)))
    assert change.added == ["Q0", "Q1"] and change.over_limit == ["Q2"] and change.drop_refused == ["P497"]
    assert "Q2 would pass the limit of 500 pinned people" in (change.refusal() or "")
    assert len(pins.people) == most and "Q2" not in pins.people


def test_key_rotation_seam_replaces_a_pin_explicitly() -> None:
    pins = RosterPins()
    pins.apply({"Dezhurny": DEZHURNY.person})
    new = impostor("Dezhurny", "duty").person
    assert pins.apply({"Dezhurny": new}).key_refused == ["Dezhurny"]
    pins.rotate(new)  # what a verified KEY rotation will do
    assert pins.people["Dezhurny"] == new and pins.apply({"Dezhurny": new}).refusal() is None


def test_one_role_table_for_the_station_ops_and_the_api() -> None:
    from redline.api import auth

    assert auth.CAPABILITIES is persons.CAPABILITIES
    assert tuple(persons.CAPABILITIES) == persons.ROLES
    for role in persons.ROLES:
        for kind in persons.PERSON_SIGNED_KINDS:
            person = replace(DEZHURNY.person, role=role)
            if persons.may(role, auth.OPERATE):
                persons.check_role(person, kind)
            else:
                with pytest.raises(RoleError):
                    persons.check_role(person, kind)


# --- the same rule where operators file: Station.act (the CLI's and the API's path) ------------------

FAST = {"ops": nacl.pwhash.argon2id.OPSLIMIT_MIN, "mem": nacl.pwhash.argon2id.MEMLIMIT_MIN}
PASSWORD = "correct horse battery"


@pytest.mark.timeout(60)
def test_auditor_cannot_file_an_ack_through_station_act(tmp_path: Path) -> None:
    """Two real stations in this process; EUCOM's auditor signs an ACK of NDMC's FLASH with their
    own key and files it through the control request the CLI sends: refused with the reason before
    anything is accepted; the duty officer's ACK goes through and NDMC sees who acknowledged."""
    from redline.station import Station
    from redline.testing import make_station, pair_directly
    from tests.procs import free_ports

    async def main() -> None:
        pa, pb = free_ports(2)
        da, db = make_station(tmp_path, "EUCOM", "en", pa), make_station(tmp_path, "NDMC", "ru", pb)
        line = pair_directly(da, db)
        people = {name: persons.add_user(da.path, name, role, PASSWORD, **FAST)
                  for name, role in (("Duty EUCOM", "duty"), ("Revizor", "auditor"))}  # fmt: skip
        a, b = Station(da), Station(db)
        await a.start()
        await b.start()
        try:
            await b.send(line, "FLASH: aircraft near the border", kind="FLASH", prio="FLASH")
            await until(lambda: a.ops[line].flash.flashes, "EUCOM to hold the FLASH")
            [fid] = a.ops[line].flash.flashes
            before = a.sessions[line].status().to_obj()["our_seq"]
            for who in ("Revizor", "Duty EUCOM"):
                key = persons.unlock(da.path, who, PASSWORD)
                # As the CLI does: complete the reference first, then sign what will be filed.
                resolved = await a.control({"op": "resolve", "line": line, "kind": "ACK", "content": {"ref": fid}})
                signed = persons.sign_content(resolved, people[who], key)
                request = {"op": "act", "line": line, "kind": "ACK", "content": signed}
                if who == "Revizor":
                    with pytest.raises(RoleError, match="Revizor is auditor: only duty, deputy, supervisor may sign"):
                        await a.control(request)
                    assert a.sessions[line].status().to_obj()["our_seq"] == before  # nothing was accepted
                else:
                    await a.control(request)
            await until(lambda: b.flash_view(line)[0].acked_by == "Duty EUCOM", "NDMC to see the ACK")
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


async def until(pred: Any, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_peer_notices_cost_memory_by_their_number_not_their_size() -> None:
    """The attack (an outside review): every NOTICE the peer signs, refused ones included, stayed
    whole in ops (``LineOps.entries`` and ``refused``) for the life of the process and again after
    each restart; a decoded area of 8,000 positions is several times its bytes, so a peer could fill
    our memory at the pace of its disk budget; its ROSTERs likewise. Ops keeps a notice without its
    area and a roster without its people now; the board keeps the geometry of those that stand,
    ``rosters`` the people last published."""
    line = Line()
    big = [line.file(line.b, "NOTICE", polygon_notice(28.0 + i * 0.01, 45.0, 8000)) for i in range(5)]
    kept = line.file(line.b, "NOTICE", polygon_notice(28.0, 45.0, 1000))
    roster = line.file(line.b, "ROSTER", roster_content([ZAMESTITEL.person, NACHALNIK.person]))
    for side in (line.a, line.b):
        ops = side.ops
        assert all("area" not in ops.entries[e.id].content for e in [*big, kept])
        assert "users" not in ops.entries[roster.id].content and set(ops.rosters[side is line.b]) == {
            "Zamestitel", "Nachalnik"}  # fmt: skip
        assert all("area" not in e.content for e, _ in ops.refused)
        assert ops.entries[kept.id].content["kind"] == kept.content["kind"]  # the rest is kept
        assert [n.ref for n in ops.board.active()] == [f"{kept.sender}:{kept.seq}"]
