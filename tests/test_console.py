"""The duty console in a real browser (Debian's chromium, driven by Playwright) against the API
served by uvicorn inside the station's own event loop, as ``redline serve --http`` does.

Two real stations in one event loop, real TLS between them. A duty officer logs in, sees the line
IN SYNC, sends a message and sees it receipted, gets a FLASH from the peer (banner and beep) and
acknowledges it; the peer sees the acknowledgement signed by that person. Screenshots go to
docs/img/console.png (and console-flash.png, with the alarm up).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from redline import persons
from redline.api import ApiConfig, HttpServer
from redline.station import Station
from redline.testing import make_station, pair_directly
from tests.procs import free_ports
from tests.test_api import FAST, PASSWORD, SQUARE, eventually

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
TIMEOUT = 20_000  # ms for each thing the page must come to show

playwright_api = pytest.importorskip("playwright.async_api", reason="no playwright: pip install playwright")
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"no chromium at {CHROMIUM}: apt-get install -y chromium"
)


async def signed_act(station: Station, line: str, kind: str, content: dict[str, Any], user: str) -> dict[str, Any]:
    """What the CLI does for a person-signed action: resolve, sign with the person's key, file."""
    resolved = await station.control({"op": "resolve", "line": line, "kind": kind, "content": content})
    person = {p.name: p for p in persons.load_users(station.home.path)}[user]
    key = persons.unlock(station.home.path, user, PASSWORD)
    result: dict[str, Any] = await station.act(line, kind, persons.sign_content(resolved, person, key))
    return result


async def scene(a: Station, b: Station, line: str) -> None:
    """Something on every panel: conflicting notices, a call with both readouts, a test answered."""
    now = a.wall()
    window = {"floor_m": 6000, "ceiling_m": 12000, "start": now - 3_600_000, "end": now + 6 * 3_600_000}
    square = {**SQUARE, "coordinates": [[[str(x), str(y)] for x, y in SQUARE["coordinates"][0]]]}
    await a.act(line, "NOTICE", {"kind": "air", "area": square, **window, "margin_m": 10000,
                                 "text": "Air exercise NORTH"}, prio="priority")  # fmt: skip
    await b.act(line, "NOTICE", {"kind": "strike", "area": {"type": "Point", "coordinates": ["29.05", "45.45"]},
                                 "radius_m": 15000, "floor_m": 0, "ceiling_m": 10000, "start": now,
                                 "end": now + 2 * 3_600_000, "margin_m": 0, "text": "Strike area"},
                prio="priority")  # fmt: skip
    await eventually(lambda: a.view(line, "notices")["conflicts"], "the conflict at EUCOM")
    record = await signed_act(a, line, "CALL_RECORD", {
        "start": now - 7_200_000, "end": now - 5_400_000, "principals": ["Secretary", "Minister"],
        "participants": ["Secretary", "Minister", "interpreters"]}, "Duty EUCOM")  # fmt: skip
    await eventually(lambda: b.ledger.has_id(line, record["id"]), "the call record at NDMC")
    await signed_act(a, line, "READOUT", {"call": record["id"], "text": "The Secretary urged an immediate "
                                          "ceasefire and the opening of humanitarian corridors."}, "Duty EUCOM")
    await signed_act(b, line, "READOUT", {"call": record["id"], "text": "Обсуждены актуальные вопросы "
                                          "международной безопасности."}, "Dezhurny")
    test = await a.act(line, "TEST", {"text": "Line test"}, prio="priority")
    await eventually(lambda: any(t["id"] == test["id"] for t in b.view(line, "tests")["to_answer"]), "the test at NDMC")
    await signed_act(b, line, "TEST_ANSWER", {"test": test["id"], "text": "Test received."}, "Dezhurny")


def test_duty_officer_logs_in_sends_and_acknowledges_a_flash_in_the_browser(tmp_path: Path) -> None:
    async def main() -> None:
        pa, pb, ph = free_ports(3)
        da, db = make_station(tmp_path, "EUCOM", "en", pa), make_station(tmp_path, "NDMC", "ru", pb)
        line = pair_directly(da, db)
        persons.add_user(da.path, "Duty EUCOM", "duty", PASSWORD, **FAST)
        persons.add_user(db.path, "Dezhurny", "duty", PASSWORD, **FAST)
        a, b = Station(da), Station(db)
        await a.start()
        await b.start()
        http = await HttpServer.start(a, f"127.0.0.1:{ph}", ApiConfig(failure_delay_seconds=0.01))
        try:
            await eventually(lambda: a.sessions[line].link.synced and b.sessions[line].link.synced, "line in sync")
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1600, "height": 1200})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    await drive(page, a, b, line, f"http://{http.addr}/")
                    assert not errors, errors
                finally:
                    await browser.close()
        finally:
            await http.stop()
            await a.close()
            await b.close()

    asyncio.run(main())


