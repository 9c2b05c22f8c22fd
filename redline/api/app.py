"""The HTTP API and WebSocket a duty console (or a script) uses: ``create_app(station)``.

Runs in the station's own event loop, on the running ``Station`` object: reads are the station's
views, writes go through ``Station.send`` / ``Station.act`` exactly as the control socket's do, so
the API adds no path around the station's checks. The only work taken off the loop is what would
stall it: Argon2id at login and transcript verification (on its own read-only connection).

Errors are rendered in one place (``_error``): ``{"error": message}`` with 400 for bad input, 401
not logged in or wrong password (or the user was removed), 403 the role may not or another site
asked, 404 unknown line, 409 conflict (already done, idempotency key reused, halted line), 421 a
Host that is not ours (``hosts.py``), 429 too many login attempts, 503 the store failed or too many
logins are being checked. The OpenAPI schema is built from the same table the routes are
(``ROUTES``), so it cannot fall behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from redline import jsonin, kinds, persons, recording, views
from redline.api.auth import (
    CAPABILITIES,
    COOKIE,
    OPERATE,
    READ,
    ApiConfig,
    ApiError,
    LoginGuard,
    Proxies,
    Session,
    Sessions,
    Users,
)
from redline.api.console_routes import CONSOLE_SPECS, PAGE_QUERY, ConsoleHandlers
from redline.api.console_voice import VOICE_SPECS, ConsoleVoice, VoiceConn, VoiceHandlers
from redline.api.hosts import HostCheck, Hosts
from redline.api.listener import BACKLOG, bounded
from redline.config import parse_hostport
from redline.errors import (
    ConfigError,
    EncodingError,
    EquivocationError,
    IdempotencyConflictError,
    LocalProtocolError,
    NotFoundError,
    NoticeBoardError,
    ReceiptTimeoutError,
    RedlineError,
    StorageError,
    TransportError,
)
from redline.home import StationDir
from redline.ledger.verify import verify_line
from redline.metrics import CONTENT_TYPE, metrics_for
from redline.metrics import health as is_healthy
from redline.metrics import ready as is_ready
from redline.ops.engine import NOTICES_PAGE_MAX
from redline.session import LineSession
from redline.station import Station

if TYPE_CHECKING:
    from redline.standby import Pair

log = logging.getLogger("redline.api")
CONSOLE = Path(__file__).resolve().parent.parent / "console"
VIEWS = ("tests", "flash", "calls", "notices", "refused")
PRIORITIES = ("routine", "priority", "flash")
NOTICE_KINDS = kinds.NOTICE_KINDS
TEST_TEXT = "Line test (on demand). Please answer to confirm the line is attended."
ANSWER_TEXT = "Test received. Line attended."
# An API request's idempotency key; with its scope ("api:", a kind, a person's name) it stays
# within what the station takes (station.MAX_IDEM_CHARS).
MAX_API_IDEM_CHARS = 128


# -- errors: rendered here and nowhere else -------------------------------------------------------
def _status_of(exc: RedlineError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, NoticeBoardError | EquivocationError | IdempotencyConflictError):
        return 409
    if isinstance(exc, TransportError):
        return 502
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ReceiptTimeoutError):
        return 504
    if isinstance(exc, StorageError):
        return 503
    return 400  # LocalProtocolError, VerificationError (schema, notice, signature), LimitError, PairingError


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RedlineError):
        status, message = _status_of(exc), str(exc)
    elif isinstance(exc, HTTPException):
        status, message = exc.status_code, {404: "no such page", 405: "method not allowed here"}.get(
            exc.status_code, str(exc.detail)
        )
    else:
        log.exception("API request %s %s failed", request.method, request.url.path)
        status, message = 500, f"internal error ({type(exc).__name__}); the station log has the details"
    headers = {"Cache-Control": "no-store"}
    if isinstance(exc, ApiError) and exc.close:
        headers["Connection"] = "close"
    body = {"error": message} | ({"code": exc.code} if isinstance(exc, ApiError) and exc.code else {})
    return JSONResponse(body, status_code=status, headers=headers)


# -- request bodies ---------------------------------------------------------------------------------
async def _body(request: Request, limit: int) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(400, "send the request body as JSON (Content-Type: application/json)")
    too_big = ApiError(400, f"request body over {limit} bytes refused", close=True)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    # Read as it comes and stop at the limit: a chunked body (no Content-Length) says nothing of its
    # size, and would otherwise be held whole first, before login on /api/login. The connection is
    # closed with the answer, so the rest is never read. A body that trickles in (or never comes)
    # would hold its connection, one of api.max_connections, for as long as the sender likes.
    seconds = request.app.state.api.config.request_body_seconds
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"request body not received within {seconds:g} s", close=True) from None
    raw = b"".join(chunks)
    try:
        # Decimal keeps coordinates exactly as written ("36.2750"): signed notices hold no floats.
        body = jsonin.loads(raw or b"{}", parse_float=Decimal)
    except EncodingError as exc:
        raise ApiError(400, f"request body is {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


# The events stream says "still here" this often even when nothing changed: a station that hangs
# (a stopped process keeps its TCP connection open) falls silent, and the console counts silence
# beyond HEARTBEAT_MISSES of these as the connection lost (console app.js, docs/API.md "Events").
HEARTBEAT_SECONDS = 1.0
MAX_OFFSET = 10**9  # a page offset from the query: past the end gives an empty page, not a 500
# The paged views' answers keep their shape (a list, or the view's object); how many more each of
# their lists holds past the page goes beside it, in this header (docs/API.md, "Pages").
PAGE_HEADER = "Redline-Page"
PAGED = ("tests", "flash", "calls", "notices", "requests", "translations")


def paged(station: Station, line: str, what: str, offset: int, limit: int | None, result: Any) -> Response:
    """``result``, a page of the view ``what``, with the ``Redline-Page`` header: each of its lists'
    ``total``, ``offset``, ``limit``, ``shown`` and ``more`` (``views.page_counts``, as the CLI's)."""
    counts = views.page_counts(station, line, what, offset=offset, limit=limit)
    header = json.dumps({name: c.to_obj() for name, c in counts.items()}, separators=(",", ":"))
    return JSONResponse(result, headers={"Cache-Control": "no-store", PAGE_HEADER: header})


@overload
def _query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int: ...
@overload
def _query_int(request: Request, name: str, default: None, lo: int, hi: int) -> int | None: ...
def _query_int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """A whole number ``lo``..``hi`` from the query string, or ``default`` when it is not given:
    every numeric query parameter is read here. Anything else (a sign, a fraction, digits other
    than ASCII, a number past ``hi``) is 400 naming the range, before any work is done."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(hi)) and lo <= int(raw) <= hi):
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}")
    return int(raw)


def _str(body: dict[str, Any], name: str, default: str | None = None, *, max_len: int = 1 << 20) -> str:
    value = body.get(name, default)
    if value is None:
        raise ApiError(400, f"'{name}' is required")
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    if len(value) > max_len:
        raise ApiError(400, f"'{name}' is over {max_len} characters")
    return value


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    return _str(body, name) if body.get(name) is not None else None


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if value is None:
        raise ApiError(400, f"'{name}' is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be a whole number (got {value!r})")
    return value


def _time(body: dict[str, Any], name: str) -> int:
    """UTC milliseconds, or an ISO 8601 time with a zone ('2022-05-13T12:00Z')."""
    value = body.get(name)
    if isinstance(value, str):
        try:
            return views.parse_utc(value, f"'{name}'")
        except LocalProtocolError as exc:
            raise ApiError(400, str(exc)) from None
    return _int(body, name)


def _area(value: Any) -> Any:
    """GeoJSON as given (an object, or JSON text), with every coordinate as a decimal string."""
    if isinstance(value, str):
        try:
            value = jsonin.loads(value, parse_float=Decimal)
        except EncodingError as exc:
            raise ApiError(400, f"'area' is not valid GeoJSON ({exc})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "'area' must be a GeoJSON Polygon, MultiPolygon or Point object")
    return {k: _coords(v) if k == "coordinates" else _plain(v) for k, v in value.items()}


def _coords(value: Any) -> Any:
    if isinstance(value, list):
        return [_coords(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value  # anything else is refused by the notice check, with the reason


def _plain(value: Any) -> Any:
    """Decimals outside coordinates become floats again, for the notice check to refuse by name."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return float(value) if isinstance(value, Decimal) else value


# -- reading the transcript (views.py builds it) --------------------------------------------------
def transcript(station: Station, session: LineSession, limit: int) -> dict[str, Any]:
    """Both sides of a line, oldest first, with receipt and acknowledgement state, then the outbox
    (what 'redline log' shows beside a running station too: views.station_page)."""
    return views.station_page(station, session.line, limit).to_obj()


def verify_station(home: StationDir) -> list[dict[str, Any]]:
    """What ``redline verify`` checks, on a connection of its own that cannot write, from one snapshot.

    Runs in a worker thread of the station's process while the station keeps writing, so the store
    is opened read-only (``StationDir.read_ledger``; SQLite's through SQLite and nothing else: its raw
    files are never opened here, which would drop the station's locks on them); every line's data is read
    inside one read transaction, then verified with no database in hand."""
    our_root = bytes.fromhex((home.keys / "root.pub").read_text().strip())
    name = home.config().name
    home.require()
    ledger = home.read_ledger()
    try:
        with ledger.snapshot():
            us = ledger.station
            held = [(record, ledger.line_data(record.line, name), ledger.raw_of_kind(record.line, us, "CALL_AUDIO"))
                    for record in ledger.lines()]  # fmt: skip
    finally:
        ledger.close()
    out = []
    for record, data, audio in held:
        report = verify_line(data, {us: our_root, record.peer: bytes.fromhex(record.peer_root)})
        recording.verify_kept(home.path, audio, record.line, us, record.peer, report)  # as 'redline verify' does
        out.append(views.VerifyView.of(report).to_obj())
    return out


# -- the route table (also the OpenAPI schema) ------------------------------------------------------
@dataclass(frozen=True)
class Op:
    method: str  # GET, POST or WS
    path: str
    handler: str  # Api method name
    summary: str
    role: str | None  # capability needed; None: no login
    body: dict[str, Any] | None = None  # JSON schema of the request body
    query: dict[str, str] = field(default_factory=dict)  # query parameter -> description


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props, "additionalProperties": False}


