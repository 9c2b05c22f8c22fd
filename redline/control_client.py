"""The control socket's client for the command line: ``control.call`` without an event loop.

``redline status`` or ``send`` is one request and one answer, and importing asyncio costs a fifth
of the command's whole run; so the CLI speaks the same protocol (one JSON object per line, in
and out, over the station's UNIX socket) through a plain blocking socket. Every failure is the
same one ``ControlError`` as ``control.call`` raises, with the same words, saying whether the
request may have been accepted (tests/test_cli_start.py holds the two to the same answers).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redline.errors import ControlError, ControlRefusedError, StationNotRunningError
from redline.home import StationDir

CONTROL_LIMIT = 16 * 1024 * 1024  # the longest line either side reads; message limits are checked after parsing


def call_blocking(home: Path, request: dict[str, Any], timeout: float = 30.0) -> Any:
    """Send one request to a running station's control socket and return its result."""
    path = StationDir(home).control_path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise not_running(home, exc) from exc
        maybe = maybe_accepted(home)
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            raise ControlError(maybe(why=f"connection lost while sending: {exc.strerror or exc}")) from exc
        line = _read_line(sock, timeout, maybe)
    finally:
        sock.close()
    return result_of(line, maybe)


def station_answers(home: Path) -> bool:
    """Whether a station process listens on ``home``'s control socket (it connects, sends nothing)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(StationDir(home).control_path))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def not_running(home: Path, exc: OSError) -> StationNotRunningError:
    """Nothing was sent: no station answers on the socket (both clients)."""
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return StationNotRunningError(
            f"no running station at {home} (no control socket); start it with 'redline serve --station {home}'"
        )
    return StationNotRunningError(f"cannot open the control socket of {home}: {exc.strerror or exc}")


def maybe_accepted(home: Path) -> Callable[..., str]:
    """The words for a station that stopped answering after the request went out, ``why`` to
    fill: a function, not a template for ``str.format``, which a folder path holding braces broke."""

    def words(*, why: str) -> str:
        return (
            f"the station at {home} stopped answering ({why}); the request may or may not have been accepted: "
            f"check with 'redline log --station {home}' (or 'redline status') before repeating it"
        )

    return words


def result_of(line: bytes, maybe: Callable[..., str]) -> Any:
    """The result in the station's answer line, or the one clear error it means (both clients)."""
    if not line:
        raise ControlError(maybe(why="it closed the connection without answering"))
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise ControlError(maybe(why="its answer was cut off")) from exc
    if not reply.get("ok"):
        raise ControlRefusedError(str(reply.get("error", "the station refused")))
    return reply["result"]


def _read_line(sock: socket.socket, timeout: float, maybe: Callable[..., str]) -> bytes:
    """One answer line (with its newline), or what came before the station closed the connection."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ControlError(maybe(why=f"no answer within {timeout:g} s"))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise ControlError(maybe(why=f"no answer within {timeout:g} s")) from None
        except OSError as exc:
            raise ControlError(maybe(why=f"connection lost: {exc}")) from exc
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            data = b"".join(chunks)
            return data[: data.index(b"\n") + 1]
        if size > CONTROL_LIMIT:
            raise ControlError(maybe(why="connection lost: its answer is over 16 MiB"))
