"""A Russian duty officer at 3 a.m. meets no English of ours on the console.

NDMC's console, in Russian, is walked through a day: the login page and a wrong password, a line
test both ways, a FLASH from the peer, a call request and its reply, a notice conflict and a notice
the console refuses, the transcript search, the forms folded away, the map's controls. At each step
every text node and every title / aria-label / placeholder / alt of the page (hidden ones too) is
read; what the stations and people wrote is marked (``.said``, ``lang="en"``) and left out. Any
Latin word left that is not on the small list below (protocol words, identifiers) is English of
ours, and fails the test. The notice conflict alarm rows and the notices panel are read whole,
marked parts too: the notices' kinds and the conflicts an alarm names are data the console writes
in Russian, not the station's English.

Debian's chromium via Playwright, the stations and browser of tests/test_console.py (one pair for
this module). Every wait is for a condition."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.test_console import PASSWORD, Pair, browser, console, ctl, expect, iso_minutes, pair  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

# Every text and label the page shows, but what stations and people wrote.
SHOWN = r"""() => {
  const out = [], written = (el) => el.closest('[lang="en"], .said, script, style');
  const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && !written(n.parentElement) && n.textContent.trim()) out.push(n.textContent.trim());
  }
  for (const el of document.querySelectorAll('[title], [aria-label], [placeholder], [alt]')) {
    if (written(el)) continue;
    for (const a of ['title', 'aria-label', 'placeholder', 'alt']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
  }
  return out;
}"""
# Words that stay as they are in Russian: protocol words, names, codes, the map's sources. Dezhurny and
# Duty are the two stations' person names ("Dezhurny Orlov", "Duty EUCOM"): Latin by the protocol's
# rule for a person name (kinds.PERSON_NAME: letters, digits, space . _ -), so never English of ours.
ALLOWED = {"FLASH", "KEY", "ROSTER", "EUCOM", "NDMC", "Dezhurny", "Duty", "redline", "id", "UTC", "Z", "ru", "en",
           "GeoJSON", "Ctrl", "Enter", "docs", "BUNDLE", "md", "max_clock_skew_seconds", "Natural", "Earth",
           "Leaflet", "OpenStreetMap"}  # fmt: skip
LATIN = re.compile(r"[A-Za-z][A-Za-z'’]*")
HEX = re.compile(r"\b[0-9a-f]{8,}\b")  # ids, lines, digests


def english_of_ours(page: Any, step: str) -> list[str]:
    found = []
    for s in page.evaluate(SHOWN):
        words = [w for w in LATIN.findall(HEX.sub(" ", s)) if w not in ALLOWED]
        if words:
            found.append(f"{step}: {s[:160]!r} ({' '.join(words[:5])})")
    return found


def latin_anywhere(page: Any, selector: str, step: str) -> list[str]:
    """Every Latin word in what ``selector`` shows, what is marked as written (``.said``,
    ``lang="en"``) included: a row of ours that must read wholly in Russian."""
    found = []
    for s in page.locator(selector).all_text_contents():
        words = [w for w in LATIN.findall(HEX.sub(" ", s)) if w not in ALLOWED]
        if words:
            found.append(f"{step}: {s[:160]!r} ({' '.join(words[:5])})")
    return found


def test_a_russian_watch_meets_no_english_of_ours_on_any_panel(pair: Pair, browser: Any) -> None:  # noqa: F811
    found: list[str] = []
    now = int(ctl(pair.eucom.home, {"op": "clock", "advance_ms": 0})["now"])
    # the login page, in the browser's language, and a wrong password
    context = browser.new_context(locale="ru-RU")
    try:
        login = context.new_page()
        login.goto(pair.ndmc.url)
        expect(login.locator("#login-screen")).to_be_visible()
        login.fill("#login-user", "Dezhurny")
        login.fill("#login-password", "not the password")
        login.click("#login-submit")
        expect(login.locator("#login-error")).to_have_text("неверное имя пользователя или пароль: вход не выполнен")
        found += english_of_ours(login, "login")
    finally:
        context.close()
    pair.send(pair.eucom, "EUCOM to NDMC: exercise NORTH starts 12:00Z as notified")
    with console(browser, pair.ndmc.url, "Dezhurny") as page:
        expect(page.locator("#line-state")).to_have_text("СИНХРОННО")
        page.wait_for_function("() => window.redlineRefreshes >= 1")
        found += english_of_ours(page, "start")
        # a line test each way, a FLASH from the peer
        page.click("#tests-send")
        expect(page.locator("#test-form .result")).to_contain_text("ПРИНЯТО")
        test = pair.act(pair.eucom, "TEST", {"text": "Line test"})
        answer = page.locator(f'#tests-to-answer [data-id="{test["id"]}"] button')
        pair.send(pair.eucom, "FLASH: convoy stopped at the crossing", "FLASH", "flash")
        expect(page.locator("#flash-waiting button").first).to_be_visible()
        found += english_of_ours(page, "a test and a FLASH waiting")
        answer.click()
        page.locator("#flash-waiting button").first.click()
        expect(page.locator("#flash-waiting button")).to_have_count(0)
        # a call request from the peer, answered; the call forms unfolded
        pair.act(pair.eucom, "CALL_REQUEST", {"from_role": "Secretary", "to_role": "Minister", "subject": "Agenda",
                                              "windows": []})  # fmt: skip
        reply = page.locator("#call-requests form.reply-form").first
        reply.locator("[name=time]").fill(iso_minutes(now + 3_600_000))
        reply.locator("button[value=accept]").click()
        expect(page.locator("#call-requests li.accepted")).to_have_count(1)
        for details in page.locator("details").all():
            details.evaluate("d => d.open = true")
        found += english_of_ours(page, "a call request answered")
        # notices in conflict, and one the console refuses
        box = [["19.90", "60.00"], ["20.90", "60.00"], ["20.90", "60.40"], ["19.90", "60.40"], ["19.90", "60.00"]]
        naval = {"kind": "naval", "area": {"type": "Polygon", "coordinates": [box]}, "floor_m": 0,
                 "ceiling_m": 3000, "start": now - 3_600_000, "end": now + 6 * 3_600_000, "margin_m": 0,
                 "text": "Морские учения"}  # fmt: skip
        pair.act(pair.ndmc, "NOTICE", naval)
        pair.act(pair.eucom, "NOTICE", {**naval, "kind": "air", "text": "Air exercise NORTH"})
        expect(page.locator("#notice-conflicts .conflict-line")).to_have_count(1)
        # three more of the peer's over ours: the last meets four, names three and counts one more
        for i in range(3):
            pair.act(pair.eucom, "NOTICE", {**naval, "kind": ("strike", "exercise", "other")[i], "text": "Air drill"})
        expect(page.locator("#notice-conflicts .conflict-line")).to_have_count(10)
        # the notice conflict alarms wholly in Russian: the kinds, each conflict named, the count not named
        rows = page.locator('#alarms li[data-code^="notice.conflict"]')
        expect(rows).to_have_count(4)
        expect(rows.last).to_contain_text(re.compile(  # the first: the peer's air notice over our naval one
            r"КОНФЛИКТ УВЕДОМЛЕНИЙ: уведомление \(воздух\) № \d+ другой стороны конфликтует с действующим "
            r"уведомлением \(1\): наше уведомление \(море\) № \d+: расстояние 0 м \(запас 0 м\)"))  # fmt: skip
        expect(rows.first).to_contain_text(re.compile(r"КОНФЛИКТ УВЕДОМЛЕНИЙ: уведомление \(другое\) № \d+ другой"))
        expect(rows.first).to_contain_text("другой стороны: расстояние 0 м (запас 0 м)")  # 3 named (ties: any 3)
        expect(rows.first).to_contain_text("; и ещё 1 (панель «Уведомления»)")
        expect(rows.locator('[lang="en"]')).to_have_count(0)
        found += latin_anywhere(page, '#alarms li[data-code^="notice.conflict"]', "a notice conflict alarm")
        # the notices panel: each notice's kind in Russian
        expect(page.locator("#notices tr[data-id]")).to_have_count(5)
        assert sorted(page.locator("#notices tr[data-id] td:nth-child(3)").all_text_contents()) == sorted(
            ["море", "воздух", "удар", "учения", "другое"])  # fmt: skip
        found += latin_anywhere(page, "#notices tr[data-id] td:not(:nth-child(7)), #notice-conflicts", "notices panel")
        page.fill("#notice-area", "45.10, 28.10\n45.10, 28.90")
        page.click("#notice-submit")
        expect(page.locator("#notice-result")).not_to_be_empty()
        page.click("#draw-start")
        found += english_of_ours(page, "a notice conflict, a notice refused, drawing")
        page.click("#draw-clear")
        # the transcript searched, the bundle verified
        page.fill("#log-q", "NORTH")
        page.click("#log-find")
        expect(page.locator("#log-found")).not_to_be_empty()
        page.click("#verify-run")
        expect(page.locator("#verify-state")).to_have_text("ПРОВЕРЕНО")
        found += english_of_ours(page, "search and verify")
        page.click("#log-clear")
        # the session ends under the console (the station forgets it): back at the login page
        page.evaluate("() => fetch('/api/logout', {method: 'POST'})")
        page.evaluate("document.dispatchEvent(new Event('redline-refresh'))")
        expect(page.locator("#login-screen")).to_be_visible()
        # the events stream (401 at its reconnect) or the refresh (HTTP 401), whichever came first
        expect(page.locator("#login-error")).to_have_text(
            "вход не выполнен (сеанс завершён или станция перезапущена): войдите снова")
        found += english_of_ours(page, "session ended")
        page.fill("#login-user", "Dezhurny")  # back in, for the console's own checks at the end
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        expect(page.locator("#console")).to_be_visible()
    assert not found, "\n".join(dict.fromkeys(found))
