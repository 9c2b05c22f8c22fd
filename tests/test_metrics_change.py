"""The metrics move as the line does (issue 15): a missed line test counts, a cut path and a
stopped peer show as down. Two whole stations in one process on a simulated clock
(redline.testing.StationPair), the exposition parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from redline.metrics import metrics_for
from redline.testing import StationPair


def scrape(station: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics_for(station).exposition().decode()  # type: ignore[arg-type]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }  # fmt: skip


def value(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def test_a_missed_test_counts_and_a_stopped_peer_shows_the_line_down(tmp_path: Path) -> None:
    async def main() -> None:
        sp = StationPair(tmp_path)
        async with sp:
            line = sp.line
            before = scrape(sp.a)
            assert value(before, "redline_line_tests_missed_total", line=line, answerer="peer") == 0
            assert value(before, "redline_line_up", line=line) == 1
            await sp.act("a", "TEST", {"text": "Line test. Please answer."}, prio="PRIORITY")
            await sp.advance(301)  # nobody at NDMC answers within test_answer_seconds
            after = scrape(sp.a)
            assert value(after, "redline_line_tests_missed_total", line=line, answerer="peer") == 1
            assert value(after, "redline_line_up", line=line) == 1 and value(after, "redline_line_in_sync", line=line)
            # NDMC goes away: every path of the line shows down at EUCOM
            for conn in list(sp.b._conns.values()):
                conn.abort()
            for server in sp.b._servers:
                server.close()
            for task in list(sp.b._tasks):
                task.cancel()
            await asyncio.gather(*sp.b._tasks, return_exceptions=True)
            for _ in range(200):
                if not any(p.up for p in sp.a.status().lines[0].paths.values()):
                    break
                await asyncio.sleep(0.01)
            down = scrape(sp.a)
            assert value(down, "redline_line_up", line=line) == 0
            paths = [v for (name, _), v in down.items() if name == "redline_path_up"]
            assert paths and set(paths) == {0.0}
            sp.b.ledger.close()
            sp.b = sp._new("b")  # a fresh NDMC for the pair's own stop
            await sp.b.start()

    asyncio.run(main())
