"""The console for a duty officer watching at 3 a.m., in English and in Russian.

- the first stop of Tab is a skip link to the alarm area, the next one to the message box; each is
  off screen until focused, and Enter moves focus to its target;

Debian's chromium via Playwright, the stations and browser of tests/test_console.py (fixtures
``pair`` and ``browser``, one pair for this module). Time is driven through the stations' settable
clocks, never by sleeping."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_console import Pair, browser, console, expect, pair  # noqa: F401 (fixtures)

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
