"""The console for a duty officer watching at 3 a.m., in English and in Russian.

- the first stop of Tab is a skip link to the alarm area, the next one to the message box; each is
  off screen until focused, and Enter moves focus to its target;
- past midnight UTC a time of yesterday (a line test's receipt) shows its date, in the reader's
  language ("04 Dec 23:59:10Z", "04 дек 23:59:10Z"), and one of today does not, redrawn when the
  station's clock crosses midnight, without a refresh;
- VERIFIED says how long ago the check was ("… — 3 мин назад"), and the age grows as the station's
  clock moves, without a new check;

Debian's chromium via Playwright, the stations and browser of tests/test_console.py (fixtures
``pair`` and ``browser``, one pair for this module). Time is driven through the stations' settable
clocks, never by sleeping."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.test_console import Pair, browser, console, ctl, expect, pair, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def on_screen(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return bool(box and box["width"] > 1 and box["height"] > 1 and 0 <= box["x"] < size["width"]
                and 0 <= box["y"] < size["height"])  # fmt: skip


def test_tab_from_the_top_reaches_the_skip_links_first_and_enter_moves_focus_to_the_alarms_and_the_compose_box(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    with console(browser, pair.ndmc.url, "Dezhurny") as page:
        expect(page.locator("#line-state")).to_have_text("СИНХРОННО")
        for target, name in (("alarm-area", "Перейти к тревогам"), ("compose-text", "Перейти к полю сообщения")):
            page.reload()  # the top of the page, nothing focused
            expect(page.locator("#console")).to_be_visible()
            link = page.locator(f'a.skip[href="#{target}"]')
            expect(link).to_have_text(name)
            assert not on_screen(page, f'a.skip[href="#{target}"]')  # hidden until focused
            page.keyboard.press("Tab")
            if target == "compose-text":
                page.keyboard.press("Tab")
            assert link.evaluate("a => a === document.activeElement")
            assert on_screen(page, f'a.skip[href="#{target}"]')
            page.keyboard.press("Enter")
            page.wait_for_function("(id) => document.activeElement && document.activeElement.id === id", arg=target)
            assert not on_screen(page, f'a.skip[href="#{target}"]')


def test_verified_says_how_long_ago_it_was_checked_and_the_age_grows_with_the_stations_clock(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    with console(browser, pair.ndmc.url, "Dezhurny") as page:
        expect(page.locator("#verify-state")).to_have_text("ПРОВЕРЕНО")  # checked at login
        age = page.locator("#verify-age")
        expect(age).to_contain_text(re.compile(r"проверено \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ — \d+ с назад$"))
        for proc in (pair.ndmc, pair.eucom):  # three minutes pass: no refresh, no new check
            ctl(proc.home, {"op": "clock", "advance_ms": 180_000})
        expect(age).to_contain_text(re.compile(r"— 3 мин( \d+ с)? назад$"))
        expect(page.locator("#verify-state")).to_have_text("ПРОВЕРЕНО")
        page.select_option("#lang-select", "en")
        expect(age).to_contain_text(re.compile(r"— 3 min( \d+ s)? ago$"))
        page.select_option("#lang-select", "ru")


MONTHS = {"en": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
          "ru": ["янв", "фев", "мар", "апр", "мая", "июн", "июл", "авг", "сен", "окт", "ноя", "дек"]}  # fmt: skip
DAY_MS = 86_400_000
CLOCK = re.compile(r"^\d\d:\d\d:\d\dZ$")


def dated(ms: int, lang: str) -> str:
    """A time of another UTC day as the console shows it: "03 Dec 23:59:10Z" (the year only if not this one)."""
    d = datetime.fromtimestamp(ms / 1000, UTC)
    return f"{d:%d} {MONTHS[lang][d.month - 1]} {d:%H:%M:%S}Z"


HOSTILE = "<img src=x onerror=alert(1)>\u202eMinister"


def test_a_peers_call_request_with_markup_and_a_bidi_override_reads_as_text_in_the_russian_alarm_log(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    """The alarm log in the console's language (alarm code + params, redline/alarmtext.py): the
    peer's role and subject go in as text through said(), never as markup, and the station's escape
    of the bidi override stays visible; switching the language redraws the log."""
    with console(browser, pair.ndmc.url, "Dezhurny") as page:
        page.evaluate("() => { window.redlineAlerts = 0; window.alert = () => { window.redlineAlerts += 1; }; }")
        expect(page.locator("#line-state")).to_have_text("СИНХРОННО")
        wanted = {"from_role": HOSTILE, "to_role": "Duty", "subject": f"Agenda {HOSTILE}", "windows": []}
        pair.act(pair.eucom, "CALL_REQUEST", wanted)
        row = page.locator('#alarms li[data-code="call.request"]').first
        shown = "<img src=x onerror=alert(1)>\\u202eMinister"  # as the station bounds it: the override visible
        expect(row).to_contain_text(
            f"ЗАПРОС РАЗГОВОРА от другой стороны — кто просит: {shown}; с кем у нас: Duty; тема: Agenda {shown}")
        assert page.locator("#alarms img").count() == 0
        said = row.locator("span.said").all_text_contents()
        assert shown in said and f"Agenda {shown}" in said, said
        assert "\u202e" not in (row.text_content() or "")
        assert "CALL REQUEST" not in (row.text_content() or "")
        # a role and an escalation level in the reader's words; an error's message as English
        words = page.evaluate("""() => [
            {code: "flash.received", params: {role: "duty", seconds: 120, seq: 5, id: "abcd1234"}},
            {code: "flash.escalated", params: {seq: 5, level: "deputy"}},
            {code: "receipt.refused", params: {peer: "EUCOM", exc: "bad signature ('redline verify')"}},
            {code: "no.such.code", params: {}, text: "a newer station's words ('redline x')"},
            {code: "test.missed_here", params: {at: 0}},
            {code: "clock.skew.ahead", params: {peer: "EUCOM", span: 125000, limit: "30"}},
            {code: "clock.skew.behind", params: {peer: "EUCOM", span: -30400, limit: "30"}},
        ].map((a) => { const li = alarmRow({time: 0, level: "alarm", ...a}),
                             en = [...li.querySelectorAll('[lang="en"]')];
                       return [li.textContent, en.map((e) => e.textContent)]; })""")
        at = "1970-01-01 00:00:00Z"
        assert words == [
            [f"{at} FLASH от другой стороны: подтвердить должен дежурный в течение 120 с (№ 5, id abcd1234)",
             []],
            [f"{at} FLASH № 5 не подтверждён: эскалация — заместитель", []],
            [f"{at} Отклонена квитанция от EUCOM: bad signature", ["bad signature"]],
            [f"{at} a newer station's words", ["a newer station's words"]],
            [f"{at} ПРОВЕРКА ЛИНИИ ПРОПУЩЕНА ЗДЕСЬ: проверяющая сторона зафиксировала, что на её проверку не ответили "
             "вовремя (проверка 01 янв 1970 00:00:00Z)", []],
            [f"{at} РАСХОЖДЕНИЕ ЧАСОВ: часы EUCOM спешат относительно наших на 2 мин 5 с (допуск 30 с, "
             "max_clock_skew_seconds): времена и сроки, которые называет EUCOM, читаются неверно, пока одни из часов "
             "не исправят", []],
            # under a minute in tenths, as the English: 30.4 s over a limit of 30 s never reads "30 с"
            [f"{at} РАСХОЖДЕНИЕ ЧАСОВ: часы EUCOM отстают от наших на 30,4 с (допуск 30 с, "
             "max_clock_skew_seconds): времена и сроки, которые называет EUCOM, читаются неверно, пока одни из часов "
             "не исправят", []],
        ], words
        page.select_option("#lang-select", "en")  # the station's own English, marked as such
        expect(row).to_contain_text(f"CALL REQUEST from the peer's {shown} to our Duty: Agenda {shown}")
        expect(row.locator('span.said[lang="en"]')).to_have_count(1)
        page.select_option("#lang-select", "ru")
        expect(row).to_contain_text("ЗАПРОС РАЗГОВОРА от другой стороны")
        assert page.evaluate("window.redlineAlerts") == 0


# Last in the module: both stations' clocks go to the next UTC day and stay there.
def test_after_midnight_utc_a_time_of_yesterday_shows_its_date_and_one_of_today_does_not(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    test = pair.act(pair.eucom, "TEST", {"text": "Line test before midnight"})
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        receipted = page.locator(f'#tests tr[data-key="{test["id"]}"] td:nth-child(2)')
        expect(receipted).to_have_text(CLOCK)  # today's: the time alone
        at = wait_for(lambda: [x["receipted_at"] for x in pair.view(pair.eucom, "tests")["tests"]
                               if x["id"] == test["id"] and x["receipted_at"]], "the test's receipt")[0]  # fmt: skip
        now = int(ctl(pair.eucom.home, {"op": "clock", "advance_ms": 0})["now"])
        to_tomorrow = (now // DAY_MS + 1) * DAY_MS - now + 60_000  # a minute past the next midnight UTC
        year = lambda ms: datetime.fromtimestamp(ms / 1000, UTC).year  # noqa: E731
        assert year(at) == year(now + to_tomorrow)  # "dated" leaves the year out
        for proc in (pair.eucom, pair.ndmc):
            ctl(proc.home, {"op": "clock", "advance_ms": to_tomorrow})
        expect(receipted).to_have_text(dated(at, "en"))  # yesterday's, redrawn at midnight without a refresh
        expect(page.locator("#paths td:nth-child(5)").first).to_have_text(CLOCK)  # heard today: no date
        page.select_option("#lang-select", "ru")
        expect(receipted).to_have_text(dated(at, "ru"))
        page.select_option("#lang-select", "en")
