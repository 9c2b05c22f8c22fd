"""Notices of planned activity and the conflicts between them (pure domain logic: no I/O, no clock).

A **notice** says: this kind of activity (air, strike, naval, exercise, other) will happen in this
area, between these altitudes, in this UTC window; keep this safety margin from it. Each new notice,
ours or theirs, is checked against every active notice of both sides, and both ends see the same
conflicting pairs, with where and when they overlap.

The rules, each decided once here:

- **Conflict** = windows overlap *and* altitude bands overlap *and* the areas are within the safety
  margin: ``distance <= max(margin_a, margin_b)``. Each side's margin is the separation it asks for;
  the larger request wins (adding them would double-count the same buffer).
- **Windows** are half-open ``[start, end)`` in UTC milliseconds: one notice ending at 10:00 and the
  next starting at 10:00 do not conflict (a hand-over, not an overlap).
- **Altitude bands** are closed ``[floor_m, ceiling_m]`` in metres above mean sea level (negative =
  below the surface, for subsurface naval activity): two bands that touch at one altitude conflict,
  because an aircraft at exactly that altitude is in both.
- **Areas** are GeoJSON geometries in WGS84 lon/lat (RFC 7946: edges are straight lines in lon/lat):
  a Polygon, a MultiPolygon, or a Point with ``radius_m`` (a disc). Areas that touch are at
  distance 0 and conflict whatever the margin.
- **Both ends agree**: a pair is always worked out with its two notices in ref order, so the answer
  (down to the last bit of the distance) does not depend on which notice a station saw first.

**Distances.** Overlap and touching are decided exactly, in lon/lat (where RFC 7946 edges are
straight), so areas that touch are at distance 0 whatever the projection. For areas apart, the nearest
points are found in the plane tangent to the WGS84 ellipsoid at the midpoint of the nearest points
(an orthographic view through ECEF coordinates), re-centred until the centre moves less than 0.01
degree (one or two rounds, at most four). Edges are first densified to 0.05 degree, because a straight
lon/lat edge curves slightly in the plane (the chord stays within about 1 m). A disc's distance is its
centre's distance minus the radius, exactly. Nearest points are searched on the areas' prepared
(indexed) rings, not their whole polygons, so the cost grows like n log n, not n x m, in the points.
Measured against Vincenty's inverse formula on the ellipsoid (tests/test_notices.py, and a sweep
to 400 km): under 0.002 % for nearest points up to
100 km apart and under 0.02 % up to 400 km, at any latitude up to 85 degrees. The error is a shortfall
of about (d / R)**2 / 24, so it errs towards reporting a conflict. A local *equirectangular*
projection was tried first and dropped: it draws meridians parallel, so the gap between two areas
side by side comes out as wide at their poleward ends as at their other ends; at lat 50 two squares
11 km tall and 7.17 km apart were measured 15 m too far apart, enough to miss a conflict at the edge
of the margin. Before any projection, a cheap lower bound (lon/lat scaled by the fewest metres a
degree can hold there) sets aside most candidates that are clearly too far apart.

**Index.** Every active notice's bounds are widened by its radius and margin, in degrees, with
deliberately low metres-per-degree figures (110,574 m per degree of latitude, the ellipsoid's
minimum; 111,319 m x cos(lat) per degree of longitude, at a latitude pushed poleward by the largest
possible radius + margin and 1 degree more, plus 5 %), so the boxes of any two conflicting notices
always intersect. The boxes live in a ``shapely.STRtree`` built in bulk plus the rows added since,
scanned with numpy; removals are tombstones; the tree is rebuilt when either passes
``rebuild_after`` (4,096). Candidates from the boxes are filtered by window and band with numpy
before any geometry is measured. Timings against 100,000 active notices: bench/notices_bench.py.

**Limits** (``NoticeLimits``) keep the approximations honest and the input bounded: areas at most
20 degrees across and within +/-85 degrees latitude (an area may touch the 180th meridian but not
cross it: file the two halves as two notices; areas on either side of it are compared across it),
margin at most 100 km, radius at most 200 km, 2,000 points (``MAX_NOTICE_POINTS``), windows at most
366 days, bands within -12,000 m .. 1,000,000 m (ballistic trajectories), and at most 200 active
notices per side (``MAX_ACTIVE_NOTICES_PER_SIDE``). These are the protocol's (PROTOCOL.md 5.9), not
a station's settings: they decide which notices are on the board, and so which conflicts there are,
and every reader of one co-signed transcript (both stations, a station replaying its ledger, an
auditor) must put the same notices on it. Points are counted in the content before any geometry is
built, so an oversize area costs a count, not a polygon.

**Showing.** Lists and maps get each area as its *outline*, simplified to at most ``OUTLINE_POINTS``
(100) points and worked out once when the notice is parsed (``Notice.summary``), and each conflict's
``where`` worked out on those outlines (``Conflict.summary``): a board of large areas costs the same
to show as one of small ones. ``to_content`` and ``Conflict.where`` stay exact, for one notice.

**Content form.** In a signed envelope body a notice is a JSON object whose coordinates are
decimal strings (``"36.2750"``): canonical JSON holds no floats. Coordinates keep at most 7 decimals
(about 1 cm); ``to_content`` writes the shortest form (``"36.275"``). The notice's ``ref`` (who filed
it and their local id, e.g. ``"<sender-fingerprint>:<seq>"``) is not in the content: the caller
derives it from the envelope, so a peer cannot claim, amend or withdraw a ref that is not its own.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from redline import kinds
from redline.clock import MAX_TIME_MS
from redline.errors import NoticeBoardError, NoticeError

__all__ = [
    "AREA_TYPES",
    "DECIMALS",
    "KINDS",
    "LIMITS",
    "MAX_ACTIVE_NOTICES_PER_SIDE",
    "MAX_NOTICE_POINTS",
    "Conflict",
    "Notice",
    "NoticeBoard",
    "NoticeBoardError",
    "NoticeError",
    "NoticeLimits",
    "Standing",
    "check_pair",
]

KINDS: Final = kinds.NOTICE_KINDS  # the registry's, as PROTOCOL.md section 5.9 lists them
AREA_TYPES: Final = kinds.AREA_TYPES
DECIMALS: Final = 7  # coordinate precision: 1e-7 degree is about 1 cm

# What the board takes, the protocol's numbers (PROTOCOL.md 5.9, NOTICE), not settings: a notice
# over either is stored (signed evidence) but kept off the board by every reader, so two stations,
# a station replaying its ledger and an auditor show the same board and the same conflicts for one
# co-signed transcript. They were config.json's ``limits.max_notice_points`` and
# ``limits.max_active_notices_per_side`` once (config.py refuses a value other than these). Our own
# operator's notice over either is refused before it is signed (engine.check_operator_content).
MAX_NOTICE_POINTS: Final = 2_000  # positions in one notice's area, counted before anything is built
MAX_ACTIVE_NOTICES_PER_SIDE: Final = 200  # each side's own, counted apart; an amendment replaces


@dataclass(frozen=True, kw_only=True)
class NoticeLimits:
    """Bounds on what a notice may say: the protocol's, the same for every reader of a transcript
    (never a station's settings: they decide what is on the board)."""

    min_floor_m: int = -12_000
    max_ceiling_m: int = 1_000_000
    max_margin_m: int = 100_000
    max_radius_m: int = 200_000
    max_span_deg: int = 20
    max_abs_lat: int = 85
    max_points: int = MAX_NOTICE_POINTS
    max_window_ms: int = 366 * 86_400_000
    max_text_chars: int = 4_000
    max_ref_chars: int = 200


LIMITS: Final = NoticeLimits()


# --- small helpers ------------------------------------------------------------------------------

_DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]{0,2})(\.[0-9]{1,7})?")
_QUANTUM = Decimal(1).scaleb(-DECIMALS)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _deg(value: float) -> str:
    """A coordinate as the shortest decimal with at most 7 places (the content and message form)."""
    text = f"{value:.{DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _where_msg(lon: float, lat: float) -> str:
    return f"lon {_deg(lon)} lat {_deg(lat)}"