STR, INT = {"type": "string"}, {"type": "integer"}
TIME = {"oneOf": [INT, STR], "description": "UTC ms, or ISO 8601 with a zone: 2022-05-13T12:00Z"}
LINE_VIEW = "the line id, an 8+ hex digit prefix of it, or the peer station's name"
ROUTES: tuple[Op, ...] = (
    Op("POST", "/api/login", "login", "Log in with a station user's name and password", None,
       _obj(["user", "password"], user=STR, password=STR)),
    Op("POST", "/api/logout", "logout", "Log out: the session and its unlocked key are dropped", None),
    Op("GET", "/api/me", "me", "Who is logged in, with which role and until when", READ),
    Op("GET", "/api/status", "status", "Station, lines, paths (up/down, rtt, skew), outbox, latest alarms", READ),
    Op("GET", "/api/verify", "verify", "Verify every line's transcript, as 'redline verify' does", READ),
    Op("GET", "/api/lines/{line}/log", "log", "Both sides of the transcript with receipt and ACK state, and the outbox",
       READ, query={"limit": "envelopes of each side, newest (default 100, at most 1000)"}),
    *(Op("GET", f"/api/lines/{{line}}/{what}", "view", summary, READ, query=PAGE_QUERY) for what, summary in (
        ("tests", "Line test history and the peer's tests waiting for our answer ('redline tests'): the counts "
                  "over all, a page of each list, pending ones first"),
        ("flash", "FLASH messages both ways: receipted, escalated, acknowledged by whom ('redline flashes'): a "
                  "page, the ones not acknowledged first, texts cut at 2,000 characters"),
        ("notices", "Active notices of both sides and every conflicting pair ('redline notices')"),
        ("calls", "Call requests and calls per pair of principals, both readouts side by side ('redline calls'): "
                  "the counts over all, a page of pairs (open requests first), texts cut at 2,000 characters"),
    )),
    *(Op("GET", f"/api/lines/{{line}}/{what}", "view", summary, READ) for what, summary in (
        ("refused", "Person-signed envelopes that did not count (bad or unknown signature), with the reason"),
        ("voice", "Voice calls: the current one (ringing or live, who, since when), recent ones with their audio "
                  "evidence, this station's audio counts and each path's audio health"),
    )),
    Op("POST", "/api/lines/{line}/send", "send", "Send a message; durable on return (idempotent by key)", OPERATE,
       _obj(["text"], text=STR, priority={"enum": list(PRIORITIES)}, idempotency_key=STR,
            wait_receipt={"type": "boolean"})),
    Op("POST", "/api/lines/{line}/ack", "ack", "Acknowledge the peer's FLASH, signed as the logged-in person",
       OPERATE, _obj(["flash_id"], flash_id=STR)),
    Op("POST", "/api/lines/{line}/answer", "answer", "Answer the peer's line test, signed as the logged-in person",
       OPERATE, _obj([], test_id=STR, text=STR)),
    Op("POST", "/api/lines/{line}/test", "test", "Send a line test now; a person at the peer must answer", OPERATE,
       _obj([], idempotency_key=STR)),
    Op("POST", "/api/lines/{line}/notice", "notice", "File a deconfliction notice (checked in full first)", OPERATE,
       _obj(["kind", "area", "floor_m", "ceiling_m", "start", "end"], kind={"enum": list(NOTICE_KINDS)},
            area={"type": "object", "description": "GeoJSON Polygon, MultiPolygon or Point (lon/lat)"},
            radius_m=INT, floor_m=INT, ceiling_m=INT, start=TIME, end=TIME, margin_m=INT, text=STR, amends=STR,
            idempotency_key=STR)),
    Op("POST", "/api/lines/{line}/withdraw", "withdraw", "Withdraw one of our notices", OPERATE,
       _obj(["notice_id"], notice_id=STR, idempotency_key=STR)),
    Op("POST", "/api/lines/{line}/readout", "readout", "File this side's readout of a call, signed as the person",
       OPERATE, _obj(["call_id", "text"], call_id=STR, text=STR, idempotency_key=STR)),
    Op("POST", "/api/lines/{line}/confirm", "confirm", "Confirm the line's safety code after comparing it by voice",
       "confirm", _obj(["code"], code=STR)),
    Op("POST", "/api/lines/{line}/confirm-root", "confirm_root",
       "Trust the peer's new root: the NEW safety code its operator read aloud, typed; a wrong one files nothing",
       "confirm", _obj(["code"], code=STR)),
    *(Op(**spec) for spec in CONSOLE_SPECS),  # the console's own routes (console_routes.py)
    *(Op(**spec) for spec in VOICE_SPECS),  # voice calls (console_voice.py)
    Op("WS", "/api/events", "events", "WebSocket: status changes and alarms as they happen; voice audio both ways",
       READ),
    Op("GET", "/api/openapi.json", "openapi", "This schema", None),
    Op("GET", "/health", "health", "Alive, and the store takes writes: 200 {\"ok\": true}, else 503", None),
    Op("GET", "/ready", "ready", "Every line in sync: 200 {\"ready\": true}, else 503", None),
    Op("GET", "/metrics", "metrics", "Prometheus metrics (text format); without login on the --metrics address",
       READ),
)  # fmt: skip
# Served on the metrics-only address (redline serve --metrics), without login: nothing that changes
# anything and nothing of the transcript's content.
MONITORING = ("health", "ready", "metrics")


