"""A voice call between the two duty consoles, as people on watch make it: real Chromium (Debian's,
driven by Playwright) with a fake microphone (``--use-fake-device-for-media-stream``, permission
granted by ``--use-fake-ui-for-media-stream``), two real station processes with real TLS between
them (tests/test_console.py's pair, one for this module).

EUCOM presses CALL; NDMC's console rings (the alarm area, with sound) and shows PICK UP / DECLINE;
NDMC picks up; each browser encodes its microphone with WebCodecs Opus, sends it over its WebSocket
to its station, which forwards it to the peer station, which relays it to the peer's console, which
decodes and plays it; EUCOM hangs up. Then both stations' CALL_AUDIO digests match per direction:
what each browser encoded is exactly what the other station received and relayed.

Also: VOICE TEST (a line test answered by picking up), and the two-tone call between two browsers
whose fake microphones play different tones from files: each station's recording of the other
side holds the other's tone (FFT), the digests match, verify and verify --bundle pass; and a call
whose line is lost (NDMC killed mid-call) says "ended: line lost" in the calls list at both ends."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from redline import participant, recording
from tests.test_console import ARGS, CHROMIUM, Pair, console, ctl, expect, pair, sync_playwright, wait_for

__all__ = ["pair"]  # the module's own station pair (tests/test_console.py's fixture)

FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def pw(pair: Pair) -> Iterator[Any]:
    with sync_playwright() as p:  # one per module: the sync API cannot nest
        yield p


@pytest.fixture(scope="module")
def browser(pw: Any) -> Iterator[Any]:
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


def redline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, timeout=120)


def tone_of(path: Path) -> float:
    """The strongest frequency of a recording, decoded by ffmpeg (PyAV) as any player would."""
    with av.open(str(path)) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1).astype(float) for f in c.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * 48_000 / len(pcm))


def test_two_browsers_with_two_tones_each_station_records_the_others_tone_and_digests_match(
    pair: Pair, pw: Any, tmp_path: Path
) -> None:
    """Two Chromium instances, each with its own fake microphone playing a tone from a file
    (--use-file-for-fake-audio-capture): 1000 Hz at EUCOM, 440 Hz at NDMC. Each station's recording
    of what it received holds the other side's tone, the two stations' digests match per direction,
    and the bundle with the recordings verifies."""
    tones = {"EUCOM": 1000.0, "NDMC": 440.0}
    browsers = {}
    try:
        for name, hz in tones.items():
            wav = tmp_path / f"{name}.wav"
            participant.write_wav(wav, participant.tone(5.0, hz))
            browsers[name] = pw.chromium.launch(executable_path=CHROMIUM, args=[
                *ARGS, *FAKE_MEDIA, f"--use-file-for-fake-audio-capture={wav}"])  # fmt: skip
        with console(browsers["EUCOM"], pair.eucom.url, "Duty EUCOM") as a, \
                console(browsers["NDMC"], pair.ndmc.url, "Dezhurny") as b:  # fmt: skip
            a.click("#voice-call")
            ring = b.locator('#alarm-list li[data-code="voice_ring"]')
            ring.locator("button.go").click()
            for page in (a, b):
                page.wait_for_function("() => window.redlineVoice.sent >= 100 && window.redlineVoice.played >= 100")
                assert page.evaluate("window.redlineVoice.error") is None
            a.click("#voice-hangup")
            for page in (a, b):
                expect(page.locator("#voice-state")).to_have_attribute("data-voice-state", "none")
    finally:
        for br in browsers.values():
            br.close()
    wait_for(lambda: all(last_call(pair, w)["audio"]["evidence"] == "match" for w in (pair.eucom, pair.ndmc)),
             "both stations' CALL_AUDIO, equal per direction")  # fmt: skip
    call = last_call(pair, pair.eucom)["id"]
    for who, heard in ((pair.eucom, tones["NDMC"]), (pair.ndmc, tones["EUCOM"])):
        received = recording.path_of(who.home, pair.line, call, "received")
        assert abs(tone_of(received) - heard) < 15, (who.home.name, tone_of(received))
    for who in (pair.eucom, pair.ndmc):
        done = redline("verify", "--station", str(who.home))
        assert done.returncode == 0, done.stdout + done.stderr
    bundle = tmp_path / "ndmc.bundle.json"
    done = redline("export", pair.line, "--station", str(pair.ndmc.home), "--recordings", "--out", str(bundle))
    assert done.returncode == 0, done.stdout + done.stderr
    keys = [k for s in json.loads(bundle.read_text())["stations"] for k in ("--key", s["fingerprint"])]
    done = redline("verify", "--bundle", str(bundle), *keys)
    assert done.returncode == 0 and "call recording(s) match" in done.stdout, done.stdout + done.stderr


def test_a_browser_without_microphone_permission_gets_one_clear_message_and_still_hears(
    pair: Pair, pw: Any, browser: Any
) -> None:
    denied = pw.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, "--use-fake-device-for-media-stream"])
    try:  # no --use-fake-ui-for-media-stream and no permission granted: getUserMedia is refused
        with console(denied, pair.eucom.url, "Duty EUCOM") as a, console(browser, pair.ndmc.url, "Dezhurny") as b:
            a.click("#voice-call")
            b.locator('#alarm-list li[data-code="voice_ring"] button.go').click()
            expect(a.locator("#voice-state")).to_have_attribute("data-voice-state", "live")
            expect(a.locator("#voice-error")).to_have_text(
                "NO MICROPHONE: the browser refused it (or has none). Allow the microphone for this page, "
                "then call or pick up again.")  # fmt: skip
            assert a.evaluate("window.redlineVoice.error") == "voice.no_mic"
            a.wait_for_function("() => window.redlineVoice.played >= 20")  # it still hears the peer
            assert a.evaluate("window.redlineVoice.sent") == 0
            a.click("#voice-hangup")
            for page in (a, b):
                expect(page.locator("#voice-state")).to_have_attribute("data-voice-state", "none")
    finally:
        denied.close()


def test_a_call_whose_line_is_lost_says_so_in_the_calls_list_at_both_ends(pair: Pair, browser: Any) -> None:
    """NDMC killed mid-call (kill -9): EUCOM, the survivor, ends the call as lost after
    call_lost_seconds on its clock, and its calls list says "ended: line lost", not just "ended";
    once NDMC is back its console says the same, in Russian (EUCOM's "lost" stands at both ends)."""
    with console(browser, pair.eucom.url, "Duty EUCOM") as a:
        with console(browser, pair.ndmc.url, "Dezhurny") as b:
            a.click("#voice-call")
            b.locator('#alarm-list li[data-code="voice_ring"] button.go').click()
            for page in (a, b):
                expect(page.locator("#voice-state")).to_have_attribute("data-voice-state", "live")
        assert pair.ndmc.proc is not None
        pair.ndmc.proc.kill()
        pair.ndmc.proc.wait()
        try:
            wait_for(lambda: not any(p["up"] for p in pair.eucom.status()["paths"].values()), "EUCOM to see no path")
            for _ in range(3):  # past call_lost_seconds (30) from the tick that noted the line quiet
                ctl(pair.eucom.home, {"op": "clock", "advance_ms": 31_000})
                with contextlib.suppress(AssertionError):
                    wait_for(lambda: last_call(pair, pair.eucom)["reason"] == "lost", "EUCOM to end it lost", 3)
                    break
            row = a.locator("#voice-calls li").first
            expect(row).to_have_attribute("data-reason", "lost")
            expect(row.locator(".call-state")).to_have_text("ended: line lost")
            # a reason the stations do not file themselves (a person's decline) is shown as text, never markup
            said = a.evaluate("""() => {
                const el = h("span", {}, callState({ state: "declined", reason: "<img src=x>" }));
                return [el.textContent, el.querySelector("img") === null]; }""")
            assert said == ["declined: <img src=x>", True], said
        finally:
            pair.ndmc.start()
    wait_for(pair.synced, "the line in sync again")
    with console(browser, pair.ndmc.url, "Dezhurny") as b:
        expect(b.locator("#voice-calls li").first.locator(".call-state")).to_have_text("завершён: связь потеряна")
