"""``redline demo``: EUCOM and NDMC on this machine, paired through the real ceremony, talking.

Two real station processes (``redline serve``), two loopback paths each, TLS 1.3 with pinned keys.
The script drives them only through their control sockets, as an operator's CLI would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redline import scenario
from redline.config import Limits
from redline.control import call
from redline.display import SafeConsole, styled
from redline.errors import RedlineError
from redline.home import StationDir
from redline.ops.views import CallPairView, FlashView, LineTestsView, NoticesPage
from redline.scenario import add_demo_users

# Not on a terminal (a log, a pipe, CI): no wrapping at all, so a command or a sentence is never cut
# mid-word at column 80; on a terminal, Rich fits the window.
console = SafeConsole(soft_wrap=not sys.stdout.isatty())


def _sigterm_stops_like_ctrl_c(signum: int, frame: Any) -> None:
    # SIGTERM (a service manager, 'kill', a CI timeout) takes the same way out as Ctrl-C: the finally
    # of run_demo stops both stations and removes the demo's temporary folder.
    raise KeyboardInterrupt

def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


async def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = await predicate()
            if result:
                return result
        except RedlineError:
            pass
        await asyncio.sleep(0.1)
    raise RedlineError(f"demo: timed out waiting for {what}")


def run_demo(workdir: Path | None, *, wait: bool = True, days: int | None = None) -> None:
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="redline-demo-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    p = free_ports(6)
    stations = {
        "EUCOM": (StationDir(workdir / "eucom"), "en", [f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"]),
        "NDMC": (StationDir(workdir / "ndmc"), "ru", [f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"]),
    }
    consoles = {"EUCOM": f"127.0.0.1:{p[4]}", "NDMC": f"127.0.0.1:{p[5]}"}
    procs: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _sigterm_stops_like_ctrl_c)
    try:
        for name, (home, lang, listen) in stations.items():
            if not home.exists():
                # The line is tested by the US side (SCENARIO.md): NDMC runs no test schedule.
                limits = Limits(test_times_utc=()) if name == "NDMC" else Limits()
                keys = home.init(name=name, lang=lang, listen=listen, limits=limits)
                console.print(styled((name, "bold"), f" created: root fingerprint {keys.fingerprint[:32]}…"))
            log = open(home.path / "serve.log", "ab")  # noqa: SIM115 - lives as long as the process
            procs.append(subprocess.Popen(  # --settable-clock: the demo replays 2022 in compressed time
                [sys.executable, "-m", "redline", "serve", "--station", str(home.path), "--http", consoles[name],
                 "--settable-clock"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
        asyncio.run(_script(stations, days=days, consoles=consoles))
        e, n = stations["EUCOM"][0].path, stations["NDMC"][0].path
        console.print(styled(
            "\n", ("Duty consoles", "bold"), " (open in a browser; demo password ", ("demo-password-1", "bold"), "):"
        ))
        console.print(f"  EUCOM  http://{consoles['EUCOM']}/   log in as 'Duty Officer Miller'")
        console.print(f"  NDMC   http://{consoles['NDMC']}/   log in as 'Dezhurny Orlov'")
        rl = Path(sys.executable).parent / "redline"
        console.print("\nDrive either station from another terminal:", style="bold", soft_wrap=True)
        commands = (
            f"REDLINE_STATION={e} {rl} status",
            f"REDLINE_STATION={e} {rl} send NDMC 'Line test. Please answer.'",
            f"REDLINE_STATION={n} {rl} log EUCOM",
            f"REDLINE_STATION={n} {rl} verify",
        )
        for cmd in commands:
            console.print("  " + cmd, soft_wrap=True)
        if wait:
            # The print inside: a SIGTERM sent as soon as this line is read can land before pause().
            with contextlib.suppress(KeyboardInterrupt):
                console.print(styled("The two stations keep running. ", ("Ctrl-C", "bold"), " stops both cleanly."))
                signal.pause()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM does not cut the clean-up short
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp and os.environ.get("REDLINE_DEMO_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
            console.print(f"stations stopped; {tmp} removed (REDLINE_DEMO_KEEP=1 keeps it).")
        else:
            console.print("stations stopped.")


async def _script(
    stations: dict[str, tuple[StationDir, str, list[str]]], days: int | None, consoles: dict[str, str]
) -> None:
    eucom, ndmc = stations["EUCOM"][0].path, stations["NDMC"][0].path
    for home in (eucom, ndmc):
        await wait_for(lambda h=home: call(h, {"op": "status"}), f"station at {home} to start")
    status = await call(eucom, {"op": "status"})
    if status["lines"]:
        console.print("The stations are already paired; showing where they are.")
        await _show(eucom, ndmc, status["lines"][0]["line"])
        return
    for home in (eucom, ndmc):
        await call(home, {"op": "clock", "set_ms": scenario.ms("2022-03-01T06:00:00Z")})
    add_demo_users(eucom, ndmc)
    console.rule("1 March 2022: pairing (key ceremony)")
    invite = await call(eucom, {"op": "invite"})
    console.print(f"EUCOM issues a single-use token:\n  {invite['token'][:60]}…")
    paired = await call(ndmc, {"op": "pair", "token": invite["token"]})
    line = paired["line"]
    console.print(f"NDMC pairs with it. Line id {line[:8]}.")
    eucom_line = await wait_for(lambda: _line(eucom), "EUCOM to record the line")
    console.print(styled("  safety code at NDMC:  ", (paired["safety_code"], "bold")))
    console.print(styled("  safety code at EUCOM: ", (eucom_line["safety_code"], "bold")))
    console.print("The operators read the codes to each other by voice; they match, so both confirm.")
    await call(eucom, {"op": "confirm", "line": line, "code": eucom_line["safety_code"]})
    await call(ndmc, {"op": "confirm", "line": line, "code": paired["safety_code"]})
    await wait_for(lambda: _synced(eucom, ndmc), "the line to come up and sync")
    console.rule("1 March - 13 May 2022, compressed")
    await scenario.Replay(eucom, ndmc, line, lambda text: console.print(text)).run(days=days)
    await wait_for(lambda: _drained(eucom, ndmc), "every message to be receipted")
    await _voice_test(eucom, ndmc, line, consoles)
    await _show(eucom, ndmc, line)


async def _voice_test(eucom: Path, ndmc: Path, line: str, consoles: dict[str, str]) -> None:
    """One short voice line test between the two consoles' stations, made by two headless
    participants (``redline call join``): EUCOM files a TEST and rings naming it, NDMC picks up (the
    pick-up answers the test), each says two seconds of a tone made here, EUCOM hangs up."""
    from redline import participant  # PyAV and numpy load only for the call

    console.rule("A voice line test (two headless participants)")
    test = await call(eucom, {"op": "act", "line": line, "kind": "TEST", "priority": "priority",
                              "content": {"text": "Voice line test. Please pick up."}})  # fmt: skip
    test_id = test["id"]
    if not test_id:  # the line is in sync and drained here: a TEST is signed as it is accepted
        raise RedlineError("demo: the voice test's TEST was not signed at once")
    password = scenario.PASSWORD
    answer = participant.join(
        f"http://{consoles['NDMC']}/", line, "Dezhurny Orlov", password, ring=False,
        play=participant.tone(2.0, 440.0), record=ndmc / "voice-test-heard.wav", stay=10.0, timeout=20.0,
    )  # fmt: skip
    ring = participant.join(
        f"http://{consoles['EUCOM']}/", line, "Duty Officer Miller", password, ring=True,
        play=participant.tone(2.0, 1000.0), record=eucom / "voice-test-heard.wav", test_id=test_id, hang_up=True,
        timeout=20.0, say=lambda text: console.print(f"EUCOM: {text}"),
    )  # fmt: skip
    ru, eu = await asyncio.gather(answer, ring)
    console.print(f"EUCOM said 1000 Hz and heard {eu['heard']} packets; NDMC said 440 Hz and heard {ru['heard']}")

    async def filed() -> Any:
        views = [await call(h, {"op": "view", "line": line, "what": "voice"}) for h in (eucom, ndmc)]
        calls = [v["calls"][-1] for v in views]
        return calls if all(c["id"] == eu["call"] and c["audio"]["evidence"] for c in calls) else None

    calls = await wait_for(filed, "both stations' CALL_AUDIO")
    ours = calls[0]
    tests: LineTestsView = await scenario.read_view(eucom, line, "tests")
    verdict = next((t for t in tests.tests if t.id == test_id), None)
    console.print(
        f"Voice test {test_id[:8]}: {verdict.result if verdict else '?'}"
        + (f", answered by {verdict.answered_by} (the pick-up, signed by that person)" if verdict else "")
        + f"; audio evidence at both stations: {', '.join(c['audio']['evidence'] for c in calls)} "
        f"({ours['audio']['ours']['sent']['packets']} packets each way); recordings in "
        f"{eucom / 'recordings'} and {ndmc / 'recordings'}"
    )


async def _show(eucom: Path, ndmc: Path, line: str) -> None:
    console.rule("What the record shows")
    tests: LineTestsView = await scenario.read_view(eucom, line, "tests")
    med = tests.answer_ms_median
    console.print(
        f"Line tests sent by EUCOM: {tests.sent}, passed {tests.passed}, missed {tests.missed}; "
        f"answer time median {med / 1000 if med else 0:.0f} s, worst {(tests.answer_ms_worst or 0) / 1000:.0f} s"
    )
    pairs: tuple[CallPairView, ...] = await scenario.read_view(eucom, line, "calls")
    for pair in pairs:
        reqs = ", ".join(str(v) for v in pair.requests.values())
        console.print(
            f"{' <-> '.join(pair.principals)}: requests {reqs} (EUCOM, NDMC); unanswered {pair.unanswered}, "
            f"declined {pair.declined}, accepted {pair.accepted}"
        )
        for c in pair.calls:
            gap = f" (first in {c.days_since_previous} days)" if c.days_since_previous is not None else ""
            console.print(f"  call {scenario.iso(c.start or 0)}{gap}")
            for side, ro in sorted(c.readouts.items()):
                console.print(f"    {side} readout ({ro.lang}, {ro.by}): {ro.text}")
    for name, home in (("EUCOM", eucom), ("NDMC", ndmc)):
        notices: NoticesPage = await scenario.read_view(home, line, "notices")
        for k in notices.conflicts:
            console.print(styled(
                ("NOTICE CONFLICT", "bold red"),
                f" seen at {name}: {k.distance_m} m apart (margin {k.margin_m} m), "
                f"{scenario.iso(k.time_overlap[0])} to {scenario.iso(k.time_overlap[1])}, "
                f"{k.band_overlap[0]}-{k.band_overlap[1]} m"
            ))
    flashes: tuple[FlashView, ...] = await scenario.read_view(eucom, line, "flash")
    for f in flashes:
        console.print(f"FLASH seq {f.seq}: {f.state}" + (f" by {f.acked_by}" if f.acked_by else ""))
    for name, home in (("EUCOM", eucom), ("NDMC", ndmc)):
        st = await call(home, {"op": "status"})
        ln = st["lines"][0]
        paths = ", ".join(f"{p} {'up' if v['up'] else 'down'}" for p, v in sorted(ln["paths"].items()))
        console.print(styled(
            (name, "bold"), f": line {ln['line'][:8]} with {ln['peer']} "
            f"{'in sync' if ln['synced'] else 'NOT in sync'}; ours seq {ln['our_seq']}, theirs seq {ln['their_seq']}, "
            f"outbox {ln['outbox']}, unreceipted {ln['unreceipted']}; paths: {paths}"
        ))


async def _line(home: Path) -> dict[str, Any] | None:
    st = await call(home, {"op": "status"})
    return st["lines"][0] if st["lines"] else None


async def _synced(*homes: Path) -> bool:
    for home in homes:
        ln = await _line(home)
        if not ln or not ln["synced"] or not ln["active"]:
            return False
    return True


async def _drained(*homes: Path) -> bool:
    for home in homes:
        ln = await _line(home)
        if not ln or ln["outbox"] or ln["unreceipted"]:
            return False
    return True
