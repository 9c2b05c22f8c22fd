"""Voice (issue 16), mouth to ear: a call between two redline consoles next to a plain WebRTC call
between the same two browsers, on this machine, measured the same way; and the CPU each costs.

``.venv/bin/python -m bench.voice_browsers [--seconds 20] [--json FILE]`` (as root: it makes a network
namespace)

WebRTC ignores loopback interfaces, so the bench runs itself inside a network namespace it makes
(``unshare -n``) with a veth pair holding two private addresses (10.200.0.1 and .2): the browsers'
ICE finds those two interfaces, and nothing leaves the namespace. Where no namespace can be made it
says so in one line and measures the redline call only.

Two Chromium instances (Debian's /usr/bin/chromium through Playwright), each with a fake microphone
playing a file (``--use-file-for-fake-audio-capture``): EUCOM's a 1 kHz beep of 40 ms every 500 ms,
NDMC's silence; both send all the time, as in a call.

- **redline**: two real station processes (``bench.voice_bench.start``: two TLS paths, paired by the
  ceremony), each browser on its station's console; EUCOM presses CALL, NDMC picks up. Audio is
  WebCodecs Opus over each console's WebSocket, relayed station to station over TLS, decoded and
  played with the console's 60 ms playout buffer.
- **WebRTC**: a tiny page served from the bench (127.0.0.1 in the namespace) with an
  RTCPeerConnection per browser, no STUN/TURN, the offer and answer (ICE gathered in full) passed by
  the bench through Playwright: Opus over SRTP, Chromium's own jitter buffer and playout.

**Mouth to ear** is measured by the same script in every page (an init script): the time each beep
onset enters WebAudio from the page's microphone stream (``getUserMedia`` wrapped, a detector on a
MediaStreamSource), and the time each onset is played at the other page (a detector tapped on the
node that plays the peer's audio: the console's AudioBufferSourceNodes, the WebRTC page's
MediaStreamSource), both as the audio clock's output time (``getOutputTimestamp``) in
``performance.timeOrigin`` ms; both browsers run on one system clock. The same detector at both ends
leaves out the same fixed part in both calls (capture into WebAudio, the fake sound card), so the
two figures compare; the difference is what redline adds. **CPU** is the user+system time of every
process of the two browsers (and, for redline, of the two stations) during the measured seconds.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from bench.voice_bench import PASSWORD, cpu_seconds, start
from redline import participant

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
ADDRS = ("10.200.0.1", "10.200.0.2")
PERIOD_MS = 500  # one beep every 500 ms: a delay up to 450 ms is matched to its own beep

DETECT = """
(() => {
  const M = window.__m2e = { mouth: [], ear: [] };
  const THR = 0.02, GAP_MS = 200;
  const connect = AudioNode.prototype.connect;
  const perfOf = (ctx, t) => {
    const ts = ctx.getOutputTimestamp();
    return performance.timeOrigin + ts.performanceTime + (t - ts.contextTime) * 1000;
  };
  function detector(ctx, list) {
    const sp = ctx.createScriptProcessor(256, 1, 1), sink = ctx.createGain();
    sp.__m2e = sink.__m2e = true;
    sink.gain.value = 0;
    let last = -1e12;
    sp.onaudioprocess = (e) => {
      const x = e.inputBuffer.getChannelData(0);
      for (let i = 0; i < x.length; i++) {
        if (Math.abs(x[i]) > THR) {
          const at = perfOf(ctx, e.playbackTime + i / ctx.sampleRate);
          if (at - last > GAP_MS) list.push(at);
          last = at;
          break;
        }
      }
    };
    connect.call(sp, sink); connect.call(sink, ctx.destination);
    return sp;
  }
  const taps = new WeakMap();
  AudioNode.prototype.connect = function (dest, ...rest) {
    const r = connect.call(this, dest, ...rest);
    const plays = this instanceof AudioBufferSourceNode || this instanceof MediaStreamAudioSourceNode;
    if (dest instanceof AudioDestinationNode && plays && !this.__m2e) {
      let d = taps.get(this.context);
      if (!d) { d = detector(this.context, M.ear); taps.set(this.context, d); }
      connect.call(this, d);
    }
    return r;
  };
  if (navigator.mediaDevices) {
    const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = async (c) => {
      const s = await gum(c);
      const ctx = new AudioContext(), src = ctx.createMediaStreamSource(s);
      src.__m2e = true;
      connect.call(src, detector(ctx, M.mouth));
      return s;
    };
  }
  window.__now = () => performance.timeOrigin + performance.now();
})();
"""

PAGE = """<!doctype html><meta charset="utf-8"><title>plain WebRTC</title><script>
const pc = new RTCPeerConnection({ iceServers: [] });
window.rtc = { state: () => pc.connectionState, track: false };
pc.ontrack = (e) => {
  const a = new Audio(); a.muted = true; a.srcObject = e.streams[0]; a.play();  // Chromium feeds WebAudio only then
  const ctx = new AudioContext();
  ctx.createMediaStreamSource(e.streams[0]).connect(ctx.destination);
  window.rtc.track = true;
};
const gathered = () => new Promise((ok) => {
  if (pc.iceGatheringState === "complete") return ok();
  pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") ok(); });
});
window.rtc.mic = async () => {
  const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: true };  // as the console asks
  const s = await navigator.mediaDevices.getUserMedia({ audio });
  for (const t of s.getTracks()) pc.addTrack(t, s);
};
window.rtc.offer = async () => {
  await pc.setLocalDescription(await pc.createOffer()); await gathered(); return pc.localDescription.sdp;
};
window.rtc.answer = async (sdp) => {
  await pc.setRemoteDescription({ type: "offer", sdp });
  await pc.setLocalDescription(await pc.createAnswer()); await gathered(); return pc.localDescription.sdp;
};
window.rtc.accept = async (sdp) => { await pc.setRemoteDescription({ type: "answer", sdp }); };
</script>"""


def beeps_wav(path: Path, seconds: float = 10.0) -> None:
    rate = participant.RATE
    pcm = np.zeros(int(seconds * rate), dtype=np.float64)
    n, t = int(0.04 * rate), np.arange(int(0.04 * rate)) / rate
    for start_at in range(0, len(pcm) - n, int(PERIOD_MS / 1000 * rate)):
        pcm[start_at : start_at + n] = np.sin(2 * np.pi * 1000 * t) * 0.5
    participant.write_wav(path, (pcm * 32767).astype(np.int16))


def silence_wav(path: Path, seconds: float = 10.0) -> None:
    participant.write_wav(path, np.zeros(int(seconds * participant.RATE), dtype=np.int16))


def descendants_cpu(names: tuple[str, ...] = ("chrom",)) -> float:
    """User+system seconds of every live process below this one whose name starts with one of ``names``."""
    children: dict[int, list[int]] = {}
    comm: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        head, rest = stat.split(" (", 1)
        name, fields = rest.rsplit(") ", 1)
        comm[int(head)] = name
        children.setdefault(int(fields.split()[1]), []).append(int(head))
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        for c in children.get(pid, []):
            todo.append(c)
            if comm.get(c, "").startswith(names):
                with suppress(OSError, ValueError, IndexError):  # gone meanwhile
                    total += cpu_seconds(c)
    return total


def latencies(mouth: list[float], ear: list[float], since: float) -> list[float]:
    """Each beep heard, paired with the last beep said before it (beeps are PERIOD_MS apart)."""
    mouth = sorted(m for m in mouth if m >= since)
    out = []
    for e in sorted(x for x in ear if x >= since):
        said = [m for m in mouth if m <= e]
        if said and e - said[-1] < PERIOD_MS * 0.9:
            out.append(e - said[-1])
    return out


def figures(in_order: list[float], cpu: float, seconds: float, beeps: int) -> dict[str, Any]:
    lat = sorted(in_order)
    if not lat:
        return {"beeps_said": beeps, "beeps_heard": 0}
    third = max(1, len(in_order) // 3)
    return {
        "beeps_said": beeps, "beeps_heard": len(lat), "mouth_to_ear_ms_median": round(statistics.median(lat), 1),
        "mouth_to_ear_ms_min": round(lat[0], 1), "mouth_to_ear_ms_max": round(lat[-1], 1),
        # the first and the last third of the call: does the delay creep?
        "median_first_last_third_ms": [round(statistics.median(in_order[:third]), 1),
                                       round(statistics.median(in_order[-third:]), 1)],
        "cpu_ms_per_call_second": round(cpu * 1000 / seconds, 1),
    }  # fmt: skip


@contextmanager
def browsers(pw: Any, wavs: dict[str, Path]) -> Iterator[dict[str, Any]]:
    out = {n: pw.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, f"--use-file-for-fake-audio-capture={w}"])
           for n, w in wavs.items()}  # fmt: skip
    try:
        yield out
    finally:
        for b in out.values():
            b.close()


def page_of(browser: Any) -> Any:
    context = browser.new_context()
    context.add_init_script(DETECT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


IDLE_SECONDS = 5.0


def idle_cpu(stations: Any = None) -> dict[str, float]:
    """CPU per second (ms) of the browsers (and stations) with the pages open and no call: the cost
    of the pages themselves (the console polls and draws), to take off the call's."""
    b0, s0 = descendants_cpu(), stations() if stations else 0.0
    time.sleep(IDLE_SECONDS)
    b1, s1 = descendants_cpu(), stations() if stations else 0.0
    per_s = 1000 / IDLE_SECONDS
    return {"browsers": round((b1 - b0) * per_s, 1), "stations": round((s1 - s0) * per_s, 1)}


