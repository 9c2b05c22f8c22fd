"""Running a station and its line: init, serve, invite/pair/confirm, send, flash, status, demo.

Commands that change a running station talk to it through its control socket (``control.sock``,
mode 0600 in a 0700 directory: only its owner)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from redline.cli.common import console, control, emit, err, fail, json_option, main, run, station_option, when
from redline.display import columns, shown, styled
from redline.home import LOCK_FILE, StationDir, station_path

if TYPE_CHECKING:
    from redline.home import StationKeys


def raise_open_files_limit() -> None:
    """Raise this process's soft limit of open files to its hard limit (at most 65,536).

    systemd and most shells start a service at a soft limit of 1024 whatever the hard one is; the
    station's lines, store, recordings and its HTTP listeners (api.max_connections each) share it.
    Only the soft limit moves (no privilege needed), and asyncio waits with epoll, not select(), so
    descriptors above 1024 are safe. Left as it is if it cannot be changed."""
    import contextlib
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# Objects allocated (net of those freed) before the young generation is collected: 7x Python's 700.
COLLECT_YOUNG_AFTER = 5000


def settle_collector() -> None:
    """Once the station has started: keep the cyclic garbage collector off what start-up built.

    What start-up builds (the ledger's Merkle trees, the ops engine's replay, the modules) lives as
    long as the station, yet every full collection walked all of it: 40-100 ms with the event loop
    stopped, at any moment, under load; and each young collection at Python's default threshold
    (700) took 100-180 us (gc.callbacks in both stations over bench.line_bench; BENCHMARKS.md).
    ``gc.freeze`` moves what is alive now into a generation no collection walks, and the young
    generation is collected less often. Nearly everything a station makes later is freed by
    reference counting; the cycles it does make (asyncio's futures, exceptions) are still
    collected. Called again after a standby takes over: what it built then is frozen as well."""
    import gc

    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(COLLECT_YOUNG_AFTER, middle, old)


def _undo_made(path: Path, made: bool) -> None:
    """A refused init leaves no folder it made (only the hold's lock file can be in it)."""
    if made and not StationDir(path).exists():
        with contextlib.suppress(OSError):
            (path / LOCK_FILE).unlink()
            path.rmdir()  # not empty (a concurrent init's files): left as it is


@main.command()
@station_option
@click.option("--name", required=True, help="Station name, e.g. EUCOM.")
@click.option("--lang", required=True, help="Language the station writes in, e.g. en or ru.")
@click.option("--listen", multiple=True, required=True, help="HOST:PORT to listen on; repeat for more paths.")
@click.option("--advertise", multiple=True, help="HOST:PORT the peer should dial, if not the --listen ones.")
@click.option(
    "--store", default="", metavar="URL",
    help="postgresql://USER@HOST:PORT/DB to keep the ledger in PostgreSQL (no password: PGPASSFILE or ~/.pgpass).",
)  # fmt: skip
@json_option
def init(
    station: str | None, name: str, lang: str, listen: tuple[str, ...], advertise: tuple[str, ...], store: str,
    as_json: bool,
) -> None:
    """Create a station: root, signing and TLS keys, config and an empty store."""
    home = StationDir(station_path(station))

    def make() -> StationKeys:
        # The folder's hold (as serve and store migrate take it) for the whole init: two inits of
        # one folder at once (a provisioning script run twice) interleaved their files into a
        # station whose certificates were not its root's. The second is refused in one line.
        made = not home.path.exists()
        home.path.mkdir(parents=True, exist_ok=True, mode=0o700)  # the hold's lock file lives in it
        if made:  # its entry in the parent, durable as init makes everything (a parent we can't read: skip)
            with contextlib.suppress(OSError):
                fd = os.open(home.path.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        try:
            hold = home.hold("init")
        except BaseException:
            _undo_made(home.path, made)
            raise
        try:
            return home.init(name=name, lang=lang, listen=list(listen), advertise=list(advertise), store=store)
        except BaseException:
            _undo_made(home.path, made)
            raise
        finally:
            hold.release()

    keys = run(make)
    data = {"station": str(home.path), "name": name, "fingerprint": keys.fingerprint, "listen": list(listen)}

    def human(d: dict[str, Any]) -> None:
        console.print(styled("Station ", (name, "bold"), f" created in {home.path}"))
        console.print(styled("Root fingerprint: ", (d["fingerprint"], "bold")))
        console.print(f"Root key: {home.keys / 'root.key'} — move it to offline storage; it is needed for key rotation "
                      "and revocation, root rotation, and adding, rotating or removing people (not for pairing).",
                      soft_wrap=True)  # fmt: skip

    emit(as_json, data, human)

@main.command()
@station_option
@click.option("-v", "--verbose", is_flag=True, help="Log every path event.")
@click.option(
    "--log-format", type=click.Choice(["human", "json"]), default="human",
    help="human (default), or json: one JSON object per line (line id, event, level, fields; never message bodies).",
)  # fmt: skip
@click.option(
    "--metrics", "metrics_addr", default=None, metavar="HOST:PORT",
    help="Also serve /metrics (Prometheus), /health and /ready here, without login, and nothing else.",
)  # fmt: skip
@click.option(
    "--http", "http_addr", default=None, metavar="HOST:PORT",
    help="Also serve the duty console and HTTP API (docs/API.md) here: plain HTTP, so loopback or behind a TLS proxy.",
)  # fmt: skip
@click.option(
    "--settable-clock", is_flag=True, hidden=True,
    help="Demo and test stations only: let the control operation 'clock' move this station's clock.",
)  # fmt: skip
@click.option(
    "--clock-start", "clock_start", type=click.IntRange(min=0), default=None, hidden=True, metavar="MS",
    help="With --settable-clock: start the clock at this wall time (ms since 1970), not now (a replayed day "
         "must not see today's line-test slot fall due before its clock is set).",
)  # fmt: skip
def serve(
    station: str | None, verbose: bool, log_format: str, metrics_addr: str | None,
    http_addr: str | None, settable_clock: bool, clock_start: int | None,
) -> None:  # fmt: skip
    """Run the station: listen, dial the paired peers, keep the lines in sync."""
    # The station (and numpy, shapely, the ledger) loads here, not when any command is run.
    import asyncio
    import signal

    from redline.clock import SettableClock
    from redline.logs import configure as configure_logs
    from redline.station import Station

    configure_logs(log_format, verbose=verbose)  # human lines (SafeFormatter), or JSON (redline/logs.py)
    raise_open_files_limit()
    json_log = log_format == "json"
    console.quiet = json_log  # then the log is the only output, and every alarm is in it
    home = StationDir(station_path(station))

    async def main_() -> None:
        # One process serves a folder (StationDir.hold), from here on: a standby waiting for the
        # lease too, so that a second 'serve' of a folder on PostgreSQL cannot take its control socket.
        home.require()
        held = home.hold("redline serve")
        try:
            await serve_folder()
        finally:
            held.release()

    async def serve_folder() -> None:
        # A station on PostgreSQL is one process of an HA pair (redline/standby.py): it runs while
        # it holds the store's lease, and waits as the standby before and after.
        pair = None
        if home.config().store:
            from redline.standby import Pair

            pair = Pair(home)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        while True:
            if pair is not None:
                console.print(f"Standby: waiting for the lease of the store {pair.view().store} ({pair.holder})")
                if not await pair.wait_active(stopping, monitor=standby_monitor(pair) if metrics_addr else None):
                    return
            await run_station(pair, stopping)
            if pair is None or pair.role != "deposed" or stopping.is_set():
                return

    def standby_monitor(pair: Any) -> Callable[[], Awaitable[Any]]:
        async def start() -> Any:
            from redline.api import HttpServer

            assert metrics_addr is not None
            server = await HttpServer.start_standby(pair, metrics_addr)
            where = (f"http://{server.addr}/metrics", "bold")
            console.print(styled("Standby's health, readiness and HA metrics on ", where))
            return server

        return start

    async def run_station(pair: Any, stopping: asyncio.Event) -> None:
        st = Station(
            home, on_alarm=None if json_log else lambda line, level, text: err.print(f"[{level}] {line[:8]} {text}"),
            clock=SettableClock(clock_start) if settable_clock else None, ha=pair,
        )  # fmt: skip
        stopper = asyncio.ensure_future(stopping.wait())
        stopper.add_done_callback(lambda _: st.stop())
        http = monitor = None
        try:
            await st.start()
            where = ", ".join(st.config.listen)
            console.print(styled("Station ", (st.config.name, "bold"), f" serving on {where} (Ctrl-C stops)"))
            if http_addr:
                from redline.api import HttpServer  # the API's dependencies load only when asked for

                # uvicorn in this same event loop: the API works on the running station, one writer
                http = await HttpServer.start(st, http_addr)
                console.print(styled("Duty console and API on ", (f"http://{http.addr}/", "bold")))
            if metrics_addr:
                from redline.api import HttpServer

                if pair is not None and pair.monitor_closed is not None:  # the standby's, on the same address
                    await pair.monitor_closed
                monitor = await HttpServer.start(st, metrics_addr, monitoring_only=True)
                console.print(styled("Metrics, health and readiness on ", (f"http://{monitor.addr}/metrics", "bold")))
            settle_collector()
            await st.wait_stopped()
        finally:
            stopper.cancel()
            if monitor is not None:
                await monitor.stop()
            if http is not None:
                await http.stop()
            await st.close()

    run(lambda: asyncio.run(main_()))


@main.command()
@station_option
@json_option
def invite(station: str | None, as_json: bool) -> None:
    """Print a single-use, expiring pairing token for the other station."""
    data = control(station, {"op": "invite"})
    emit(as_json, data, lambda d: console.print(
        f"Give this token to the other station's operator (expires {when(d['expires'])}):\n\n{d['token']}\n\n"
        "They run: redline pair (and paste it at the prompt)", soft_wrap=True))  # fmt: skip

def token_in(text: str) -> str:
    """The pairing token in ``text``: the one word that starts like a token, so the whole of what
    'redline invite' printed (its instructions around the token) can be saved and given to pair.
    No such word: the text as it is (the station says why it is no token); two different: refused."""
    from redline.pairing import TOKEN_PREFIX

    found = {w for w in text.split() if w.startswith(TOKEN_PREFIX)}
    if len(found) > 1:
        fail(f"this holds {len(found)} different pairing tokens: keep only the one the other station gave you")
    return found.pop() if found else text.strip()


@main.command()
@station_option
@click.argument("token", required=False, metavar="")
@click.option("--token-file", type=click.File("r"), default=None, help="Read the token from this file ('-': stdin).")
@json_option
def pair(station: str | None, token: str | None, token_file: Any, as_json: bool) -> None:
    """Pair with the station that issued a token; prints the safety code to compare by voice.

    The token is a secret: it is read from --token-file, from standard input when that is not a
    terminal, or else asked for at a prompt that does not echo. Never from the command line, where
    ps and the shell history would show it. The text may hold more than the token (what 'redline
    invite > FILE' wrote): the one word starting rl1- is the token."""
    if token is not None:
        fail("do not put the pairing token on the command line (ps and the shell history show it): run "
             "'redline pair' and paste it at the prompt, or 'redline pair --token-file FILE'")  # fmt: skip
    if token_file is not None:
        text = token_file.read()
    elif not sys.stdin.isatty():
        text = sys.stdin.read()
    else:
        text = click.prompt("Pairing token", hide_input=True)
    data = control(station, {"op": "pair", "token": token_in(text)})
    emit(as_json, data, lambda d: console.print(styled(
        "Paired with ", (d["peer"], "bold"), f" on line {d['line'][:8]}.\nSafety code: ", (d["safety_code"], "bold"),
        f"\nCompare it with the other operator by voice, then run: redline confirm {d['line'][:8]} CODE")))  # fmt: skip

@main.command()
@station_option
@click.argument("line")
@click.argument("code")
@json_option
def confirm(station: str | None, line: str, code: str, as_json: bool) -> None:
    """Confirm LINE's safety CODE after comparing it by voice."""
    data = control(station, {"op": "confirm", "line": line, "code": code})
    emit(as_json, data, lambda d: console.print(
        "Confirmed here. " + ("The other side has confirmed too: the line is open." if d["confirmed_peer"]
                              else "Waiting for the other operator to confirm; no traffic until then.")))  # fmt: skip

def _send(station: str | None, line: str, text: str, priority: str, kind: str, idem: str | None, as_json: bool) -> None:
    request = {"op": "send", "line": line, "text": text, "priority": priority, "kind": kind, "idem": idem}
    data = control(station, request)

    def human(d: dict[str, Any]) -> None:
        if d["id"]:
            console.print(f"accepted: seq {d['seq']}, id {d['id']}")
        else:
            console.print(f"accepted as outbox #{d['outbox']}: {d['state']}")

    emit(as_json, data, human)

@main.command()
@station_option
@click.argument("line")
@click.argument("text")
@click.option("--priority", type=click.Choice(["routine", "priority", "flash"]), default="routine")
@click.option("--idempotency-key", "idem", default=None, help="Retrying with the same key never sends twice.")
@json_option
def send(station: str | None, line: str, text: str, priority: str, idem: str | None, as_json: bool) -> None:
    """Send TEXT on LINE; returns once it is durable (and prints its envelope id)."""
    _send(station, line, text, priority, "FLASH" if priority == "flash" else "TEXT", idem, as_json)

@main.command()
@station_option
@click.argument("line")
@click.argument("text")
@click.option("--idempotency-key", "idem", default=None)
@json_option
def flash(station: str | None, line: str, text: str, idem: str | None, as_json: bool) -> None:
    """Send a FLASH message on LINE."""
    _send(station, line, text, "flash", "FLASH", idem, as_json)

@main.command()
@station_option
@json_option
@click.option(
    "--exit-code", is_flag=True,
    help="Exit 0 when every line is in sync, 2 when one is not (or none is paired); 1: the station does not answer; "
    "3: this process is the healthy standby of an HA pair (another process is active, the database answers).",
)  # fmt: skip
def status(station: str | None, as_json: bool, exit_code: bool) -> None:
    """Lines, paths (up/down, round trip, last heard), skew, outbox and unreceipted counts."""
    from redline.status import StationStatus

    data = control(station, {"op": "status"})
    held = run(lambda: StationStatus.from_obj(data))  # the station's own typed status, back from its JSON

    def human(d: dict[str, Any]) -> None:
        where = ", ".join(held.listen)
        console.print(styled("Station ", (held.station, "bold"), f" {held.fingerprint[:16]}  listening on {where}"))
        if held.ha is not None:  # one process of an HA pair on PostgreSQL
            ha = held.ha
            role = {"active": ("ACTIVE", "green"), "standby": ("STANDBY", "yellow")}.get(ha.role, ("DEPOSED", "red"))
            active = f"{ha.active_holder} at {ha.active_address}" if ha.active_holder else "none (lease lapsed)"
            console.print(styled("This process: ", role, f" ({ha.holder}); lease term {ha.term} since {ha.since}"))
            console.print(f"Active process: {active}; database: {ha.database} ({ha.store})")
            if ha.role != "active":
                console.print("This process serves no line: the active process does (ask it for the lines' state).")
        for ln in held.lines:
            here, peer = ("yes" if ln.confirmed_local else "no"), ("yes" if ln.confirmed_peer else "no")
            state: str | tuple[str, str] = (("IN SYNC", "green") if ln.synced else ("NOT IN SYNC", "red")) if (
                ln.active
            ) else f"WAITING FOR SAFETY-CODE CONFIRMATION (here: {here}, peer: {peer})"
            if ln.halted:
                state = ("HALTED: EQUIVOCATION", "bold red")
            console.print(styled(f"\nLine {ln.line[:8]} with ", (ln.peer, "bold"), ": ", state))
            console.print(
                f"  ours: seq {ln.our_seq}  theirs: seq {ln.their_seq}  outbox: {ln.outbox}  "
                f"unreceipted: {ln.unreceipted}"
            )
            for run_ in ln.revoked:  # PROTOCOL.md 5.9 REVOKE: kept in the record, never to be acted on
                console.print(f"  REVOKED: {run_}", style="bold red")
            if ln.root_code is not None:
                console.print(f"  ROOT ROTATION: {ln.peer} names a new root, NOT trusted until you compare the new "
                              f"safety code {ln.root_code} by voice and type it: redline keys confirm-root --line "
                              f"{ln.line[:8]} CODE", style="bold yellow")  # fmt: skip
            if ln.outbox and not ln.synced:
                waiting = f"  {ln.outbox} message(s) wait in the outbox: no path to the peer is up"
                console.print(waiting, style="yellow")
            # A down path's reason is cut: a long one would push every column right (the text is in the log)
            down = {name: " " + shown(p.reason, 60, newlines=False) for name, p in ln.paths.items()}
            paths = [
                (name, styled(("up", "green")) if p.up else styled(("down", "red"), down[name]),
                 f"{p.rtt_ms:.2f} ms" if p.rtt_ms is not None else "-",
                 f"{p.skew_ms:+.0f} ms" if p.skew_ms is not None else "-", when(p.last_rx))
                for name, p in sorted(ln.paths.items())
            ]  # fmt: skip
            console.print(columns(console, ("path", "state", "round trip", "skew", "last heard"), paths, indent=2),
                          soft_wrap=True)  # fmt: skip
            waiting_flashes(station, ln.line)
        for a in held.alarms[-5:]:
            console.print(f"[{a['level']}] {when(a['time'])} {a['text']}")

    emit(as_json, data, human)
    if exit_code:
        ha = held.ha
        if ha is not None and ha.role == "standby":  # not 'no lines': a standby serves none by design
            healthy = bool(ha.active_holder) and not ha.database.startswith("unreachable")
            sys.exit(3 if healthy else 2)
        lines = held.lines
        sys.exit(0 if lines and all(ln.active and ln.synced and not ln.halted for ln in lines) else 2)


FLASHES_LISTED = 5  # waiting FLASHes status names one by one; past these it says how many more


def waiting_flashes(station: str | None, line: str) -> None:
    """Each FLASH of the peer still owed an ACK here, on its own line with its seq, id, age and the
    command that acknowledges it: one alarm line for two of them had an officer acknowledge "the
    FLASH" and leave the other to escalate. The view's JSON as it comes (status loads no read views)."""
    import time

    from redline.control_client import call_blocking
    from redline.display import awaits_ack, line_word, short_id
    from redline.errors import ControlError

    try:  # unacknowledged first (ops/flash.py): a page this long holds every waiting one a station keeps
        page = call_blocking(station_path(station), {"op": "view", "line": line, "what": "flash", "limit": 500})
    except ControlError as exc:  # the status above stands; say what could not be listed
        console.print(f"  (waiting FLASH messages not listed: {exc}; 'redline flashes {line_word(line)}')",
                      style="yellow", soft_wrap=True)  # fmt: skip
        return
    waiting = [f for f in page if awaits_ack(f["ours"], f["acked_by"], f["state"])]
    now = int(time.time() * 1000)
    for f in waiting[:FLASHES_LISTED]:
        age = max(0, now - int(f["accepted_at"])) // 1000
        console.print(styled(("  FLASH WAITING", "bold red"), (
            f" seq {f['seq']} id {short_id(f['id'])}, {age} s old, {f['state']} (deadline {when(f['deadline'])}): "
            f"redline ack {line_word(line)} {short_id(f['id'])} --user NAME"
        )), soft_wrap=True)  # fmt: skip
    if len(waiting) > FLASHES_LISTED:
        console.print(f"  and {len(waiting) - FLASHES_LISTED} more FLASH waiting: redline flashes {line_word(line)}",
                      style="bold red", soft_wrap=True)  # fmt: skip


@main.command()
@click.option("--dir", "workdir", default=None, help="Where to put the two demo stations (default: a temp dir).")
@click.option("--no-wait", is_flag=True, help="Exit after the scripted exchange instead of waiting for Ctrl-C.")
@click.option("--days", type=click.IntRange(1, 36_500), default=None, help="Replay only the first N days (quick look).")
def demo(workdir: str | None, no_wait: bool, days: int | None) -> None:
    """Two stations, EUCOM and NDMC, on this machine: paired, confirmed, replaying 1 March - 13 May 2022."""
    from redline.demo import run_demo

    run(lambda: run_demo(Path(workdir) if workdir else None, wait=not no_wait, days=days))
