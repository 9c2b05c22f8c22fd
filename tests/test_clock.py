"""The settable clock of demo and test stations (``redline serve --settable-clock [--clock-start MS]``)."""

from __future__ import annotations

from redline.clock import SettableClock

MAY_13 = 1_652_446_800_000  # 2022-05-13T13:00:00Z


def test_a_settable_clock_started_at_a_given_time_reads_it_from_the_start() -> None:
    """A replayed day's station starts on its day: today's line-test slot must never be seen."""
    clock = SettableClock(MAY_13)
    assert 0 <= clock.wall() - MAY_13 < 5_000
    clock.advance(60_000)
    assert 60_000 <= clock.wall() - MAY_13 < 65_000
    assert abs(SettableClock().wall() - SettableClock(None).wall()) < 5_000 and SettableClock().wall() > MAY_13
