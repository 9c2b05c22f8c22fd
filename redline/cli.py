"""The ``redline`` command: thin, it builds the objects and prints (datasette's cli.py way).

Commands that change a running station (send, confirm, invite, pair, status) talk to it through
its control socket (``control.sock``, mode 0600 in a 0700 directory: only its owner). ``log`` and
``verify`` read the store directly, read-only, so they work with the station stopped too.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from redline import views
from redline.bundle import (
    BundleReport,
    build_bundle,
    export_checkpoint,
    parse_checkpoint,
    read_bundle,
    verify_bundle,
    write_bundle,
)
from redline.clock import SettableClock
from redline.control import call
from redline.display import SafeConsole, json_text, shown, styled
from redline.errors import RedlineError
from redline.home import StationDir, station_path
from redline.ledger.verify import LineReport, verify_line, workers_for
from redline.logs import configure as configure_logs
from redline.station import Station

# Every string printed is data (message text, names, reasons): no markup, control codes escaped.
console = SafeConsole()
err = SafeConsole(stderr=True)

station_option = click.option(
    "--station", "station", envvar="REDLINE_STATION", default=None,
    help="Station directory (default: $REDLINE_STATION, else ./station).",
)  # fmt: skip
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")

def fail(message: str) -> None:
    err.print(styled(("error:", "bold red"), f" {message}"), soft_wrap=True)  # one line, whatever the width
    sys.exit(1)

def run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except RedlineError as exc:
        fail(str(exc))
    except OSError as exc:  # a file or socket of ours: one line, never a traceback
        fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
    except sqlite3.Error as exc:  # damage found while reading (not by the checks at open): one line
        fail(f"the store could not be read ({exc}): it may be damaged; 'redline doctor' says what to do")

def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"

def emit(as_json: bool, data: Any, human: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json_text(data))
    else:
        human(data)

@click.group()
@click.version_option(package_name="redline")
def main() -> None:
    """redline: a verified hotline between two stations that do not trust each other."""

@main.command()
@station_option
@click.option("--name", required=True, help="Station name, e.g. EUCOM.")
@click.option("--lang", required=True, help="Language the station writes in, e.g. en or ru.")
@click.option("--listen", multiple=True, required=True, help="HOST:PORT to listen on; repeat for more paths.")
@click.option("--advertise", multiple=True, help="HOST:PORT the peer should dial, if not the --listen ones.")
@json_option
def init(
    station: str | None, name: str, lang: str, listen: tuple[str, ...], advertise: tuple[str, ...], as_json: bool
) -> None:
    """Create a station: root, signing and TLS keys, config and an empty store."""
    home = StationDir(station_path(station))
    keys = run(lambda: home.init(name=name, lang=lang, listen=list(listen), advertise=list(advertise)))
    data = {"station": str(home.path), "name": name, "fingerprint": keys.fingerprint, "listen": list(listen)}

    def human(d: dict[str, Any]) -> None:
        console.print(styled("Station ", (name, "bold"), f" created in {home.path}"))
        console.print(styled("Root fingerprint: ", (d["fingerprint"], "bold")))
        console.print(f"Root key: {home.keys / 'root.key'} — move it to offline storage; only key rotation needs it.")

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
def serve(
    station: str | None, verbose: bool, log_format: str, metrics_addr: str | None,
    http_addr: str | None, settable_clock: bool,
) -> None:  # fmt: skip
    """Run the station: listen, dial the paired peers, keep the lines in sync."""
    configure_logs(log_format, verbose=verbose)  # human lines (SafeFormatter), or JSON (redline/logs.py)
    json_log = log_format == "json"
    console.quiet = json_log  # then the log is the only output, and every alarm is in it
    home = StationDir(station_path(station))

    async def main_() -> None:
        st = Station(
            home, on_alarm=None if json_log else lambda line, level, text: err.print(f"[{level}] {line[:8]} {text}"),
            clock=SettableClock() if settable_clock else None,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, st.stop)
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

                monitor = await HttpServer.start(st, metrics_addr, monitoring_only=True)
                console.print(styled("Metrics, health and readiness on ", (f"http://{monitor.addr}/metrics", "bold")))
            await st.wait_stopped()
        finally:
            if monitor is not None:
                await monitor.stop()
            if http is not None:
                await http.stop()
            await st.close()

    run(lambda: asyncio.run(main_()))

def control(station: str | None, request: dict[str, Any]) -> Any:
    return run(lambda: asyncio.run(call(station_path(station), request)))

@main.command()
@station_option
@json_option
def invite(station: str | None, as_json: bool) -> None:
    """Print a single-use, expiring pairing token for the other station."""
    data = control(station, {"op": "invite"})
    emit(as_json, data, lambda d: console.print(
        f"Give this token to the other station's operator (expires {when(d['expires'])}):\n\n{d['token']}\n\n"
        "They run: redline pair (and paste it at the prompt)", soft_wrap=True))  # fmt: skip

@main.command()
@station_option
@click.argument("token", required=False, metavar="")
@click.option("--token-file", type=click.File("r"), default=None, help="Read the token from this file ('-': stdin).")
@json_option
def pair(station: str | None, token: str | None, token_file: Any, as_json: bool) -> None:
    """Pair with the station that issued a token; prints the safety code to compare by voice.

    The token is a secret: it is read from --token-file, from standard input when that is not a
    terminal, or else asked for at a prompt that does not echo. Never from the command line, where
    ps and the shell history would show it."""
    if token is not None:
        fail("do not put the pairing token on the command line (ps and the shell history show it): run "
             "'redline pair' and paste it at the prompt, or 'redline pair --token-file FILE'")  # fmt: skip
    if token_file is not None:
        text = token_file.read()
    elif not sys.stdin.isatty():
        text = sys.stdin.read()
    else:
        text = click.prompt("Pairing token", hide_input=True)
    data = control(station, {"op": "pair", "token": text.strip()})
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
    help="Exit 0 when every line is in sync, 2 when one is not (or none is paired); 1: the station does not answer.",
)  # fmt: skip
def status(station: str | None, as_json: bool, exit_code: bool) -> None:
    """Lines, paths (up/down, round trip, last heard), skew, outbox and unreceipted counts."""
    data = control(station, {"op": "status"})

    def human(d: dict[str, Any]) -> None:
        where = ", ".join(d["listen"])
        console.print(styled("Station ", (d["station"], "bold"), f" {d['fingerprint'][:16]}  listening on {where}"))
        for ln in d["lines"]:
            here, peer = (("yes" if ln["confirmed"][k] else "no") for k in ("local", "peer"))
            state: str | tuple[str, str] = (("IN SYNC", "green") if ln["synced"] else ("NOT IN SYNC", "red")) if (
                ln["active"]
            ) else f"WAITING FOR SAFETY-CODE CONFIRMATION (here: {here}, peer: {peer})"
            if ln["halted"]:
                state = ("HALTED: EQUIVOCATION", "bold red")
            console.print(styled(f"\nLine {ln['line'][:8]} with ", (ln["peer"], "bold"), ": ", state))
            console.print(
                f"  ours: seq {ln['our_seq']}  theirs: seq {ln['their_seq']}  outbox: {ln['outbox']}  "
                f"unreceipted: {ln['unreceipted']}"
            )
            if ln["outbox"] and not ln["synced"]:
                waiting = f"  {ln['outbox']} message(s) wait in the outbox: no path to the peer is up"
                console.print(waiting, style="yellow")
            table = Table("path", "state", "round trip", "skew", "last heard", box=None)
            for name, p in sorted(ln["paths"].items()):
                table.add_row(
                    name, styled(("up", "green")) if p["up"] else styled(("down", "red"), f" {p['reason']}"),
                    f"{p['rtt_ms']:.2f} ms" if p["rtt_ms"] is not None else "-",
                    f"{p['skew_ms']:+.0f} ms" if p["skew_ms"] is not None else "-", when(p["last_rx"]),
                )  # fmt: skip
            console.print(table)
        for a in d["alarms"][-5:]:
            console.print(f"[{a['level']}] {when(a['time'])} {a['text']}")

    emit(as_json, data, human)
    if exit_code:
        lines = data["lines"]
        sys.exit(0 if lines and all(ln["active"] and ln["synced"] and not ln["halted"] for ln in lines) else 2)

@main.command(name="log")
@station_option
@click.argument("line")
@click.option("--limit", default=50, help="Show the last N entries.")
@click.option("--all", "show_all", is_flag=True, help="Show every entry of both sides.")
@json_option
def log_(station: str | None, line: str, limit: int, show_all: bool, as_json: bool) -> None:
    """Both sides of LINE's transcript, oldest first, with receipt state (read from the store)."""
    home = StationDir(station_path(station))

    def collect() -> views.Transcript:
        ledger = home.read_ledger()  # a reader: SQLite only, read-only, one snapshot
        try:
            with ledger.snapshot():
                return views.transcript(ledger, ledger.find_line(line), limit=None if show_all else limit)
        finally:
            ledger.close()

    held: views.Transcript = run(collect)

    def human(d: dict[str, Any]) -> None:
        table = Table("time (UTC)", "from", "seq", "kind", "prio", "receipt", "text")
        for r in held.rows:
            table.add_row(
                when(r.sent_at), r.sender, str(r.seq), r.kind, r.priority, "✓ stored" if r.receipted else "pending",
                shown(r.text, 300),
            )  # fmt: skip
        for r in held.outbox:
            table.add_row("-", "us", "-", r.kind, r.priority, "in the outbox", shown(r.text, 300))
        console.print(table)
        if held.partial:
            console.print(f"{len(held.rows)} of {held.total} entries shown; --all for every entry; 'redline show "
                          "LINE ID' for one whole message", style="yellow")  # fmt: skip

    emit(as_json, held.to_obj(), human)

