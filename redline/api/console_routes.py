"""The duty console's own routes: what a person on watch must see and do that the views alone do not.

* ``GET /api/lines/{line}/watch``: the line's **conditions**, most urgent first (FLASH waiting >
  line down > a line test missed > a line test to answer > clock skew > ...). Each is derived from
  the station's state *now*, so it clears when its cause clears (the FLASH acknowledged, the line
  back, the test answered or expired into a miss, the clocks agreeing again); the alarm log says
  what happened, this says what is true. Codes and parameters, not sentences: the console words
  them in the reader's language.
* call requests, replies and records, translations (the forms the console needs; CALL_RECORD is
  signed by the logged-in person like READOUT);
* ``GET /api/lines/{line}/requests`` and ``/translations``: call requests with their state, and the
  translations attached to each envelope;
* ``GET``/``POST /api/console/settings``: the console language of the logged-in person (stored in
  the station folder, ``console-settings.json``), defaulting to the station's;
* ``GET /api/lines/{line}/search``: the transcript filtered by words and kind, over a bounded window
  of the newest envelopes (no query makes the station read more than ``SEARCH_SCAN`` of each side),
  in a worker thread on a read-only connection;
* ``GET /api/lines/{line}/export``: the line's bundle as a download, made by ``export.export_line``,
  the same code ``redline export`` runs, in a worker thread on a read-only snapshot.

Every filing route takes an optional ``idempotency_key`` (``act_once``): a retry or a second click
with the same key returns the first acceptance and files nothing; the same key for different
content is 409. The handlers are a mixin of ``app.Api`` (registered with one line there), so they
run with its sessions, role checks, origin checks and error rendering.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from redline import kinds, views
from redline.api import app as _app
from redline.api.auth import OPERATE, READ, ApiError, Session
from redline.bundle import encode_bundle
from redline.config import ApiConfig, check_lang
from redline.export import export_line
from redline.ops.engine import NOTICES_PAGE_MAX
from redline.ops.flash import ACK_SENDING
from redline.ops.views import NoticesPage
from redline.station import VIEW_PAGE

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request

    from redline.home import StationDir
    from redline.ledger.model import LineRecord
    from redline.ops.views import FlashView
    from redline.session import LineSession
    from redline.station import Station

CONSOLE_LANGS = ("en", "ru")  # the console's string tables (redline/console/strings.js)
SETTINGS_FILE = "console-settings.json"
MAX_TEXT = 64 * 1024
# A search reads at most this many of the line's newest envelopes (at most this many of each side,
# and the outbox), whatever it asks: a query never makes the station walk the whole transcript.
SEARCH_SCAN = 2000
SEARCH_MAX_Q = 200
SEARCH_MAX_LIMIT = 500
MAX_REDACT = 100
# The paged views (notices, flash, tests, requests, translations; Station.view): a page at a time,
# never the peer's whole history (each text up to max_body_bytes) at every console refresh.
PAGE_QUERY: dict[str, str] = {"offset": "items to skip, in the view's order (default 0)",
                              "limit": f"items in the page (default 100, at most {NOTICES_PAGE_MAX})"}  # fmt: skip

# Most urgent first. Level "alarm" sounds until a person acknowledges it at the console.
CONDITIONS: tuple[tuple[str, str], ...] = (
    ("flash", "alarm"),  # a FLASH from the peer waits for our acknowledgement
    ("voice_ring", "alarm"),  # the peer rings (a voice call): pick up or decline, until it times out
    ("line_down", "alarm"),  # no path to the peer for line_down_alarm_seconds
    ("halted", "alarm"),  # equivocation: nothing more can be sent
    ("test_missed", "alarm"),  # the tester's verdict on the latest line test (ours or theirs): missed
    ("test_to_answer", "alarm"),  # the peer's line test waits for a person here
    ("clock_skew", "alarm"),  # the peer's clock is off by more than max_clock_skew_seconds
    ("flash_more", "alarm"),  # FLASHes waiting past the FLASH_ROWS shown: one row with their count
    ("root_rotation", "warning"),  # the peer's new root awaits our typed NEW safety code (PROTOCOL.md 5.9 ROOT)
    ("not_in_sync", "warning"),
    ("unconfirmed", "warning"),  # the safety code is not yet confirmed at both ends
    ("notice_conflict", "warning"),
    ("call_request", "warning"),  # the peer asks for a call and we have not replied
    ("flash_unacked", "warning"),  # our FLASH passed its deadline without the peer's ACK
)
RANK = {code: i for i, (code, _) in enumerate(CONDITIONS)}
# A flood of FLASHes (a runaway script, a storm) must neither hide the newest one nor push every
# other alarm below a hundred rows: the watch names the oldest waiting (the most overdue) and the
# newest ones, each its own row, and says how many more wait in one row ranked below the other alarms.
FLASH_ROWS = 5
LEVEL = dict(CONDITIONS)


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props, "additionalProperties": False}


_STR, _INT = {"type": "string"}, {"type": "integer"}
_TIME = {"oneOf": [_INT, _STR], "description": "UTC ms, or ISO 8601 with a zone: 2022-05-13T12:00Z"}
_KEY = {"type": "string", "description": "one per form submit: a retry with it files nothing more"}
_LIST = {"type": "array", "items": _STR}

# (method, path, handler, summary, capability, body schema): app.ROUTES turns each into an Op.
CONSOLE_SPECS: tuple[dict[str, Any], ...] = (
    {"method": "GET", "path": "/api/console/settings", "handler": "console_settings", "role": READ,
     "summary": "The logged-in person's console settings (language), and the languages offered"},
    {"method": "POST", "path": "/api/console/settings", "handler": "console_set", "role": READ,
     "summary": "Set the logged-in person's console language",
     "body": _obj(["lang"], lang={"enum": list(CONSOLE_LANGS)})},
    {"method": "GET", "path": "/api/lines/{line}/watch", "handler": "watch", "role": READ,
     "summary": "What needs a person now, most urgent first; line down since; clock skew against the limit"},
    {"method": "GET", "path": "/api/lines/{line}/requests", "handler": "requests", "role": READ,
     "summary": "Call requests both ways with their state (open, accepted, declined, expired) and reply: a page, "
                "open ones first", "query": PAGE_QUERY},
    {"method": "GET", "path": "/api/lines/{line}/translations", "handler": "translations", "role": READ,
     "summary": "Translations attached to envelopes of this line, by the envelope's id: those of a page of "
                "envelopes, the latest translated first, texts cut at 2,000 characters", "query": PAGE_QUERY},
    {"method": "GET", "path": "/api/lines/{line}/search", "handler": "search", "role": READ,
     "summary": "The transcript filtered by words and kind, newest matches last, over the line's newest "
                f"{SEARCH_SCAN} envelopes and the outbox",
     "query": {"q": f"words to find (case-insensitive, every word must appear; at most {SEARCH_MAX_Q} characters) "
                    "in the text, the sender or any text of the body; a word of 6+ hex digits also finds an id",
               "kind": "only envelopes of this kind (TEXT, FLASH, NOTICE, ...)",
               "limit": f"matches to return, newest (default 200, at most {SEARCH_MAX_LIMIT})"}},
    {"method": "GET", "path": "/api/lines/{line}/export", "handler": "export", "role": READ,
     "summary": "Download the line's bundle, as 'redline export' writes it (docs/BUNDLE.md)",
     "query": {"redact": "leave out this envelope's body (an id or 8+ hex digits of it); repeatable",
               "recordings": "1: include this station's sealed call recordings"}},
    {"method": "POST", "path": "/api/lines/{line}/call-request", "handler": "call_request", "role": OPERATE,
     "summary": "Ask for a call between one of our principals and one of theirs",
     "body": _obj(["from_role", "to_role", "subject"], from_role=_STR, to_role=_STR, subject=_STR,
                  windows={"type": "array", "items": {"type": "array", "items": _TIME}}, expires=_TIME,
                  idempotency_key=_KEY)},
    {"method": "POST", "path": "/api/lines/{line}/call-reply", "handler": "call_reply", "role": OPERATE,
     "summary": "Accept (with a time) or decline (with a reason) the peer's call request",
     "body": _obj(["request_id", "answer"], request_id=_STR, answer={"enum": ["accept", "decline"]}, time=_TIME,
                  reason=_STR, idempotency_key=_KEY)},
    {"method": "POST", "path": "/api/lines/{line}/call-record", "handler": "call_record", "role": OPERATE,
     "summary": "Record a call that took place, signed as the logged-in person",
     "body": _obj(["start", "end", "principals", "participants"], start=_TIME, end=_TIME, principals=_LIST,
                  participants=_LIST, request_id=_STR, note=_STR, idempotency_key=_KEY)},
    {"method": "POST", "path": "/api/lines/{line}/translate", "handler": "translate", "role": OPERATE,
     "summary": "Attach a translation to an envelope; the original stays authoritative",
     "body": _obj(["ref_id", "text", "lang"], ref_id=_STR, text=_STR, lang=_STR, translator=_STR,
                  idempotency_key=_KEY)},
)  # fmt: skip


def _names(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if isinstance(value, str):  # a form's "Secretary, Minister"
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"'{name}' must be a list of names")
    names = [v.strip() for v in value if v.strip()]
    if not names:
        raise ApiError(400, f"'{name}' needs at least one name")
    if len(names) > 64 or any(len(v) > 200 for v in names):
        raise ApiError(400, f"'{name}': at most 64 names of at most 200 characters")
    return names


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    if not required and body.get(name) in (None, ""):
        return None
    value = _app._str(body, name, max_len=MAX_TEXT).strip()
    if not value:
        raise ApiError(400, f"'{name}' is empty")
    return value


def attachment(filename: str) -> str:
    """Content-Disposition for a download named ``filename``, which carries the station's name (any
    letters: 'НЦУО'). Header values are Latin-1, so the name goes as RFC 6266's ``filename*`` in
    UTF-8, with an ASCII ``filename`` (other characters as '_') for clients that do not read it."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"


