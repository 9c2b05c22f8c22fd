"""A voice call between the two duty consoles, as people on watch make it: real Chromium (Debian's,
driven by Playwright) with a fake microphone (``--use-fake-device-for-media-stream``, permission
granted by ``--use-fake-ui-for-media-stream``), two real station processes with real TLS between
them (tests/test_console.py's pair, one for this module).

EUCOM presses CALL; NDMC's console rings (the alarm area, with sound) and shows PICK UP / DECLINE;
NDMC picks up; each browser encodes its microphone with WebCodecs Opus, sends it over its WebSocket
to its station, which forwards it to the peer station, which relays it to the peer's console, which
decodes and plays it; EUCOM hangs up. Then both stations' CALL_AUDIO digests match per direction:
what each browser encoded is exactly what the other station received and relayed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_console import ARGS, CHROMIUM, Pair, console, expect, pair, sync_playwright, wait_for

__all__ = ["pair"]  # the module's own station pair (tests/test_console.py's fixture)

FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def browser(pair: Pair) -> Iterator[Any]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS + FAKE_MEDIA)
        try:
            yield b
        finally:
            b.close()


def last_call(p: Pair, who: Any) -> dict[str, Any]:
    calls: list[dict[str, Any]] = p.view(who, "voice")["calls"]
    return calls[-1]


def test_ring_pick_up_talk_both_ways_and_hang_up_between_two_consoles_with_matching_audio_digests(
    pair: Pair, browser: Any
) -> None:
    with console(browser, pair.eucom.url, "Duty EUCOM") as a, console(browser, pair.ndmc.url, "Dezhurny") as b:
        assert a.evaluate("typeof AudioEncoder") == "function"  # WebCodecs Opus, no fallback needed
        expect(a.locator("#voice-state")).to_have_attribute("data-voice-state", "none")
        a.click("#voice-call")
        expect(a.locator("#voice-state")).to_have_attribute("data-voice-state", "ringing")
        # NDMC's console rings: the alarm area, in Russian, with sound and the two buttons
        ring = b.locator('#alarm-list li[data-code="voice_ring"]')
        expect(ring).to_contain_text("ГОЛОСОВОЙ ВЫЗОВ")
        expect(ring).to_contain_text("Duty EUCOM")
        beeps = b.evaluate("window.redlineBeeps")
        b.wait_for_function(f"() => window.redlineBeeps > {beeps}")
        expect(ring.locator("button.danger")).to_contain_text("ОТКЛОНИТЬ")
        ring.locator("button.go").click()  # PICK UP, signed as Dezhurny
        expect(ring).to_have_count(0)
        for page in (a, b):
            expect(page.locator("#voice-state")).to_have_attribute("data-voice-state", "live")
            expect(page.locator("#voice-mute")).to_be_visible()
        expect(a.locator("#voice-who")).to_contain_text("Dezhurny")
        # a second of audio each way, encoded, forwarded twice, decoded and played at the other end
        for page in (a, b):
            page.wait_for_function("() => window.redlineVoice.sent >= 50 && window.redlineVoice.played >= 50")
            assert page.evaluate("window.redlineVoice.error") is None
            assert page.evaluate("window.redlineVoice.refused") == []
        health = pair.view(pair.ndmc, "voice")["audio"]["paths"]
        assert health and sum(h["first"] for h in health.values()) >= 50
        expect(b.locator("#voice-paths tr")).not_to_have_count(0)
        a.click("#voice-hangup")
        for page in (a, b):
            expect(page.locator("#voice-state")).to_have_attribute("data-voice-state", "none")

        def both_filed() -> bool:
            return all(last_call(pair, w)["audio"]["evidence"] == "match" for w in (pair.eucom, pair.ndmc))

        wait_for(both_filed, "both stations' CALL_AUDIO, equal per direction")
        ours, theirs = (last_call(pair, w)["audio"] for w in (pair.eucom, pair.ndmc))
        assert ours["ours"]["sent"] == theirs["ours"]["received"] and ours["ours"]["received"] == theirs["ours"]["sent"]
        assert ours["ours"]["sent"]["packets"] >= 50 and ours["ours"]["received"]["packets"] >= 50
        assert last_call(pair, pair.eucom)["state"] == "ended" == last_call(pair, pair.ndmc)["state"]
        expect(a.locator("#voice-calls li").first).to_have_attribute("data-evidence", "match")
        assert pair.view(pair.eucom, "refused") == [] == pair.view(pair.ndmc, "refused")


def test_a_voice_test_from_the_console_is_answered_by_picking_up_signed_by_that_person(
    pair: Pair, browser: Any
) -> None:
    with console(browser, pair.eucom.url, "Duty EUCOM") as a, console(browser, pair.ndmc.url, "Dezhurny") as b:
        expect(a.locator("#voice-test")).to_contain_text("VOICE TEST")
        a.click("#voice-test")  # a TEST, then a ring naming it
        expect(a.locator("#voice-state")).to_have_attribute("data-voice-state", "ringing")
        ring = b.locator('#alarm-list li[data-code="voice_ring"]')
        expect(ring).to_contain_text("ГОЛОСОВАЯ ПРОВЕРКА ЛИНИИ")
        expect(b.locator("#voice-test")).to_contain_text("ГОЛОСОВАЯ ПРОВЕРКА")
        ring.locator("button.go").click()  # picking up answers the test, signed as Dezhurny
        for page in (a, b):
            expect(page.locator("#voice-state")).to_have_attribute("data-voice-state", "live")
        test_id = last_call(pair, pair.eucom)["test"]
        assert test_id

        def passed() -> dict[str, Any] | None:
            tests = pair.view(pair.eucom, "tests")["tests"]
            return next((x for x in tests if x["id"] == test_id and x["result"] == "passed"), None)

        result = wait_for(passed, "EUCOM's voice test passed")
        assert result["answered_by"] == "Dezhurny"
        a.click("#voice-hangup")
        for page in (a, b):
            expect(page.locator("#voice-state")).to_have_attribute("data-voice-state", "none")
