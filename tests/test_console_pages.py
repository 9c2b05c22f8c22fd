"""The console asks for a page of each view (attack_ops V2; docs/API.md, "Pages").

The console fetched the flash, tests, requests and translations views whole every 5 s: a peer's
every FLASH, text included. Now it asks for a page (``limit``), and the station answers what still
needs a person first. Debian's chromium via Playwright, as tests/test_console.py (its stations and
browser are reused: fixtures ``pair`` and ``browser``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.test_console import Pair, browser, console, ctl, expect, pair, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_a_peer_flooding_flashes_leaves_the_console_a_page_with_the_oldest_waiting_first(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    sent = [pair.send(pair.ndmc, f"FLASH flood {i}", "FLASH", "flash") for i in range(105)]
    wait_for(lambda: len(pair.view(pair.eucom, "flash")) == 100, "EUCOM to hold the FLASHes (a page of them)")
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        page.wait_for_function("() => window.redlineRefreshes >= 1")
        page.evaluate("refreshViews()")
        page.wait_for_function("() => window.redlineRefreshes >= 2")
        paged = {urlparse(u).path.rsplit("/", 1)[-1]: parse_qs(urlparse(u).query) for u in asked}
        for what in ("flash", "tests", "calls", "requests", "translations", "notices"):
            assert paged[what].get("limit") == ["100"], (what, paged.get(what))
        waiting = page.locator("#flash-waiting .flash-item")
        expect(waiting).to_have_count(100)
        expect(waiting.first).to_have_attribute("data-id", sent[0]["id"])  # the most overdue is there
        assert page.locator(f'#flash-waiting [data-id="{sent[-1]["id"]}"]').count() == 0
        # The page says how many more there are (the station's count, Redline-Page), and goes to them.
        more = page.locator("#flash-more")
        expect(more).to_contain_text("5 more past this page")
        expect(more).not_to_contain_text("null")  # replaceChildren writes a null child as "null"
        more.locator("button.page-next").click()
        expect(waiting).to_have_count(5)
        expect(page.locator(f'#flash-waiting [data-id="{sent[-1]["id"]}"]')).to_have_count(1)
        expect(more.locator("button.page-next")).to_have_count(0)
        more.locator("button.page-first").click()
        expect(waiting).to_have_count(100)
        expect(more).to_contain_text("5 more past this page")
        # What needs a person (the alarm list, fetched at every change) is never all 105: the oldest
        # waiting and the newest, each a row, and one row saying how many more (the real count).
        watch = page.evaluate("api('GET', lineUrl('watch'))")
        flashes = [c for c in watch["conditions"] if c["code"] == "flash"]
        assert len(flashes) == 5 and flashes[0]["params"]["id"] == sent[0]["id"], len(flashes)
        assert flashes[-1]["params"]["id"] == sent[-1]["id"]
        [more] = [c for c in watch["conditions"] if c["code"] == "flash_more"]
        assert more["params"]["count"] == 100


def test_an_ack_that_waits_in_the_outbox_reads_acknowledged_sending_with_no_button_and_no_alarm(
    pair: Pair, browser: Any  # noqa: F811 (fixtures)
) -> None:  # fmt: skip
    """The officer acknowledges with the line down: the ACK is accepted into the outbox. The FLASH
    read "waiting", kept its ACKNOWLEDGE button and sounded on; now it reads acknowledged, sending
    (in Russian too) until the line is back and the ACK is signed."""
    if not any(not f["ours"] and not f["acked_by"] for f in pair.view(pair.eucom, "flash")):
        pair.send(pair.ndmc, "FLASH: aircraft near the border", "FLASH", "flash")
    first = wait_for(lambda: next((f for f in pair.view(pair.eucom, "flash") if not f["ours"] and not f["acked_by"]),
                                  None), "a FLASH waiting at EUCOM")  # fmt: skip
    fid = first["id"]
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        item = page.locator(f'#flash-waiting [data-id="{fid}"]')
        expect(item.locator("button.ack-button")).to_be_visible()
        expect(page.locator(f'#alarm-list li[data-key="flash:{fid}"]')).to_have_count(1)
        pair.ndmc.stop()
        try:
            wait_for(lambda: not pair.eucom.status()["synced"], "the line to drop at EUCOM")
            item.locator("button.ack-button").click()
            expect(item).to_contain_text("ACKNOWLEDGED, SENDING")
            expect(item.locator("button.ack-button")).to_have_count(0)
            expect(page.locator(f'#alarm-list li[data-key="flash:{fid}"]')).to_have_count(0)
            [shown] = [f for f in pair.view(pair.eucom, "flash") if f["id"] == fid]
            assert shown["state"] == "acknowledged, sending" and shown["acked_by"] is None
            page.evaluate("setLang('ru')")
            expect(item).to_contain_text("ПОДТВЕРЖДЕНО, ОТПРАВЛЯЕТСЯ")
            page.evaluate("setLang('en')")
        finally:
            pair.ndmc.start()
        largest = {"op": "view", "line": pair.line, "what": "flash", "limit": 500}  # acknowledged: past the open ones
        acked = wait_for(lambda: [f for f in ctl(pair.ndmc.home, largest) if f["id"] == fid and f["acked_by"]],
                         "the ACK at NDMC once the line is back")  # fmt: skip
        assert acked[0]["acked_by"] == "Duty EUCOM"
        expect(item).to_have_count(0, timeout=30_000)  # acknowledged: it leaves the waiting FLASHes