def down_since(status: dict[str, Any]) -> int | None:
    """When the peer was last heard on any path, if no path is up now (None: a path is up, or the
    peer was never heard since this station started)."""
    paths = status["paths"].values()
    if any(p["up"] for p in paths):
        return None
    heard = [p["last_rx"] for p in paths if p["last_rx"] is not None]
    return max(heard) if heard else None


def worst_skew(status: dict[str, Any]) -> float | None:
    """The peer's clock minus ours (ms) on the up path where it is furthest off, or None."""
    skews = [p["skew_ms"] for p in status["paths"].values() if p["up"] and p["skew_ms"] is not None]
    return max(skews, key=abs) if skews else None


class ConsoleHandlers:
    """Mixed into ``app.Api``: the console's routes over the same station, sessions and checks."""

    station: Station
    config: ApiConfig
    _first_down: dict[str, int]
    _seen: dict[tuple[str, str], int]

    if TYPE_CHECKING:

        def line(self, line: str) -> LineSession: ...

        def _writable(self, line: LineSession) -> None: ...

        async def _signed(
            self, session: Session, line: LineSession, kind: str, content: dict[str, Any], *,
            key_field: str | None = None, idem: str | None = None,
        ) -> dict[str, Any]: ...  # fmt: skip

    # -- settings ---------------------------------------------------------------------------------
    def _settings_path(self) -> Any:
        return self.station.home.path / SETTINGS_FILE

    def _all_settings(self) -> dict[str, Any]:
        try:
            data = json.loads(self._settings_path().read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _lang_of(self, user: str) -> str:
        mine = self._all_settings().get(user)
        lang = mine.get("lang") if isinstance(mine, dict) else None
        if lang in CONSOLE_LANGS:
            return str(lang)
        station = self.station.config.lang.split("-")[0]
        return station if station in CONSOLE_LANGS else "en"

    async def console_settings(self, request: Request, session: Session) -> dict[str, Any]:
        return {"lang": self._lang_of(session.name), "station_lang": self.station.config.lang,
                "languages": list(CONSOLE_LANGS)}  # fmt: skip

    async def console_set(self, request: Request, session: Session) -> dict[str, Any]:
        body = await _app._body(request, 4096)
        lang = _app._str(body, "lang", max_len=8)
        if lang not in CONSOLE_LANGS:
            raise ApiError(400, f"the console speaks {', '.join(CONSOLE_LANGS)}, not {lang!r}")
        data = self._all_settings()
        data[session.name] = {**(data.get(session.name) or {}), "lang": lang}
        path = self._settings_path()
        tmp = path.with_name(path.name + ".tmp")
        # Written whole and renamed: a crash leaves the old settings, never half a file.
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return await self.console_settings(request, session)

    # -- what needs a person now ------------------------------------------------------------------
    async def watch(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        return self.conditions(line)

    def conditions(self, line: LineSession) -> dict[str, Any]:
        station, lid = self.station, line.line
        now, limits = station.wall(), station.limits
        status = line.status().to_obj()  # the conditions read the same JSON the console gets
        out: list[dict[str, Any]] = []

        def add(code: str, key: str, since: int | None = None, **params: Any) -> None:
            out.append({"code": code, "key": key, "level": LEVEL[code], "rank": RANK[code], "since": since,
                        "params": params})  # fmt: skip

        def occurrence(code: str, present: bool) -> str:
            """The key of this occurrence of a condition with no id of its own (``halted:<when first
            seen>``): a SILENCE at the console is for one occurrence; the next one sounds afresh."""
            if not present:
                self._seen.pop((lid, code), None)
                return ""
            return f"{code}:{self._seen.setdefault((lid, code), now)}"

        # Read from the same typed views the CLI and the API show (ops/views.py), never ops' internals:
        # a page of each (what still needs a person first, texts cut), as the console's panels show,
        # never every FLASH, test and request a peer ever sent, at each console's watch.
        flashes, hidden = self._open_flashes(lid)
        waiting = []
        for f in flashes:
            if f.ours:
                if now > f.deadline:
                    add("flash_unacked", f"flash_unacked:{f.id}", f.deadline, seq=f.seq, id=f.id)
            elif f.state != ACK_SENDING:  # our ACK waits in the outbox: nobody to call
                waiting.append(f)
        shown = waiting if len(waiting) <= FLASH_ROWS else [waiting[0], *waiting[-(FLASH_ROWS - 1) :]]
        for f in shown:
            add("flash", f"flash:{f.id}", f.accepted_at, seq=f.seq, id=f.id, text=f.text, lang=f.lang,
                deadline=f.deadline)  # fmt: skip
        more = len(waiting) - len(shown) + hidden
        if more > 0:
            add("flash_more", f"flash_more:{shown[-1].id if shown else more}", None, count=more)
        for call in station.voice_view(lid).calls:
            if not call.ours and call.state == "ringing":
                add("voice_ring", f"voice_ring:{call.id}", call.rang_at, id=call.id, caller=call.caller,
                    deadline=call.deadline, test=call.test is not None)  # fmt: skip
        since = down_since(status)
        if since is None and not any(p["up"] for p in status["paths"].values()):
            since = self._first_down.setdefault(lid, now)  # never heard since this start
        elif since is not None or any(p["up"] for p in status["paths"].values()):
            self._first_down.pop(lid, None)
        line_down = since is not None and status["active"] and now - since >= limits.line_down_alarm_seconds * 1000
        if line_down:
            add("line_down", f"line_down:{since}", since, peer=status["peer"])
        if halted := occurrence("halted", status["halted"]):
            add("halted", halted, None)
        tests = station.tests_view(lid, limit=VIEW_PAGE)
        decided = [t for t in tests.tests if t.result != "pending"]
        if decided and decided[-1].result == "missed":
            mine = decided[-1]
            add("test_missed", f"test_missed:{mine.id}", mine.deadline, side="ours", id=mine.id)
        # The peer's tests: the tester alone decides a miss (guarantee 7). Past our copy of the
        # deadline and with no verdict yet, an answer may still count: the test stays to answer,
        # marked overdue; once the verdict says missed, it is a miss here too and ANSWER is gone.
        theirs = tests.received
        missed = [t for t in theirs if t.result == "missed"]
        if missed and not any(t.stored_at > missed[-1].stored_at and t.answered_at is not None for t in theirs):
            t = missed[-1]
            add("test_missed", f"test_missed:{t.id}", t.deadline, side="theirs", id=t.id)
        for t in theirs:
            if t.answered_at is None and t.result == "pending":
                add("test_to_answer", f"test:{t.id}", t.stored_at, id=t.id, deadline=t.deadline,
                    overdue=now > t.deadline)  # fmt: skip
        skew = worst_skew(status)
        limit_ms = int(limits.max_clock_skew_seconds * 1000)
        if skewed := occurrence("clock_skew", skew is not None and abs(skew) > limit_ms):
            add("clock_skew", skewed, None, skew_ms=round(skew or 0), limit_ms=limit_ms)
        if status["root_code"] is not None:  # until typed, nothing the peer's new root certifies is trusted
            add("root_rotation", f"root_rotation:{status['root_code']}", None, peer=status["peer"])
        if behind := occurrence("not_in_sync", status["active"] and not status["synced"] and not line_down
                                and not status["halted"]):  # fmt: skip
            add("not_in_sync", behind, since)
        if unconfirmed := occurrence("unconfirmed", not status["active"]):
            add("unconfirmed", unconfirmed, None, local=status["confirmed"]["local"],
                peer=status["confirmed"]["peer"])  # fmt: skip
        page = station.notices_view(lid, limit=1)
        conflicts = page.conflicts_total if isinstance(page, NoticesPage) else 0
        if conflicts:
            add("notice_conflict", f"notice_conflict:{conflicts}", None, count=conflicts)
        for r in station.requests_view(lid, limit=VIEW_PAGE):
            if not r.ours and r.state == "open":
                add("call_request", f"call_request:{r.id}", r.sent_at, id=r.id, from_role=r.from_role,
                    to_role=r.to_role, subject=r.subject, lang=r.lang)  # fmt: skip
        out.sort(key=lambda c: (c["rank"], c["since"] or 0))
        return {
            "line": lid, "peer": status["peer"], "now": now, "conditions": out, "down_since": since,
            "skew_ms": None if skew is None else round(skew), "skew_limit_ms": limit_ms,
        }  # fmt: skip

    def _open_flashes(self, lid: str) -> tuple[list[FlashView], int]:
        """The open FLASHes (no ACK signed yet, both ways) at the two ends of the view's order (the
        oldest and the newest page), in time order, and how many open ones lie between them, unread.

        The view puts the open ones first (Station.flash_view); where they end is found by halving
        over the view's total (views.page_counts: the station's count), one item a probe, so a flood
        of thousands costs a few probes and two pages, never every FLASH's text at every watch."""
        total = views.page_counts(self.station, lid, "flash")["flash"].total
        lo, hi = 0, total  # the first closed one (or the end) lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            [probe] = self.station.flash_view(lid, offset=mid, limit=1)
            if probe.acked_at is None:
                lo = mid + 1
            else:
                hi = mid
        n_open = lo
        head = self.station.flash_view(lid, offset=0, limit=min(n_open, VIEW_PAGE)) if n_open else ()
        tail_from = max(len(head), n_open - VIEW_PAGE)
        tail = self.station.flash_view(lid, offset=tail_from, limit=n_open - tail_from) if n_open > tail_from else ()
        return [*head, *tail], tail_from - len(head)

    # -- reads the views do not give --------------------------------------------------------------
    async def requests(self, request: Request, session: Session) -> Any:
        return self._page(request, "requests")

    async def translations(self, request: Request, session: Session) -> Any:
        return self._page(request, "translations")

    def _page(self, request: Request, what: str) -> Any:
        """A page of a paged view (Station.view: never the peer's whole history)."""
        line = self.line(request.path_params["line"])
        offset = _app._query_int(request, "offset", 0, 0, _app.MAX_OFFSET)
        limit = _app._query_int(request, "limit", None, 1, NOTICES_PAGE_MAX)
        return _app.paged(self.station, line.line, what, offset, limit,
                          self.station.view(line.line, what, offset=offset, limit=limit))  # fmt: skip

    async def search(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        q = request.query_params
        words = (q.get("q") or "").strip()
        if len(words) > SEARCH_MAX_Q:
            raise ApiError(400, f"the search words are over {SEARCH_MAX_Q} characters")
        kind = (q.get("kind") or "").strip().upper() or None
        if kind is not None and kind not in kinds.REGISTRY:
            raise ApiError(400, f"no envelope kind is called {kind[:40]!r}")
        limit = _app._query_int(request, "limit", 200, 1, SEARCH_MAX_LIMIT)
        # Read and filtered in a worker thread on a read-only connection of its own (as verify and
        # export are): ~130 ms for a full window on a busy 2-core box, never in the station's loop.
        # One search at a time per station; more consoles searching wait their turn.
        flashes = {f.id: f for f in self.station.flash_view(line.line)}
        args = (self.station.home, line.record, line.receipted_seq, flashes, words, kind, limit)
        async with self._lock("_searching"):
            return await asyncio.to_thread(search_transcript, *args)

    def _lock(self, name: str) -> asyncio.Lock:
        """The lock that lets one search (or one export) run at a time; others wait their turn."""
        lock: asyncio.Lock | None = getattr(self, name, None)
        if lock is None:
            lock = asyncio.Lock()
            setattr(self, name, lock)
        return lock

    async def export(self, request: Request, session: Session) -> Response:
        line = self.line(request.path_params["line"])
        redact = request.query_params.getlist("redact")
        if len(redact) > MAX_REDACT or any(len(r) > 64 for r in redact):
            raise ApiError(400, f"at most {MAX_REDACT} envelope ids to redact, each at most 64 characters")
        recordings = request.query_params.get("recordings") in ("1", "true")
        # A bad redaction is a BundleError: 400 with its reason, like every RedlineError (app._error).
        # One export at a time per station: a bundle of a busy line is held whole in memory.
        async with self._lock("_exporting"):
            done = await asyncio.to_thread(export_line, self.station.home, line.line, now=self.station.wall(),
                                           redact=redact, recordings=recordings)  # fmt: skip
            data = await asyncio.to_thread(encode_bundle, done.obj)
        _app.log.warning("console: %s exported line %s (%d bytes)", session.name, line.line[:8], len(data))
        return Response(data, media_type="application/json", headers={
            "Content-Disposition": attachment(done.filename), "Cache-Control": "no-store",
            "X-Redline-Fingerprints": " ".join(done.fingerprints),
        })  # fmt: skip

    # -- filing -----------------------------------------------------------------------------------
    async def act_once(
        self, body: dict[str, Any], line: LineSession, kind: str, content: dict[str, Any], *, prio: str | None = None
    ) -> dict[str, Any]:
        """``Station.act`` with the body's ``idempotency_key``: a second submit of the same form
        returns the first acceptance and files nothing; the same key with other content is 409
        (the session's rule, ``IdempotencyConflictError``)."""
        self._writable(line)
        idem = _app._idem(body, kind)
        return (await self.station.act(line.line, kind, content, prio=prio, idem=idem)).to_obj()

    async def call_request(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _app._body(request, 64 * 1024)
        windows = []
        for w in body.get("windows") or []:
            if not isinstance(w, list) or len(w) != 2:
                raise ApiError(400, "each of 'windows' is [start, end]")
            start, end = _app._time({"start": w[0]}, "start"), _app._time({"end": w[1]}, "end")
            if end <= start:
                raise ApiError(400, "a proposed window ends before it starts")
            windows.append([start, end])
        content: dict[str, Any] = {
            "from_role": _text(body, "from_role"), "to_role": _text(body, "to_role"),
            "subject": _text(body, "subject"), "windows": windows,
        }  # fmt: skip
        if body.get("expires") not in (None, ""):
            content["expires"] = _app._time(body, "expires")
            if content["expires"] <= self.station.wall():
                raise ApiError(400, "'expires' is in the past")
        return await self.act_once(body, line, "CALL_REQUEST", content, prio="priority")

    async def call_reply(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _app._body(request, 64 * 1024)
        answer = _app._str(body, "answer", max_len=16)
        if answer not in ("accept", "decline"):
            raise ApiError(400, "'answer' is accept or decline")
        request_id = _app._str(body, "request_id", max_len=64)
        wanted = [r for r in self.station.ops[line.line].calls.requests.values() if r.entry.id.startswith(request_id)]
        retry = self.station.is_retry(line.line, _app._idem(body, "CALL_REPLY"))
        if len(request_id) >= 6 and len(wanted) == 1 and wanted[0].state != "open" and not retry:
            raise ApiError(409, f"that call request is already {wanted[0].state}")
        content: dict[str, Any] = {"request": request_id, "answer": answer}
        if answer == "accept":
            content["time"] = _app._time(body, "time")
        elif (reason := _text(body, "reason", required=False)) is not None:
            content["reason"] = reason
        return await self.act_once(body, line, "CALL_REPLY", content, prio="priority")

    async def call_record(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _app._body(request, 64 * 1024)
        content: dict[str, Any] = {
            "start": _app._time(body, "start"), "end": _app._time(body, "end"),
            "principals": _names(body, "principals"), "participants": _names(body, "participants"),
        }  # fmt: skip
        if content["end"] < content["start"]:
            raise ApiError(400, "the call ends before it starts")
        if body.get("request_id") not in (None, ""):
            content["request"] = _app._str(body, "request_id", max_len=64)
        if (note := _text(body, "note", required=False)) is not None:
            content["note"] = note
        idem = _app._idem(body, "CALL_RECORD", session.name)
        return await self._signed(session, line, "CALL_RECORD", content, idem=idem)

    async def translate(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _app._body(request, 128 * 1024)
        lang = _app._str(body, "lang", max_len=35)
        try:
            check_lang(lang, "translation")
        except Exception as exc:
            raise ApiError(400, str(exc)) from None
        content = {
            "ref": _app._str(body, "ref_id", max_len=64), "text": _text(body, "text"), "lang": lang,
            "translator": _text(body, "translator", required=False) or session.name,
        }  # fmt: skip
        return await self.act_once(body, line, "TRANSLATION", content, prio="routine")


_HEXISH = re.compile(r"\A[0-9a-f]{32,}(:[0-9]+)?\Z")


def search_transcript(
    home: StationDir, record: LineRecord, receipted_ours: int, flashes: Mapping[str, FlashView], words: str,
    kind: str | None, limit: int,
) -> dict[str, Any]:  # fmt: skip
    """The newest ``limit`` rows among the newest ``SEARCH_SCAN`` of the line (and the outbox) that
    have every word of ``words`` (case-insensitive) and are of ``kind``: the log's rows, as
    ``GET /log`` shows them (views.transcript), from one snapshot of a read-only connection."""
    ledger = home.read_ledger()
    try:
        with ledger.snapshot():
            found = views.transcript(
                ledger, record, limit=SEARCH_SCAN, receipted_ours=receipted_ours, flashes=flashes
            ).to_obj()
    finally:
        ledger.close()
    terms = words.casefold().split()

    def hit(row: dict[str, Any]) -> bool:
        if kind is not None and row["kind"] != kind:
            return False
        if not terms:
            return True
        hay = "\n".join([row["text"], row["from"], *_strings(row["content"])]).casefold()
        return all(t in hay or (len(t) >= 6 and (row["id"] or "").startswith(t)) for t in terms)

    rows = [r for r in found["rows"] if hit(r)]
    outbox = [r for r in found["outbox"] if hit(r)]
    return {"line": found["line"], "peer": found["peer"], "q": words, "kind": kind, "rows": rows[-limit:],
            "outbox": outbox[-limit:], "matched": len(rows) + len(outbox), "total": found["total"],
            "scanned": len(found["rows"]), "complete": len(found["rows"]) >= found["total"]}  # fmt: skip


def _strings(value: Any, depth: int = 0) -> list[str]:
    """Every text in an envelope's body (names, subjects, readouts), for the search to look in. The
    body was checked on the way in (its size and depth are bounded); the depth bound here is a guard."""
    if isinstance(value, str):  # not ids, digests or references: a "42" would be found in every one
        return [] if _HEXISH.match(value) else [value]
    if depth > 8:
        return []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v, depth + 1)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v, depth + 1)]
    return []
