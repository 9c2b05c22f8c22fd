"""Voice (issue 16): the latency the two stations add to a call's audio, and their CPU per call.

``.venv/bin/python -m bench.voice_bench [--seconds 10]``

Two real station processes on loopback (``redline serve --http``, two TLS paths each), paired
through the real ceremony; two console clients in this process (``redline.participant``: the
console API, the console WebSocket, Opus from PyAV), one per station, on one call. Both say a tone
for ``--seconds``, 20 ms packets paced in real time, as a microphone does.

- **Latency added by the stations**: for each packet, from the moment EUCOM's client hands it to
  its WebSocket to the moment NDMC's client has it off its own (same process, same clock): console
  WebSocket in, station A (checks, hash, recording, AUDIO frame on both paths), TLS over loopback,
  station B (first copy wins, hash, recording, relay), console WebSocket out. What the browser adds
  around it (capture, WebCodecs encode/decode, the 60 ms playout buffer) is not in it:
  ``bench.voice_browsers`` measures that, mouth to ear, next to a plain WebRTC call.
- **CPU per call**: each station process's user+system time during the call (``/proc/PID/stat``)
  minus the same length of time idle just before (heartbeats on two paths), per second of call.

Nothing passes or fails on time; the box is shared, so say how noisy it was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redline import participant, persons
from redline.api.console_voice import chunk
from redline.config import Limits
from redline.control_client import call_blocking
from redline.home import StationDir
from redline.testing import free_ports

PASSWORD = "bench-password-1"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ctl(home: Path, request: dict[str, Any]) -> Any:
    return call_blocking(home, request)


def wait(pred: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = pred()
            if got:
                return got
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def start(root: Path) -> tuple[list[subprocess.Popen[bytes]], dict[str, str], str, dict[str, Path]]:
    p = free_ports(6)
    homes = {"EUCOM": StationDir(root / "eucom"), "NDMC": StationDir(root / "ndmc")}
    homes["EUCOM"].init(name="EUCOM", lang="en", listen=[f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"],
                        limits=Limits(test_times_utc=()))  # fmt: skip
    homes["NDMC"].init(name="NDMC", lang="ru", listen=[f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"],
                       limits=Limits(test_times_utc=()))  # fmt: skip
    urls = {"EUCOM": f"http://127.0.0.1:{p[4]}/", "NDMC": f"http://127.0.0.1:{p[5]}/"}
    users = {"EUCOM": "Duty EUCOM", "NDMC": "Dezhurny"}
    procs = []
    for name, home in homes.items():
        persons.add_user(home.path, users[name], "duty", PASSWORD, ops=1, mem=8192)
        log = open(home.path / "serve.log", "ab")  # noqa: SIM115 - lives as long as the process
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "redline", "serve", "--station", str(home.path), "--http", urls[name][7:-1]],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
    for home in homes.values():
        wait(lambda h=home: ctl(h.path, {"op": "status"}), f"{home.path.name} to start")
    token = ctl(homes["EUCOM"].path, {"op": "invite"})["token"]
    paired = ctl(homes["NDMC"].path, {"op": "pair", "token": token})
    line = paired["line"]
    wait(lambda: ctl(homes["EUCOM"].path, {"op": "status"})["lines"], "EUCOM to hold the line")
    for home in homes.values():
        ctl(home.path, {"op": "confirm", "line": line, "code": paired["safety_code"]})
    wait(lambda: all(ctl(h.path, {"op": "status"})["lines"][0]["synced"] for h in homes.values()), "sync")
    return procs, urls, line, {k: v.path for k, v in homes.items()}


async def one_call(urls: dict[str, str], line: str, seconds: float) -> dict[str, Any]:
    from wsproto.events import BytesMessage, TextMessage

    eu = participant.Participant(participant.Api(urls["EUCOM"]), line)
    ru = participant.Participant(participant.Api(urls["NDMC"]), line)
    eu.login("Duty EUCOM", PASSWORD)
    ru.login("Dezhurny", PASSWORD)
    call = await eu.ring(None, 20)
    await ru.pick_up(20)
    await eu._poll(lambda v: v["current"] and v["current"]["state"] == "live", "live", 20)
    packets = participant.encode(participant.tone(seconds + 0.1, 440.0))[: int(seconds * 50)]
    conns = {}
    for name, p in (("EUCOM", eu), ("NDMC", ru)):
        reader, writer, ws = await participant._ws_connect(p.api)
        writer.write(ws.send(TextMessage(data=json.dumps({"type": "join", "call": call}))))
        conns[name] = (reader, writer, ws)
    sent_at: dict[int, float] = {}
    got_at: dict[int, float] = {}

    async def receive(name: str) -> None:
        reader, _, ws = conns[name]
        while True:
            data = await reader.read(65536)
            if not data:
                return
            ws.receive_data(data)
            now = time.perf_counter()
            for event in ws.events():
                if isinstance(event, BytesMessage) and name == "NDMC":
                    msg = bytes(event.data)
                    got_at.setdefault(int.from_bytes(msg[33:37], "big"), now)

    tasks = [asyncio.ensure_future(receive(n)) for n in conns]
    await asyncio.sleep(0.5)  # both joined
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for n, data in enumerate(packets):
        # Both talk, NDMC 10 ms after EUCOM (two microphones are never in step).
        for name, (_, writer, ws) in conns.items():
            await asyncio.sleep(max(0.0, t0 + n * 0.02 + (0.01 if name == "NDMC" else 0) - loop.time()))
            if name == "EUCOM":
                sent_at[n] = time.perf_counter()
            writer.write(ws.send(BytesMessage(data=chunk(call, n, n * 20, data))))
    await asyncio.sleep(1.0)
    for t in tasks:
        t.cancel()
    for _, writer, _ in conns.values():
        writer.close()
    await asyncio.to_thread(eu.api.call, "POST", f"/api/lines/{line}/hang-up", {"ring_id": call})
    lat = [(got_at[n] - sent_at[n]) * 1000 for n in sent_at if n in got_at]
    return {"call": call, "packets": len(packets), "delivered": len(lat), "latency_ms": lat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="redline-voice-bench-") as tmp:
        procs, urls, line, _homes = start(Path(tmp))
        try:
            time.sleep(1.0)
            idle0 = [cpu_seconds(p.pid) for p in procs]
            time.sleep(args.seconds)
            idle1 = [cpu_seconds(p.pid) for p in procs]
            c0 = [cpu_seconds(p.pid) for p in procs]
            t0 = time.monotonic()
            result = asyncio.run(one_call(urls, line, args.seconds))
            elapsed = time.monotonic() - t0
            c1 = [cpu_seconds(p.pid) for p in procs]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=15)
    lat = sorted(result["latency_ms"])
    idle = [(b - a) / args.seconds for a, b in zip(idle0, idle1, strict=True)]
    busy = [(b - a) / elapsed for a, b in zip(c0, c1, strict=True)]
    figures = {
        "packets": result["packets"], "delivered": result["delivered"],
        "latency_ms_median": statistics.median(lat), "latency_ms_p99": lat[int(0.99 * (len(lat) - 1))],
        "latency_ms_max": lat[-1],
        "cpu_ms_per_call_second": {name: round((b - i) * 1000, 1) for name, b, i in zip(("EUCOM", "NDMC"), busy, idle,
                                                                                         strict=True)},
        "cpu_ms_per_idle_second": {name: round(i * 1000, 1) for name, i in zip(("EUCOM", "NDMC"), idle, strict=True)},
        "call_seconds_measured": round(elapsed, 2),
    }  # fmt: skip
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
