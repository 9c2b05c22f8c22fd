"""The local control socket: the server in a running station, the client the CLI uses, and THE
table of operations (one handler per op, instead of an if-chain).

The socket is created 0600 in the station's 0700 directory: only the station's owner may drive it.
Requests are one JSON object per line; the answer is ``{"ok": true, "result": …}`` or
``{"ok": false, "error": "one line a person can act on"}``. Requests on one connection are started
as they arrive (so pipelined sends share a group commit) and answered in the order they came.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redline import jsonin, readmodel, rotation, views
from redline.control_client import CONTROL_LIMIT, maybe_accepted, not_running, result_of
from redline.errors import (
    ConfigError,
    ControlError,
    LocalProtocolError,
    RedlineError,
)
from redline.home import StationDir

if TYPE_CHECKING:
    from redline.station import Station

log = logging.getLogger("redline.control")

Handler = Callable[["Station", dict[str, Any]], Awaitable[Any]]


async def _send(st: Station, r: dict[str, Any]) -> Any:
    result = await st.send(r["line"], r["text"], kind=r.get("kind", "TEXT"), prio=r.get("priority", "routine"),
                           idem=r.get("idem"))  # fmt: skip
    if r.get("wait") == "receipt" and result.seq:
        await st.wait_receipted(result.line, result.seq)
        result = dataclasses.replace(result, state="receipted by the peer")
    return result.to_obj()


async def _act(st: Station, r: dict[str, Any]) -> Any:
    return (await st.act(r["line"], r["kind"], r["content"], prio=r.get("priority"), idem=r.get("idem"))).to_obj()


async def _backup(st: Station, r: dict[str, Any]) -> Any:
    from redline import backup  # the operability modules load only when asked for

    return await backup.station_backup(st, r)


async def _doctor(st: Station, r: dict[str, Any]) -> Any:
    from redline import doctor

    return await doctor.station_facts(st)


async def _stop(st: Station, r: dict[str, Any]) -> Any:
    st.stop()
    return {"stopping": True}


async def _now(value: Any) -> Any:
    return value


def _page(st: Station, r: dict[str, Any]) -> Any:
    """'redline log' beside a running station: the page the API's log answers (views.station_page)."""
    limit = r.get("limit")
    if type(limit) is not int or not 0 < limit <= views.PAGE_MAX:
        raise LocalProtocolError(f"log: 'limit' must be a whole number from 1 to {views.PAGE_MAX}")
    return views.station_page(st, str(r["line"]), limit).to_obj()


def _pages(st: Station, r: dict[str, Any]) -> Any:
    """How many more each list of a paged view holds past the page 'view' gives for the same offset
    and limit (the CLI's "3 more FLASH messages"; views.page_counts, as the API's Redline-Page)."""
    limit = int(r["limit"]) if "limit" in r else None
    counts = views.page_counts(st, str(r["line"]), str(r["what"]), offset=int(r.get("offset", 0)), limit=limit)
    return {name: count.to_obj() for name, count in counts.items()}


OPERATIONS: dict[str, Handler] = {
    "status": lambda st, r: _now(st.status().to_obj()),
    "send": _send,
    "act": _act,
    "resolve": lambda st, r: _now(st.resolve(r["line"], r["kind"], r["content"], r.get("idem"))),
    "show": lambda st, r: _now(readmodel.to_obj(st.show(r["line"], r["id"]))),
    "has": lambda st, r: _now(st.has(r["line"], r["id"])),
    "log": lambda st, r: _now(_page(st, r)),
    "view": lambda st, r: _now(st.view(
        r["line"], r["what"], offset=int(r.get("offset", 0)), limit=int(r["limit"]) if "limit" in r else None,
        notice=str(r["notice"]) if r.get("notice") else None,
    )),
    "pages": lambda st, r: _now(_pages(st, r)),
    "clock": lambda st, r: st.set_clock(int(r.get("advance_ms", 0)), int(r["set_ms"]) if "set_ms" in r else None),
    "confirm": lambda st, r: st.confirm(r["line"], r["code"]),
    "invite": lambda st, r: st.invite(),
    "pair": lambda st, r: st.pair(r["token"]),
    "backup": _backup,
    "doctor": _doctor,
    "stop": _stop,
    "rotate_signing": lambda st, r: rotation.file_running(st),
    "rotate_tls": lambda st, r: rotation.file_tls_running(st),
    "revoke": lambda st, r: rotation.file_running(st, revokes=_revokes(r.get("contents"))),
    "rotate_root": lambda st, r: rotation.file_root_running(st, _content(r.get("content")), _int(r.get("version"))),
    "confirm_root": lambda st, r: st.confirm_root(str(r["line"]), str(r["code"])),
}


def _content(value: Any) -> dict[str, Any]:
    """A ROOT content as ``redline keys rotate --root`` built it (the gate checks it)."""
    if not isinstance(value, dict):
        raise LocalProtocolError("rotate_root: 'content' must be a ROOT content")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LocalProtocolError("rotate_root: 'version' must be an integer")
    return value