def _verify_bundle_file(path: Path, keys: tuple[str, ...], checkpoint: Path | None, as_json: bool) -> None:
    if len(keys) != 2:
        fail("give exactly the two stations' root fingerprints, from outside the bundle: --key FINGERPRINT "
             "--key FINGERPRINT")  # fmt: skip

    def check() -> BundleReport:
        bundle = read_bundle(path)
        other = parse_checkpoint(read_bundle(checkpoint)) if checkpoint is not None else None
        return verify_bundle(
            bundle, list(keys), other.signed if other else None, other_certs=other.certs if other else None
        )

    report: BundleReport = run(check)

    def human(d: dict[str, Any]) -> None:
        for s in d["summary"]:
            bad = s.startswith(("PROBLEM", "FAILED", "NOT VERIFIED"))
            console.print(s, style="bold red" if bad else ("green" if s.startswith("VERIFIED") else None))

    emit(as_json, report.to_obj(), human)
    if not report.ok:
        sys.exit(2)

@main.command()
@station_option
@click.option("--peer-fingerprint", default=None, help="Check the pinned peer root against this fingerprint.")
@click.option(
    "--bundle", "bundle_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Verify this bundle file (redline export) instead of the station's store; needs --key twice.",
)
@click.option(
    "--key", "keys", multiple=True, metavar="FINGERPRINT",
    help="With --bundle: a station's root fingerprint, from outside the bundle (64 hex digits, or the 32 read "
         "aloud at pairing). Give both stations'.",
)  # fmt: skip
@click.option(
    "--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="With --bundle: the other side's checkpoint file (redline export --checkpoint), to find a cut tail "
         "or a split view.",
)  # fmt: skip
@json_option
def verify(
    station: str | None, peer_fingerprint: str | None, bundle_path: Path | None, keys: tuple[str, ...],
    checkpoint_path: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Verify every line: signatures, chains, seqs, seen-links, Merkle heads, checkpoints, keys.

    With --bundle, verify an exported bundle instead, on any machine, against the stations'
    fingerprints given with --key; no station is needed.
    """
    if bundle_path is not None:
        _verify_bundle_file(bundle_path, keys, checkpoint_path, as_json)
        return
    if keys or checkpoint_path is not None:
        fail("--key and --checkpoint go with --bundle FILE")
    home = StationDir(station_path(station))

    def check() -> list[LineReport]:
        keys_root = bytes.fromhex((home.keys / "root.pub").read_text().strip()) if home.exists() else b""
        ledger = home.open_ledger()
        try:
            ledger.check_integrity()  # the full check, whatever the clean-close mark says
            reports = []
            for record in ledger.lines():
                if peer_fingerprint and record.peer != peer_fingerprint:
                    raise RedlineError(
                        f"line {record.line[:8]}: the pinned peer root {record.peer[:16]} is not the fingerprint "
                        f"given ({peer_fingerprint[:16]}): the store's pairing record was changed"
                    )
                roots = {ledger.station: keys_root, record.peer: bytes.fromhex(record.peer_root)}
                with ledger.stored_line(record.line, home.config().name) as held:  # streamed, not loaded
                    reports.append(verify_line(held, roots, workers=workers_for(held)))
            return reports
        finally:
            ledger.close()

    reports = run(check)
    data = [views.VerifyView.of(r).to_obj() for r in reports]

    def human(ds: list[dict[str, Any]]) -> None:
        for d in ds:
            mark = ("VERIFIED", "green") if d["ok"] else ("FAILED", "bold red")
            console.print(styled(f"Line {d['line'][:8]}: ", mark))
            console.print(f"  envelopes: {d['chains']}  co-signed prefix: {d['cosigned']}  "
                          f"one-sided tail: {d['one_sided_tail']}")  # fmt: skip
            console.print(f"  checkpoints: {d['checkpoints']}  receipts: {d['receipts']}")
            for p in d["problems"][:1]:
                console.print(styled("  ", ("first problem:", "bold red"), f" {p}"))
        if not ds:
            console.print("no lines to verify")

    emit(as_json, data, human)
    if any(not r.ok for r in reports):
        sys.exit(2)

@main.command()
@station_option
@click.argument("line")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="File to write (default: redline-LINE-STATION.bundle.json, or .checkpoint.json with --checkpoint).",
)
@click.option(
    "--redact", multiple=True, metavar="ID",
    help="Leave out this envelope's body (id, or 8+ hex digits of it); its salted hash stays signed. Repeatable.",
)
@click.option(
    "--checkpoint", "checkpoint_only", is_flag=True,
    help="Write only the last co-signed checkpoint: what a verifier checks the other side's bundle against.",
)
@json_option
def export(
    station: str | None, line: str, out: Path | None, redact: tuple[str, ...], checkpoint_only: bool, as_json: bool
) -> None:
    """Write LINE's transcript as a bundle anyone can verify without either station (docs/BUNDLE.md)."""
    home = StationDir(station_path(station))

    def make() -> dict[str, Any]:
        name = home.config().name
        our_root = bytes.fromhex((home.keys / "root.pub").read_text().strip())
        ledger = home.read_ledger()
        try:
            with ledger.snapshot():
                record = ledger.find_line(line)
                data = ledger.line_data(record.line, name)
                us = ledger.station
        finally:
            ledger.close()
        now = int(time.time() * 1000)
        kind = "checkpoint" if checkpoint_only else "bundle"
        path = out or Path(f"redline-{record.line[:8]}-{name}.{kind}.json")
        fingerprints = [us, record.peer]
        if checkpoint_only:
            obj = export_checkpoint(data, us, exported_at=now)
            write_bundle(path, obj)
            return {"path": str(path), "kind": kind, "line": record.line, "checkpoint": obj["n"],
                    "fingerprints": fingerprints, "summary": []}  # fmt: skip
        roots = {us: our_root, record.peer: bytes.fromhex(record.peer_root)}
        obj = build_bundle(data, roots, us, set(redact), exported_at=now)
        write_bundle(path, obj)
        report = verify_bundle(obj, fingerprints)  # what a third party will be shown, checked here first
        return {"path": str(path), "kind": kind, "line": record.line, "redacted": report.redacted,
                "fingerprints": fingerprints, "ok": report.ok, "summary": report.summary()}  # fmt: skip

    data = run(make)

    def human(d: dict[str, Any]) -> None:
        console.print(styled(f"Wrote {d['kind']} of line {d['line'][:8]} to ", (d["path"], "bold")))
        for s in d["summary"]:
            console.print(f"  {s}", style="bold red" if s.startswith("PROBLEM") else None)
        if d["kind"] == "bundle":
            keys = " ".join(f"--key {fp}" for fp in d["fingerprints"])
            console.print(
                "To check it anywhere, with both fingerprints obtained from outside the bundle:\n"
                f"  redline verify --bundle {d['path']} {keys}",
                soft_wrap=True,
            )

    emit(as_json, data, human)

@main.command()
@click.option("--dir", "workdir", default=None, help="Where to put the two demo stations (default: a temp dir).")
@click.option("--no-wait", is_flag=True, help="Exit after the scripted exchange instead of waiting for Ctrl-C.")
@click.option("--days", type=int, default=None, help="Replay only the first N days (quick look).")
def demo(workdir: str | None, no_wait: bool, days: int | None) -> None:
    """Two stations, EUCOM and NDMC, on this machine: paired, confirmed, replaying 1 March - 13 May 2022."""
    from redline.demo import run_demo

    run(lambda: run_demo(Path(workdir) if workdir else None, wait=not no_wait, days=days))


def _register_ops() -> None:
    from redline.cli_admin import register as register_admin
    from redline.cli_keys import register as register_keys
    from redline.cli_ops import register

    register(main)
    register_admin(main)
    register_keys(main)


_register_ops()
