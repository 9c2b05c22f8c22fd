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