def openapi_schema() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    error = {"description": "refused", "content": {"application/json": {"schema": _obj(["error"], error=STR)}}}
    for op in ROUTES:
        method = "get" if op.method == "WS" else op.method.lower()
        params = [{"name": "line", "in": "path", "required": True, "schema": STR, "description": LINE_VIEW}] if (
            "{line}" in op.path) else []  # fmt: skip
        params += [{"name": q, "in": "query", "required": False, "schema": INT, "description": d}
                   for q, d in op.query.items()]  # fmt: skip
        entry: dict[str, Any] = {
            "summary": op.summary, "operationId": op.handler + (op.path.rsplit("/", 1)[-1] if op.handler == "view"
                                                                else ""),
            "parameters": params,
            "responses": {"200": {"description": "done"}, "400": error, "401": error, "403": error, "404": error,
                          "409": error},
        }  # fmt: skip
        if op.role:
            entry["security"] = [{"session": []}]
            entry["x-redline-capability"] = op.role
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
        if op.method == "WS":
            entry["description"] = (
                "Upgrade to a WebSocket. Text messages are JSON: hello, status, alarm, logout, "
                "joined, audio_refused; binary messages are voice audio (docs/API.md)."
            )
            entry["responses"] = {"101": {"description": "switching protocols"}}
        paths.setdefault(op.path, {})[method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "redline station API", "version": "1",
                 "description": "The duty console's API; docs/API.md says how sessions and signing work."},
        "paths": paths,
        "components": {"securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": COOKIE}}},
    }  # fmt: skip


