"""Which notices are on the board is the transcript's, never a station's setting.

The attack: two stations with different notice settings (config.json's ``max_notice_points`` and
``max_active_notices_per_side``, before they became the protocol's ``MAX_NOTICE_POINTS`` and
``MAX_ACTIVE_NOTICES_PER_SIDE``) and an auditor replaying either station's store on the defaults
read one co-signed transcript into three different boards, with different conflicts: a notice over
one station's limits was stored but kept off its board, while the looser station showed it and
alarmed its conflicts. Now every reader applies the same two numbers (PROTOCOL.md 5.9), and our own
operator's notice over either is refused before it is signed, in one line.

Pure tests over the two-station ``Line`` of tests/test_ops.py: NDMC's notices are filed without
the operator's check (a hostile peer, or one of an older version that signed what its looser
settings allowed), as a peer's signed envelope reaches us whatever it holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from redline.config import Limits
from redline.errors import LocalProtocolError, NoticeError
from redline.ops.engine import LineOps, check_operator_content
from redline.ops.model import Entry
from redline.ops.notices import MAX_ACTIVE_NOTICES_PER_SIDE, MAX_NOTICE_POINTS
from tests.test_attacks_ops import disc_notice, polygon_notice
from tests.test_ops import EUCOM, NDMC, QUIET, T0, Line, Side, rebuild


def settings(**old: int) -> Limits:
    """QUIET with the notice settings a station could give once; a setting config.py no longer
    has is left out (the attack then cannot even be configured, and the board must agree all the
    same)."""
    have = {f.name for f in dataclasses.fields(Limits)}
    return dataclasses.replace(QUIET, **{k: v for k, v in old.items() if k in have})


STRICT = settings(max_notice_points=1500, max_active_notices_per_side=150)
LOOSE = settings(max_notice_points=10_000, max_active_notices_per_side=400)


def board(ops: LineOps) -> dict[str, Any]:
    """What a reader of the transcript shows: the notices on the board, the conflicts between
    them, and which NOTICEs it kept off the board (by envelope id: the reason names the side)."""
    return {
        "notices": sorted(n.ref for n in ops.board.active()),
        "conflicts": [c.pair for c in ops.board.conflicts()],
        "refused": sorted(e.id for e, _ in ops.refused if e.kind == "NOTICE"),
    }


def auditor(side: Side, limits: Limits) -> LineOps:
    """Someone who replays a station's stored transcript, in order, into a fresh LineOps on their
    own settings (``rebuild``: what a station does at start)."""
    copy = Side(side.ops.us, side.ops.peer, side.lang, limits, side.since)
    copy.log = side.log
    return rebuild(copy)


def test_two_stations_with_different_notice_settings_and_an_auditor_show_one_board_and_one_conflict_list() -> None:
    """EUCOM strict, NDMC loose, an auditor on the defaults replaying each store: NDMC's notices of
    1,800 and 2,500 points and its 201st active notice are on every board or on none."""
    line = Line(limits=STRICT)
    line.b = Side(NDMC, EUCOM, "ru", LOOSE, T0)
    # Overlapping polygons: 1,800 points is within the protocol's 2,000 (not within STRICT's old
    # 1,500); 2,500 is past it (not past LOOSE's old 10,000).
    line.file(line.b, "NOTICE", polygon_notice(28.0, 45.0, 1800))
    line.file(line.b, "NOTICE", polygon_notice(28.01, 45.0, 2500))
    line.file(line.a, "NOTICE", polygon_notice(28.02, 45.0, 200))
    # NDMC's notices up to the per-side limit and one past it (discs far apart: no more conflicts).
    for i in range(MAX_ACTIVE_NOTICES_PER_SIDE):
        line.file(line.b, "NOTICE", disc_notice(-20.0 + (i % 20) * 0.5, 30.0 + (i // 20) * 0.5))
    readers = {
        "EUCOM": line.a.ops,
        "NDMC": line.b.ops,
        "auditor of EUCOM's store": auditor(line.a, Limits(test_times_utc=())),
        "auditor of NDMC's store": auditor(line.b, Limits(test_times_utc=())),
    }
    seen = {who: board(ops) for who, ops in readers.items()}
    first = seen["EUCOM"]
    assert all(b == first for b in seen.values()), {who: {k: len(v) for k, v in b.items()} for who, b in seen.items()}
    assert len(first["notices"]) == 1 + MAX_ACTIVE_NOTICES_PER_SIDE  # ours, and NDMC's first 200
    assert first["conflicts"] == [tuple(sorted((f"{EUCOM}:1", f"{NDMC}:1")))]
    assert len(first["refused"]) == 2  # the 2,500-point notice and NDMC's 201st active one
    for ops in readers.values():
        assert ops.board.count(NDMC) == MAX_ACTIVE_NOTICES_PER_SIDE
        assert any(f"at most {MAX_NOTICE_POINTS}" in why for _, why in ops.refused)
        assert any(f"at most {MAX_ACTIVE_NOTICES_PER_SIDE} per side" in why for _, why in ops.refused)


def test_a_station_with_looser_notice_settings_refuses_to_sign_a_notice_every_reader_would_refuse() -> None:
    """The edge: our operator's notice over the protocol's limits gets one clear line and nothing
    is signed, whatever our settings said (a looser station signed them, and its peer kept them off
    its board)."""
    line = Line(limits=LOOSE)
    ops = line.b.ops
    with pytest.raises(NoticeError, match=rf"^area has more than {MAX_NOTICE_POINTS} points; at most "):
        check_operator_content(ops, "NOTICE", polygon_notice(28.0, 45.0, MAX_NOTICE_POINTS + 1))
    assert check_operator_content(ops, "NOTICE", polygon_notice(28.0, 45.0, MAX_NOTICE_POINTS - 1))
    for i in range(MAX_ACTIVE_NOTICES_PER_SIDE):
        line.file(line.b, "NOTICE", disc_notice(-20.0 + (i % 20) * 0.5, 30.0 + (i // 20) * 0.5))
    with pytest.raises(LocalProtocolError) as refused:
        check_operator_content(ops, "NOTICE", disc_notice(40.0, 50.0))
    assert str(refused.value) == (
        f"we already have {MAX_ACTIVE_NOTICES_PER_SIDE} active notices; at most {MAX_ACTIVE_NOTICES_PER_SIDE} per "
        "side (PROTOCOL.md 5.9): withdraw or amend one first"
    )
    # An amendment replaces one: it is not refused at the limit.
    first = f"{NDMC}:1"
    assert check_operator_content(ops, "NOTICE", disc_notice(40.0, 50.0, amends=first))


def test_a_config_that_still_sets_the_notice_limits_is_read_as_the_protocol_or_refused() -> None:
    """Every config.json saved before holds both settings (``save`` wrote each field): the
    protocol's values read as absent; any other value is refused in one line naming it, never
    silently replaced (a station that set 400 would otherwise believe it shows 400). config.py
    cannot import ops.notices (shapely): its copies are held to the constants here."""
    from redline import config
    from redline.config import StationConfig
    from redline.errors import ConfigError

    retired = config._NOW_PROTOCOL["limits"]
    assert retired["max_notice_points"][0] == MAX_NOTICE_POINTS == 2000
    assert retired["max_active_notices_per_side"][0] == MAX_ACTIVE_NOTICES_PER_SIDE == 200

    def station(limits: dict[str, Any]) -> StationConfig:
        return StationConfig.from_obj({"name": "EUCOM", "lang": "en", "listen": ["127.0.0.1:7401"], "limits": limits})

    assert station({"max_notice_points": 2000, "max_active_notices_per_side": 200}).limits == station({}).limits
    for name, bad in (("max_notice_points", 10_000), ("max_active_notices_per_side", 150)):
        with pytest.raises(ConfigError, match=rf"^config\.json: limits\.{name} is no longer a setting: "):
            station({name: bad})
    with pytest.raises(TypeError):
        Limits(max_notice_points=2000)  # type: ignore[call-arg]


def _ndmc_at_the_limit(line: Line, first_end: int) -> None:
    """NDMC with MAX_ACTIVE_NOTICES_PER_SIDE notices on the board, its first one ending at ``first_end``."""
    line.file(line.b, "NOTICE", disc_notice(-30.0, 20.0, end=first_end))
    for i in range(1, MAX_ACTIVE_NOTICES_PER_SIDE):
        line.file(line.b, "NOTICE", disc_notice(-20.0 + (i % 20) * 0.5, 30.0 + (i // 20) * 0.5))


def _refused(ops: LineOps) -> list[int]:
    return sorted(e.seq for e, _ in ops.refused if e.kind == "NOTICE")


def test_a_side_at_the_notice_limit_is_judged_at_its_own_signed_time_not_at_each_readers_clock() -> None:
    """The attack (a slow path, or a peer that holds an envelope back): NDMC at 200 active notices
    signs a 201st while its first is still active, and EUCOM stores it only after that first one
    ended. Counted at each station's store time, NDMC refused it and EUCOM put it on the board: one
    transcript, two boards. Counted at the time NDMC signed (the header's, the same for every
    reader), both refuse it; one signed after the first ended is taken by both; an auditor agrees."""
    line = Line()
    hour = 3_600_000
    _ndmc_at_the_limit(line, first_end=T0 + hour)
    line.cut()
    line.advance(hour // 2)
    held_back = line.file(line.b, "NOTICE", disc_notice(10.0, 10.0))  # signed while the first is active
    line.advance(2 * hour)  # EUCOM stores it after the first ended
    line.restore()
    assert held_back.seq in _refused(line.b.ops)
    assert _refused(line.a.ops) == _refused(line.b.ops) == [held_back.seq]
    later = line.file(line.b, "NOTICE", disc_notice(12.0, 10.0))  # signed after the first ended: room again
    for ops in (line.a.ops, line.b.ops, auditor(line.a, QUIET), auditor(line.b, QUIET)):
        assert _refused(ops) == [held_back.seq], ops.us
        assert f"{NDMC}:{later.seq}" in ops.board


def test_an_amendment_signed_before_the_notice_ended_is_taken_by_a_reader_that_stores_it_after() -> None:
    """The same attack on ``amends``: NDMC amends its notice while it is active; EUCOM, storing the
    amendment after the notice's end by its own clock, refused it ("not active") while NDMC put it
    on its board. Judged at NDMC's signed time, both take it."""
    line = Line()
    hour = 3_600_000
    first = line.file(line.b, "NOTICE", disc_notice(-30.0, 20.0, end=T0 + hour))
    line.cut()
    line.advance(hour // 2)
    amended = line.file(line.b, "NOTICE", disc_notice(-30.0, 20.0, amends=f"{NDMC}:{first.seq}"))
    line.advance(2 * hour)
    line.restore()
    for ops in (line.a.ops, line.b.ops, auditor(line.a, QUIET), auditor(line.b, QUIET)):
        assert _refused(ops) == [], ops.us
        assert f"{NDMC}:{amended.seq}" in ops.board and f"{NDMC}:{first.seq}" not in ops.board


def test_a_peer_that_stamps_a_future_time_ends_only_its_own_notices() -> None:
    """The peer's signed time is a claim: it may end the peer's own notices early (its word, the
    same on every reader), never ours, and never lets the peer hold more than the limit."""
    line = Line()
    ours = line.file(line.a, "NOTICE", disc_notice(50.0, 50.0))
    _ndmc_at_the_limit(line, first_end=T0 + 2 * 3_600_000)
    line.b.seq += 1  # a hostile NDMC's next envelope, signed "a month from now": all its notices ended by then
    future = Entry(sender=NDMC, ours=False, seq=line.b.seq, id="f" * 64, kind="NOTICE", prio="PRIORITY",
                   sent_at=T0 + 30 * 86_400_000, stored_at=line.now, lang="ru",
                   content=disc_notice(10.0, 10.0))  # fmt: skip
    line.a.observe(future)
    ops = line.a.ops
    assert f"{EUCOM}:{ours.seq}" in ops.board
    assert f"{NDMC}:{future.seq}" in ops.board
    assert sum(1 for n in ops.board.active() if n.filer == NDMC) == 1


def _on_both(line: Line, seq: int) -> list[str]:
    """Which readers refused our envelope ``seq`` (EUCOM's, read by itself and by NDMC)."""
    return [
        ops.us for ops in (line.a.ops, line.b.ops) if any(e.seq == seq and e.sender == EUCOM for e, _ in ops.refused)
    ]


def test_an_amends_given_as_a_notice_ref_is_checked_as_an_id_is() -> None:
    """The attack on our own operator check: ``amends`` typed as "<sender>:<seq>" skipped both the
    "still stands" check and the count, so at 200 we signed a notice "amending" the PEER's notice,
    which every reader refused (PROTOCOL 5.9: a station MUST NOT sign a notice over the limit)."""
    line = Line()
    theirs = line.file(line.b, "NOTICE", disc_notice(60.0, 60.0))
    mine = line.file(line.a, "NOTICE", disc_notice(61.0, 61.0))
    with pytest.raises(LocalProtocolError, match="must name one of our own notices"):
        check_operator_content(
            line.a.ops, "NOTICE", disc_notice(10.0, 10.0, amends=f"{NDMC}:{theirs.seq}"), now=line.now
        )
    checked = check_operator_content(line.a.ops, "NOTICE", disc_notice(11.0, 11.0, amends=f"{EUCOM}:{mine.seq}"),
                                     now=line.now)  # fmt: skip
    assert checked["amends"] == f"{EUCOM}:{mine.seq}"
    assert _on_both(line, line.file(line.a, "NOTICE", checked).seq) == []


def test_a_withdrawal_of_our_notice_that_ended_is_refused_before_it_is_signed() -> None:
    """Our notice ended on our clock: every reader, settling at our signed time, refuses a
    withdrawal of it ("not active"); the operator check now says so first and nothing is signed."""
    line = Line()
    ours = line.file(line.a, "NOTICE", disc_notice(50.0, 50.0, end=T0 + 3_600_000))
    assert check_operator_content(line.a.ops, "NOTICE_WITHDRAW", {"notice": ours.id[:12]}, now=line.now)
    line.advance(2 * 3_600_000)
    with pytest.raises(LocalProtocolError, match="no longer active"):
        check_operator_content(line.a.ops, "NOTICE_WITHDRAW", {"notice": ours.id[:12]}, now=line.now)


def test_notices_waiting_unsigned_in_our_outbox_count_before_the_next_is_accepted() -> None:
    """The line is down: what we accepted waits in the outbox, unsigned. The check counted only what
    stands (signed), so at 199 two new notices were both accepted, and two amendments of one notice
    too: signed later, every reader refused the second of each. Our unsent NOTICEs and
    NOTICE_WITHDRAWs now count as signed (``LineOps.accepted``), and stop counting once signed."""
    line = Line()
    ops = line.a.ops
    first = line.file(line.a, "NOTICE", disc_notice(50.0, 50.0))
    amend = check_operator_content(ops, "NOTICE", disc_notice(50.0, 50.0, amends=first.id[:12], text="a"), now=line.now)
    ops.accepted("NOTICE", amend)  # accepted into the outbox, not signed yet
    with pytest.raises(LocalProtocolError, match="no longer active"):
        check_operator_content(ops, "NOTICE", disc_notice(50.0, 50.0, amends=first.id[:12], text="b"), now=line.now)
    with pytest.raises(LocalProtocolError, match="no longer active"):
        check_operator_content(ops, "NOTICE_WITHDRAW", {"notice": first.id[:12]}, now=line.now)
    line.cut()
    signed = line.file(line.a, "NOTICE", amend)  # signed: the check reads what stands again
    for i in range(MAX_ACTIVE_NOTICES_PER_SIDE - 2):
        line.file(line.a, "NOTICE", disc_notice(-20.0 + (i % 20) * 0.5, 30.0 + (i // 20) * 0.5))
    last = check_operator_content(ops, "NOTICE", disc_notice(10.0, 10.0), now=line.now)  # the 200th
    ops.accepted("NOTICE", last)
    with pytest.raises(LocalProtocolError, match=f"already have {MAX_ACTIVE_NOTICES_PER_SIDE} active"):
        check_operator_content(ops, "NOTICE", disc_notice(12.0, 10.0), now=line.now)
    line.file(line.a, "NOTICE", last)
    line.restore()
    assert _on_both(line, signed.seq) == [] and _on_both(line, line.a.seq) == []


def test_a_notice_refused_for_its_content_still_ends_its_senders_notices_at_its_signed_time() -> None:
    """PROTOCOL 5.9: a side's notices end when it signs a NOTICE or NOTICE_WITHDRAW stamped at or
    past their end, whatever that envelope holds. Settled only for notices that parsed, a peer at
    200 could sign a malformed NOTICE stamped after its first notice ended, then a good one stamped
    before (signed times need not increase): a reader following the text took the good one, ours
    refused it. Every NOTICE now settles first."""
    line = Line()
    first = line.file(line.b, "NOTICE", disc_notice(-30.0, 20.0, end=T0 + 3_600_000))
    for i in range(1, MAX_ACTIVE_NOTICES_PER_SIDE):
        line.file(line.b, "NOTICE", disc_notice(-20.0 + (i % 20) * 0.5, 30.0 + (i // 20) * 0.5))

    def signed(content: dict[str, Any], sent_at: int) -> Entry:
        line.b.seq += 1
        return Entry(sender=NDMC, ours=False, seq=line.b.seq, id=f"{line.b.seq:064x}", kind="NOTICE", prio="PRIORITY",
                     sent_at=sent_at, stored_at=line.now, lang="ru", content=content)  # fmt: skip

    bad = {**disc_notice(0.0, 0.0), "area": {"type": "Point", "coordinates": ["x", "y"]}}
    line.a.observe(signed(bad, T0 + 2 * 3_600_000))  # refused for its area; signed after the first ended
    good = signed(disc_notice(10.0, 10.0), T0 + 1_800_000)
    line.a.observe(good)
    assert f"{NDMC}:{first.seq}" not in line.a.ops.board
    assert f"{NDMC}:{good.seq}" in line.a.ops.board
