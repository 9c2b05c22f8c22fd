"""Notices and conflicts (redline.ops.notices).

What must hold:
- a conflict is exactly: windows overlap (half-open), bands overlap (closed), areas within
  max(margin) metres; distances agree with an independent ellipsoidal geodesic (Vincenty);
- both ends compute the same pairs, with the overlap in time, altitude and space;
- the board's indexed answer equals a brute-force check of every pair, whatever the sequence of
  adds, amendments and withdrawals (Hypothesis);
- every bad notice is refused with a message a duty officer can act on, and the board is unchanged;
- the content form is canonical-encodable (no floats) and round-trips.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redline import canonical
from redline.errors import EncodingError, SchemaError
from redline.ops.notices import (
    Conflict,
    Notice,
    NoticeBoard,
    NoticeBoardError,
    NoticeError,
    check_pair,
)

HOUR = 3_600_000
T0 = 1_652_400_000_000  # 13 May 2022, around the call


# --- an independent distance: Vincenty's inverse formula on the WGS84 ellipsoid ---------------


def vincenty(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    a, f = 6_378_137.0, 1 / 298.257223563
    b = a * (1 - f)
    big_l = math.radians(lon2 - lon1)
    u1 = math.atan((1 - f) * math.tan(math.radians(lat1)))
    u2 = math.atan((1 - f) * math.tan(math.radians(lat2)))
    su1, cu1, su2, cu2 = math.sin(u1), math.cos(u1), math.sin(u2), math.cos(u2)
    lam = big_l
    for _ in range(200):
        sl, cl = math.sin(lam), math.cos(lam)
        ss = math.hypot(cu2 * sl, cu1 * su2 - su1 * cu2 * cl)
        if ss == 0:
            return 0.0
        cs = su1 * su2 + cu1 * cu2 * cl
        sig = math.atan2(ss, cs)
        sa = cu1 * cu2 * sl / ss
        c2a = 1 - sa * sa
        c2sm = cs - 2 * su1 * su2 / c2a if c2a else 0.0
        c = f / 16 * c2a * (4 + f * (4 - 3 * c2a))
        prev = lam
        lam = big_l + (1 - c) * f * sa * (sig + c * ss * (c2sm + c * cs * (-1 + 2 * c2sm * c2sm)))
        if abs(lam - prev) < 1e-13:
            break
    usq = c2a * (a * a - b * b) / (b * b)
    k_a = 1 + usq / 16384 * (4096 + usq * (-768 + usq * (320 - 175 * usq)))
    k_b = usq / 1024 * (256 + usq * (-128 + usq * (74 - 47 * usq)))
    ds = (
        k_b
        * ss
        * (
            c2sm
            + k_b / 4 * (cs * (-1 + 2 * c2sm * c2sm) - k_b / 6 * c2sm * (-3 + 4 * ss * ss) * (-3 + 4 * c2sm * c2sm))
        )
    )
    return b * k_a * (sig - ds)


def test_vincenty_itself() -> None:
    # Flinders Peak -> Buninyong, the textbook case (Vincenty 1975): 54,972.271 m.
    d = vincenty(144 + 25 / 60 + 29.52440 / 3600, -(37 + 57 / 60 + 3.72030 / 3600),
                 143 + 55 / 60 + 35.38390 / 3600, -(37 + 39 / 60 + 10.15610 / 3600))  # fmt: skip
    assert d == pytest.approx(54_972.271, abs=0.01)


# --- builders ---------------------------------------------------------------------------------


def rect(w: float, s: float, e: float, n: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def notice(ref: str, area: Mapping[str, Any] | None = None, **kw: Any) -> Notice:
    fields: dict[str, Any] = {
        "kind": "air",
        "area": area if area is not None else rect(36.0, 50.0, 36.2, 50.2),
        "floor_m": 0,
        "ceiling_m": 3000,
        "start": T0,
        "end": T0 + 4 * HOUR,
        "margin_m": 0,
        "text": "",
    }
    fields.update(kw)
    return Notice(ref=ref, **fields)


def disc(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def state(board: NoticeBoard) -> tuple[list[Notice], list[Conflict]]:
    return board.active(), board.conflicts()


# --- the rule ---------------------------------------------------------------------------------


def test_overlapping_polygons_conflict_with_the_overlap_in_space_time_and_altitude() -> None:
    a = notice("us:1", rect(36.0, 50.0, 36.2, 50.2), floor_m=0, ceiling_m=3000, start=T0, end=T0 + 4 * HOUR)
    b = notice("ru:1", rect(36.1, 50.1, 36.3, 50.3), floor_m=2000, ceiling_m=9000, start=T0 + HOUR, end=T0 + 8 * HOUR)
    board = NoticeBoard()
    assert board.add(a) == []
    (c,) = board.add(b)
    assert (c.a, c.b) == ("ru:1", "us:1")
    assert c.time_overlap == (T0 + HOUR, T0 + 4 * HOUR)
    assert c.band_overlap == (2000, 3000)
    assert c.distance_m == 0 and c.nearest is None
    assert c.where["type"] == "Polygon"
    xs = [p[0] for p in c.where["coordinates"][0]]
    ys = [p[1] for p in c.where["coordinates"][0]]
    assert (min(xs), min(ys), max(xs), max(ys)) == (36.1, 50.1, 36.2, 50.2)
    # Both ends see the same pair, whichever notice they received first.
    other_end = NoticeBoard()
    other_end.add(b)
    (c2,) = other_end.add(a)
    assert c2.pair == c.pair and c2.time_overlap == c.time_overlap and c2.band_overlap == c.band_overlap
    assert board.conflicts() == [c]


def test_touching_polygons_conflict_at_distance_zero_even_without_margin() -> None:
    a = notice("us:1", rect(36.0, 50.0, 36.2, 50.2), margin_m=0)
    b = notice("ru:1", rect(36.2, 50.0, 36.4, 50.2), margin_m=0)
    c = check_pair(b, a)
    assert c is not None and c.distance_m == 0
    assert c.where["type"] == "LineString"  # the shared edge
    assert {p[0] for p in c.where["coordinates"]} == {36.2}


def test_margin_is_measured_in_metres_near_latitude_50() -> None:
    # Two squares side by side with a 0.1 degree gap in longitude. The nearest points are on the
    # northern edge (lat 50.0), where a degree of longitude is shortest.
    a_area, b_area = rect(36.0, 49.9, 36.1, 50.0), rect(36.2, 49.9, 36.3, 50.0)
    true = vincenty(36.1, 50.0, 36.2, 50.0)
    assert true == pytest.approx(7169.6, abs=1)
    inside = check_pair(notice("ru:1", b_area, margin_m=math.ceil(true) + 10), notice("us:1", a_area))
    assert inside is not None
    assert inside.distance_m == pytest.approx(true, abs=1)
    assert inside.where["type"] == "Point"
    assert inside.where["coordinates"] == pytest.approx((36.15, 50.0), abs=1e-6)
    assert inside.nearest == ((36.2, 50.0), (36.1, 50.0))  # on a (ru:1), then on b (us:1)
    assert check_pair(notice("ru:1", b_area, margin_m=math.floor(true) - 10), notice("us:1", a_area)) is None
    # Either side's margin counts: the larger applies.
    assert check_pair(notice("ru:1", b_area), notice("us:1", a_area, margin_m=math.ceil(true) + 10)) is not None


def test_margin_north_south_uses_the_meridian_length() -> None:
    a_area, b_area = rect(36.0, 49.9, 36.1, 50.0), rect(36.0, 50.1, 36.1, 50.2)
    true = vincenty(36.05, 50.0, 36.05, 50.1)
    c = check_pair(notice("ru:1", b_area, margin_m=20_000), notice("us:1", a_area))
    assert c is not None and c.distance_m == pytest.approx(true, abs=1)
    assert check_pair(notice("ru:1", b_area, margin_m=math.floor(true) - 5), notice("us:1", a_area)) is None


def test_windows_are_half_open_a_handover_is_not_a_conflict() -> None:
    a = notice("us:1", start=T0, end=T0 + HOUR)
    assert check_pair(notice("ru:1", start=T0 + HOUR, end=T0 + 2 * HOUR), a) is None
    assert check_pair(notice("ru:1", start=T0 + 2 * HOUR, end=T0 + 3 * HOUR), a) is None
    c = check_pair(notice("ru:1", start=T0 + HOUR - 1, end=T0 + 2 * HOUR), a)
    assert c is not None and c.time_overlap == (T0 + HOUR - 1, T0 + HOUR)


def test_bands_are_closed_touching_altitudes_conflict_disjoint_do_not() -> None:
    a = notice("us:1", floor_m=0, ceiling_m=3000)
    assert check_pair(notice("ru:1", floor_m=3001, ceiling_m=9000), a) is None
    c = check_pair(notice("ru:1", floor_m=3000, ceiling_m=9000), a)
    assert c is not None and c.band_overlap == (3000, 3000)
    # Subsurface naval activity does not conflict with a flight overhead.
    assert check_pair(notice("ru:1", kind="naval", floor_m=-500, ceiling_m=-1), a) is None


def test_multipolygon_conflicts_through_the_part_that_overlaps() -> None:
    multi = {
        "type": "MultiPolygon",
        "coordinates": [rect(30.0, 45.0, 30.2, 45.2)["coordinates"], rect(36.1, 50.1, 36.3, 50.3)["coordinates"]],
    }
    a = notice("us:1", rect(36.0, 50.0, 36.2, 50.2))
    c = check_pair(notice("ru:1", multi), a)
    assert c is not None and c.distance_m == 0
    xs = [p[0] for p in c.where["coordinates"][0]]
    assert (min(xs), max(xs)) == (36.1, 36.2)
    far = {"type": "MultiPolygon", "coordinates": [rect(30.0, 45.0, 30.2, 45.2)["coordinates"]]}
    assert check_pair(notice("ru:1", far, margin_m=100_000), a) is None


def test_point_with_radius_is_a_disc_measured_exactly() -> None:
    # Centres 0.5 degree apart in longitude at lat 50: about 35.8 km.
    centres = vincenty(36.0, 50.0, 36.5, 50.0)
    a = notice("us:1", disc(36.0, 50.0), radius_m=10_000)
    gap = centres - 10_000 - 15_000
    b = notice("ru:1", disc(36.5, 50.0), radius_m=15_000, margin_m=math.ceil(gap) + 5)
    c = check_pair(b, a)
    assert c is not None and c.distance_m == pytest.approx(gap, abs=2)
    assert check_pair(notice("ru:1", disc(36.5, 50.0), radius_m=15_000, margin_m=math.floor(gap) - 5), a) is None
    # Overlapping discs: the overlap is drawn as a polygon.
    c = check_pair(notice("ru:1", disc(36.3, 50.0), radius_m=15_000), a)
    assert c is not None and c.distance_m == 0 and c.where["type"] == "Polygon"
    # A disc reaching into a polygon.
    c = check_pair(notice("ru:1", disc(36.3, 50.1), radius_m=8_000), notice("us:1", rect(36.0, 50.0, 36.2, 50.2)))
    assert c is not None and c.distance_m == 0
    # The disc as shown on a map.
    shown = a.display_area()
    assert shown["type"] == "Polygon" and len(shown["coordinates"][0]) == 65


def test_areas_either_side_of_the_180th_meridian_are_compared_across_it() -> None:
    # Bering Strait: one notice touches the meridian from the west, the other lies 0.1 degree east of it.
    west = notice("us:1", rect(179.5, 65.5, 180.0, 65.7), margin_m=5000)
    east = notice("ru:1", rect(-179.9, 65.5, -179.5, 65.7))
    true = vincenty(180.0, 65.7, -179.9, 65.7)
    c = check_pair(east, west)
    assert c is not None and c.distance_m == pytest.approx(true, abs=1)
    assert c.nearest is not None and c.nearest[0] == (-179.9, 65.7)
    assert abs(c.nearest[1][0]) == 180.0 and c.nearest[1][1] == 65.7  # -180 and 180 are the same meridian
    assert c.where["coordinates"][0] == pytest.approx(-179.95) or c.where["coordinates"][0] == pytest.approx(179.95)
    board = NoticeBoard([west])
    assert [x.pair for x in board.add(east)] == [("ru:1", "us:1")]
    assert NoticeBoard([east, west]).conflicts()[0].pair == ("ru:1", "us:1")
    assert (
        check_pair(notice("ru:2", rect(-179.9, 65.5, -179.5, 65.7)), notice("us:2", west.area, margin_m=4000)) is None
    )
    with pytest.raises(NoticeError, match="areas across the 180th meridian are not supported"):
        notice("ru:3", rect(-179.9, 65.5, 179.9, 65.7))


@settings(max_examples=300, deadline=None)
@given(
    lat=st.floats(-84, 84),
    lon=st.floats(-170, 170),
    bearing=st.floats(0, 2 * math.pi),
    km=st.floats(0.2, 95),
)
def test_distances_agree_with_vincenty_within_the_documented_bound(
    lat: float, lon: float, bearing: float, km: float
) -> None:
    lat2 = lat + km * 1000 * math.cos(bearing) / 111_000
    lon2 = lon + km * 1000 * math.sin(bearing) / (111_000 * math.cos(math.radians(lat)))
    a = notice("us:1", disc(round(lon, 7), round(lat, 7)), radius_m=1)
    b = notice("ru:1", disc(round(lon2, 7), round(lat2, 7)), radius_m=1, margin_m=100_000)
    true = vincenty(round(lon, 7), round(lat, 7), round(lon2, 7), round(lat2, 7)) - 2
    c = check_pair(b, a)
    assert c is not None
    # Documented: under 0.002 % up to 100 km, at any latitude (plus the 1 m rounding up).
    assert abs(c.distance_m - true) <= true * 2e-5 + 1


# --- the board --------------------------------------------------------------------------------


def test_amend_moves_a_notice_out_of_conflict() -> None:
    board = NoticeBoard()
    board.add(notice("us:1", rect(36.0, 50.0, 36.2, 50.2)))
    assert len(board.add(notice("ru:1", rect(36.1, 50.1, 36.3, 50.3)))) == 1
    moved = notice("ru:2", rect(38.0, 50.0, 38.2, 50.2), amends="ru:1")
    assert board.add(moved) == []
    assert board.conflicts() == []
    assert [n.ref for n in board.active()] == ["us:1", "ru:2"]
    # ... and back into conflict through amend() with an explicit ref.
    back = notice("ru:3", rect(36.1, 50.1, 36.3, 50.3))
    (c,) = board.amend("ru:2", back)
    assert c.pair == ("ru:3", "us:1") and board.conflicts() == [c]


def test_only_the_filer_can_amend_or_withdraw_and_the_board_is_unchanged() -> None:
    board = NoticeBoard()
    board.add(notice("us:1"))
    board.add(notice("us:2", rect(40.0, 50.0, 40.1, 50.1)))
    board.add(notice("ru:1"))
    before = state(board)
    with pytest.raises(NoticeBoardError, match="only its filer can amend"):
        board.amend("us:1", notice("ru:2", rect(40.0, 50.0, 40.1, 50.1)))
    with pytest.raises(NoticeBoardError, match="only its filer can withdraw"):
        board.withdraw("us:1", by="ru")
    with pytest.raises(NoticeBoardError, match="not active"):
        board.amend("us:9", notice("us:10"))
    with pytest.raises(NoticeBoardError, match="already on the board"):
        board.add(notice("us:1"))
    with pytest.raises(NoticeBoardError, match="already on the board"):
        board.amend("us:1", notice("us:2"))
    assert state(board) == before


def test_withdraw_removes_its_conflicts() -> None:
    board = NoticeBoard()
    board.add(notice("us:1"))
    board.add(notice("ru:1"))
    board.add(notice("ru:2"))
    assert len(board.conflicts()) == 3
    cleared = board.withdraw("us:1", by="us")
    assert sorted(c.pair for c in cleared) == [("ru:1", "us:1"), ("ru:2", "us:1")]
    assert [c.pair for c in board.conflicts()] == [("ru:1", "ru:2")]
    assert board.conflicts("us:1") == [] and len(board.conflicts("ru:1")) == 1
    with pytest.raises(NoticeBoardError, match="not active"):
        board.withdraw("us:1")


def test_expire_drops_notices_whose_window_has_ended() -> None:
    board = NoticeBoard()
    board.add(notice("us:1", start=T0, end=T0 + HOUR))
    board.add(notice("ru:1", start=T0, end=T0 + 2 * HOUR))
    assert board.expire(T0 + HOUR - 1) == []
    assert board.expire(T0 + HOUR) == ["us:1"]
    assert board.conflicts() == [] and [n.ref for n in board.active()] == ["ru:1"]
    # An amendment that extends the window is not expired at the old end.
    board.amend("ru:1", notice("ru:2", start=T0, end=T0 + 5 * HOUR))
    assert board.expire(T0 + 2 * HOUR) == []
    assert board.expire(T0 + 5 * HOUR) == ["ru:2"] and len(board) == 0


def test_check_is_a_dry_run() -> None:
    board = NoticeBoard([notice("us:1")])
    before = state(board)
    assert len(board.check(notice("ru:1"))) == 1
    assert state(board) == before


def test_bulk_load_finds_the_same_conflicts_as_adding_one_by_one() -> None:
    notices = [notice(f"us:{i}", rect(36 + i * 0.05, 50.0, 36.1 + i * 0.05, 50.1)) for i in range(20)]
    one_by_one = NoticeBoard(rebuild_after=3)
    for n in notices:
        one_by_one.add(n)
    assert NoticeBoard(notices).conflicts() == one_by_one.conflicts()
    with pytest.raises(NoticeBoardError, match="listed twice"):
        NoticeBoard([notices[0], notices[0]])


# --- bad input --------------------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "kind": "strike",
    "area": {
        "type": "Polygon",
        "coordinates": [[["36.0", "50.0"], ["36.2", "50.0"], ["36.2", "50.2"], ["36.0", "50.0"]]],
    },
    "floor_m": 0,
    "ceiling_m": 3000,
    "start": T0,
    "end": T0 + HOUR,
    "margin_m": 1000,
    "text": "planned activity",
}


def poly(*ring: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("bowtie", {"area": poly(("36.0", "50.0"), ("36.2", "50.2"), ("36.2", "50.0"), ("36.0", "50.2"), ("36.0", "50.0"))},
     "area polygon: ring self-intersects at lon 36.1 lat 50.1"),
    ("unclosed ring", {"area": poly(("36.0", "50.0"), ("36.2", "50.0"), ("36.2", "50.2"), ("36.0", "50.2"))},
     "area polygon is not closed: its outer ring starts at lon 36 lat 50 but ends at lon 36 lat 50.2"),
    ("too few points", {"area": poly(("36.0", "50.0"), ("36.2", "50.0"), ("36.0", "50.0"))},
     "area polygon has too few points"),
    ("points on a line", {"area": poly(("36.0", "50.0"), ("36.1", "50.0"), ("36.2", "50.0"), ("36.0", "50.0"))},
     "area polygon: ring self-intersects"),
    ("longitude out of range", {"area": poly(("200", "50"), ("36", "50"), ("36", "51"), ("200", "50"))},
     "longitude 200 is out of range"),
    ("latitude out of range", {"area": poly(("36", "95"), ("37", "50"), ("36", "51"), ("36", "95"))},
     "latitude 95 is out of range"),
    ("too close to the pole", {"area": poly(("36", "86"), ("37", "86"), ("36", "87"), ("36", "86"))},
     "notices are limited to +/-85"),
    ("too wide", {"area": poly(("10", "50"), ("36", "50"), ("36", "51"), ("10", "50"))},
     "area spans 26.0 degrees of longitude"),
    ("three numbers in a position", {"area": poly(("36", "50", "100"), ("37", "50", "100"))},
     "altitude belongs in floor_m/ceiling_m"),
    ("coordinate with too many decimals", {"area": poly(("36.123456789", "50"), ("37", "50"), ("36", "51"))},
     "not a plain decimal with at most 7 decimals"),
    ("hole outside the shell", {"area": {"type": "Polygon", "coordinates": [
        GOOD["area"]["coordinates"][0],
        [["40", "40"], ["40.1", "40"], ["40.1", "40.1"], ["40", "40"]]]}},
     "a hole lies outside the outer ring"),
    ("overlapping multipolygon", {"area": {"type": "MultiPolygon", "coordinates": [
        GOOD["area"]["coordinates"], [[["36.1", "50.0"], ["36.3", "50.0"], ["36.3", "50.2"], ["36.1", "50.0"]]]]}},
     "the polygons of the MultiPolygon overlap"),
    ("unsupported type", {"area": {"type": "LineString", "coordinates": [["36", "50"], ["37", "50"]]}},
     "area type 'LineString' is not supported"),
    ("foreign member in area", {"area": {**GOOD["area"], "crs": "EPSG:3857"}}, "area has unknown member(s) ['crs']"),
    ("point without radius", {"area": {"type": "Point", "coordinates": ["36.1", "50.1"]}}, "Point needs radius_m > 0"),
    ("radius on a polygon", {"radius_m": 5000}, "radius_m is for a Point area only"),
    ("inverted window", {"start": T0 + HOUR, "end": T0}, "window ends before it starts"),
    ("empty window", {"start": T0, "end": T0}, "window is empty"),
    ("inverted band", {"floor_m": 3000, "ceiling_m": 1000}, "altitude floor 3000 m is above ceiling 1000 m"),
    ("empty band", {"floor_m": 1000, "ceiling_m": 1000}, "altitude band is empty"),
    ("band too deep", {"floor_m": -20_000}, "altitude floor -20000 m is below"),
    ("negative margin", {"margin_m": -5}, "safety margin -5 m is negative"),
    ("huge margin", {"margin_m": 1_000_000}, "safety margin 1000000 m is more than"),
    ("unknown kind", {"kind": "parade"}, "kind 'parade' is not one of air, strike, naval, exercise, other"),
    ("float coordinate",
     {"area": {"type": "Polygon", "coordinates": [[[36.0, 50.0], [36.2, 50.0], [36.2, 50.2], [36.0, 50.0]]]}},
     "is a floating-point number; in a signed notice coordinates are decimal strings"),
    ("int coordinate", {"area": {"type": "Point", "coordinates": [36, 50]}, "radius_m": 100},
     "must be a decimal string"),
    ("float margin", {"margin_m": 1000.5}, "margin_m 1000.5 is a floating-point number"),
    ("bool as a number", {"floor_m": True}, "floor_m must be a whole number"),
    ("text not text", {"text": 7}, "text must be text"),
    ("unknown field", {"priority": "high"}, "unknown field(s) ['priority']"),
    ("missing field", {"kind": None}, "notice has no 'kind'"),
    ("amends not a ref", {"amends": 5}, "amends must be the ref"),
    ("window too long", {"end": T0 + 400 * 24 * HOUR}, "days long; at most 366"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_notice_is_refused_with_a_clear_message_and_the_board_is_unchanged(
    change: dict[str, Any], message: str
) -> None:
    board = NoticeBoard([Notice.from_content(GOOD, ref="us:1")])
    before = state(board)
    content = {**GOOD, **change}
    content = {k: v for k, v in content.items() if v is not None}
    with pytest.raises(NoticeError) as info:
        board.add(Notice.from_content(content, ref="ru:1"))
    assert message in str(info.value)
    assert isinstance(info.value, SchemaError)
    assert state(board) == before


@pytest.mark.parametrize(
    ("ref", "message"),
    [("", "ref must be 1..200 characters"), ("nofiler", "must be '<filer>:<local id>'"), ("a b:1", "without spaces")],
)
def test_bad_ref_is_refused(ref: str, message: str) -> None:
    with pytest.raises(NoticeError, match=message):
        notice(ref)
    with pytest.raises(NoticeError, match="cannot amend itself"):
        notice("us:1", amends="us:1")


def test_python_callers_may_give_numbers_which_are_kept_to_7_decimals() -> None:
    n = notice("us:1", rect(36.123456789, 50.0, 36.2, 50.2))
    assert n.area["coordinates"][0][0] == (36.1234568, 50.0)
    with pytest.raises(NoticeError, match="not a finite number"):
        notice("us:1", rect(math.nan, 50.0, 36.2, 50.2))
    with pytest.raises(TypeError):
        n.area["type"] = "Point"  # type: ignore[index]  # the area is read-only


# --- content form -----------------------------------------------------------------------------


def test_content_round_trips_through_canonical_bytes() -> None:
    content = {
        **GOOD,
        "area": poly(("0.2750", "49.90"), ("0.5", "49.9"), ("0.5", "50.1"), ("-0.0000", "50.1"), ("0.2750", "49.90")),
        "amends": "us:0",
    }
    n = Notice.from_content(content, ref="us:1")
    out = n.to_content()
    assert out["area"]["coordinates"][0][0] == ["0.275", "49.9"]
    assert out["area"]["coordinates"][0][3] == ["0", "50.1"]
    data = canonical.encode(out)
    again = Notice.from_content(canonical.decode(data), ref="us:1")
    assert again == n and canonical.encode(again.to_content()) == data
    point = Notice.from_content(
        {**GOOD, "area": {"type": "Point", "coordinates": ["36.1", "-50.0000001"]}, "radius_m": 5000}, ref="ru:1"
    )
    assert Notice.from_content(canonical.decode(canonical.encode(point.to_content())), ref="ru:1") == point


def test_conflict_content_is_canonical_encodable() -> None:
    for b_area in (rect(36.1, 50.1, 36.3, 50.3), rect(36.25, 50.0, 36.3, 50.1)):
        c = check_pair(notice("ru:1", b_area, margin_m=20_000), notice("us:1"))
        assert c is not None
        data = canonical.encode(c.to_content())
        assert b"." in data  # coordinates travel as decimal strings
        with pytest.raises(EncodingError):
            canonical.encode({"where": c.where})  # the display form has floats; it is not for signing


# --- index vs brute force ---------------------------------------------------------------------


def rectangles(lon: float, lat: float, span: float) -> st.SearchStrategy[Notice]:
    """Small rectangles in a box at (``lon``, ``lat``), on a coarse grid so touching and equal edges
    happen; past the 180th meridian they wrap round, and none crosses it."""
    grid = st.integers(0, 40).map(lambda i: round(i * span / 40, 7))

    @st.composite
    def build(draw: st.DrawFn) -> Notice:
        x0, y0 = draw(grid), draw(grid)
        w, h = draw(st.integers(1, 6)) * span / 40, draw(st.integers(1, 6)) * span / 40
        start = draw(st.integers(0, 20)) * HOUR
        floor = draw(st.integers(0, 10)) * 1000
        kind = draw(st.sampled_from(["rect", "rect", "disc"]))
        west = lon + x0
        if west < 180 < west + w:
            west = 180 - w
        elif west >= 180:
            west -= 360
        west = round(west, 7)
        if kind == "disc":
            area = disc(west, lat + y0)
            radius = draw(st.integers(1, 50)) * 1000
        else:
            area = rect(west, lat + y0, round(west + w, 7), round(lat + y0 + h, 7))
            radius = 0
        return Notice(
            ref="x:0",
            kind="exercise",
            area=area,
            radius_m=radius,
            floor_m=floor,
            ceiling_m=floor + draw(st.integers(1, 5)) * 1000,
            start=T0 + start,
            end=T0 + start + draw(st.integers(1, 6)) * HOUR,
            margin_m=draw(st.sampled_from([0, 0, 1000, 10_000, 50_000, 100_000])),
        )

    return build()


@settings(max_examples=200, deadline=None)
@given(a=rectangles(30.0, 50.0, 2.0), b=rectangles(30.0, 50.0, 2.0))
def test_both_ends_get_the_same_answer_whichever_notice_they_saw_first(a: Notice, b: Notice) -> None:
    a, b = with_ref(a, "us:1"), with_ref(b, "ru:1")
    ab, ba = check_pair(a, b), check_pair(b, a)
    if ab is None or ba is None:
        assert ab is None and ba is None
        return
    assert ab == ba.swapped() and ab.swapped() == ba
    assert ab.where == ba.where


def brute_force(active: list[Notice]) -> set[tuple[str, str]]:
    pairs = set()
    for i, a in enumerate(active):
        for b in active[:i]:
            c = check_pair(a, b)
            if c is not None:
                pairs.add(c.pair)
    return pairs


def with_ref(n: Notice, ref: str) -> Notice:
    return Notice(**{**{f: getattr(n, f) for f in Notice.__dataclass_fields__ if f != "_shape"}, "ref": ref})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    where=st.sampled_from([(30.0, 50.0, 1.0), (30.0, 50.0, 8.0), (30.0, 80.0, 3.0), (-60.0, -40.0, 2.0),
                           (178.5, 65.0, 3.0)]),
    data=st.data(),
)  # fmt: skip
def test_board_conflicts_equal_a_brute_force_check_of_all_pairs(
    where: tuple[float, float, float], data: st.DataObject
) -> None:
    lon, lat, span = where
    board = NoticeBoard(rebuild_after=data.draw(st.sampled_from([1, 3, 4096])))
    active: list[Notice] = []
    kinds = st.sampled_from(["add", "add", "add", "withdraw", "amend"])
    ops = data.draw(
        st.lists(st.tuples(kinds, rectangles(lon, lat, span), st.integers(0, 10**6)), min_size=1, max_size=40)
    )
    for i, (op, shape, pick) in enumerate(ops):
        n = with_ref(shape, f"{'us' if i % 2 else 'ru'}:{i}")
        if op == "add" or not active:
            expected = {c.pair for c in (check_pair(n, a) for a in active) if c is not None}
            got = board.add(n)
            assert {c.pair for c in got} == expected
            active.append(n)
        elif op == "withdraw":
            victim = active.pop(pick % len(active))
            board.withdraw(victim.ref)
        else:
            victim = active.pop(pick % len(active))
            n = with_ref(shape, f"{victim.filer}:{i}")
            expected = {c.pair for c in (check_pair(n, a) for a in active) if c is not None}
            assert {c.pair for c in board.amend(victim.ref, n)} == expected
            active.append(n)
        assert {c.pair for c in board.conflicts()} == brute_force(active)
    assert {c.pair for c in NoticeBoard(active).conflicts()} == brute_force(active)