# --- local projection ---------------------------------------------------------------------------

_WGS84_A: Final = 6_378_137.0
_WGS84_F: Final = 1 / 298.257223563
_WGS84_E2: Final = _WGS84_F * (2 - _WGS84_F)
_RAD: Final = math.pi / 180
# Conservative metres per degree for the index boxes (see the module docstring).
_M_PER_DEG_LAT_MIN: Final = 110_574.0
_M_PER_DEG_LON_EQ_MIN: Final = 111_319.0
_BOX_SLACK: Final = 1.05
_DENSIFY_DEG: Final = 0.05  # keeps a projected edge within about 1 m of its curve


FloatArray = npt.NDArray[np.float64]
LonLat = tuple[float, float]


_WGS84_B: Final = _WGS84_A * (1 - _WGS84_F)
_WGS84_EP2: Final = _WGS84_E2 / (1 - _WGS84_E2)


def _ecef(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    phi, lam = lat * _RAD, lon * _RAD
    sp, cp = np.sin(phi), np.cos(phi)
    n = _WGS84_A / np.sqrt(1 - _WGS84_E2 * sp * sp)
    return n * cp * np.cos(lam), n * cp * np.sin(lam), n * (1 - _WGS84_E2) * sp


class _Plane:
    """The plane tangent to the WGS84 ellipsoid at (lon0, lat0): metres east and north.

    Points are taken to the plane straight down its normal (an orthographic view of the ellipsoid).
    The ellipsoid is exact at the centre (scales, convergence of meridians); a point r metres away
    moves inward by about r**3 / (6 R**2) (0.4 m at 100 km, 26 m at 400 km), so a distance between
    points on either side of the centre comes out short by about (d / R)**2 / 24 of itself.
    """

    __slots__ = ("cl", "cp", "lat0", "lon0", "sl", "sp", "x0", "y0", "z0")

    def __init__(self, lon0: float, lat0: float) -> None:
        self.lon0, self.lat0 = lon0, lat0
        self.sl, self.cl = math.sin(lon0 * _RAD), math.cos(lon0 * _RAD)
        self.sp, self.cp = math.sin(lat0 * _RAD), math.cos(lat0 * _RAD)
        n = _WGS84_A / math.sqrt(1 - _WGS84_E2 * self.sp * self.sp)
        self.x0, self.y0, self.z0 = n * self.cp * self.cl, n * self.cp * self.sl, n * (1 - _WGS84_E2) * self.sp

    def forward(self, c: FloatArray) -> FloatArray:
        x, y, z = _ecef(c[:, 0], c[:, 1])
        dx, dy, dz = x - self.x0, y - self.y0, z - self.z0
        out = np.empty_like(c)
        out[:, 0] = -self.sl * dx + self.cl * dy
        out[:, 1] = -self.sp * self.cl * dx - self.sp * self.sl * dy + self.cp * dz
        return out

    def inverse(self, c: FloatArray) -> FloatArray:
        """Exact: from the plane up its normal to the ellipsoid, then geodetic lon/lat (Bowring)."""
        e, n = c[:, 0], c[:, 1]
        ux, uy, uz = self.cp * self.cl, self.cp * self.sl, self.sp
        qx = self.x0 - self.sl * e - self.sp * self.cl * n
        qy = self.y0 + self.cl * e - self.sp * self.sl * n
        qz = self.z0 + self.cp * n
        # q + t * up on the ellipsoid: A t^2 + B t + C = 0; the root near 0, in the cancellation-free form.
        ia, ib = 1 / (_WGS84_A * _WGS84_A), 1 / (_WGS84_B * _WGS84_B)
        qa = (ux * ux + uy * uy) * ia + uz * uz * ib
        qb = 2 * ((qx * ux + qy * uy) * ia + qz * uz * ib)
        qc = (qx * qx + qy * qy) * ia + qz * qz * ib - 1
        t = -2 * qc / (qb + np.sqrt(qb * qb - 4 * qa * qc))
        x, y, z = qx + t * ux, qy + t * uy, qz + t * uz
        p = np.hypot(x, y)
        theta = np.arctan2(z * _WGS84_A, p * _WGS84_B)
        lat = np.arctan2(z + _WGS84_EP2 * _WGS84_B * np.sin(theta) ** 3, p - _WGS84_E2 * _WGS84_A * np.cos(theta) ** 3)
        out = np.empty_like(c)
        # Longitudes stay continuous round the centre (a disc on the 180th meridian runs on past it).
        out[:, 0] = self.lon0 + (np.arctan2(y, x) / _RAD - self.lon0 + 180.0) % 360.0 - 180.0
        out[:, 1] = lat / _RAD
        return out

    def point(self, x: float, y: float) -> LonLat:
        """``inverse`` for one point."""
        lon, lat = self.inverse(np.array([[x, y]], dtype=float))[0].tolist()
        return lon, lat


def _index_box(bounds: tuple[float, float, float, float], extra_m: float) -> tuple[float, float, float, float]:
    """``bounds`` widened by ``extra_m`` metres, never less (see the module docstring for why)."""
    minx, miny, maxx, maxy = bounds
    reach = (extra_m + LIMITS.max_margin_m + LIMITS.max_radius_m) * _BOX_SLACK / _M_PER_DEG_LAT_MIN
    # +1 degree: a geodesic bulges poleward of its end points (about 0.4 degree for 600 km at lat 80).
    lat = min(89.9, max(abs(miny), abs(maxy)) + reach + 1.0)
    dlat = extra_m * _BOX_SLACK / _M_PER_DEG_LAT_MIN + 1e-9
    dlon = extra_m * _BOX_SLACK / (_M_PER_DEG_LON_EQ_MIN * math.cos(lat * _RAD)) + 1e-9
    return (minx - dlon, miny - dlat, maxx + dlon, maxy + dlat)


# --- GeoJSON in and out -------------------------------------------------------------------------


def _coordinate(value: object, axis: str) -> float:
    """One lon or lat: a decimal string, an int or a finite float, kept to 7 decimals."""
    if isinstance(value, str):
        if not _DECIMAL_RE.fullmatch(value):
            raise NoticeError(
                f'{axis} {value!r} is not a plain decimal with at most {DECIMALS} decimals (like "36.2750")'
            )
        number = Decimal(value)
    elif isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise NoticeError(f"{axis} {value!r} is not a number")
    else:
        try:
            number = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - Decimal(float) does not raise
            raise NoticeError(f"{axis} {value!r} is not a number") from exc
        if not number.is_finite():
            raise NoticeError(f"{axis} {value!r} is not a finite number")
        number = number.quantize(_QUANTUM)
    limit = 180 if axis == "longitude" else 90
    if not -limit <= number <= limit:
        raise NoticeError(f"{axis} {_deg(float(number))} is out of range (-{limit} to {limit})")
    return float(number)


def _position(value: object) -> tuple[float, float]:
    if not isinstance(value, list | tuple):
        raise NoticeError(f"a position must be [lon, lat], not {value!r}")
    if len(value) != 2:
        extra = " (altitude belongs in floor_m/ceiling_m)" if len(value) == 3 else ""
        raise NoticeError(f"a position must be [lon, lat] with 2 numbers, this one has {len(value)}{extra}")
    return _coordinate(value[0], "longitude"), _coordinate(value[1], "latitude")


Ring = tuple[tuple[float, float], ...]


def _ring(value: object, label: str, ring: str) -> Ring:
    if not isinstance(value, list | tuple) or not value:
        raise NoticeError(f"{label}: its {ring} must be a list of [lon, lat] positions")
    if len(value) > LIMITS.max_points:
        raise NoticeError(f"{label}: its {ring} has {len(value)} points; at most {LIMITS.max_points}")
    points = tuple(_position(p) for p in value)
    if points[0] != points[-1]:
        raise NoticeError(
            f"{label} is not closed: its {ring} starts at {_where_msg(*points[0])} but ends at "
            f"{_where_msg(*points[-1])} (repeat the first point at the end)"
        )
    distinct = len(set(points))
    if len(points) < 4 or distinct < 3:
        raise NoticeError(
            f"{label} has too few points: its {ring} has {distinct} distinct corner(s); a polygon needs at "
            f"least 3 corners, plus the first repeated at the end"
        )
    return points


def _explain(geom: Any, label: str, ring: str = "ring") -> str:
    """explain_validity's reason and location, in words a duty officer can act on."""
    reason = str(explain_validity(geom))
    match = re.fullmatch(r"(?P<why>[^\[]+)\[(?P<x>\S+) (?P<y>\S+)\]", reason)
    if match is None:
        return f"{label} is not a valid shape: {reason}"
    why, at = match["why"].strip(), _where_msg(float(match["x"]), float(match["y"]))
    plain = {
        "Self-intersection": f"{label}: {ring} self-intersects at {at}",
        "Ring Self-intersection": f"{label}: {ring} touches itself at {at} (draw it as two polygons)",
        "Hole lies outside shell": f"{label}: a hole lies outside the outer ring at {at}",
        "Interior is disconnected": f"{label}: its holes cut it into pieces at {at}",
        "Nested holes": f"{label}: a hole lies inside another hole at {at}",
        "Nested shells": f"{label}: one polygon lies inside another at {at}",
        "Duplicate Rings": f"{label}: two rings are the same, at {at}",
        "Too few points in geometry component": f"{label}: a ring has too few distinct points at {at}",
    }
    return plain.get(why, f"{label} is not a valid shape: {why} at {at}")


def _polygon(value: object, label: str) -> tuple[tuple[Ring, ...], Any]:
    if not isinstance(value, list | tuple) or not value:
        raise NoticeError(f"{label} must be a list of rings (the outer ring, then any holes)")
    names = ["outer ring" if i == 0 else f"hole {i}" for i in range(len(value))]
    rings = tuple(_ring(r, label, name) for r, name in zip(value, names, strict=True))
    poly = shapely.Polygon(rings[0], rings[1:])
    if not shapely.is_valid(poly):
        if len(rings) > 1:
            for ring, name in zip(rings, names, strict=True):
                if not shapely.is_simple(shapely.LinearRing(ring)):
                    raise NoticeError(_explain(shapely.Polygon(ring), label, name))
            raise NoticeError(_explain(poly, label, "a hole crosses the outer ring or another hole; it"))
        raise NoticeError(_explain(poly, label))
    return rings, poly


@dataclass(frozen=True, slots=True)
class _Shape:
    """A validated area: the lon/lat geometry measured (a Point for a disc) and what is shown."""

    geom: Any
    radius_m: int
    display: Any  # the area as drawn: the polygon(s), or a 64-sided disc
    bounds: tuple[float, float, float, float]  # of the display area
    geojson: Mapping[str, Any]
    outline: Any  # ``display`` with at most OUTLINE_POINTS points (itself when it has no more)

    def shifted(self, dx: float) -> _Shape:
        """The same area ``dx`` degrees east (to compare across the 180th meridian)."""
        move = np.array([dx, 0.0])
        w, s, e, n = self.bounds
        display = shapely.transform(self.display, lambda c: c + move)
        return _Shape(
            geom=shapely.transform(self.geom, lambda c: c + move),
            radius_m=self.radius_m,
            display=display,
            bounds=(w + dx, s, e + dx, n),
            geojson=self.geojson,
            outline=display if self.outline is self.display else shapely.transform(self.outline, lambda c: c + move),
        )

    @property
    def exact_outline(self) -> bool:
        return self.outline is self.display


# Lists and maps show each area with at most this many points (a 64-sided disc is shown whole):
# a board of large polygons must not make every view carry, or compute with, all their points.
OUTLINE_POINTS: Final = 100


def _outline(display: Any) -> Any:
    """``display`` simplified to at most OUTLINE_POINTS points, for showing, never for measuring."""
    if shapely.get_num_coordinates(display) <= OUTLINE_POINTS:
        return display
    w, s, e, n = display.bounds
    tolerance = max(e - w, n - s) / 2000
    for shape in (display, shapely.convex_hull(display)):
        for _ in range(16):
            simpler = shapely.simplify(shape, tolerance, preserve_topology=True)
            if simpler.is_empty or simpler.geom_type not in ("Polygon", "MultiPolygon"):
                break
            if shapely.get_num_coordinates(simpler) <= OUTLINE_POINTS:
                return simpler
            tolerance *= 2
    return shapely.box(w, s, e, n)


def count_positions(coords: object, limit: int) -> int:
    """How many [lon, lat] positions ``coords`` (nested GeoJSON coordinates) holds, counted before
    anything is built from them; NoticeError as soon as there are more than ``limit``."""
    count, nodes, stack = 0, 0, [coords]
    while stack:
        node = stack.pop()
        nodes += 1
        if nodes > 4 * limit + 1000:
            raise NoticeError(f"area coordinates hold too many empty or nested lists (over {limit} points)")
        if not isinstance(node, list | tuple) or not node:
            continue
        if not isinstance(node[0], list | tuple):
            count += 1
            if count > limit:
                raise NoticeError(f"area has more than {limit} points; at most {limit} (PROTOCOL.md 5.9)")
            continue
        stack.extend(node)
    return count


def _facing(a: _Shape, b: _Shape) -> _Shape:
    """``b``, moved by 360 degrees when it lies closer to ``a`` the other way round the globe."""
    gap = (b.bounds[0] + b.bounds[2]) / 2 - (a.bounds[0] + a.bounds[2]) / 2
    return b.shifted(-360.0) if gap > 180 else b.shifted(360.0) if gap < -180 else b


def _wrap(lon: float) -> float:
    return lon - 360.0 if lon > 180 else lon + 360.0 if lon < -180 else lon


def _parse_area(area: object, radius_m: int) -> _Shape:
    if not isinstance(area, Mapping):
        raise NoticeError("area must be a GeoJSON geometry object (Polygon, MultiPolygon or Point)")
    kind = area.get("type")
    if kind not in AREA_TYPES:
        raise NoticeError(f"area type {kind!r} is not supported; use Polygon, MultiPolygon or Point with radius_m")
    extra = set(area) - {"type", "coordinates"}
    if extra:
        raise NoticeError(f"area has unknown member(s) {sorted(extra)}; give only type and coordinates")
    coords = area.get("coordinates")
    if coords is None:
        raise NoticeError("area has no coordinates")
    normal: Any
    geom: BaseGeometry
    display: BaseGeometry
    if kind == "Point":
        if radius_m <= 0:
            raise NoticeError("Point needs radius_m > 0 (the radius of the area around the point, in metres)")
        lon, lat = _position(coords)
        geom = shapely.Point(lon, lat)
        disc = shapely.buffer(shapely.Point(0.0, 0.0), float(radius_m), quad_segs=16)
        display = shapely.transform(disc, _Plane(lon, lat).inverse)
        minx, miny, maxx, maxy = (float(b) for b in display.bounds)
        bounds = (minx, miny, maxx, maxy)
        normal = (lon, lat)
        points = 1
    else:
        if radius_m != 0:
            raise NoticeError(f"radius_m is for a Point area only; a {kind} takes its shape from its coordinates")
        if kind == "Polygon":
            rings, geom = _polygon(coords, "area polygon")
            normal = rings
            points = sum(len(r) for r in rings)
        else:
            if not isinstance(coords, list | tuple) or not coords:
                raise NoticeError("area MultiPolygon must be a list of polygons")
            parts = [_polygon(p, f"area polygon {i + 1}") for i, p in enumerate(coords)]
            geom = shapely.MultiPolygon([p for _, p in parts])
            if not shapely.is_valid(geom):
                reason = _explain(geom, "area")
                at = reason.rpartition(" at ")[2]
                raise NoticeError(
                    f"area: the polygons of the MultiPolygon overlap or share an edge at {at} (merge them into one)"
                )
            normal = tuple(r for r, _ in parts)
            points = sum(len(r) for rings, _ in parts for r in rings)
        display = geom
        minx, miny, maxx, maxy = (float(b) for b in geom.bounds)
        bounds = (minx, miny, maxx, maxy)
    if points > LIMITS.max_points:
        raise NoticeError(f"area has {points} points; at most {LIMITS.max_points}")
    for span, what in ((bounds[2] - bounds[0], "longitude"), (bounds[3] - bounds[1], "latitude")):
        if span > LIMITS.max_span_deg:
            raise NoticeError(
                f"area spans {span:.1f} degrees of {what}; at most {LIMITS.max_span_deg} (split a larger area "
                f"into several notices; areas across the 180th meridian are not supported)"
            )
    reach = max(abs(bounds[1]), abs(bounds[3]))
    if reach > LIMITS.max_abs_lat:
        raise NoticeError(f"area reaches latitude {reach:.2f}; notices are limited to +/-{LIMITS.max_abs_lat} degrees")
    geojson = MappingProxyType({"type": kind, "coordinates": normal})
    return _Shape(
        geom=geom, radius_m=radius_m, display=display, bounds=bounds, geojson=geojson, outline=_outline(display)
    )


def _coords_out(value: Any) -> Any:
    """Nested float coordinates -> nested lists of decimal strings (the content form)."""
    if isinstance(value, float | int):
        return _deg(float(value))
    return [_coords_out(v) for v in value]


def _coords_round(value: Any) -> Any:
    if isinstance(value, float | int):
        return round(float(value), DECIMALS)
    return tuple(_coords_round(v) for v in value)


def _geojson(geom: Any) -> Mapping[str, Any]:
    """A shapely geometry as a read-only GeoJSON geometry with coordinates rounded to 7 decimals."""
    if geom.geom_type == "GeometryCollection":
        return MappingProxyType({"type": "GeometryCollection", "geometries": tuple(_geojson(g) for g in geom.geoms)})
    mapped = mapping(geom)
    return MappingProxyType({"type": mapped["type"], "coordinates": _coords_round(mapped["coordinates"])})


def _geojson_content(obj: Mapping[str, Any]) -> dict[str, Any]:
    if obj["type"] == "GeometryCollection":
        return {"type": "GeometryCollection", "geometries": [_geojson_content(g) for g in obj["geometries"]]}
    return {"type": obj["type"], "coordinates": _coords_out(obj["coordinates"])}


# --- the notice ---------------------------------------------------------------------------------

_CONTENT_REQUIRED: Final = ("kind", "area", "floor_m", "ceiling_m", "start", "end", "margin_m", "text")
_CONTENT_OPTIONAL: Final = ("radius_m", "amends")


def _check_content_coords(value: object) -> None:
    """In content, every coordinate is a decimal string; say so plainly when it is not."""
    if isinstance(value, list | tuple):
        for v in value:
            _check_content_coords(v)
    elif isinstance(value, float):
        raise NoticeError(
            f"coordinate {value!r} is a floating-point number; in a signed notice coordinates are decimal "
            f'strings such as "36.2750"'
        )
    elif not isinstance(value, str):
        raise NoticeError(f'coordinate {value!r} must be a decimal string such as "36.2750"')


@dataclass(frozen=True, kw_only=True)
class Notice:
    """One notice of planned activity, validated on construction (raises ``NoticeError``).

    ``area`` is a GeoJSON Polygon / MultiPolygon (lon/lat, WGS84) or a Point with ``radius_m``;
    coordinates may be given as numbers or decimal strings and are kept to 7 decimals as floats, in a
    read-only copy. ``start``/``end`` are UTC milliseconds (half-open window), ``floor_m``/``ceiling_m``
    metres above mean sea level (closed band), ``margin_m`` the safety margin in metres.
    """

    ref: str
    kind: str
    area: Mapping[str, Any] = field(hash=False)
    floor_m: int
    ceiling_m: int
    start: int
    end: int
    margin_m: int = 0
    text: str = ""
    radius_m: int = 0
    amends: str | None = None
    _shape: _Shape = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        lim = LIMITS
        for name in ("ref", "kind", "text"):
            if not isinstance(getattr(self, name), str):
                raise NoticeError(f"{name} must be text")
        for name in ("floor_m", "ceiling_m", "start", "end", "margin_m", "radius_m"):
            if not _is_int(getattr(self, name)):
                raise NoticeError(f"{name} must be a whole number, not {getattr(self, name)!r}")
        _check_ref(self.ref, "ref")
        if self.amends is not None:
            _check_ref(self.amends, "amends")
            if self.amends == self.ref:
                raise NoticeError(f"notice {self.ref} cannot amend itself")
        if self.kind not in KINDS:
            raise NoticeError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if len(self.text) > lim.max_text_chars:
            raise NoticeError(f"text is {len(self.text)} characters; at most {lim.max_text_chars}")
        if self.floor_m > self.ceiling_m:
            raise NoticeError(f"altitude floor {self.floor_m} m is above ceiling {self.ceiling_m} m")
        if self.floor_m == self.ceiling_m:
            raise NoticeError(f"altitude band is empty: floor and ceiling are both {self.floor_m} m")
        if self.floor_m < lim.min_floor_m:
            raise NoticeError(f"altitude floor {self.floor_m} m is below {lim.min_floor_m} m")
        if self.ceiling_m > lim.max_ceiling_m:
            raise NoticeError(f"altitude ceiling {self.ceiling_m} m is above {lim.max_ceiling_m} m")
        for name in ("start", "end"):  # checked before either is shown as a date, which would overflow
            if getattr(self, name) < 0:
                raise NoticeError(f"window {name} {getattr(self, name)} is before 1970")
            if getattr(self, name) > MAX_TIME_MS:
                raise NoticeError(f"window {name} {getattr(self, name)} is after the year 9999")
        if self.end < self.start:
            raise NoticeError(f"window ends before it starts (start {_utc(self.start)}, end {_utc(self.end)})")
        if self.end == self.start:
            raise NoticeError(f"window is empty: it starts and ends at {_utc(self.start)}")
        if self.end - self.start > lim.max_window_ms:
            days = lim.max_window_ms // 86_400_000
            raise NoticeError(f"window is {(self.end - self.start) / 86_400_000:.1f} days long; at most {days}")
        if self.end > 2**53 - 1:
            raise NoticeError(f"window end {self.end} is beyond what a signed integer can carry")
        if self.margin_m < 0:
            raise NoticeError(f"safety margin {self.margin_m} m is negative")
        if self.margin_m > lim.max_margin_m:
            raise NoticeError(f"safety margin {self.margin_m} m is more than {lim.max_margin_m} m")
        if self.radius_m < 0 or self.radius_m > lim.max_radius_m:
            raise NoticeError(f"radius_m {self.radius_m} is outside 0..{lim.max_radius_m} m")
        shape = _parse_area(self.area, self.radius_m)
        object.__setattr__(self, "area", shape.geojson)
        object.__setattr__(self, "_shape", shape)

    @property
    def filer(self) -> str:
        """Who filed the notice: the part of ``ref`` before the last ``:``."""
        return self.ref.rpartition(":")[0]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the area, in degrees."""
        return self._shape.bounds

    def display_area(self) -> Mapping[str, Any]:
        """The area as GeoJSON for a map: a Point's disc drawn as a 64-sided polygon."""
        return _geojson(self._shape.display) if self.radius_m else self.area

    @property
    def points(self) -> int:
        """How many positions the area is given by."""
        return int(shapely.get_num_coordinates(self._shape.geom))

    def summary(self) -> dict[str, Any]:
        """The form for lists and maps, cheap to build and bounded in size: ``to_content`` with the
        area as its outline of at most OUTLINE_POINTS points when it has more (``area_outline``);
        ``points`` says how many the area has. ``to_content`` gives the area itself."""
        exact = self.radius_m > 0 or self._shape.exact_outline
        area = self.area if exact else _geojson(self._shape.outline)
        content = self.to_content(area=area)
        content["points"] = self.points
        if not exact:
            content["area_outline"] = True
        return content

    def to_content(self, *, area: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The envelope content form: canonical-encodable (ints and strings only, no floats)."""
        area = self.area if area is None else area
        content: dict[str, Any] = {
            "kind": self.kind,
            "area": {"type": area["type"], "coordinates": _coords_out(area["coordinates"])},
            "floor_m": self.floor_m,
            "ceiling_m": self.ceiling_m,
            "start": self.start,
            "end": self.end,
            "margin_m": self.margin_m,
            "text": self.text,
        }
        if self.radius_m:
            content["radius_m"] = self.radius_m
        if self.amends is not None:
            content["amends"] = self.amends
        return content

    @classmethod
    def from_body(cls, body: kinds.Notice, *, ref: str) -> Notice:
        """A notice from a NOTICE envelope's parsed body (``kinds.Notice``, whose content rules are
        already checked); ``ref`` comes from the envelope. ``MAX_NOTICE_POINTS`` is checked before
        any geometry is built."""
        count_positions(body.area.coordinates, MAX_NOTICE_POINTS)
        return cls(
            ref=ref, kind=body.kind, area={"type": body.area.type, "coordinates": body.area.coordinates},
            floor_m=body.floor_m, ceiling_m=body.ceiling_m, start=body.start, end=body.end, margin_m=body.margin_m,
            text=body.text, radius_m=body.radius_m or 0, amends=body.amends,
        )  # fmt: skip

    @classmethod
    def from_content(cls, content: object, *, ref: str) -> Notice:
        """Parse the content form; ``ref`` comes from the envelope (sender and seq), not the content.
        ``MAX_NOTICE_POINTS`` (the protocol's) is checked before any geometry is built."""
        if not isinstance(content, Mapping):
            raise NoticeError("notice content must be a JSON object")
        missing = [k for k in _CONTENT_REQUIRED if k not in content]
        if missing:
            raise NoticeError(f"notice has no {', '.join(repr(k) for k in missing)}")
        unknown = sorted(set(content) - set(_CONTENT_REQUIRED) - set(_CONTENT_OPTIONAL))
        if unknown:
            raise NoticeError(f"notice has unknown field(s) {unknown}; it cannot be checked safely")
        for name, value in content.items():
            if isinstance(value, float):
                raise NoticeError(f"{name} {value!r} is a floating-point number; signed notices hold none")
        area = content["area"]
        if isinstance(area, Mapping):
            count_positions(area.get("coordinates"), MAX_NOTICE_POINTS)
            _check_content_coords(area.get("coordinates", []))
        amends = content.get("amends")
        if amends is not None and not isinstance(amends, str):
            raise NoticeError("amends must be the ref of the notice being amended")
        return cls(
            ref=ref,
            kind=content["kind"],
            area=area,
            floor_m=content["floor_m"],
            ceiling_m=content["ceiling_m"],
            start=content["start"],
            end=content["end"],
            margin_m=content["margin_m"],
            text=content["text"],
            radius_m=content.get("radius_m", 0),
            amends=amends,
        )


def _check_ref(ref: str, name: str) -> None:
    if not isinstance(ref, str) or not 0 < len(ref) <= LIMITS.max_ref_chars:
        raise NoticeError(f"{name} must be 1..{LIMITS.max_ref_chars} characters")
    filer, sep, local = ref.rpartition(":")
    if not sep or not filer or not local or any(c.isspace() for c in ref):
        raise NoticeError(f"{name} {ref!r} must be '<filer>:<local id>' without spaces")


# --- conflicts ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Conflict:
    """Two active notices that conflict: when, at which altitudes, how far apart, and where.

    ``a`` is the notice whose arrival found the conflict, ``b`` the one already on the board.
    ``distance_m`` is rounded up to whole metres, so 0 means the areas touch or overlap; ``nearest``
    gives the nearest points of a's and b's areas when they are apart (None when they touch).
    ``where`` is GeoJSON for a map, worked out when first asked for (a board may hold hundreds of
    thousands of conflicts and show a few): the overlap of the two areas when they touch or overlap,
    else the midpoint between the nearest points.
    """

    a: str
    b: str
    time_overlap: tuple[int, int]
    band_overlap: tuple[int, int]
    distance_m: int
    margin_m: int
    nearest: tuple[LonLat, LonLat] | None = None
    # The two areas in ref order (not a, b order), so both ends draw the same overlap.
    _areas: tuple[_Shape, _Shape] | None = field(default=None, repr=False, compare=False, hash=False)

    @functools.cached_property
    def where(self) -> Mapping[str, Any]:
        if self.nearest is not None:
            (lon1, lat1), (lon2, lat2) = self.nearest
            if abs(lon2 - lon1) > 180:  # the two points face each other across the 180th meridian
                lon2 += 360.0 if lon2 < lon1 else -360.0
            return _geojson(shapely.Point(_wrap((lon1 + lon2) / 2), (lat1 + lat2) / 2))
        if self._areas is None:
            return MappingProxyType({"type": "GeometryCollection", "geometries": ()})
        a, b = self._areas
        overlap = shapely.intersection(a.display, b.display)
        if overlap.is_empty:  # discs that touch closer than their 64-gons show
            ca, cb = a.geom.centroid, b.geom.centroid
            overlap = shapely.Point((ca.x + cb.x) / 2, (ca.y + cb.y) / 2)
        return _geojson(shapely.normalize(overlap))

    @functools.cached_property
    def where_outline(self) -> tuple[Mapping[str, Any], bool]:
        """``where`` worked out on the two areas' outlines (see ``OUTLINE_POINTS``), and whether
        that is exact (both areas small enough to be their own outline): cheap for any areas."""
        if self.nearest is not None or self._areas is None:
            return self.where, True
        a, b = self._areas
        if a.exact_outline and b.exact_outline:
            return self.where, True
        overlap = shapely.intersection(a.outline, b.outline)
        if overlap.is_empty:  # outlines may part where the areas touch: show where they meet
            (x1, y1), (x2, y2) = shapely.get_coordinates(shapely.shortest_line(a.outline, b.outline)).tolist()
            overlap = shapely.Point((x1 + x2) / 2, (y1 + y2) / 2)
        return _geojson(shapely.normalize(overlap)), False

    def summary(self) -> dict[str, Any]:
        """``to_content`` for lists: ``where`` from the outlines (``where_outline``), marked
        ``where_outline`` when that is not the exact overlap; bounded in size and cost."""
        where, exact = self.where_outline
        content = self.to_content(where=where)
        if not exact:
            content["where_outline"] = True
        return content

    @property
    def pair(self) -> tuple[str, str]:
        """The two refs in sorted order: the same at both ends whoever filed first."""
        return (self.a, self.b) if self.a <= self.b else (self.b, self.a)

    def other(self, ref: str) -> str:
        return self.b if ref == self.a else self.a

    def swapped(self) -> Conflict:
        """The same conflict seen from ``b``."""
        nearest = None if self.nearest is None else (self.nearest[1], self.nearest[0])
        return dataclasses.replace(self, a=self.b, b=self.a, nearest=nearest)  # _areas stay in ref order

    def to_content(self, *, where: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Canonical-encodable form (coordinates as decimal strings), e.g. for the API or a report."""
        content: dict[str, Any] = {
            "a": self.a,
            "b": self.b,
            "time_overlap": list(self.time_overlap),
            "band_overlap": list(self.band_overlap),
            "distance_m": self.distance_m,
            "margin_m": self.margin_m,
            "where": _geojson_content(self.where if where is None else where),
        }
        if self.nearest is not None:
            content["nearest"] = _coords_out(self.nearest)
        return content


def _separation(a: _Shape, b: _Shape, limit: float) -> tuple[float, tuple[LonLat, LonLat] | None] | None:
    """Metres between two areas (0 if they touch or overlap) and their nearest points when apart;
    None as soon as they are certainly more than ``limit`` metres apart."""
    if shapely.intersects(a.geom, b.geom):
        return 0.0, None
    # Edges are straight in lon/lat (RFC 7946) but curve slightly in the plane: densify first.
    ga = shapely.segmentize(a.geom, _DENSIFY_DEG) if a.radius_m == 0 else a.geom
    gb = shapely.segmentize(b.geom, _DENSIFY_DEG) if b.radius_m == 0 else b.geom
    # A cheap lower bound: lon/lat scaled by the fewest metres a degree can hold on the way (+1 degree
    # of latitude for the poleward bulge of a geodesic). Most candidates from the index stop here.
    reach = min(89.9, max(abs(a.bounds[1]), abs(a.bounds[3]), abs(b.bounds[1]), abs(b.bounds[3])) + 1.0)
    scale = np.array([_M_PER_DEG_LON_EQ_MIN * math.cos(reach * _RAD), _M_PER_DEG_LAT_MIN])
    sa, sb = shapely.transform([ga, gb], lambda c: c * scale)
    radii = a.radius_m + b.radius_m
    shapely.prepare(sa)
    if not shapely.dwithin(sa, sb, (limit + 2.0 + radii) / (1 - 1e-3)):
        return None
    # First centre: the middle of the nearest points in that scaled view; then re-centre the tangent
    # plane on the middle of its own nearest points until it moves less than 0.01 degree (about 1 km:
    # a plane centred that close measures the gap to well under a metre).
    (u1, v1), (u2, v2) = shapely.get_coordinates(shapely.shortest_line(_edges(sa), _edges(sb))).tolist()
    plane = _Plane((u1 + u2) / 2 / scale[0], (v1 + v2) / 2 / scale[1])
    for _ in range(4):
        pa, pb = shapely.transform([ga, gb], plane.forward)
        (x1, y1), (x2, y2) = shapely.get_coordinates(shapely.shortest_line(_edges(pa), _edges(pb))).tolist()
        lon0, lat0 = plane.point((x1 + x2) / 2, (y1 + y2) / 2)
        if abs(lon0 - plane.lon0) < 0.01 and abs(lat0 - plane.lat0) < 0.01:
            break
        plane = _Plane(lon0, lat0)
    d = math.hypot(x2 - x1, y2 - y1)
    gap = d - radii
    if gap <= 0:
        return 0.0, None
    ux, uy = (x2 - x1) / d, (y2 - y1) / d
    ends = plane.inverse(
        np.array([[x1 + ux * a.radius_m, y1 + uy * a.radius_m], [x2 - ux * b.radius_m, y2 - uy * b.radius_m]])
    )
    (lon1, lat1), (lon2, lat2) = ends.tolist()
    return gap, ((lon1, lat1), (lon2, lat2))


def _edges(geom: Any) -> Any:
    """Where the nearest points of two areas apart lie: a disc's centre, a polygon's rings. Prepared,
    so GEOS finds them through an index of the segments: measuring two polygons whole compares every
    segment of one with every segment of the other (20 ms for two long 2,000-point strips side by
    side, against 0.04 ms this way), which a peer could choose its areas to make the common case."""
    edges = geom if geom.geom_type == "Point" else shapely.boundary(geom)
    shapely.prepare(edges)
    return edges


def _overlaps(a: Notice, b: Notice) -> bool:
    return max(a.start, b.start) < min(a.end, b.end) and max(a.floor_m, b.floor_m) <= min(a.ceiling_m, b.ceiling_m)


def check_pair(a: Notice, b: Notice) -> Conflict | None:
    """The conflict between ``a`` and ``b``, or None: the rule itself, without any index.

    Worked out with the two in ref order whichever is given first, so both ends, which may receive
    them in either order, get the same answer to the last bit.
    """
    if not _overlaps(a, b):
        return None
    if b.ref < a.ref:
        c = _check(b, a)
        return None if c is None else c.swapped()
    return _check(a, b)


def _check(a: Notice, b: Notice) -> Conflict | None:
    margin = max(a.margin_m, b.margin_m)
    b_shape = _facing(a._shape, b._shape)
    found = _separation(a._shape, b_shape, margin)
    if found is None or found[0] > margin:
        return None
    distance, nearest = found
    rounded: tuple[LonLat, LonLat] | None = None
    if nearest is not None:
        (lon1, lat1), (lon2, lat2) = nearest
        rounded = (
            (round(_wrap(lon1), DECIMALS), round(lat1, DECIMALS)),
            (round(_wrap(lon2), DECIMALS), round(lat2, DECIMALS)),
        )
    return Conflict(
        a=a.ref,
        b=b.ref,
        time_overlap=(max(a.start, b.start), min(a.end, b.end)),
        band_overlap=(max(a.floor_m, b.floor_m), min(a.ceiling_m, b.ceiling_m)),
        distance_m=math.ceil(distance),
        margin_m=margin,
        nearest=rounded,
        _areas=(a._shape, b_shape) if nearest is None else None,
    )


# --- the spatial index --------------------------------------------------------------------------

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _box_of(n: Notice) -> tuple[float, float, float, float]:
    s = n._shape
    base = s.bounds if s.radius_m == 0 else (s.geom.x, s.geom.y, s.geom.x, s.geom.y)
    return _index_box(base, float(s.radius_m + n.margin_m))


def _cols_of(n: Notice) -> tuple[int, int, int, int]:
    return (n.start, n.end, n.floor_m, n.ceiling_m)


def _filter(cols: IntArray, n: Notice) -> BoolArray:
    return (cols[:, 0] < n.end) & (cols[:, 1] > n.start) & (cols[:, 2] <= n.ceiling_m) & (cols[:, 3] >= n.floor_m)


class _Index:
    """STRtree over the rows present at the last build, plus rows appended since (scanned with numpy).

    One row per notice ever inserted since the last build: its index box, (start, end, floor,
    ceiling) and whether it is still alive. Removals are tombstones; a build drops them.
    """

    def __init__(self, rebuild_after: int) -> None:
        self.rebuild_after = rebuild_after
        self.rebuilds = 0
        self._tree: Any = None
        self._boxes: FloatArray = np.empty((0, 4), dtype=np.float64)
        self._geoms: npt.NDArray[np.object_] = np.empty(0, dtype=object)  # the boxes as shapely polygons
        self._cols: IntArray = np.empty((0, 4), dtype=np.int64)
        self._alive: BoolArray = np.empty(0, dtype=np.bool_)
        self._refs: list[str] = []
        self._pos: dict[str, int] = {}
        self._rows = 0  # rows in use
        self._tree_rows = 0  # rows [0, _tree_rows) are in the tree
        self._dead = 0
        self._min_x, self._max_x = math.inf, -math.inf  # west- and east-most box edge held

    def load(self, notices: Sequence[Notice]) -> tuple[npt.NDArray[np.object_], IntArray]:
        """Index exactly ``notices`` (row i is notices[i]); returns their boxes and columns."""
        self._boxes = np.array([_box_of(n) for n in notices], dtype=np.float64).reshape(-1, 4)
        b = self._boxes
        self._geoms = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
        self._cols = np.array([_cols_of(n) for n in notices], dtype=np.int64).reshape(-1, 4)
        self._alive = np.ones(len(notices), dtype=np.bool_)
        self._refs = [n.ref for n in notices]
        self._pos = {ref: i for i, ref in enumerate(self._refs)}
        self._rows, self._dead = len(notices), 0
        self.rebuild()
        return self._geoms, self._cols

    def rebuild(self) -> None:
        self.rebuilds += 1
        n = self._rows
        if self._dead:
            keep = np.flatnonzero(self._alive[:n])
            self._boxes, self._geoms, self._cols = self._boxes[keep], self._geoms[keep], self._cols[keep]
            self._refs = [self._refs[i] for i in keep.tolist()]
            self._pos = {ref: i for i, ref in enumerate(self._refs)}
            n = self._rows = len(keep)
            self._alive = np.ones(n, dtype=np.bool_)
            self._dead = 0
        self._tree = shapely.STRtree(self._geoms[:n]) if n else None
        self._tree_rows = n
        self._min_x = float(self._boxes[:n, 0].min()) if n else math.inf
        self._max_x = float(self._boxes[:n, 2].max()) if n else -math.inf

    def insert(self, n: Notice) -> None:
        row = self._rows
        if row == len(self._alive):
            grow = max(64, 2 * row)
            self._boxes = np.concatenate([self._boxes[:row], np.zeros((grow - row, 4))])
            self._geoms = np.concatenate([self._geoms[:row], np.full(grow - row, None, dtype=object)])
            self._cols = np.concatenate([self._cols[:row], np.zeros((grow - row, 4), dtype=np.int64)])
            self._alive = np.concatenate([self._alive[:row], np.zeros(grow - row, dtype=np.bool_)])
        box = _box_of(n)
        self._boxes[row] = box
        self._geoms[row] = shapely.box(*box)
        self._min_x, self._max_x = min(self._min_x, box[0]), max(self._max_x, box[2])
        self._cols[row] = _cols_of(n)
        self._alive[row] = True
        if row < len(self._refs):
            self._refs[row] = n.ref
        else:
            self._refs.append(n.ref)
        self._pos[n.ref] = row
        self._rows = row + 1

    def remove(self, ref: str) -> None:
        self._alive[self._pos.pop(ref)] = False
        self._dead += 1

    def stale(self, alive: int) -> bool:
        """Whether the next query should come from a fresh tree (too many additions or tombstones)."""
        return self._rows - self._tree_rows > self.rebuild_after or self._dead > max(self.rebuild_after, alive // 4)

    def candidates(self, n: Notice) -> list[str]:
        """Refs whose box meets ``n``'s and whose window and band overlap ``n``'s (a superset of conflicts)."""
        w, s, e, north = _box_of(n)
        hits: list[int] = []
        self._query((w, s, e, north), n, hits)
        # Across the 180th meridian: the same box a turn of the globe west or east, if anything is there.
        if e - 360 >= self._min_x:
            self._query((w - 360, s, e - 360, north), n, hits)
        if w + 360 <= self._max_x:
            self._query((w + 360, s, e + 360, north), n, hits)
        return [self._refs[i] for i in hits]

    def _query(self, box: tuple[float, float, float, float], n: Notice, hits: list[int]) -> None:
        if self._tree is not None:
            idx = self._tree.query(shapely.box(*box))
            idx = idx[self._alive[idx]]
            hits.extend(idx[_filter(self._cols[idx], n)].tolist())
        lo, hi = self._tree_rows, self._rows
        if hi > lo:
            b = self._boxes[lo:hi]
            hit = (
                self._alive[lo:hi]
                & (b[:, 0] <= box[2])
                & (b[:, 2] >= box[0])
                & (b[:, 1] <= box[3])
                & (b[:, 3] >= box[1])
                & _filter(self._cols[lo:hi], n)
            )
            hits.extend((np.flatnonzero(hit) + lo).tolist())


# --- what counts against a side -----------------------------------------------------------------


class Standing:
    """Each side's notices that stand, by the side's own signed time: which one a ``NOTICE`` may
    amend or a ``NOTICE_WITHDRAW`` withdraw, and how many count against ``MAX_ACTIVE_NOTICES_PER_SIDE``
    (PROTOCOL.md 5.9). Every reader of a transcript must decide these the same way, so nothing here
    depends on when a reader stored an envelope or what its clock says: a side's notice stops
    standing when that side withdraws or amends it, or when an envelope it signs later says a time
    at or past the notice's end (``settle``). The time is the side's own claim and ends only its own
    notices: a peer stamping the future can end its own early, never ours. The board's display
    expiry (``NoticeBoard.expire``, on a reader's clock) is apart from this and only ever removes a
    notice sooner. At most ``MAX_ACTIVE_NOTICES_PER_SIDE`` stand per side."""

    def __init__(self) -> None:
        self._ends: dict[str, dict[str, int]] = {}  # filer -> notice ref -> end (ms)

    def settle(self, filer: str, at: int) -> list[str]:
        """``filer`` signed something at ``at``: its notices that ended by then stop standing."""
        mine = self._ends.get(filer, {})
        gone = [ref for ref, end in mine.items() if end <= at]
        for ref in gone:
            del mine[ref]
        return gone

    def count(self, filer: str, at: int | None = None) -> int:
        """How many of ``filer``'s notices stand (at ``at``, without settling: an operator's check
        before signing at a time no earlier)."""
        mine = self._ends.get(filer, {})
        return len(mine) if at is None else sum(1 for end in mine.values() if end > at)

    def holds(self, filer: str, ref: str, at: int | None = None) -> bool:
        end = self._ends.get(filer, {}).get(ref)
        return end is not None and (at is None or end > at)

    def put(self, filer: str, ref: str, end: int, *, replacing: str | None = None) -> None:
        mine = self._ends.setdefault(filer, {})
        if replacing is not None:
            mine.pop(replacing, None)
        mine[ref] = end

    def drop(self, filer: str, ref: str) -> None:
        self._ends.get(filer, {}).pop(ref, None)


# --- the board ----------------------------------------------------------------------------------


class NoticeBoard:
    """The active notices of both sides and every conflict between them.

    Every change either happens whole or raises (``NoticeError`` for a bad notice, at construction;
    ``NoticeBoardError`` for a bad request) with the board unchanged. No clock: ``expire`` is told
    the time.
    """

    def __init__(self, notices: Iterable[Notice] = (), *, rebuild_after: int = 4096) -> None:
        if rebuild_after < 1:
            raise ValueError("rebuild_after must be at least 1")
        self._notices: dict[str, Notice] = {}
        self._conflicts: dict[tuple[str, str], Conflict] = {}
        self._involved: dict[str, set[tuple[str, str]]] = {}
        self._ends: list[tuple[int, str]] = []
        self._per_filer: dict[str, int] = {}
        self._index = _Index(rebuild_after)
        self._load(list(notices))

    # bulk load: one tree, then every pair once (a station rebuilding its board from the ledger)
    def _load(self, notices: list[Notice]) -> None:
        for n in notices:
            if n.ref in self._notices:
                raise NoticeBoardError(f"notice {n.ref} is listed twice")
            self._notices[n.ref] = n
            self._per_filer[n.filer] = self._per_filer.get(n.filer, 0) + 1
        self._ends = [(n.end, n.ref) for n in notices]
        heapq.heapify(self._ends)
        geoms, cols = self._index.load(notices)
        if len(notices) < 2:
            return
        tree = self._index._tree
        for lo in range(0, len(notices), 4096):
            qi, ti = tree.query(geoms[lo : lo + 4096])
            keep = qi + lo > ti
            self._pairs(notices, cols, qi[keep] + lo, ti[keep])
        # Pairs across the 180th meridian: each eastern box moved a turn west meets its western partner.
        boxes = self._index._boxes[: len(notices)]
        east = np.flatnonzero(boxes[:, 2] - 360 >= boxes[:, 0].min())
        if len(east):
            b = boxes[east]
            qi, ti = tree.query(shapely.box(b[:, 0] - 360, b[:, 1], b[:, 2] - 360, b[:, 3]))
            self._pairs(notices, cols, east[qi], ti)

    def _pairs(self, notices: list[Notice], cols: IntArray, qi: IntArray, ti: IntArray) -> None:
        q, t = cols[qi], cols[ti]
        keep = (q[:, 0] < t[:, 1]) & (t[:, 0] < q[:, 1]) & (q[:, 2] <= t[:, 3]) & (t[:, 2] <= q[:, 3])
        for i, j in zip(qi[keep].tolist(), ti[keep].tolist(), strict=True):
            c = check_pair(notices[i], notices[j])
            if c is not None:
                self._record(c)

    # --- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._notices)

    def __contains__(self, ref: object) -> bool:
        return ref in self._notices

    def get(self, ref: str) -> Notice | None:
        return self._notices.get(ref)

    def active(self, offset: int = 0, limit: int | None = None) -> list[Notice]:
        """Active notices, in the order they came onto the board (``limit`` of them from ``offset``)."""
        if offset == 0 and limit is None:
            return list(self._notices.values())
        stop = None if limit is None else offset + limit
        return list(itertools.islice(self._notices.values(), offset, stop))

    def count(self, filer: str) -> int:
        """How many active notices ``filer`` has on the board."""
        return self._per_filer.get(filer, 0)

    def conflict_count(self, ref: str | None = None) -> int:
        """How many current conflicts there are (involving ``ref``, if given)."""
        return len(self._conflicts) if ref is None else len(self._involved.get(ref, ()))

    def conflicts(self, ref: str | None = None) -> list[Conflict]:
        """Every current conflict (or those involving ``ref``), sorted by the pair of refs."""
        keys = self._involved.get(ref, set()) if ref is not None else self._conflicts.keys()
        return [self._conflicts[k] for k in sorted(keys)]

    def conflicts_page(self, offset: int, limit: int) -> list[Conflict]:
        """``conflicts()[offset : offset + limit]`` without sorting them all (a page of a big board)."""
        keys = heapq.nsmallest(offset + limit, self._conflicts.keys())[offset:]
        return [self._conflicts[k] for k in keys]

    def check(self, notice: Notice, *, replacing: str | None = None) -> list[Conflict]:
        """The conflicts ``notice`` would have, without changing the board (e.g. before filing it)."""
        if self._index.stale(len(self._notices)):
            self._index.rebuild()
        found: list[Conflict] = []
        for ref in self._index.candidates(notice):
            if ref == replacing or ref == notice.ref:
                continue
            c = check_pair(notice, self._notices[ref])
            if c is not None:
                found.append(c)
        found.sort(key=lambda c: (c.distance_m, c.b))
        return found

    # --- changing ------------------------------------------------------------------------------

    def add(self, notice: Notice) -> list[Conflict]:
        """Put ``notice`` on the board; return its conflicts. A notice with ``amends`` amends."""
        if notice.amends is not None:
            return self.amend(notice.amends, notice)
        return self.put(notice)

    def put(self, notice: Notice) -> list[Conflict]:
        """Put ``notice`` on the board as a notice of its own, whatever its ``amends`` says: for an
        amendment of a notice this board no longer shows (it ended on the reader's clock while it
        still stood for its filer, ``Standing``)."""
        if notice.ref in self._notices:
            raise NoticeBoardError(f"notice {notice.ref} is already on the board; amend it or file a new one")
        found = self.check(notice)
        self._insert(notice, found)
        return found

    def amend(self, ref: str, notice: Notice) -> list[Conflict]:
        """Replace active notice ``ref`` by ``notice`` (same filer); return the new notice's conflicts."""
        old = self._notices.get(ref)
        if old is None:
            raise NoticeBoardError(f"notice {ref} is not active (withdrawn, expired or never filed); nothing to amend")
        if notice.amends not in (None, ref):
            raise NoticeBoardError(f"notice {notice.ref} amends {notice.amends}, not {ref}")
        if notice.filer != old.filer:
            raise NoticeBoardError(f"notice {ref} was filed by {old.filer}; only its filer can amend it")
        if notice.ref != ref and notice.ref in self._notices:
            raise NoticeBoardError(f"notice {notice.ref} is already on the board; an amendment needs a new ref")
        found = self.check(notice, replacing=ref)
        self._remove(ref)
        self._insert(notice, found)
        return found

    def withdraw(self, ref: str, *, by: str | None = None) -> list[Conflict]:
        """Take ``ref`` off the board (``by``: the filer asking, if known); return the conflicts cleared."""
        old = self._notices.get(ref)
        if old is None:
            raise NoticeBoardError(f"notice {ref} is not active (withdrawn, expired or never filed)")
        if by is not None and by != old.filer:
            raise NoticeBoardError(f"notice {ref} was filed by {old.filer}; only its filer can withdraw it")
        return self._remove(ref)

    def next_end(self) -> float:
        """When ``expire`` may next drop a notice (ms; infinity with none)."""
        return self._ends[0][0] if self._ends else float("inf")

    def expire(self, now_ms: int) -> list[str]:
        """Drop every notice whose window has ended (end <= now_ms); return their refs."""
        gone: list[str] = []
        while self._ends and self._ends[0][0] <= now_ms:
            end, ref = heapq.heappop(self._ends)
            n = self._notices.get(ref)
            if n is not None and n.end == end:
                self._remove(ref)
                gone.append(ref)
        return gone

    # --- internals -----------------------------------------------------------------------------

    def _record(self, c: Conflict) -> None:
        key = c.pair
        self._conflicts[key] = c
        for ref in key:
            self._involved.setdefault(ref, set()).add(key)

    def _insert(self, notice: Notice, found: list[Conflict]) -> None:
        self._notices[notice.ref] = notice
        self._per_filer[notice.filer] = self._per_filer.get(notice.filer, 0) + 1
        self._index.insert(notice)
        heapq.heappush(self._ends, (notice.end, notice.ref))
        for c in found:
            self._record(c)

    def _remove(self, ref: str) -> list[Conflict]:
        filer = self._notices.pop(ref).filer
        self._per_filer[filer] -= 1
        if not self._per_filer[filer]:
            del self._per_filer[filer]
        self._index.remove(ref)
        cleared: list[Conflict] = []
        for key in sorted(self._involved.pop(ref, set())):
            cleared.append(self._conflicts.pop(key))
            other = key[0] if key[1] == ref else key[1]
            peers = self._involved.get(other)
            if peers is not None:
                peers.discard(key)
                if not peers:
                    del self._involved[other]
        return cleared
