"""What every ``redline`` command shares: the consoles (untrusted text is data), the options, one
line for any error, JSON or human output, the control-socket call, and the command group."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import click

from redline import __version__
from redline.display import SafeConsole, json_text, styled
from redline.errors import RedlineError
from redline.home import station_path

# Every string printed is data (message text, names, reasons): no markup, control codes escaped.
console = SafeConsole()
err = SafeConsole(stderr=True)

station_option = click.option(
    "--station", "station", envvar="REDLINE_STATION", default=None,
    help="Station directory (default: $REDLINE_STATION, else ./station).",
)  # fmt: skip
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
# A page of a long view (a station pages every view: what waits for a person first, then the
# newest); 500 is the station's largest page (ops.engine.NOTICES_PAGE_MAX, not imported: shapely).
offset_option = click.option("--offset", type=click.IntRange(0, 10**9), default=0,
                             help="Skip this many items: the next page.")  # fmt: skip
limit_option = click.option("--limit", type=click.IntRange(1, 500), default=100, help="Items per page.")

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
    except Exception as exc:
        # Damage found while reading (not by the checks at open): one line. sqlite3 is looked up, not
        # imported (a command that never loaded it, such as status, cannot have raised its error).
        sqlite3 = sys.modules.get("sqlite3")
        if sqlite3 is None or not isinstance(exc, sqlite3.Error):
            raise
        fail(f"the store could not be read ({exc}): it may be damaged; 'redline doctor' says what to do")

def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"

def emit(as_json: bool, data: Any, human: Callable[[Any], None]) -> None:
    """``data`` for a person (``human``) or, with --json, as JSON: a typed view in the same JSON the
    API answers (``readmodel.to_obj``)."""
    if as_json:
        from redline.readmodel import to_obj

        click.echo(json_text(to_obj(data)))
    else:
        human(data)

# The module of each command: 'redline status' imports redline.cli.station and what status uses,
# not the station itself, the API, numpy or shapely; 'redline --version' imports none of them. A
# command missing here is still found (every module is loaded then); tests/test_cli_start.py
# checks the table against the commands.
COMMAND_MODULES = {
    **dict.fromkeys(["init", "serve", "invite", "pair", "confirm", "send", "flash", "status", "demo"], "station"),
    **dict.fromkeys(["log", "verify", "export"], "record"),
    **dict.fromkeys(
        ["user", "test", "tests", "answer", "ack", "flashes", "call", "calls", "readout", "show", "translate", "notice",
         "notices", "withdraw"],
        "ops",
    ),
    **dict.fromkeys(["backup", "restore", "doctor"], "admin"),
    "keys": "keys",
    "store": "store",
}

# What 'redline --help' lists for each command: the first paragraph of its help, which click shortens
# to the width (so --help loads no command module; loading them all took 0.7 s). A command missing
# here is still listed (its module is loaded for it); tests/test_cli_start.py holds each entry to
# the command's own help and the whole --help to what click prints with every module loaded.
COMMAND_HELP = {
    "ack": "Acknowledge the peer's FLASH message FLASH_ID (id prefix) as a named person.",
    "answer": "Answer the peer's line test (the oldest unanswered one, unless TEST_ID is given).",
    "backup": (
        "Back up the station into DEST (new or empty): a consistent copy of the store taken by the running "
        "station, config, public keys, users, and the secret keys sealed or left out; then verified as "
        "'redline verify' would."
    ),
    "call": "Call requests, replies and call records.",
    "calls": "Per pair of principals: requests, declines, unanswered, days since the last call; readouts side by side.",
    "confirm": "Confirm LINE's safety CODE after comparing it by voice.",
    "demo": "Two stations, EUCOM and NDMC, on this machine: paired, confirmed, replaying 1 March - 13 May 2022.",
    "doctor": (
        "Check what an engineer checks at 3 a.m.: key modes, the station running, lines and paths, clock "
        "skew, disk against budgets, the store's integrity, certificate expiry, the line's last proof, "
        "checkpoints, the latest backup. Exit 0 all ok, 1 a warning, 2 something critical."
    ),
    "export": "Write LINE's transcript as a bundle anyone can verify without either station (docs/BUNDLE.md).",
    "flash": "Send a FLASH message on LINE.",
    "flashes": "FLASH messages both ways: receipted, read, escalated, acknowledged by whom and when.",
    "init": "Create a station: root, signing and TLS keys, config and an empty store.",
    "invite": "Print a single-use, expiring pairing token for the other station.",
    "keys": "The station's online keys: rotate the signing key under the root, or revoke it.",
    "log": "Both sides of LINE's transcript, oldest first, with receipt state (from the station, or its store).",
    "notice": "File a deconfliction notice: checked in full, then against every active notice of both sides.",
    "notices": "Active notices of both sides, and every conflicting pair with where and when they overlap.",
    "pair": "Pair with the station that issued a token; prints the safety code to compare by voice.",
    "readout": "File this side's readout of call CALL_ID, in this station's language.",
    "restore": (
        "Restore the backup in SOURCE into a new or empty station directory (--station). The restored station"
        " signs nothing until its peer has said how much of both chains it holds, and fetches and verifies "
        "what the backup lacks first: no seq is ever reused."
    ),
    "send": "Send TEXT on LINE; returns once it is durable (and prints its envelope id).",
    "serve": "Run the station: listen, dial the paired peers, keep the lines in sync.",
    "show": "Show message REF with its translations; with --user, record that the person read it.",
    "status": "Lines, paths (up/down, round trip, last heard), skew, outbox and unreceipted counts.",
    "store": "Where the station's ledger lives (SQLite file or PostgreSQL database).",
    "test": "Send a line test now; a person at the peer must answer it.",
    "tests": "Line test history: passed, answer times, time since the line was last proven.",
    "translate": "Attach a translation of message REF; the original stays authoritative.",
    "user": "People on this station's roster: each signs for themselves.",
    "verify": "Verify every line: signatures, chains, seqs, seen-links, Merkle heads, checkpoints, keys.",
    "withdraw": "Withdraw our notice NOTICE_ID (id prefix).",
}


class LazyGroup(click.Group):
    """The ``redline`` group: a command's module is imported when that command runs, so a command
    starts with only what it uses; ``commands`` loads them all, --help none (``COMMAND_HELP``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held: MutableMapping[str, click.Command] = {}
        self._loaded: set[str] = set()
        self._listing = False
        super().__init__(*args, **kwargs)

    @property
    def commands(self) -> MutableMapping[str, click.Command]:
        for module in dict.fromkeys(COMMAND_MODULES.values()):
            self._load(module)
        return self._held

    @commands.setter
    def commands(self, value: MutableMapping[str, click.Command]) -> None:
        self._held = value

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name is None:
            raise TypeError("Command has no name.")
        self._held[name] = cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_MODULES) | set(self._held))  # the names, without loading a module

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True  # click's own listing, of stand-ins for the commands not loaded
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if self._listing and cmd_name not in self._held and cmd_name in COMMAND_HELP:
            return click.Command(cmd_name, help=COMMAND_HELP[cmd_name])  # what --help shows of it
        if cmd_name not in self._held and cmd_name in COMMAND_MODULES:
            self._load(COMMAND_MODULES[cmd_name])
        return self._held.get(cmd_name) or self.commands.get(cmd_name)

    def _load(self, module: str) -> None:
        if module in self._loaded:
            return
        self._loaded.add(module)
        loaded = importlib.import_module(f"redline.cli.{module}")
        register = getattr(loaded, "register", None)
        if register is not None:
            register(self)


