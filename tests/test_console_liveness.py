"""The console knows when it is not watching (the 3 a.m. review, /tmp/consolereview findings 1-4, 6, 9, 10).

- a station that hangs (SIGSTOP: the TCP connection stays open, nothing answers) is CONNECTION
  LOST within a few heartbeats, with the sound and the "‼" title, and the panels say STALE and
  UNKNOWN instead of a green IN SYNC; a SILENCE covers that one loss, not the next;
- a console logged out under the officer (a station restart ends every session) is an alarm: the
  sound goes on, the title says NOT LOGGED IN, the favicon is not green, until someone logs in; a
  session about to end is a warning;
- a flood of FLASHes leaves the newest FLASH and the other alarms on top, the rest one row with the
  real count; a peer's bidi control stays inside its text; no "null" beside NEXT PAGE.

Debian's chromium via Playwright, the stations and browser of tests/test_console.py (fixtures
``pair`` and ``browser``, one pair for this module). Every wait is for a condition the page must
come to show; the station is frozen and thawed with signals, never by sleeping."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.test_console import PASSWORD, Pair, Proc, browser, console, ctl, expect, pair, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

LOST = re.compile(r"\blost\b")
GREEN = "#2ee66b"


@contextmanager
def frozen(proc: Proc) -> Iterator[None]:
    """The station's process stopped (a hang: its sockets stay open, nothing answers), then thawed."""
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)


def beeps(page: Any) -> int:
    n: int = page.evaluate("window.redlineBeeps")
    return n


