"""The HTTP API in-process over httpx.ASGITransport (datasette's way), against two real stations.

Both stations run in the test's event loop with real TLS on loopback ports, paired directly
(redline.testing); the API under test is that of EUCOM, in the same loop, so every request goes
through the running station exactly as the console's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nacl.pwhash
import pytest
from starlette.routing import Route, WebSocketRoute

from redline import persons
from redline.api import ApiConfig, create_app
from redline.api.app import ROUTES, VIEWS
from redline.station import Station
from redline.testing import make_station, pair_directly
from tests.procs import free_ports

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
FAST = {"ops": nacl.pwhash.argon2id.OPSLIMIT_MIN, "mem": nacl.pwhash.argon2id.MEMLIMIT_MIN}
# "testserver" is httpx's host name for an in-process app: the console answers to it only because
# it is configured, as an operator adds the name a proxy serves the console under.
CONFIG = ApiConfig(failure_delay_seconds=0.0, max_failures=3, lockout_seconds=60.0, poll_seconds=0.1,
                   allowed_hosts=("testserver",))
BOWTIE = {"type": "Polygon", "coordinates": [[[28.1, 45.1], [28.9, 45.6], [28.9, 45.1], [28.1, 45.6], [28.1, 45.1]]]}
SQUARE = {"type": "Polygon", "coordinates": [[[28.1, 45.1], [28.9, 45.1], [28.9, 45.6], [28.1, 45.6], [28.1, 45.1]]]}


@dataclass
class Pair:
    a: Station  # EUCOM: the API under test
    b: Station  # NDMC: the peer
    line: str
    app: Any
    client: httpx.AsyncClient
    clock: FakeClock

    def our_seq(self) -> int:
        return int(self.a.sessions[self.line].status().to_obj()["our_seq"])

    async def login(self, user: str = "Duty EUCOM", password: str = PASSWORD) -> httpx.Response:
        return await self.client.post("/api/login", json={"user": user, "password": password})


async def eventually(pred: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = pred()
            if value:
                return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class FakeClock:
    """The login guard's monotonic clock, moved by the test: no sleeping for a lockout to end."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def station_pair(root: Path, *, peer_app: bool = False, config: ApiConfig = CONFIG) -> AsyncIterator[Pair]:
    pa, pb = free_ports(2)
    da, db = make_station(root, "EUCOM", "en", pa), make_station(root, "NDMC", "ru", pb)
    line = pair_directly(da, db)
    for name, role in (("Duty EUCOM", "duty"), ("Auditor", "auditor"), ("Chief", "supervisor")):
        persons.add_user(da.path, name, role, PASSWORD, **FAST)
    persons.add_user(db.path, "Dezhurny", "duty", PASSWORD, **FAST)
    a, b = Station(da), Station(db)
    await a.start()
    await b.start()
    clock = FakeClock()
    app = create_app(a, config, clock=clock)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            pair = Pair(a, b, line, app, client, clock)
            await eventually(lambda: a.sessions[line].link.synced and b.sessions[line].link.synced, "line in sync")
            yield pair
    finally:
        await a.close()
        await b.close()


def run(tmp_path: Path, scenario: Callable[[Pair], Awaitable[None]]) -> None:
    async def main() -> None:
        async with station_pair(tmp_path) as pair:
            await scenario(pair)

    asyncio.run(main())


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]
    assert isinstance(message, str) and message
    return message