@click.group(cls=LazyGroup)
# The version as written in the package, not read from the installed metadata (importlib.metadata
# costs --version 15 ms); tests/test_cli_start.py holds it equal to pyproject.toml's.
@click.version_option(__version__, package_name="redline")
def main() -> None:
    """redline: a verified hotline between two stations that do not trust each other."""


def control(station: str | None, request: dict[str, Any]) -> Any:
    # control.call without asyncio (a fifth of a short command's run), imported here, not at the top:
    # each command loads only what it uses ('redline --version' little more than click).
    from redline.control_client import call_blocking

    return run(lambda: call_blocking(station_path(station), request))


def say_more(station: str | None, line: str, what: str, offset: int, limit: int, lists: dict[str, str]) -> None:
    """Under a page of the view ``what``: one line for each of its ``lists`` (key: words) that holds
    more past the page ("3 more FLASH messages; --offset 5 for the next page"). The station counts
    them (control ``pages``: ``views.page_counts``, as the API's Redline-Page header)."""
    counts = control(station, {"op": "pages", "line": line, "what": what, "offset": offset, "limit": limit})
    for name, words in lists.items():
        more = counts[name]["more"]
        if more:
            console.print(f"{more} more {words}; --offset {offset + limit} for the next page", style="yellow")


def read_view(station: str | None, line: str, what: str, **extra: Any) -> Any:
    """A running station's read view ``what`` of ``line``, as the typed view it built
    (``ops.views.VIEWS[what]``), so the CLI renders the same objects as the API and the console."""
    from redline.ops.views import VIEWS
    from redline.readmodel import from_obj

    obj = control(station, {"op": "view", "line": line, "what": what, **extra})
    return run(lambda: from_obj(obj, VIEWS[what], f"{what} view"))