def measure(pages: dict[str, Any], seconds: float, stations: Any = None) -> dict[str, Any]:
    time.sleep(2.0)  # settle: jitter buffers, the first beeps
    since = pages["EUCOM"].evaluate("window.__now()")
    b0, s0 = descendants_cpu(), stations() if stations else 0.0
    time.sleep(seconds)
    b1, s1 = descendants_cpu(), stations() if stations else 0.0
    mouth = pages["EUCOM"].evaluate("window.__m2e.mouth")
    ear = pages["NDMC"].evaluate("window.__m2e.ear")
    until = since + seconds * 1000
    said = len([m for m in mouth if since <= m <= until])
    out = figures(latencies(mouth, [e for e in ear if e <= until + PERIOD_MS], since), (b1 - b0) + (s1 - s0),
                  seconds, said)  # fmt: skip
    out["browsers_cpu_ms_per_call_second"] = round((b1 - b0) * 1000 / seconds, 1)
    if stations:
        out["stations_cpu_ms_per_call_second"] = round((s1 - s0) * 1000 / seconds, 1)
    return out


def redline_call(pw: Any, wavs: dict[str, Path], root: Path, seconds: float) -> dict[str, Any]:
    procs, urls, _, _ = start(root)
    try:
        with browsers(pw, wavs) as bs:
            pages = {n: page_of(b) for n, b in bs.items()}
            for (name, page), user in zip(pages.items(), ("Duty EUCOM", "Dezhurny"), strict=True):
                page.goto(urls[name])
                page.fill("#login-user", user)
                page.fill("#login-password", PASSWORD)
                page.click("#login-submit")
                page.wait_for_selector("#console", state="visible")
            stations = lambda: sum(cpu_seconds(p.pid) for p in procs)  # noqa: E731
            idle = idle_cpu(stations)
            pages["EUCOM"].click("#voice-call")
            pages["NDMC"].locator('#alarm-list li[data-code="voice_ring"] button.go').click()
            for page in pages.values():
                page.wait_for_function("() => window.redlineVoice.sent >= 25 && window.redlineVoice.played >= 25")
            out = measure(pages, seconds, stations)
            out["idle_cpu_ms_per_second"] = idle
            out["errors"] = [p.evaluate("window.redlineVoice.error") for p in pages.values()]
            pages["EUCOM"].click("#voice-hangup")
            time.sleep(0.5)
            return out
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=15)


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def webrtc_call(pw: Any, wavs: dict[str, Path], seconds: float) -> dict[str, Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with browsers(pw, wavs) as bs:
            pages = {n: page_of(b) for n, b in bs.items()}
            for page in pages.values():
                page.goto(url)
            idle = idle_cpu()
            for page in pages.values():
                page.evaluate("window.rtc.mic()")
            offer = pages["EUCOM"].evaluate("window.rtc.offer()")
            answer = pages["NDMC"].evaluate("(sdp) => window.rtc.answer(sdp)", offer)
            pages["EUCOM"].evaluate("(sdp) => window.rtc.accept(sdp)", answer)
            for page in pages.values():
                page.wait_for_function("() => window.rtc.state() === 'connected' && window.rtc.track")
            out = measure(pages, seconds)
            out["idle_cpu_ms_per_second"] = idle
            out["candidates"] = sorted({ln.split()[4] for ln in offer.splitlines() if ln.startswith("a=candidate")})
            return out
    finally:
        server.shutdown()


def netns_ready() -> bool:
    """The veth pair is here (this process runs in the namespace ``main`` made)."""
    import socket

    return {"v0", "v1"} <= {name for _, name in socket.if_nameindex()}


def inside(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {"seconds": args.seconds, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="redline-voice-m2e-") as tmp:
        root = Path(tmp)
        wavs = {"EUCOM": root / "beeps.wav", "NDMC": root / "silence.wav"}
        beeps_wav(wavs["EUCOM"])
        silence_wav(wavs["NDMC"])
        with sync_playwright() as pw:
            results["redline"] = redline_call(pw, wavs, root / "stations", args.seconds)
            if netns_ready():
                results["webrtc"] = webrtc_call(pw, wavs, args.seconds)
            else:
                results["webrtc"] = {"skipped": args.why or "no network namespace"}
    results["load_after"] = os.getloadavg()
    return results


SETUP = ("ip link set lo up && ip link add v0 type veth peer name v1 && "
         f"ip addr add {ADDRS[0]}/24 dev v0 && ip addr add {ADDRS[1]}/24 dev v1 && "
         "ip link set v0 up && ip link set v1 up")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # already in the namespace
    ap.add_argument("--why", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not shutil.which(CHROMIUM):
        sys.exit(f"no chromium at {CHROMIUM}: apt-get install -y chromium")
    if not args.inside:
        can = shutil.which("unshare") and shutil.which("ip") and subprocess.run(
            ["unshare", "-n", "--", "sh", "-c", SETUP], capture_output=True, check=False).returncode == 0  # fmt: skip
        if can:
            cmd = [sys.executable, "-m", "bench.voice_browsers", *sys.argv[1:], "--inside"]
            inner = ["unshare", "-n", "--", "sh", "-c", SETUP + ' && exec "$@"', "sh", *cmd]
            sys.exit(subprocess.run(inner, check=False).returncode)
        why = "WebRTC call skipped: no network namespace can be made here (needs unshare -n and ip, as root)"
        print(why, file=sys.stderr)
        args.why = why
    results = inside(args)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