# -- login ------------------------------------------------------------------------------------------
def test_login_me_logout_and_the_cookie(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        assert error(await p.client.get("/api/me"), 401).startswith("not logged in")
        r = await p.login()
        assert r.status_code == 200, r.text
        assert r.json()["user"] == "Duty EUCOM" and r.json()["role"] == "duty"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=" in cookie
        me = (await p.client.get("/api/me")).json()
        assert me["capabilities"] == ["operate", "read"] and me["station"] == "EUCOM"
        api = _api(p)
        assert len(api.sessions) == 1
        assert (await p.client.post("/api/logout")).json() == {"logged_out": True}
        assert len(api.sessions) == 0  # the session and its unlocked key are gone
        assert error(await p.client.get("/api/status"), 401).startswith("not logged in")

    run(tmp_path, scenario)


def test_a_forged_or_altered_cookie_is_not_a_session(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        value = p.client.cookies["redline_session"]
        sid, expires, mac = value.split(".")
        for forged in (f"{sid}.{int(expires) + 3600}.{mac}", f"{sid}.{expires}.{'A' * len(mac)}", "x.y.z"):
            p.client.cookies.set("redline_session", forged)
            error(await p.client.get("/api/me"), 401)

    run(tmp_path, scenario)


def test_wrong_password_is_401_with_the_reason_then_the_user_is_locked_out(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        assert "wrong password for Duty EUCOM" in error(await p.login(password="not the password"), 401)
        assert "no user 'Nobody'" in error(await p.login(user="Nobody"), 401)
        assert "'password' is required" in error(await p.client.post("/api/login", json={"user": "x"}), 400)
        for _ in range(CONFIG.max_failures - 1):
            error(await p.login(password="still wrong"), 401)
        # locked: even the right password is refused, with how long to wait
        assert "locked for" in error(await p.login(), 429)
        assert "redline_session" not in p.client.cookies
        p.clock.advance(CONFIG.lockout_seconds)
        assert (await p.login()).status_code == 200

    run(tmp_path, scenario)


def test_the_unlock_runs_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at login must not stall the station: heartbeats keep flowing meanwhile. Asserted by
    where the unlock runs (a thread with no event loop), not by counting loop turns during it, which
    a busy machine can starve either way (CI at 3035179 counted 1 turn, not 3)."""
    ran_on: list[bool] = []  # for each unlock: was an event loop running in its thread?
    unlock = persons.unlock

    def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            ran_on.append(True)
        except RuntimeError:
            ran_on.append(False)
        return unlock(*args, **kwargs)

    monkeypatch.setattr(persons, "unlock", watched)

    async def scenario(p: Pair) -> None:
        slow = {"ops": nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, "mem": nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE}
        persons.add_user(p.a.home.path, "Slow", "duty", PASSWORD, **slow)
        assert (await p.login("Slow")).status_code == 200
        assert ran_on == [False]  # the real Argon2id ran, once, and not on the station's event loop

    run(tmp_path, scenario)


# -- roles and errors -------------------------------------------------------------------------------
def test_an_auditor_reads_but_cannot_send_ack_or_file(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login("Auditor")
        before = p.our_seq()
        url = f"/api/lines/{p.line}"
        assert "auditor" in error(await p.client.post(f"{url}/send", json={"text": "hello"}), 403)
        error(await p.client.post(f"{url}/ack", json={"flash_id": "abcdef"}), 403)
        error(await p.client.post(f"{url}/notice", json={"kind": "air"}), 403)
        error(await p.client.post(f"{url}/confirm", json={"code": "000000"}), 403)
        assert p.our_seq() == before
        assert (await p.client.get(f"{url}/log")).status_code == 200
        assert (await p.client.get("/api/status")).json()["lines"][0]["synced"] is True
        for what in VIEWS:
            assert (await p.client.get(f"{url}/{what}")).status_code == 200, what

    run(tmp_path, scenario)


def test_unknown_line_is_404_and_bad_input_is_400(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        assert "no line matches" in error(await p.client.get("/api/lines/ffffffff/log"), 404)
        url = f"/api/lines/{p.line[:8]}"
        assert "JSON" in error(await p.client.post(f"{url}/send", content=b"text=hi"), 400)
        r = await p.client.post(f"{url}/send", content=b"{not json", headers={"content-type": "application/json"})
        assert "not JSON" in error(r, 400)
        assert "priority" in error(await p.client.post(f"{url}/send", json={"text": "x", "priority": "urgent"}), 400)
        assert "empty" in error(await p.client.post(f"{url}/send", json={"text": "   "}), 400)
        big = "x" * (p.a.limits.max_text_bytes + 1)
        assert "max_text_bytes" in error(await p.client.post(f"{url}/send", json={"text": big}), 400)
        assert "limit" in error(await p.client.get(f"{url}/log?limit=0"), 400)
        error(await p.client.get("/api/no-such-route"), 404)

    run(tmp_path, scenario)


def test_a_post_from_another_site_is_refused(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        r = await p.client.post(f"/api/lines/{p.line}/send", json={"text": "csrf"},
                                headers={"origin": "http://evil.example"})  # fmt: skip
        assert "another site" in error(r, 403)
        ok = await p.client.post(f"/api/lines/{p.line}/send", json={"text": "same site"},
                                 headers={"origin": "http://testserver"})  # fmt: skip
        assert ok.status_code == 200

    run(tmp_path, scenario)


# -- operations -------------------------------------------------------------------------------------
def test_send_is_receipted_and_appears_in_the_log_at_the_peer(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        body = {"text": "Planned exercise at 12:00Z", "priority": "priority", "idempotency_key": "k-1",
                "wait_receipt": True}  # fmt: skip
        r = await p.client.post(f"{url}/send", json=body)
        assert r.status_code == 200, r.text
        sent = r.json()
        assert sent["state"] == "receipted by the peer" and sent["seq"]
        # a retry with the same key is the same message, not a second one
        again = (await p.client.post(f"{url}/send", json=body)).json()
        assert again["id"] == sent["id"] and p.our_seq() == sent["seq"]
        # the same key for a different text is a conflict, and nothing is sent
        assert "NOT sent" in error(await p.client.post(f"{url}/send", json={**body, "text": "other"}), 409)
        assert p.our_seq() == sent["seq"]

        rows = (await p.client.get(f"{url}/log")).json()["rows"]
        mine = next(r for r in rows if r["id"] == sent["id"])
        assert mine["receipted"] and mine["state"] == "stored by the peer" and mine["priority"] == "PRIORITY"

        # at the peer, through its own API
        async with _client(p.b) as peer:
            assert (await peer.post("/api/login", json={"user": "Dezhurny", "password": PASSWORD})).status_code == 200
            theirs = (await peer.get(f"/api/lines/{p.line}/log")).json()
            row = next(r for r in theirs["rows"] if r["id"] == sent["id"])
            assert row["from"] == "EUCOM" and row["text"] == "Planned exercise at 12:00Z" and not row["ours"]

    run(tmp_path, scenario)


def test_a_message_sent_while_the_peer_is_down_waits_in_the_outbox(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        await p.b.close()
        await eventually(lambda: not p.a.sessions[p.line].link.synced, "the line to drop")
        r = await p.client.post(f"/api/lines/{p.line}/send", json={"text": "are you there?"})
        assert r.status_code == 200, r.text
        assert r.json()["seq"] is None and "outbox" in r.json()["state"]
        log = (await p.client.get(f"/api/lines/{p.line}/log")).json()
        assert log["outbox"][-1]["text"] == "are you there?" and log["outbox"][-1]["seq"] is None
        status = (await p.client.get("/api/status")).json()["lines"][0]
        assert status["synced"] is False and status["outbox"] == len(log["outbox"])

    run(tmp_path, scenario)


def test_ack_of_a_flash_is_signed_by_the_logged_in_person(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        flash = (await p.b.send(p.line, "FLASH: aircraft near the border", kind="FLASH", prio="FLASH")).to_obj()
        await p.login()
        url = f"/api/lines/{p.line}"
        await eventually(lambda: any(f["id"] == flash["id"] for f in p.a.view(p.line, "flash")), "the FLASH here")
        waiting = (await p.client.get(f"{url}/flash")).json()
        assert waiting[-1]["state"] == "waiting for acknowledgement" and not waiting[-1]["ours"]
        row = next(r for r in (await p.client.get(f"{url}/log")).json()["rows"] if r["id"] == flash["id"])
        assert row["ack"]["state"] == "waiting for acknowledgement"

        r = await p.client.post(f"{url}/ack", json={"flash_id": flash["id"][:10]})
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == "ACK"
        # the ACK carries Duty EUCOM's own signature, checked by the peer against EUCOM's roster
        acked = await eventually(lambda: [f for f in p.b.view(p.line, "flash") if f["acked_by"]], "the ACK at NDMC")
        assert acked[0]["acked_by"] == "Duty EUCOM" and acked[0]["id"] == flash["id"]
        assert p.b.view(p.line, "refused") == []
        assert "already acknowledged by Duty EUCOM" in error(
            await p.client.post(f"{url}/ack", json={"flash_id": flash["id"][:10]}), 409
        )

    run(tmp_path, scenario)


def test_answer_of_a_line_test_is_signed_by_the_logged_in_person(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        assert "no unanswered line test" in error(await p.client.post(f"{url}/answer", json={}), 409)
        test = (await p.b.act(p.line, "TEST", {"text": "Line test"}, prio="priority")).to_obj()
        await eventually(lambda: p.a.view(p.line, "tests")["to_answer"], "the test here")
        r = await p.client.post(f"{url}/answer", json={})
        assert r.status_code == 200, r.text
        passed = await eventually(
            lambda: [t for t in p.b.view(p.line, "tests")["tests"] if t["result"] == "passed"], "the test to pass"
        )
        assert passed[0]["id"] == test["id"] and passed[0]["answered_by"] == "Duty EUCOM"

    run(tmp_path, scenario)


def test_a_notice_with_bad_geojson_is_400_with_the_reason_and_nothing_is_sent(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        now = p.a.wall()  # the window must be live: notices leave the board when it ends
        base = {"kind": "air", "floor_m": 6000, "ceiling_m": 12000, "start": now - 3_600_000,
                "end": _iso(now + 6 * 3_600_000), "margin_m": 1000, "text": "exercise"}  # fmt: skip
        before, outbox = p.our_seq(), p.a.ledger.max_outbox_local()
        assert "self-intersect" in error(await p.client.post(f"{url}/notice", json={**base, "area": BOWTIE}), 400)
        assert "not JSON" in error(await p.client.post(f"{url}/notice", json={**base, "area": "{oops"}), 400)
        assert "floor" in error(
            await p.client.post(f"{url}/notice", json={**base, "area": SQUARE, "floor_m": 13000}), 400
        )
        assert "time zone" in error(
            await p.client.post(f"{url}/notice", json={**base, "area": SQUARE, "end": _iso(now)[:-1]}), 400
        )
        assert p.our_seq() == before and p.a.ledger.max_outbox_local() == outbox  # nothing accepted, nothing sent

        raw = json.dumps({**base, "area": SQUARE}).replace("28.9", "28.9000")
        r = await p.client.post(f"{url}/notice", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        view = await eventually(lambda: p.b.view(p.line, "notices")["active"], "the notice at NDMC")
        assert view[0]["area"]["coordinates"][0][1] == ["28.9", "45.1"]  # decimal strings, never floats

    run(tmp_path, scenario)


def test_the_websocket_pushes_an_alarm_and_status_changes(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        refused = AsgiWebSocket(p.app, cookie=None)
        msg = await refused.receive()
        assert msg["type"] == "error" and "not logged in" in msg["error"]
        assert await refused.closed_with() == 4401

        await p.login()
        foreign = AsgiWebSocket(p.app, cookie=p.client.cookies["redline_session"], origin="http://evil.example")
        assert "another site" in (await foreign.receive())["error"]
        assert await foreign.closed_with() == 4403
        ws = AsgiWebSocket(p.app, cookie=p.client.cookies["redline_session"])
        hello = await ws.receive()
        assert hello["type"] == "hello" and hello["you"]["user"] == "Duty EUCOM"
        assert hello["status"]["lines"][0]["synced"] is True
        await p.b.send(p.line, "FLASH: launch detected", kind="FLASH", prio="FLASH")
        seen: list[dict[str, Any]] = []
        while not (
            any(m["type"] == "alarm" and "FLASH from the peer" in m["alarm"]["text"] for m in seen)
            and any(m["type"] == "status" and m["status"]["lines"][0]["their_seq"] > 0 for m in seen)
        ):
            seen.append(await ws.receive())
        await p.client.post("/api/logout")
        while (await ws.receive())["type"] != "logout":
            pass
        assert await ws.closed_with() == 4401

    run(tmp_path, scenario)


def test_verify_runs_off_the_loop_and_says_verified(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login("Auditor")
        await p.a.send(p.line, "one")
        await p.b.send(p.line, "two")
        r = await p.client.get("/api/verify")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["ok"] is True and report["lines"][0]["problems"] == []
        assert set(report["lines"][0]["chains"]) == {"EUCOM", "NDMC"}

    run(tmp_path, scenario)


def test_supervisor_confirm_is_409_on_a_confirmed_line(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login("Chief")
        r = await p.client.post(f"/api/lines/{p.line}/confirm", json={"code": "1"})
        assert "already confirmed" in error(r, 409)

    run(tmp_path, scenario)


def test_confirm_root_files_nothing_for_a_wrong_code_and_the_root_confirm_for_the_right_one(tmp_path: Path) -> None:
    """POST /api/lines/{line}/confirm-root: the typed NEW safety code of the peer's root rotation
    (PROTOCOL.md 5.9); the supervisor's, as the line's own safety code."""
    import nacl.signing

    from redline import keys as keyfiles
    from redline import rotation

    async def scenario(p: Pair) -> None:
        url = f"/api/lines/{p.line}/confirm-root"
        await p.login("Chief")
        assert "no root rotation" in error(await p.client.post(url, json={"code": "1234-5678"}), 409)
        # NDMC rotates its root ('redline keys rotate --root' on a running station)
        old = keyfiles.read_root(p.b.home.keys / "root.key", p.b.keys.root_public)
        new = nacl.signing.SigningKey.generate()
        content = rotation.root_content(old, new, station=p.b.keys.fingerprint, version=2, issued_at=p.b.wall())
        await rotation.file_root_running(p.b, content, 2)
        session = p.a.sessions[p.line]
        held = await eventually(session.root_safety_code, "NDMC's ROOT at EUCOM")
        code = held[1]
        assert (await p.client.get("/api/status")).json()["lines"][0]["root_code"] == code

        def confirms() -> list[bytes]:
            return list(p.a.ledger.raw_of_kind(p.line, p.a.keys.fingerprint, "ROOT_CONFIRM"))

        before = p.our_seq()
        await p.login("Auditor")
        error(await p.client.post(url, json={"code": code}), 403)
        await p.login("Chief")
        wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
        assert "does not match" in error(await p.client.post(url, json={"code": wrong}), 400)
        error(await p.client.post(url, json={"code": 12345678}), 400)
        assert p.our_seq() == before and not confirms() and session.root_safety_code() is not None
        r = await p.client.post(url, json={"code": code.replace("-", " ")})  # typed as heard
        assert r.status_code == 200, r.text
        assert r.json() == {"line": p.line, "confirmed_version": 2}
        assert len(confirms()) == 1 and session.root_safety_code() is None
        await eventually(lambda: rotation.unconfirmed_roots(p.b.ledger, p.b.keys.fingerprint, 2) == [],
                         "NDMC holds the ROOT_CONFIRM")  # fmt: skip
        assert "no root rotation" in error(await p.client.post(url, json={"code": code}), 409)
        assert len(confirms()) == 1

    run(tmp_path, scenario)


# -- the schema and the docs ------------------------------------------------------------------------
def test_openapi_lists_every_route_and_docs_describe_them(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        schema = (await p.client.get("/api/openapi.json")).json()
        served = set()
        for route in p.app.routes:
            if isinstance(route, Route):
                served |= {(m.lower(), route.path) for m in route.methods or () if m != "HEAD"}
            elif isinstance(route, WebSocketRoute):
                served.add(("get", route.path))
        documented = {(m, path) for path, methods in schema["paths"].items() for m in methods}
        assert served == documented
        assert len(served) == len(ROUTES)
        api_md = (ROOT / "docs" / "API.md").read_text()
        missing = [f"{op.method} {op.path}" for op in ROUTES if f"`{op.method} {op.path}`" not in api_md]
        assert not missing, f"docs/API.md does not describe: {missing}"
        assert re.search(r"key.*memory", api_md, re.IGNORECASE)

    run(tmp_path, scenario)


def test_the_console_is_served_with_strict_headers(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        r = await p.client.get("/")
        assert r.status_code == 200 and "<title>redline" in r.text
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        for asset in ("app.js", "style.css"):
            assert (await p.client.get(f"/{asset}")).status_code == 200

    run(tmp_path, scenario)


# -- helpers ----------------------------------------------------------------------------------------
def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _api(p: Pair) -> Any:
    return p.app.state.api


def _client(station: Station) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(station, CONFIG)),
                             base_url="http://testserver")  # fmt: skip


class AsgiWebSocket:
    """A WebSocket client driving the ASGI app directly (httpx's transport has no WebSocket)."""

    def __init__(
        self, app: Any, cookie: str | None, origin: str = "http://testserver", host: str = "testserver"
    ) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        headers = [(b"host", host.encode()), (b"origin", origin.encode())]
        if cookie is not None:
            headers.append((b"cookie", f"redline_session={cookie}".encode()))
        scope = {
            "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/api/events",
            "raw_path": b"/api/events", "root_path": "", "query_string": b"", "headers": headers,
            "server": ("testserver", 80), "client": ("127.0.0.1", 50000), "subprotocols": [],
        }  # fmt: skip
        self.outbox.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(app(scope, self.outbox.get, self.inbox.put))

    async def _next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.inbox.get(), 20)

    async def receive(self) -> dict[str, Any]:
        while True:
            msg = await self._next()
            if msg["type"] == "websocket.accept":
                continue
            assert msg["type"] == "websocket.send", msg
            data: dict[str, Any] = json.loads(msg["text"])
            return data

    async def closed_with(self) -> int:
        while True:
            msg = await self._next()
            if msg["type"] == "websocket.close":
                self.outbox.put_nowait({"type": "websocket.disconnect", "code": msg.get("code", 1000)})
                await asyncio.wait_for(self.task, 5)
                return int(msg.get("code", 1000))


@pytest.fixture(autouse=True)
def _quiet_station_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR")