# -- the handlers -----------------------------------------------------------------------------------
class Api(ConsoleHandlers, VoiceHandlers):
    def __init__(
        self, station: Station, config: ApiConfig, *, listen: tuple[str, int] | None = None,
        clock: Callable[[], float] | None = None, sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        self.station, self.config = station, config
        self.sessions = Sessions(config)
        self.users = Users(station.home.path)
        self.proxies = Proxies(config)
        self.hosts = Hosts(config, listen)
        self.guard = LoginGuard(config, clock=clock or time.monotonic, sleep=sleep or asyncio.sleep)
        self.guard.on_failure = metrics_for(station).login_failed
        self._verifying: asyncio.Task[list[dict[str, Any]]] | None = None
        self._first_down: dict[str, int] = {}  # line -> when first seen down, for a peer never heard
        self._seen: dict[tuple[str, str], int] = {}  # (line, condition) -> when this occurrence began
        self.voice = ConsoleVoice(station)  # consoles on voice calls (console_voice.py)

    # who
    def who(self, conn: HTTPConnection, capability: str | None) -> Session | None:
        try:
            session = self.current(conn.cookies.get(COOKIE))
        except ApiError:
            if capability is None:  # logging in (or out) over a removed user's stale cookie is fine
                return None
            raise
        if capability is None:
            return session
        if session is None:
            raise ApiError(401, "not logged in (or the session expired, or the station restarted): log in")
        session.require(capability)
        return session

    def current(self, cookie: str | None) -> Session | None:
        """The session of ``cookie``, with its person's role as the users folder says *now*: a user
        removed (or re-created with another key) is logged out here and then; a changed role holds
        from this request on."""
        session = self.sessions.get(cookie)
        if session is None:
            return None
        now = self.users.current().get(session.name)
        if now is None or now.key != session.person.key:
            self.sessions.drop(session)
            log.warning("console: %s's session ended: no longer a user of this station", session.name)
            raise ApiError(401, f"{session.name} is no longer a user of this station: logged out", code="removed")
        if now.role != session.person.role:
            log.warning("console: %s's role is now %s (was %s)", session.name, now.role, session.person.role)
            session.person = now
        return session

    def check_origin(self, conn: HTTPConnection) -> None:
        """Refuse a request a page of another site started (SameSite=Strict is the first line): its
        Origin must be one of our own names (``hosts.py``), never merely equal to its Host."""
        origin = conn.headers.get("origin")
        if origin is None:  # not a browser, or a same-origin GET: nothing to check
            return
        if not self.hosts.origin_allowed(origin):
            raise ApiError(403, f"request from another site ({origin[:100]}) refused")

    @staticmethod
    def check_fetch_site(conn: HTTPConnection) -> None:
        """Refuse an API request a browser made for a page of another origin, GETs included, which
        carry no Origin. SameSite cookies do not stop a page served on another port of the same
        host (same site, not same origin) from having the browser fetch an export or a search with
        our cookie: it cannot read the answer, but the station does the work. Browsers say where a
        request comes from in Sec-Fetch-Site; scripts and older browsers send none (the session and
        the Origin check still apply)."""
        site = conn.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise ApiError(403, f"request made for a page of another origin ({site[:20]}) refused")

    def line(self, line: str) -> LineSession:
        try:
            return self.station.session(line)
        except NotFoundError as exc:
            raise ApiError(404, str(exc)) from None

    def _me(self, s: Session) -> dict[str, Any]:
        return {"user": s.name, "role": s.role, "expires": int(s.expires * 1000),
                "capabilities": sorted(CAPABILITIES.get(s.role, ())), "station": self.station.config.name}  # fmt: skip

    async def login(self, request: Request, _: Session | None) -> Response:
        body = await _body(request, 4096)
        name, password = _str(body, "user", max_len=64), _str(body, "password", max_len=1024)
        source = self.proxies.source(request)
        person, key = await self.guard.login(self.station.home.path, self.users.current(), name, password, source)
        cookie, session = self.sessions.create(person, key)
        log.warning("console login: %s (%s) from %s", person.name, person.role, source)
        response = JSONResponse(self._me(session))
        response.set_cookie(
            COOKIE, cookie, max_age=int(self.config.session_seconds), path="/", httponly=True, samesite="strict",
            secure=self.proxies.https(request),
        )  # fmt: skip
        return response

    async def logout(self, request: Request, session: Session | None) -> Response:
        if session is not None:
            self.sessions.drop(session)
            log.warning("console logout: %s", session.name)
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def me(self, request: Request, session: Session) -> dict[str, Any]:
        return self._me(session)

    async def status(self, request: Request, session: Session) -> dict[str, Any]:
        return {**self.station.status().to_obj(), "now": self.station.wall(), "you": self._me(session)}

    async def verify(self, request: Request, session: Session) -> dict[str, Any]:
        # One run at a time: callers arriving meanwhile share its answer.
        if self._verifying is None or self._verifying.done():
            self._verifying = asyncio.ensure_future(asyncio.to_thread(verify_station, self.station.home))
        lines = await asyncio.shield(self._verifying)
        return {"ok": all(r["ok"] for r in lines), "lines": lines, "checked_at": self.station.wall()}

    async def log(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        return transcript(self.station, line, _query_int(request, "limit", 100, 1, views.PAGE_MAX))

    async def view(self, request: Request, session: Session) -> Any:
        line = self.line(request.path_params["line"])
        # notices: a page at a time, or one notice whole
        offset = _query_int(request, "offset", 0, 0, MAX_OFFSET)
        limit = _query_int(request, "limit", None, 1, NOTICES_PAGE_MAX)
        what = request.url.path.rsplit("/", 1)[-1]
        notice = request.query_params.get("notice")
        result = self.station.view(line.line, what, offset=offset, limit=limit, notice=notice)
        if what == "voice":  # what the consoles sent this station, taken or refused (console_voice.py)
            result = {**result, "console": dict(self.voice.counters.get(line.line, {}))}
        if what in PAGED and notice is None:
            return paged(self.station, line.line, what, offset, limit, result)
        return result

    async def send(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _body(request, self.config.max_body_bytes)
        text = _str(body, "text")
        priority = _str(body, "priority", "routine").lower()
        if priority not in PRIORITIES:
            raise ApiError(400, f"priority must be one of {', '.join(PRIORITIES)}")
        idem = _idem(body)
        self._writable(line)
        kind = "FLASH" if priority == "flash" else "TEXT"
        result = await self.station.send(line.line, text, kind=kind, prio=priority, idem=idem)
        if body.get("wait_receipt") is True and result.seq:
            try:
                await self.station.wait_receipted(line.line, result.seq)
            except ReceiptTimeoutError as exc:
                raise ApiError(504, str(exc)) from None
            result = replace(result, state="receipted by the peer")
        return result.to_obj()

    async def ack(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _body(request, 4096)
        flash_id = _str(body, "flash_id", max_len=64)
        for f in self.station.flash_view(line.line):
            if len(flash_id) >= 6 and f.id.startswith(flash_id) and not f.ours and f.acked_by:
                raise ApiError(409, f"that FLASH (seq {f.seq}) was already acknowledged by {f.acked_by}")
        return await self._signed(session, line, "ACK", {"ref": flash_id}, key_field="ref")

    async def answer(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _body(request, 64 * 1024)
        test_id = _opt_str(body, "test_id")
        pending = self.station.tests_view(line.line).to_answer
        if test_id is None:
            if not pending:
                raise ApiError(409, "no unanswered line test from the peer")
            test_id = pending[0].id
        elif len(test_id) >= 6 and not any(t.id.startswith(test_id) for t in pending):
            raise ApiError(409, f"no unanswered line test from the peer has id {test_id!r} (answered already?)")
        content = {"test": test_id, "text": _str(body, "text", ANSWER_TEXT)}
        return await self._signed(session, line, "TEST_ANSWER", content, key_field="test")

    async def test(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _body(request, 4096)
        return await self.act_once(body, line, "TEST", {"text": TEST_TEXT}, prio="priority")

    async def notice(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _body(request, self.config.max_body_bytes)
        kind = _str(body, "kind")
        if kind not in NOTICE_KINDS:
            raise ApiError(400, f"kind must be one of {', '.join(NOTICE_KINDS)}")
        if "area" not in body:
            raise ApiError(400, "'area' is required: a GeoJSON Polygon, MultiPolygon or Point")
        content: dict[str, Any] = {
            "kind": kind, "area": _area(body["area"]), "floor_m": _int(body, "floor_m"),
            "ceiling_m": _int(body, "ceiling_m"), "start": _time(body, "start"), "end": _time(body, "end"),
            "margin_m": _int(body, "margin_m", 0), "text": _str(body, "text", ""),
        }  # fmt: skip
        if body.get("radius_m") is not None:
            content["radius_m"] = _int(body, "radius_m")
        if body.get("amends") is not None:
            content["amends"] = _str(body, "amends")
        # The station checks the notice in full (geometry, window, band, limits) before accepting it:
        # a bad one raises NoticeError (400, with the reason) and nothing is stored or sent.
        return await self.act_once(body, line, "NOTICE", content, prio="priority")

    async def withdraw(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _body(request, 4096)
        content = {"notice": _str(body, "notice_id", max_len=64)}
        return await self.act_once(body, line, "NOTICE_WITHDRAW", content, prio="priority")

    async def readout(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _body(request, self.config.max_body_bytes)
        content = {"call": _str(body, "call_id", max_len=64), "text": _str(body, "text")}
        return await self._signed(session, line, "READOUT", content, idem=_idem(body, "READOUT", session.name))

    async def confirm(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _body(request, 4096)
        if line.record.confirmed_local:
            raise ApiError(409, "this line's safety code is already confirmed here")
        result = await self.station.confirm(line.line, _str(body, "code", max_len=64))
        log.warning("console: %s confirmed the safety code of line %s", session.name, line.line[:8])
        return result

    async def confirm_root(self, request: Request, session: Session) -> dict[str, Any]:
        """'redline keys confirm-root' from the console (PROTOCOL.md 5.9 ROOT_CONFIRM): the station
        files the ROOT_CONFIRM only if the typed code is the one the peer's pending ROOT gives."""
        line = self.line(request.path_params["line"])
        body = await _body(request, 4096)
        code = _str(body, "code", max_len=64)
        if line.root_code_to_type() is None:  # none pending, or our ROOT_CONFIRM already filed
            raise ApiError(409, f"{line.record.peer_name} has no root rotation awaiting confirmation here")
        result = await self.station.confirm_root(line.line, code)
        log.warning("console: %s confirmed %s's root version %s on line %s", session.name, line.record.peer_name,
                    result["confirmed_version"], line.line[:8])  # fmt: skip
        return result

    async def openapi(self, request: Request, _: Session | None) -> dict[str, Any]:
        return openapi_schema()

    # -- monitoring: no login for health and ready; they say one word and nothing else ----------------
    async def health(self, request: Request, _: Session | None) -> Response:
        ok = is_healthy(self.station)
        return JSONResponse({"ok": ok}, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

    async def ready(self, request: Request, _: Session | None) -> Response:
        ok = is_ready(self.station)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

    async def metrics(self, request: Request, _: Session | None) -> Response:
        body = metrics_for(self.station).exposition()
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    def _writable(self, line: LineSession) -> None:
        if line.halted:
            raise ApiError(409, f"line {line.line[:8]} is HALTED (equivocation): nothing more can be sent on it")

    async def _signed(
        self, session: Session, line: LineSession, kind: str, content: dict[str, Any], *, key_field: str | None = None,
        idem: str | None = None,
    ) -> dict[str, Any]:
        """Resolve the reference, sign as the logged-in person (their key, unlocked at login), file."""
        self._writable(line)
        resolved = await self.station.control({"op": "resolve", "line": line.line, "kind": kind, "content": content,
                                               "idem": idem})  # fmt: skip
        signed = persons.sign_content(resolved, session.person, session.signing_key())
        target = resolved.get(key_field) if key_field else None
        # One ACK / answer per person and target even if the button is pressed twice: the second
        # returns the first. Per person, so someone else can still act if the first was refused.
        if isinstance(target, dict) and "id" in target:
            idem = f"api:{kind}:{target['id']}:{session.name}"
        result = (await self.station.act(line.line, kind, signed, idem=idem)).to_obj()
        log.warning("console: %s filed %s on line %s", session.name, kind, line.line[:8])
        return result

    # -- live events --------------------------------------------------------------------------------
    async def events(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            self.check_origin(ws)
            session = self.who(ws, READ)
        except ApiError as exc:
            await ws.send_json({"type": "error", "error": str(exc), "status": exc.status, "code": exc.code})
            await ws.close(code=4401 if exc.status == 401 else 4403, reason=str(exc)[:120])
            return
        assert session is not None
        cookie = ws.cookies.get(COOKIE)
        conn = self.voice.connect(session)
        reader = asyncio.ensure_future(_read(ws, self.voice, conn))
        # One sender: the status poll and the voice relay (console_voice.py) share this loop.
        outgoing: asyncio.Future[bytes | dict[str, Any]] = asyncio.ensure_future(conn.out.get())
        loop = asyncio.get_running_loop()
        try:
            alarms = self.station.alarms
            last = alarms[-1] if alarms else None
            status = _status_only(self.station.status().to_obj())
            await ws.send_json({"type": "hello", "you": self._me(session), "status": status,
                                "alarms": alarms[-20:], "now": self.station.wall(),
                                "heartbeat_seconds": HEARTBEAT_SECONDS})  # fmt: skip
            next_poll = loop.time() + self.config.poll_seconds
            next_beat = loop.time() + HEARTBEAT_SECONDS
            while True:
                wait = max(0.0, next_poll - loop.time())
                pending: set[asyncio.Future[Any]] = {reader, outgoing}
                done, _ = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    return  # the console went away
                if outgoing in done:
                    item = outgoing.result()
                    outgoing = asyncio.ensure_future(conn.out.get())
                    await (ws.send_bytes(item) if isinstance(item, bytes) else ws.send_json(item))
                    if loop.time() < next_poll:
                        continue
                next_poll = loop.time() + self.config.poll_seconds
                try:
                    ended = self.current(cookie) is None
                    why, code = "the session ended: log in again", ""
                except ApiError as exc:  # the user was removed meanwhile
                    ended, why, code = True, str(exc), exc.code
                if ended:
                    await ws.send_json({"type": "logout", "error": why, "code": code})
                    await ws.close(code=4401)
                    return
                for alarm in _new_alarms(self.station.alarms, last):
                    await ws.send_json({"type": "alarm", "alarm": alarm})
                    last = alarm
                now = _status_only(self.station.status().to_obj())
                if now != status:
                    status = now
                    await ws.send_json({"type": "status", "status": status, "now": self.station.wall()})
                if loop.time() >= next_beat:
                    next_beat = loop.time() + HEARTBEAT_SECONDS
                    await ws.send_json({"type": "tick", "now": self.station.wall()})
        except (WebSocketDisconnect, RuntimeError, ConnectionError):
            return
        finally:
            reader.cancel()
            outgoing.cancel()
            self.voice.disconnect(conn)


def _idem(body: dict[str, Any], *scope: str) -> str | None:
    """The station's idempotency key for a request's optional ``idempotency_key`` (at most 128
    characters, else 400): "api:" and ``scope`` (the kind, the person) before it, so an API key is
    kept apart from the station's own ("roster:", "escalated:"), which it must never block. What a
    reused key may stand for is the session's rule (``IdempotencyConflictError``, 409)."""
    key = _opt_str(body, "idempotency_key")
    if key is None:
        return None
    if len(key) > MAX_API_IDEM_CHARS:
        raise ApiError(400, f"'idempotency_key' is over {MAX_API_IDEM_CHARS} characters")
    return ":".join(("api", *scope, key))


def _status_only(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "alarms"}


def _new_alarms(alarms: list[dict[str, Any]], last: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Alarms after ``last`` (by identity: the station trims its list, so indexes shift)."""
    if last is None:
        return list(alarms)
    for i in range(len(alarms) - 1, -1, -1):
        if alarms[i] is last:
            return alarms[i + 1 :]
    return list(alarms)


async def _read(ws: WebSocket, voice: ConsoleVoice, conn: VoiceConn) -> None:
    """What the console sends, until it disconnects: voice (``join``, ``leave``, audio chunks);
    anything else is ignored."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                await voice.take(conn, message)
            except Exception:  # one bad chunk never ends the console's events
                log.exception("console: a voice message failed")


# -- assembly ---------------------------------------------------------------------------------------
Handler = Callable[[Request, Any], Awaitable[Any]]


def _endpoint(api: Api, op: Op) -> Callable[[Request], Awaitable[Response]]:
    handler: Handler = getattr(api, op.handler)

    async def endpoint(request: Request) -> Response:
        api.check_fetch_site(request)
        if op.method == "POST":
            api.check_origin(request)
        session = api.who(request, op.role)
        result = await handler(request, session)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    return endpoint


class _Headers:
    """Security headers on every HTTP response: no framing, no sniffing, scripts only from here."""

    CSP = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", self.CSP.encode()), (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                ]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    station: Station, config: ApiConfig | None = None, *, listen: tuple[str, int] | None = None,
    clock: Callable[[], float] | None = None, sleep: Callable[[float], Awaitable[None]] | None = None,
    monitoring_only: bool = False,
) -> Starlette:  # fmt: skip
    """The API and the console for one running station, to serve in the station's event loop.

    ``config`` defaults to the station's own (``config.json``, section ``api``); ``listen`` is the
    address served on (its host and port join the names the console answers to); ``clock`` and
    ``sleep`` drive the login guard's time (tests). ``monitoring_only``: the metrics-only address
    (``redline serve --metrics``): ``/health``, ``/ready`` and ``/metrics`` without login, nothing
    else (no console, no API, no login); the Host check holds there too."""
    api = Api(station, config or station.config.api, listen=listen, clock=clock, sleep=sleep)
    routes: list[BaseRoute] = []
    for op in ROUTES:
        if monitoring_only:
            if op.handler in MONITORING:
                routes.append(Route(op.path, _endpoint(api, replace(op, role=None)), methods=[op.method]))
        elif op.method == "WS":
            routes.append(WebSocketRoute(op.path, api.events))
        else:
            routes.append(Route(op.path, _endpoint(api, op), methods=[op.method], name=op.handler + op.path))
    if not monitoring_only:
        routes.append(Mount("/", app=StaticFiles(directory=CONSOLE, html=True), name="console"))
    app = Starlette(
        routes=routes, middleware=[Middleware(_Headers), Middleware(HostCheck, hosts=api.hosts)],
        exception_handlers={RedlineError: _error, HTTPException: _error, Exception: _error},
    )
    app.state.api = api
    return app


def create_standby_app(pair: Pair, *, listen: tuple[str, int] | None = None) -> Starlette:
    """The metrics-only address of a standby process (``redline serve --metrics`` while it waits for
    the lease): ``/health`` 200 while it reaches the database (it can take over), ``/ready`` always
    503 (it serves no line: a load balancer's readiness check finds the active process), ``/metrics``
    the pair's gauges. The console and the API stay closed on a standby."""

    def answer(body: dict[str, Any], ok: bool) -> Response:
        return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        ok = not pair.view().database.startswith("unreachable")
        return answer({"ok": ok, "role": pair.view().role}, ok)

    async def ready(request: Request) -> Response:
        return answer({"ready": False, "role": pair.view().role}, False)

    async def metrics(request: Request) -> Response:
        from redline.metrics import standby_exposition

        return Response(standby_exposition(pair), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    hosts = Hosts(pair.home.config().api, listen)
    routes = [Route("/health", health), Route("/ready", ready), Route("/metrics", metrics)]
    return Starlette(routes=routes, middleware=[Middleware(_Headers), Middleware(HostCheck, hosts=hosts)])


# -- serving inside `redline serve` ----------------------------------------------------------------
class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the station owns SIGINT/SIGTERM and stops us itself


class HttpServer:
    """uvicorn in the station's event loop, on a socket bound before it starts (so 'in use' is clear)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], addr: str) -> None:
        self._server, self._task, self.addr = server, task, addr

    @classmethod
    async def start(
        cls, station: Station, addr: str, config: ApiConfig | None = None, *, monitoring_only: bool = False
    ) -> HttpServer:
        config = config or station.config.api
        return await cls.serve(addr, lambda listen: create_app(station, config, listen=listen,
                                                               monitoring_only=monitoring_only), config)  # fmt: skip

    @classmethod
    async def start_standby(cls, pair: Pair, addr: str) -> HttpServer:
        return await cls.serve(addr, lambda listen: create_standby_app(pair, listen=listen), pair.home.config().api)

    @classmethod
    async def serve(cls, addr: str, make_app: Callable[[tuple[str, int]], Starlette], limits: ApiConfig) -> HttpServer:
        host, port = parse_hostport(addr)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by every accepted connection (made here with protocol 0, asyncio leaves Nagle on
        # for them): a console's voice packet must not wait for the ACK of the one before it, which
        # the browser sends with its own next packet (up to 20 ms more when both people talk).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot serve the console on {addr}: {exc.strerror or exc}") from None
        sock.listen(BACKLOG)
        sock.setblocking(False)
        bound = f"{host}:{sock.getsockname()[1]}"
        listen = (f"[{host}]" if ":" in host else host, sock.getsockname()[1])
        app = make_app(listen)
        # proxy_headers off: uvicorn would believe X-Forwarded-* from 127.0.0.1, whoever that is;
        # the API believes them only from api.trusted_proxies (auth.Proxies). log_config None:
        # uvicorn's records go to the station's own log handler (human or JSON, control codes escaped).
        # http: uvicorn's h11 protocol with a connection cap and a request-head deadline (listener.py).
        server = _Server(uvicorn.Config(
            app, http=bounded(limits.max_connections, limits.max_connections_per_source, limits.trusted_proxies,
                              limits.request_head_seconds), backlog=BACKLOG, ws="wsproto",
            lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=2, proxy_headers=False,
            log_config=None,
        ))  # fmt: skip
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                server.should_exit = True
                raise ConfigError(f"the console server did not start on {addr}")
            await asyncio.sleep(0.02)
        return cls(server, task, bound)

    async def stop(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._task, 5)
