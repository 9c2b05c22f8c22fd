"""What every ``redline`` command shares: the consoles (untrusted text is data), the options, one
line for any error, JSON or human output, the control-socket call, and the command group."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from redline.control import call
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


def control(station: str | None, request: dict[str, Any]) -> Any:
    return run(lambda: asyncio.run(call(station_path(station), request)))
