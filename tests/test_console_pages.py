"""The console asks for a page of each view (attack_ops V2; docs/API.md, "Pages").

The console fetched the flash, tests, requests and translations views whole every 5 s: a peer's
every FLASH, text included. Now it asks for a page (``limit``), and the station answers what still
needs a person first. Debian's chromium via Playwright, as tests/test_console.py (its stations and
browser are reused: fixtures ``pair`` and ``browser``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.test_console import Pair, browser, console, expect, pair, wait_for  # noqa: F401 (fixtures)

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
        # What needs a person (the alarm list, fetched at every change) is the same page, not all 105.
        watch = page.evaluate("api('GET', lineUrl('watch'))")
        flashes = [c for c in watch["conditions"] if c["code"] == "flash"]
        assert len(flashes) == 100 and flashes[0]["params"]["id"] == sent[0]["id"], len(flashes)