async def drive(page: Any, a: Station, b: Station, line: str, url: str) -> None:
    expect = playwright_api.expect
    await page.goto(url)
    await expect(page.locator("#login-screen")).to_be_visible(timeout=TIMEOUT)

    # a wrong password: refused, with the reason, and still at the login screen
    await page.fill("#login-user", "Duty EUCOM")
    await page.fill("#login-password", "not the password")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_contain_text("wrong password", timeout=TIMEOUT)

    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await expect(page.locator("#line-state")).to_have_text("IN SYNC", timeout=TIMEOUT)
    await expect(page.locator("#paths")).to_contain_text("UP", timeout=TIMEOUT)
    await expect(page.locator("#connection")).to_have_text("LIVE", timeout=TIMEOUT)

    await scene(a, b, line)

    # send a message and see it receipted by the peer
    text = "EUCOM to NDMC: exercise NORTH starts 12:00Z as notified"
    await page.fill("#compose-text", text)
    await page.select_option("#compose-priority", "priority")
    await page.click("#compose-send")
    await expect(page.locator("#compose-result")).to_contain_text("ACCEPTED", timeout=TIMEOUT)
    row = page.locator("#log tr", has_text=text)
    await expect(row.locator("td.receipt")).to_have_text("✓ RECEIPTED", timeout=TIMEOUT)
    await eventually(lambda: any(r["text"] == text for r in _peer_texts(b, line)), "the message at NDMC")

    # a FLASH from the peer: a banner that sounds, then an acknowledgement signed by this person
    flash = await b.send(line, "FLASH: unidentified aircraft crossing the border at 13:05Z", kind="FLASH",
                         prio="FLASH")  # fmt: skip
    banner = page.locator("#alarm-banner")
    await expect(banner).to_be_visible(timeout=TIMEOUT)
    await expect(banner).to_contain_text("FLASH from the peer", timeout=TIMEOUT)
    assert await page.evaluate("window.redlineBeeps") >= 1
    ack = page.locator(f'.flash-item[data-id="{flash["id"]}"] .ack-button')
    await expect(ack).to_be_visible(timeout=TIMEOUT)
    await expect(page.locator("#verify-state")).to_have_text("VERIFIED", timeout=TIMEOUT)
    IMG.mkdir(parents=True, exist_ok=True)
    await _shot(page, "console-flash.png")

    await ack.click()
    await expect(banner).to_be_hidden(timeout=TIMEOUT)
    acked = await eventually(lambda: [f for f in b.view(line, "flash") if f["acked_by"]], "the ACK at NDMC")
    assert acked[0]["acked_by"] == "Duty EUCOM" and acked[0]["id"] == flash["id"]
    assert b.view(line, "refused") == []
    flash_row = page.locator(f'#log tr[data-id="{flash["id"]}"] td.ack')
    await expect(flash_row).to_contain_text("ACK by Duty EUCOM", timeout=TIMEOUT)
    await expect(page.locator("#flash-waiting")).to_contain_text("no FLASH waiting", timeout=TIMEOUT)

    # the other panels show what the scene filed
    await expect(page.locator("#notice-conflicts")).to_contain_text("CONFLICT", timeout=TIMEOUT)
    await expect(page.locator("#map .area.conflict")).to_have_count(2, timeout=TIMEOUT)
    await expect(page.locator("#calls .readout")).to_have_count(2, timeout=TIMEOUT)
    await expect(page.locator("#calls")).to_contain_text("Обсуждены", timeout=TIMEOUT)
    await page.click("#verify-run")
    await expect(page.locator("#verify-state")).to_have_text("VERIFIED", timeout=TIMEOUT)
    with contextlib.suppress(Exception):
        await page.wait_for_timeout(300)
    await _shot(page, "console.png")


def _peer_texts(b: Station, line: str) -> list[dict[str, Any]]:
    from redline.api.app import transcript

    rows: list[dict[str, Any]] = transcript(b, b.sessions[line], 50)["rows"]
    return rows


async def _shot(page: Any, name: str) -> None:
    """README screenshots: written only when asked (REDLINE_SCREENSHOTS=1), so a test run never
    changes tracked files; otherwise into the test's temp dir, to prove the page renders."""
    target = IMG if os.environ.get("REDLINE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir())
    await page.screenshot(path=str(target / name), full_page=True)