def test_a_hung_station_is_connection_lost_with_the_panels_stale_and_one_silence_covers_one_loss(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    wait_for(pair.synced, "the line in sync")
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        page.locator("body").click()  # a gesture: the sound is on (tests/test_console.py AUTOPLAY_POLICY)
        expect(page.locator("#line-state")).to_have_text("IN SYNC")
        expect(page.locator("#connection")).to_have_text("LIVE")
        with frozen(pair.eucom):
            n = beeps(page)
            expect(page.locator("#connection")).to_have_class(LOST)
            lost = page.locator('#alarm-list li[data-code="connection"]')
            expect(lost).to_be_visible()
            expect(page).to_have_title(re.compile(r"^‼ CONSOLE NOT LIVE"))
            expect(page.locator("#line-state")).to_have_text("UNKNOWN")  # never a green IN SYNC over a silent station
            expect(page.locator("#stale-note")).to_contain_text(re.compile(r"STALE — as of \d\d:\d\d:\d\dZ"))
            assert page.evaluate("document.body.classList.contains('stale')")
            page.wait_for_function(f"() => window.redlineBeeps > {n}")
            first_key = lost.get_attribute("data-key")
            lost.locator("button", has_text="SILENCE").click()
            expect(lost).to_have_class(re.compile(r"\bsilenced\b"))
        expect(page.locator("#connection")).to_have_text("LIVE")
        expect(page.locator("#line-state")).to_have_text("IN SYNC")
        expect(page.locator("#stale-note")).to_be_hidden()
        # The SILENCE was for that loss: once it cleared, its key is forgotten ...
        silenced = "JSON.parse(sessionStorage.getItem('redline.silenced') || '[]')"
        page.wait_for_function(f"() => !{silenced}.includes({first_key!r})")
        with frozen(pair.eucom):
            n = beeps(page)
            again = page.locator('#alarm-list li[data-code="connection"]')
            expect(again).to_be_visible()
            # ... and the next loss is a new one: loud, with its own SILENCE.
            assert again.get_attribute("data-key") != first_key
            expect(again).not_to_have_class(re.compile(r"\bsilenced\b"))
            expect(again.locator("button", has_text="SILENCE")).to_be_visible()
            page.wait_for_function(f"() => window.redlineBeeps > {n}")
        expect(page.locator("#connection")).to_have_text("LIVE")


def test_a_station_restart_logs_the_console_out_into_an_alarm_until_someone_logs_in(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        page.locator("body").click()  # the sound on
        expect(page.locator("#connection")).to_have_text("LIVE")
        # The station restarts (a watchdog at 3 a.m.): every session ends with it.
        pair.eucom.stop()
        pair.eucom.start()
        expect(page.locator("#login-screen")).to_be_visible(timeout=40_000)
        n = beeps(page)
        expect(page).to_have_title(re.compile(r"^‼ NOT LOGGED IN — nothing is being watched"))
        page.wait_for_function(f"() => window.redlineBeeps > {n}")  # it keeps sounding
        expect(page.locator("#login-alarm")).to_be_visible()
        assert not page.evaluate("lastIcon").startswith(GREEN)  # green means watched and calm
        page.fill("#login-user", "Duty EUCOM")
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        expect(page.locator("#console")).to_be_visible()
        expect(page.locator("#login-alarm")).to_be_hidden()
        expect(page).not_to_have_title(re.compile("NOT LOGGED IN"))
        # A session about to end (api.session_seconds) is said beforehand: its end set 5 min away.
        page.evaluate("S.me.expires = Date.now() + 5 * 60 * 1000; renderAlarms()")
        ending = page.locator('#alarm-list li[data-code="session_ending"]')
        expect(ending).to_contain_text("Your session ends at")
        page.evaluate("S.me.expires = Date.now() + 12 * 3600 * 1000; renderAlarms()")
        expect(ending).to_have_count(0)
        # LOG OUT by the person is not an alarm.
        page.click("#logout")
        expect(page.locator("#login-screen")).to_be_visible()
        expect(page.locator("#login-alarm")).to_be_hidden()
        expect(page).not_to_have_title(re.compile("‼"))
    wait_for(pair.synced, "the line in sync again", timeout=60)


def test_a_flash_flood_keeps_the_newest_flash_and_the_other_alarms_on_top_with_the_real_count(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    wait_for(pair.synced, "the line in sync")
    for i in range(120):
        pair.send(pair.ndmc, f"FLASH flood {i}", "FLASH", "flash")
    newest = pair.send(pair.ndmc, "\u202eNOITCA ON: FLASH 121st: REAL LAUNCH 12:30Z", "FLASH", "flash")
    test = pair.act(pair.ndmc, "TEST", {"text": "Line test"})
    wait_for(lambda: any(t["id"] == test["id"] for t in pair.view(pair.eucom, "tests")["received"]),
             "the line test at EUCOM", timeout=60)  # fmt: skip
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        page.wait_for_function("() => S.line && window.redlineRefreshes >= 1")
        watch = page.evaluate("api('GET', lineUrl('watch'))")
        codes = [c["code"] for c in watch["conditions"]]
        flashes = [c for c in watch["conditions"] if c["code"] == "flash"]
        assert len(flashes) == 5, codes
        assert flashes[-1]["params"]["id"] == newest["id"]  # the newest is named ...
        assert "FLASH flood 0" in flashes[0]["params"]["text"]  # ... as is the most overdue
        [more] = [c for c in watch["conditions"] if c["code"] == "flash_more"]
        assert more["params"]["count"] == 121 - 5
        assert codes.index("test_to_answer") < codes.index("flash_more")  # other alarms above the tail
        row = page.locator(f'#alarm-list li[data-key="flash:{newest["id"]}"]')
        expect(row).to_be_visible()
        tail = page.locator('#alarm-list li[data-code="flash_more"]')
        expect(tail).to_contain_text("116 more FLASH messages waiting")
        expect(page.locator(f'#alarm-list li[data-key="test:{test["id"]}"]')).to_be_visible()
        expect(page).to_have_title(re.compile(r"^‼ FLASH \(\+121\)"))  # 121 FLASHes and the test, not a capped count
        # The peer's RIGHT-TO-LEFT OVERRIDE stays inside its text: the console's own words around it
        # (the quotes, the countdown) are laid out as if it were not there.
        quoted = row.locator("q.said")
        assert quoted.evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"
        assert quoted.get_attribute("dir") == "auto"
        # The paged FLASH panel: "N more past this page", NEXT PAGE, and no stray "null".
        expect(page.locator("#flash-more")).to_contain_text("more past this page")
        assert "null" not in page.locator("#flash-more").inner_text()


def test_a_long_flash_on_a_phone_keeps_acknowledge_and_silence_in_sight(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    long = pair.send(pair.ndmc, "FLASH long: " + "position report follows. " * 260, "FLASH", "flash")
    every = {"op": "view", "line": pair.line, "what": "flash", "limit": 500}  # past the flood's page too
    wait_for(lambda: any(f["id"] == long["id"] for f in ctl(pair.eucom.home, every)), "the FLASH at EUCOM")
    with console(browser, pair.eucom.url, "Duty EUCOM", width=390, height=844) as page:
        page.evaluate("window.scrollTo(0, 0)")
        row = page.locator(f'#alarm-list li[data-key="flash:{long["id"]}"]')
        row.scroll_into_view_if_needed()
        area = page.locator("#alarm-area").bounding_box()
        assert area is not None
        for name in ("ACKNOWLEDGE", "SILENCE"):
            button = row.locator("button", has_text=name).bounding_box()
            assert button is not None, name
            # the button's top is where its row starts, not some 1,300 px of text further down
            row_box = row.bounding_box()
            assert row_box is not None and button["y"] - row_box["y"] < 150, (name, button, row_box)
