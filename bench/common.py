"""Small helpers shared by the benchmarks: percentiles, timing loops and table printing.

Nothing here asserts on time: the benchmarks report figures, they never pass or fail on them.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

Figures = dict[str, float]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank over all samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def median_p99(samples: Sequence[float]) -> tuple[float, float]:
    return statistics.median(samples), percentile(samples, 0.99)


def per_op_us(fn: Callable[[], object], ops: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean µs per call of ``fn`` in a tight loop of ``ops`` calls."""
    runs: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(ops):
            fn()
        runs.append((time.perf_counter() - start) / ops * 1e6)
    return statistics.median(runs)


@contextmanager
def no_gc() -> Iterator[None]:
    """Keep the cyclic collector out of a timed loop (it is re-enabled afterwards)."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def ratio(measured: float, limit: float) -> str:
    """``measured / limit`` as ``1.23x``; empty when either side is missing."""
    if not limit or measured != measured or limit != limit:  # NaN-safe
        return ""
    return f"{measured / limit:.2f}x"


def fmt(value: float, unit: str) -> str:
    if value != value:
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f} /s"
    if unit == "ms":
        if value < 10:
            return f"{value:.3f} ms"
        return f"{value:.1f} ms" if value < 1000 else f"{value:,.0f} ms"
    if unit == "µs":
        if value < 10:
            return f"{value:.2f} µs"
        return f"{value:.1f} µs" if value < 1000 else f"{value:,.0f} µs"
    if unit == "s":
        return f"{value:.3f} s" if value < 100 else f"{value:,.0f} s"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:g} {unit}".strip()


@dataclass(frozen=True)
class Row:
    """One line of a report: a figure, and what it is set against (a limit, an aim or both)."""

    what: str
    value: float
    unit: str
    against: str = ""  # name of the limit or aim
    limit: float = float("nan")
    note: str = ""

    def cells(self) -> list[str]:
        lim = fmt(self.limit, self.unit) if self.against else ""
        against = f"{self.against}: {lim}" if self.against else ""
        return [self.what, fmt(self.value, self.unit), against, ratio(self.value, self.limit) if self.against else "",
                self.note]  # fmt: skip


def table(title: str, rows: Sequence[Row]) -> str:
    """A plain-text table (also valid Markdown) of ``rows`` under ``title``."""
    head = ["figure", "this run", "against (same run or aim)", "ratio", "note"]
    body = [r.cells() for r in rows]
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(len(head))]
    lines = [f"## {title}", ""]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for b in body:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |")
    return "\n".join(lines)