def _revokes(value: Any) -> dict[str, dict[str, Any]]:
    """The REVOKE content of each line, as ``redline keys revoke`` built it (the gate checks it)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        raise LocalProtocolError("revoke: 'contents' must map line ids to REVOKE contents")
    return value


async def answer(st: Station, request: dict[str, Any]) -> Any:
    """Run one request through the table; an unknown op is a LocalProtocolError."""
    handler = OPERATIONS.get(str(request.get("op")))
    if handler is None:
        raise LocalProtocolError(f"unknown control operation {request.get('op')!r}")
    return await handler(st, request)


# -- server ----------------------------------------------------------------------------------------


async def listen(st: Station, path: Path) -> asyncio.AbstractServer:
    """The control socket, listening: at start, so that a station whose socket cannot be made
    stops there with one line, instead of running on with no ``stop``, ``send`` or ``status``.
    A socket file left there is a crashed station's (the caller holds the folder)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o177)  # the socket is created 0600: only the station's owner may drive it
    try:
        return await asyncio.start_unix_server(lambda r, w: _client(st, r, w), path=str(path), limit=CONTROL_LIMIT)
    except OSError as exc:
        raise ConfigError(
            f"cannot make the control socket {path}: {exc.strerror or exc}; the station's folder path must be short "
            "enough for a Unix socket (about 100 characters) on a local file system"
        ) from None
    finally:
        os.umask(old)


async def serve(server: asyncio.AbstractServer) -> None:
    async with server:
        await server.serve_forever()


# What one write of answers gathers at most (then drain: a slow reader holds back the rest).
ANSWERS_PER_WRITE_BYTES = 256 * 1024
# Requests one connection may have read and not yet answered. Past it the station reads nothing
# more from that connection until its oldest answer is written: a client that pipelines without
# reading its answers (or asks faster than they come due) then holds this many tasks and answers
# in the station, not as many as it can write; the rest waits in the socket and then blocks its
# writes. Twice the default flow window (2,048 unreceipted): a client pipelining 'wait: receipt'
# sends is not slowed by it unless the station's window is set above this.
REQUESTS_IN_FLIGHT = 4096


async def _client(st: Station, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Answers go back in the order asked. Those already done when the first of them is written go
    # in the same write: a pipelined client's batch of sends is answered in one system call, not
    # one each (the answers of one group commit all come due in the same turn of the loop).
    answers: collections.deque[asyncio.Task[dict[str, Any]] | None] = collections.deque()
    queued = asyncio.Event()
    room = asyncio.Event()  # set when an answer is written: the reader may go on

    def put(task: asyncio.Task[dict[str, Any]] | None) -> None:
        answers.append(task)
        queued.set()

    async def respond() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the station is stopping
            while True:
                while not answers:
                    queued.clear()
                    await queued.wait()
                task = answers.popleft()
                if task is None:
                    return
                lines = [json.dumps(await task).encode()]
                size = len(lines[0])
                while size < ANSWERS_PER_WRITE_BYTES and answers and (ready := answers[0]) is not None and ready.done():
                    lines.append(json.dumps(ready.result()).encode())
                    size += len(lines[-1])
                    answers.popleft()
                writer.write(b"\n".join(lines) + b"\n")
                room.set()
                await writer.drain()

    responder = asyncio.ensure_future(respond())
    responder.add_done_callback(lambda _: room.set())
    try:
        while line := await reader.readline():
            put(asyncio.ensure_future(_reply(st, line)))
            while len(answers) >= REQUESTS_IN_FLIGHT and not responder.done():
                room.clear()
                await room.wait()
            if responder.done():  # it could not write (the client went away): nothing more is answered
                break
    except (asyncio.LimitOverrunError, ValueError):
        writer.write(json.dumps({"ok": False, "error": "control request over 16 MiB refused"}).encode() + b"\n")
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    except asyncio.CancelledError:
        # The station is stopping. End quietly: asyncio's stream server would otherwise log the
        # cancelled handler as an "exception in callback" with a traceback.
        responder.cancel()
    finally:
        put(None)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await responder
        writer.close()


async def _reply(st: Station, line: bytes) -> dict[str, Any]:
    try:
        request = jsonin.loads(line)  # nested past its bound: one clear error, not a traceback
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        return {"ok": True, "result": await answer(st, request)}
    except RedlineError as exc:
        return {"ok": False, "error": str(exc)}
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        return {"ok": False, "error": f"bad request: {exc!r}"[:500]}
    except Exception as exc:  # a bug must answer this request, not kill the connection's responder
        log.exception("control request failed")
        return {"ok": False, "error": f"internal error: {exc!r}"[:500]}


# -- client ----------------------------------------------------------------------------------------


async def call(home: Path, request: dict[str, Any], timeout: float = 30.0) -> Any:
    """Send one request to a running station's control socket (used by the CLI).

    Every failure is one ``ControlError`` saying whether the request may have been accepted:
    before it was written, certainly not; after, perhaps (``redline log`` tells)."""
    path = StationDir(home).control_path
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=CONTROL_LIMIT)
    except OSError as exc:
        raise not_running(home, exc) from exc
    maybe = maybe_accepted(home)
    try:
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
        except OSError as exc:
            raise ControlError(maybe(why=f"connection lost while sending: {exc.strerror or exc}")) from exc
        try:
            async with asyncio.timeout(timeout):
                line = await reader.readline()
        except TimeoutError:
            raise ControlError(maybe(why=f"no answer within {timeout:g} s")) from None
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            raise ControlError(maybe(why=f"connection lost: {exc}")) from exc
    finally:
        writer.close()
    return result_of(line, maybe)
