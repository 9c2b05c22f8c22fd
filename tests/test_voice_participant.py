"""Voice between two real station processes with headless participants (``redline call join``):
each participant logs in to its station's API, rings or picks up (signed as its user), says a tone
and records the other side, as a console would.

The two-tone call: EUCOM's participant says 1000 Hz, NDMC's 440 Hz; each side's recording of the
other holds the other's tone (FFT), both stations' CALL_AUDIO digests match per direction, and
``redline verify`` and ``redline verify --bundle`` (with the recordings) pass. Then EUCOM is killed
with kill -9 mid-call: after its restart the call is ended at both stations and EUCOM's CALL_AUDIO
is marked interrupted, its recordings sealed and matching its digests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from redline import recording
from tests.test_console import PASSWORD, Pair, Proc, pair, wait_for

__all__ = ["pair"]  # the module's own two real stations (tests/test_console.py's fixture)

pytestmark = pytest.mark.slow


def peak_hz(pcm: np.ndarray[Any, Any]) -> float:
    pcm = pcm.astype(float)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * 48_000 / len(pcm))


def wav_peak(path: Path) -> float:
    with av.open(str(path)) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return peak_hz(pcm)


def join(who: Proc, line: str, user: str, *args: str) -> subprocess.Popen[str]:
    """``redline call join`` as a process; the password on its standard input, as a script gives it."""
    secret = who.home.parent / f"{who.home.name}.password"
    secret.write_text(PASSWORD + "\n")
    with secret.open() as stdin:
        return subprocess.Popen(
            [sys.executable, "-m", "redline", "call", "join", line, "--url", who.url, "--user", user, "--json", *args],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip


def finished(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def redline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, timeout=120)


def last_call(p: Pair, who: Proc) -> dict[str, Any]:
    calls: list[dict[str, Any]] = p.view(who, "voice")["calls"]
    return calls[-1]


def test_two_tones_each_side_records_the_others_tone_digests_match_and_both_verifies_pass(
    pair: Pair, tmp_path: Path
) -> None:
    heard_eu, heard_ru = tmp_path / "eucom-heard.wav", tmp_path / "ndmc-heard.wav"
    ru = join(pair.ndmc, pair.line, "Dezhurny", "--pick-up", "--tone", "440", "--seconds", "2",
              "--record", str(heard_ru), "--stay", "20")  # fmt: skip
    eu = join(pair.eucom, pair.line, "Duty EUCOM", "--ring", "--tone", "1000", "--seconds", "2",
              "--record", str(heard_eu), "--hang-up")  # fmt: skip
    for proc in (eu, ru):
        code, out, err = finished(proc)
        assert code == 0, err
        result = json.loads(out)
        assert result["sent"] >= 99 and result["heard"] >= 90 and result["refused"] == [], result
    assert abs(wav_peak(heard_eu) - 440) < 15 and abs(wav_peak(heard_ru) - 1000) < 15

    wait_for(lambda: all(last_call(pair, w)["audio"]["evidence"] == "match" for w in (pair.eucom, pair.ndmc)),
             "both stations' CALL_AUDIO, equal per direction")  # fmt: skip
    eu_audio, ru_audio = (last_call(pair, w)["audio"]["ours"] for w in (pair.eucom, pair.ndmc))
    assert eu_audio["sent"] == ru_audio["received"] and eu_audio["received"] == ru_audio["sent"]
    call = last_call(pair, pair.eucom)
    assert call["caller"] == "Duty EUCOM" and call["answered_by"] == "Dezhurny" and call["state"] == "ended"
    # The station's own recording of what it received holds the peer's tone, as any player decodes it.
    assert abs(wav_peak(recording.path_of(pair.eucom.home, pair.line, call["id"], "received")) - 440) < 15

    for who in (pair.eucom, pair.ndmc):
        done = redline("verify", "--station", str(who.home))
        assert done.returncode == 0, done.stdout + done.stderr
    bundle = tmp_path / "eucom.bundle.json"
    done = redline("export", pair.line, "--station", str(pair.eucom.home), "--recordings", "--out", str(bundle))
    assert done.returncode == 0, done.stdout + done.stderr
    keys = [k for fp in json.loads(bundle.read_text())["stations"] for k in ("--key", fp["fingerprint"])]
    done = redline("verify", "--bundle", str(bundle), *keys)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 call recording(s) match the audio digests signed in CALL_AUDIO" in done.stdout


def test_kill_9_mid_call_ends_the_call_at_both_stations_with_an_interrupted_call_audio(
    pair: Pair, tmp_path: Path
) -> None:
    ru = join(pair.ndmc, pair.line, "Dezhurny", "--pick-up", "--tone", "440", "--seconds", "20", "--stay", "60")
    eu = join(pair.eucom, pair.line, "Duty EUCOM", "--ring", "--tone", "1000", "--seconds", "20")

    def flowing() -> bool:
        v = pair.view(pair.ndmc, "voice")
        live, audio = v["current"], v["audio"]
        return bool(live and live["state"] == "live" and audio and audio["call"] == live["id"]
                    and audio["received"]["packets"] >= 50 and audio["sent"]["packets"] >= 50)  # fmt: skip

    wait_for(flowing, "a second of audio each way")
    call_id = last_call(pair, pair.ndmc)["id"]
    assert pair.eucom.proc is not None
    pair.eucom.proc.kill()  # kill -9, mid-call
    pair.eucom.proc.wait()
    code, _, err = finished(eu)
    assert code == 1 and err.startswith("error:") and "Traceback" not in err, (code, err)  # one clear line
    pair.eucom.start()

    def ended() -> bool:
        return all(last_call(pair, w)["state"] == "ended" and last_call(pair, w)["audio"]["evidence"] is not None
                   for w in (pair.eucom, pair.ndmc))  # fmt: skip

    wait_for(ended, "the call ended at both stations, both CALL_AUDIO filed", 60)
    eu_call = last_call(pair, pair.eucom)
    assert eu_call["id"] == call_id and eu_call["audio"]["ours"].get("interrupted") is True, eu_call
    assert "interrupted" not in last_call(pair, pair.ndmc)["audio"]["ours"]
    code, _, err = finished(ru)
    assert code == 0, err
    for direction in recording.DIRECTIONS:
        assert recording.path_of(pair.eucom.home, pair.line, call_id, direction).is_file()
    for who in (pair.eucom, pair.ndmc):
        done = redline("verify", "--station", str(who.home))
        assert done.returncode == 0, done.stdout + done.stderr
    bundle = tmp_path / "eucom.bundle.json"
    done = redline("export", pair.line, "--station", str(pair.eucom.home), "--recording", call_id[:8],
                   "--out", str(bundle))  # only this call's two recordings  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    keys = [k for fp in json.loads(bundle.read_text())["stations"] for k in ("--key", fp["fingerprint"])]
    done = redline("verify", "--bundle", str(bundle), *keys)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 call recording(s) match" in done.stdout
    assert f"EUCOM sent {call_id[:12]} (interrupted)" in done.stdout.replace("\n", " ")
    done = redline("export", pair.line, "--station", str(pair.eucom.home), "--recording", "0000000")
    assert done.returncode == 1 and "names no call recorded on this line" in done.stderr, done.stderr
