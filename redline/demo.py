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

from rich.console import Console

from redline.errors import RedlineError
from redline.home import StationDir
from redline.station import call

console = Console()

# What each side says, in its own language (SCENARIO.md, 13 May 2022).
SCRIPT: list[tuple[str, str, str]] = [
    ("EUCOM", "routine", "Line test 0800Z from EUCOM. Please answer to confirm the line."),
    ("NDMC", "routine", "НЦУО: проверка связи. Слышим вас хорошо."),
    ("EUCOM", "priority", "The Secretary requests a call with the Minister at the earliest opportunity."),
    ("NDMC", "priority", "Запрос получен. Министр готов к разговору сегодня в 11:00 по Москве."),
    ("EUCOM", "flash", "Notice: planned air activity near the border of a NATO state, 1200Z-1400Z. Please confirm."),
    ("NDMC", "routine", "Уведомление получено. Конфликтов с нашей деятельностью не выявлено."),
]


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


def run_demo(workdir: Path | None, *, wait: bool = True) -> None:
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="redline-demo-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    p = free_ports(4)
    stations = {
        "EUCOM": (StationDir(workdir / "eucom"), "en", [f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"]),
        "NDMC": (StationDir(workdir / "ndmc"), "ru", [f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"]),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, (home, lang, listen) in stations.items():
            if not home.exists():
                keys = home.init(name=name, lang=lang, listen=listen)
                console.print(f"[bold]{name}[/] created: root fingerprint {keys.fingerprint[:32]}…")
            log = open(home.path / "serve.log", "ab")  # noqa: SIM115 - lives as long as the process
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "redline", "serve", "--station", str(home.path)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
        asyncio.run(_script(stations))
        e, n = stations["EUCOM"][0].path, stations["NDMC"][0].path
        rl = Path(sys.executable).parent / "redline"
        console.print("\n[bold]Drive either station from another terminal:[/]", soft_wrap=True)
        commands = (
            f"REDLINE_STATION={e} {rl} status",
            f"REDLINE_STATION={e} {rl} send NDMC 'Line test. Please answer.'",
            f"REDLINE_STATION={n} {rl} log EUCOM",
            f"REDLINE_STATION={n} {rl} verify",
        )
        for cmd in commands:
            console.print("  " + cmd, soft_wrap=True, highlight=False)
        if wait:
            console.print("The two stations keep running. [bold]Ctrl-C[/] stops both cleanly.")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        console.print("stations stopped.")
        if tmp and os.environ.get("REDLINE_DEMO_KEEP") != "1" and not wait:
            shutil.rmtree(tmp, ignore_errors=True)


async def _script(stations: dict[str, tuple[StationDir, str, list[str]]]) -> None:
    eucom, ndmc = stations["EUCOM"][0].path, stations["NDMC"][0].path
    for home in (eucom, ndmc):
        await wait_for(lambda h=home: call(h, {"op": "status"}), f"station at {home} to start")
    status = await call(eucom, {"op": "status"})
    if not status["lines"]:
        console.rule("Pairing (key ceremony)")
        invite = await call(eucom, {"op": "invite"})
        console.print(f"EUCOM issues a single-use token:\n  {invite['token'][:60]}…")
        paired = await call(ndmc, {"op": "pair", "token": invite["token"]})
        line = paired["line"]
        console.print(f"NDMC pairs with it. Line id {line[:8]}.")
        eucom_line = await wait_for(
            lambda: _line(eucom), "EUCOM to record the line"
        )
        console.print(f"  safety code at NDMC:  [bold]{paired['safety_code']}[/]")
        console.print(f"  safety code at EUCOM: [bold]{eucom_line['safety_code']}[/]")
        console.print("The operators read the codes to each other by voice; they match, so both confirm.")
        await call(eucom, {"op": "confirm", "line": line, "code": eucom_line["safety_code"]})
        await call(ndmc, {"op": "confirm", "line": line, "code": paired["safety_code"]})
    record = await _line(eucom)
    assert record is not None
    line = record["line"]
    await wait_for(lambda: _synced(eucom, ndmc), "the line to come up and sync")
    console.rule("Traffic")
    homes = {"EUCOM": eucom, "NDMC": ndmc}
    for who, prio, text in SCRIPT:
        result = await call(homes[who], {"op": "send", "line": line, "text": text, "priority": prio,
                                         "kind": "FLASH" if prio == "flash" else "TEXT"})  # fmt: skip
        console.print(f"[bold]{who}[/] ({prio}) seq {result['seq']}: {text}")
    await wait_for(lambda: _drained(eucom, ndmc), "every message to be receipted")
    console.rule("Status")
    for name, home in homes.items():
        st = await call(home, {"op": "status"})
        ln = st["lines"][0]
        paths = ", ".join(
            f"{p} {'up' if v['up'] else 'down'}" + (f" rtt {v['rtt_ms']:.2f} ms" if v["rtt_ms"] is not None else "")
            for p, v in sorted(ln["paths"].items())
        )
        console.print(
            f"[bold]{name}[/]: line {ln['line'][:8]} with {ln['peer']} "
            f"{'in sync' if ln['synced'] else 'NOT in sync'}; ours seq {ln['our_seq']}, theirs seq {ln['their_seq']}, "
            f"outbox {ln['outbox']}, unreceipted {ln['unreceipted']}; paths: {paths}"
        )


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
