"""Notice conflict checking at scale (issue: ``redline notice``): one new notice against 100,000 active.

The aim from the issue: checking one new notice against 100,000 active notices, p50 under 10 ms on
this machine. What is measured, all in one process, single-threaded, garbage collector paused in the
timed loops:

- **validate**: µs to build one ``Notice`` (schema, GeoJSON, shapely validity), and one through
  ``Notice.from_content`` (the receive path);
- **build**: s to load 100,000 active notices into a ``NoticeBoard`` in bulk (STRtree + every
  conflicting pair among them), as a station does when it rebuilds its board from the ledger;
- **add**: ms per ``NoticeBoard.add`` of 1,000 new notices, one at a time, onto that board (the
  figure the aim is about): p50, p99, max; the notices are validated beforehand, so this is the
  index query, the window/band filter and the exact distance of the candidates;
- **add with rebuilds**: the same over 10,000 adds, so the delta list reaches ``rebuild_after``
  (4,096) and the tree is rebuilt inside the timed loop (p99/max show it), and the rebuild alone;
- **amend** and **withdraw**: ms per call, p50.

The notices: random activity over the Black Sea and Eastern Europe (lon 27-42 E, lat 41-52 N, about
1,200 x 1,200 km): 60 % quadrilaterals 2-40 km across, 10 % MultiPolygons of two such parts, 30 %
discs of 1-30 km radius; windows starting anywhere in 14 days, 1-12 h long; bands from the surface
up to 15 km; margins 0-10 km. That is dense: a point of the region lies under about 30 of them (over
the 14 days), and a new notice conflicts with about 4.

Run alone: ``.venv/bin/python -m bench.notices_bench`` (``--quick``: 10,000 notices, a smoke run).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

from bench.common import Figures, Row, no_gc, percentile, table
from redline.ops.notices import KINDS, Notice, NoticeBoard

T0 = 1_652_400_000_000  # 13 May 2022
HOUR = 3_600_000
REGION = (27.0, 41.0, 42.0, 52.0)  # west, south, east, north
AIM_MS = 10.0


class Maker:
    """Random notices over REGION, reproducible from a seed."""

    def __init__(self, seed: int, prefix: str) -> None:
        self.rnd = random.Random(seed)
        self.prefix = prefix
        self.n = 0

    def _quad(self, lon: float, lat: float, km: float) -> list[list[float]]:
        r = self.rnd
        k = 1 / (111.32 * math.cos(math.radians(lat)))
        ring = []
        for i in range(4):
            a = i * math.pi / 2 + r.uniform(-0.5, 0.5)
            d = km / 2 * r.uniform(0.6, 1.0)
            ring.append([round(lon + d * math.cos(a) * k, 5), round(lat + d * math.sin(a) / 110.57, 5)])
        return [*ring, ring[0]]

    def area(self) -> tuple[dict[str, object], int]:
        r = self.rnd
        w, s, e, n = REGION
        lon, lat = r.uniform(w, e), r.uniform(s, n)
        pick = r.random()
        if pick < 0.6:
            return {"type": "Polygon", "coordinates": [self._quad(lon, lat, r.uniform(2, 40))]}, 0
        if pick < 0.7:
            other = (lon + r.choice([-1, 1]) * r.uniform(0.7, 1.5), lat + r.uniform(-0.5, 0.5))
            parts = [[self._quad(lon, lat, r.uniform(2, 40))], [self._quad(*other, r.uniform(2, 40))]]
            return {"type": "MultiPolygon", "coordinates": parts}, 0
        return {"type": "Point", "coordinates": [round(lon, 5), round(lat, 5)]}, r.randint(1, 30) * 1000

    def notice(self, ref: str | None = None) -> Notice:
        r = self.rnd
        self.n += 1
        area, radius = self.area()
        start = T0 + r.randrange(14 * 24) * HOUR + r.randrange(4) * 900_000
        floor = r.choice([0, 0, 0, 150, 500, 1000, 3000, 6000, 9000])
        return Notice(
            ref=ref or f"{self.prefix}:{self.n}",
            kind=r.choice(KINDS),
            area=area,
            radius_m=radius,
            floor_m=floor,
            ceiling_m=floor + r.choice([500, 1500, 3000, 6000, 12_000]),
            start=start,
            end=start + r.randint(1, 12) * HOUR,
            margin_m=r.choice([0, 500, 1000, 2000, 5000, 10_000]),
            text="planned activity",
        )


def timed_ms(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def measure(*, quick: bool = False) -> Figures:
    f: Figures = {}
    active = 10_000 if quick else 100_000
    f["active"] = active
    maker = Maker(1, "ndmc")
    with no_gc():
        t = time.perf_counter()
        notices = [maker.notice() for _ in range(active)]
        f["validate_us"] = (time.perf_counter() - t) / active * 1e6
        contents = [n.to_content() for n in notices[:2000]]
        t = time.perf_counter()
        for i, c in enumerate(contents):
            Notice.from_content(c, ref=f"x:{i}")
        f["from_content_us"] = (time.perf_counter() - t) / len(contents) * 1e6

        t = time.perf_counter()
        board = NoticeBoard(notices)
        f["build_s"] = time.perf_counter() - t
        f["build_conflicts"] = len(board.conflicts())

        new = Maker(2, "eucom")
        fresh = [new.notice() for _ in range(1000)]
        times = []
        found = 0
        for n in fresh:
            t = time.perf_counter()
            found += len(board.add(n))
            times.append((time.perf_counter() - t) * 1000)
        f["add_p50_ms"], f["add_p99_ms"], f["add_max_ms"] = (
            statistics.median(times),
            percentile(times, 0.99),
            max(times),
        )
        f["add_conflicts_per_notice"] = found / len(fresh)

        more = [new.notice() for _ in range(2_000 if quick else 10_000)]
        times = []
        for n in more:
            t = time.perf_counter()
            board.add(n)
            times.append((time.perf_counter() - t) * 1000)
        f["add_more_n"] = len(more)
        f["add_more_p50_ms"], f["add_more_p99_ms"] = statistics.median(times), percentile(times, 0.99)
        f["add_more_max_ms"] = max(times)
        f["add_more_rebuilds"] = board._index.rebuilds - 1
        f["rebuild_ms"] = timed_ms(board._index.rebuild)
        f["board_size"] = len(board)

        times = []
        for i, n in enumerate(fresh[:500]):
            moved = Notice(**{**{k: getattr(n, k) for k in ("kind", "area", "radius_m", "floor_m", "ceiling_m",
                                                             "margin_m", "text")},
                              "ref": f"eucom:a{i}", "start": n.start + HOUR, "end": n.end + HOUR})  # fmt: skip
            times.append(timed_ms(lambda n=n, moved=moved: board.amend(n.ref, moved)))  # type: ignore[misc]
        f["amend_p50_ms"] = statistics.median(times)
        refs = [n.ref for n in more[:500]]
        times = [timed_ms(lambda ref=ref: board.withdraw(ref)) for ref in refs]  # type: ignore[misc]
        f["withdraw_p50_ms"] = statistics.median(times)
    return f


def rows(f: Figures) -> list[Row]:
    n = f"{f['active']:,.0f}"
    out = [
        Row(f"add one notice against {n} active, p50", f["add_p50_ms"], "ms", "aim", AIM_MS,
            note=f"{f['add_conflicts_per_notice']:.2f} conflicts found per new notice"),
        Row(f"add one notice against {n} active, p99", f["add_p99_ms"], "ms", "aim (for p50)", AIM_MS),
        Row(f"add one notice against {n} active, max", f["add_max_ms"], "ms"),
        Row(f"add, {f['add_more_n']:,.0f} more (tree rebuilt inside), p50", f["add_more_p50_ms"], "ms", "aim", AIM_MS),
        Row(f"add, {f['add_more_n']:,.0f} more (tree rebuilt inside), p99", f["add_more_p99_ms"], "ms"),
        Row(f"add, {f['add_more_n']:,.0f} more (tree rebuilt inside), max", f["add_more_max_ms"], "ms",
            note=f"{f['add_more_rebuilds']:.0f} rebuild(s) in the loop"),
        Row(f"rebuild the STRtree over {f['board_size']:,.0f} notices", f["rebuild_ms"], "ms",
            note="once per 4,096 additions or tombstones"),
        Row(f"bulk load {n} notices (tree + all pairs)", f["build_s"] * 1000, "ms",
            note=f"{f['build_conflicts']:,.0f} conflicting pairs among them"),
        Row("validate one Notice (construct)", f["validate_us"], "µs"),
        Row("Notice.from_content (receive path)", f["from_content_us"], "µs"),
        Row("amend, p50", f["amend_p50_ms"], "ms"),
        Row("withdraw, p50", f["withdraw_p50_ms"], "ms"),
    ]  # fmt: skip
    return out


def report(f: Figures) -> str:
    return table(f"Notices: conflict check against {f['active']:,.0f} active notices", rows(f))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 notices: a smoke run, not figures")
    args = parser.parse_args(argv)
    print(report(measure(quick=args.quick)))


if __name__ == "__main__":
    main()
