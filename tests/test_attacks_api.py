"""Attacks on the console's HTTP API, each test named after the attack it blocks (python-tuf's way),
each asserting that the trusted state is unchanged afterwards and that the honest path still works.

In-process over httpx.ASGITransport against two real stations (tests/test_api.py's pair), plus
one real uvicorn server for the defaults that depend on the listening address. Time is a clock
the test moves (``Pair.clock``), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from redline import persons
from redline.api import ApiConfig, HttpServer, create_app
from redline.config import StationConfig
from redline.errors import ConfigError
from tests.procs import free_ports
from tests.test_api import CONFIG, FAST, PASSWORD, AsgiWebSocket, FakeClock, Pair, error, eventually, station_pair

ROOT = Path(__file__).resolve().parent.parent
WRONG = "not the password at all"


def run(tmp_path: Path, scenario: Callable[[Pair], Awaitable[None]], config: ApiConfig = CONFIG) -> None:
    async def main() -> None:
        async with station_pair(tmp_path, config=config) as pair:
            await scenario(pair)

    asyncio.run(main())


def client(p: Pair, config: ApiConfig | None = None, *, source: str = "127.0.0.1",
           clock: FakeClock | None = None) -> httpx.AsyncClient:  # fmt: skip
    """Another client of station A: its own app (config, clock) or A's, from address ``source``."""
    app = p.app if config is None else create_app(p.a, config, clock=clock or p.clock)
    transport = httpx.ASGITransport(app=app, client=(source, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def login_body(user: str = "Duty EUCOM", password: str = PASSWORD) -> dict[str, str]:
    return {"user": user, "password": password}


def sent_texts(p: Pair) -> list[str]:
    """Every message text station A ever accepted (its outbox keeps each, signed or waiting)."""
    ledger = p.a.ledger
    items = [ledger.outbox_item(n) for n in range(1, ledger.max_outbox_local() + 1)]
    return [str(i.content["text"]) for i in items if i.kind in ("TEXT", "FLASH")]


@contextlib.contextmanager
def api_log(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.WARNING, logger="redline.api")
    yield caplog


# -- 6. console login cannot be guessed or jammed ------------------------------------------------------
GUARD = dataclasses.replace(CONFIG, max_failures=5, max_failures_per_source=1000, max_waiting_logins=100)


def test_parallel_password_guesses_beyond_the_limit_get_429_without_argon2_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(p: Pair) -> None:
        guard = p.app.state.api.guard
        with api_log(caplog):
            guesses = await asyncio.gather(*(p.client.post("/api/login", json=login_body(password=f"{WRONG} {i}"))
                                              for i in range(60)))  # fmt: skip
        # counted before they were checked: only max_failures of them ever reached Argon2
        assert statuses(guesses) == {401: 5, 429: 55}, statuses(guesses)
        assert guard.unlocks_started == 5
        assert "redline_session" not in p.client.cookies and len(p.app.state.api.sessions) == 0
        # the name is locked: even the right password is refused, and costs no Argon2 either
        assert "locked for" in error(await p.login(), 429)
        assert guard.unlocks_started == 5
        # every failure is logged with the user name and the source; no password is ever logged
        failures = [r.getMessage() for r in caplog.records if "login failed" in r.getMessage()]
        assert len(failures) == 5 and all("'Duty EUCOM' from 127.0.0.1" in m for m in failures), failures
        assert any("locked out" in r.getMessage() for r in caplog.records)
        assert not any(WRONG in r.getMessage() or PASSWORD in r.getMessage() for r in caplog.records)
        # once the lockout is over, the duty officer gets in at once
        p.clock.advance(GUARD.lockout_seconds)
        assert (await p.login()).status_code == 200
        assert guard.unlocks_started == 6

    run(tmp_path, scenario, GUARD)


def test_a_login_flood_gets_503_at_once_instead_of_an_endless_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = dataclasses.replace(CONFIG, max_failures=1000, max_failures_per_source=1000, max_concurrent_unlocks=1,
                                 max_waiting_logins=2)  # fmt: skip
    gate = threading.Event()
    real_unlock = persons.unlock

    def held_unlock(home: Path, name: str, password: str) -> Any:
        gate.wait(30)  # Argon2 that takes as long as the test says
        return real_unlock(home, name, password)

    monkeypatch.setattr(persons, "unlock", held_unlock)

    async def scenario(p: Pair) -> None:
        with api_log(caplog):
            flood = [asyncio.ensure_future(p.client.post("/api/login", json=login_body(password=WRONG)))
                     for _ in range(10)]  # fmt: skip
            # one unlock runs and two wait; the other seven are refused while those are still held
            await eventually(lambda: sum(f.done() for f in flood) == 7, "the seven over the bound answered")
            refused = [f.result() for f in flood if f.done()]
            assert statuses(refused) == {503: 7}
            assert "busy" in refused[0].json()["error"]
            assert p.app.state.api.guard.unlocks_started == 1
            gate.set()
            answered = await asyncio.gather(*flood)
        assert statuses(answered) == {503: 7, 401: 3}
        assert any("(503)" in r.getMessage() for r in caplog.records)
        # the queue drained: a valid login is not starved
        r = await p.login()
        assert r.status_code == 200, r.text

    run(tmp_path, scenario, config)


def test_guessing_across_many_user_names_is_limited_per_source_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = dataclasses.replace(CONFIG, max_failures=1000, max_failures_per_source=5)

    async def scenario(p: Pair) -> None:
        names = ["Duty EUCOM", "Auditor", "Chief", "Nobody", "Somebody"]
        async with client(p, source="203.0.113.7") as attacker:
            with api_log(caplog):
                for name in names:  # five wrong guesses, five different names (one made up)
                    error(await attacker.post("/api/login", json=login_body(name, WRONG)), 401)
                for name in [*names, "Another"]:
                    assert "from 203.0.113.7" in error(await attacker.post("/api/login", json=login_body(name)), 429)
            assert any("'Nobody' from 203.0.113.7" in r.getMessage() for r in caplog.records)
            # another address is not jammed by it
            async with client(p, source="198.51.100.2") as officer:
                r = await officer.post("/api/login", json=login_body())
                assert r.status_code == 200, r.text
            p.clock.advance(config.lockout_seconds)
            assert (await attacker.post("/api/login", json=login_body("Chief"))).status_code == 200

    run(tmp_path, scenario, config)


def test_guesses_behind_a_trusted_proxy_count_per_client_not_per_proxy(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, max_failures=1000, max_failures_per_source=2, trusted_proxies=("10.0.0.1",))

    async def scenario(p: Pair) -> None:
        async with client(p, config, source="10.0.0.1") as proxy:
            forwarded = {"x-forwarded-for": "203.0.113.7"}
            for _ in range(2):
                error(await proxy.post("/api/login", json=login_body(password=WRONG), headers=forwarded), 401)
            r = await proxy.post("/api/login", json=login_body(), headers=forwarded)
            assert "from 203.0.113.7" in error(r, 429)
            # the proxy's other clients are not locked out with the guesser
            r = await proxy.post("/api/login", json=login_body(), headers={"x-forwarded-for": "198.51.100.2"})
            assert r.status_code == 200, r.text
        async with client(p, config, source="203.0.113.99") as direct:
            # from anyone but the trusted proxy, X-Forwarded-For is ignored: it cannot pick a fresh source
            for i in range(2):
                error(await direct.post("/api/login", json=login_body(password=WRONG),
                                        headers={"x-forwarded-for": f"192.0.2.{i}"}), 401)  # fmt: skip
            assert "from 203.0.113.99" in error(await direct.post("/api/login", json=login_body(),
                                                                  headers={"x-forwarded-for": "192.0.2.50"}), 429)

    run(tmp_path, scenario, config)


def test_a_chunked_login_body_over_the_limit_is_refused_before_the_rest_arrives(tmp_path: Path) -> None:
    """Without a Content-Length the body was read whole before its size was checked: anyone who
    reached the console (no login: /api/login) made the station's own process hold every byte."""

    async def scenario(p: Pair) -> None:
        fed = 0

        async def endless() -> AsyncIterator[bytes]:  # no length: httpx sends it chunked
            nonlocal fed
            while fed < 64:  # 4 MiB offered against a 4 KiB limit
                fed += 1
                yield b" " * 65536

        r = await p.client.post("/api/login", content=endless(), headers={"content-type": "application/json"})
        assert fed <= 2, f"the station read {fed * 64} KiB of a body limited to 4 KiB"
        assert "over 4096 bytes" in error(r, 400) and r.headers["connection"] == "close"
        assert (await p.login()).status_code == 200  # the honest login, chunked or not, is unchanged

        async def small() -> AsyncIterator[bytes]:
            yield json.dumps(login_body()).encode()

        r = await p.client.post("/api/login", content=small(), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text

    run(tmp_path, scenario)


def test_deeply_nested_json_is_400_and_logs_no_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """json raises RecursionError (not a ValueError) past ~1,000 levels: a 4 KB login body (no
    login needed), an 'area' given as text, a console's WebSocket message (any role) and a control
    request were each a 500 or a traceback in the station's log. Now one reader (jsonin.loads)
    bounds the nesting, and each is refused like any other malformed input."""
    from redline.control import _reply

    deep, nested = "[" * 2000 + "]" * 2000, "[" * 100 + "]" * 100  # past the recursion limit; past 64 levels

    async def scenario(p: Pair) -> None:
        with caplog.at_level(logging.ERROR):
            for body in (deep, nested):
                r = await p.client.post("/api/login", content=body, headers={"content-type": "application/json"})
                assert "nested more than 64 levels" in error(r, 400)
            assert (await p.login()).status_code == 200
            notice = {"kind": "air", "area": deep, "floor_m": 0, "ceiling_m": 10, "start": "2030-01-01T00:00Z",
                      "end": "2030-01-02T00:00Z"}  # fmt: skip
            r = await p.client.post(f"/api/lines/{p.line}/notice", json=notice)
            assert "nested more than 64 levels" in error(r, 400)
            ws = AsgiWebSocket(p.app, cookie=p.client.cookies["redline_session"])
            assert (await ws.receive())["type"] == "hello"
            for text in (deep, nested, json.dumps({"type": "join", "call": "0" * 64})):
                ws.outbox.put_nowait({"type": "websocket.receive", "text": text})
            while (await ws.receive())["type"] != "join_refused":  # the one after them is answered
                pass
            reply = await _reply(p.a, deep.encode())
            assert not reply["ok"] and "nested more than 64 levels" in reply["error"]
        assert not [rec.getMessage() for rec in caplog.records if rec.exc_info], "a traceback was logged"

    run(tmp_path, scenario)


def test_numbers_in_the_query_past_any_page_are_400_or_an_empty_page_not_a_500(tmp_path: Path) -> None:
    """?offset= went to islice unchecked: past sys.maxsize it was a 500 and a traceback (any role),
    and the control socket's 'view' answered 'bad request: ValueError(...)'. A digit that is not
    ASCII ('²': isdigit() but not int()) got past the log's and search's check the same way."""
    from redline.control import _reply

    async def scenario(p: Pair) -> None:
        assert (await p.login("Auditor")).status_code == 200
        notices = f"/api/lines/{p.line}/notices"
        for q in ("offset=99999999999999999999", "offset=-1", "limit=99999999999999999999", "limit=0", "offset=1.5"):
            assert "must be a whole number from" in error(await p.client.get(f"{notices}?{q}"), 400), q
        for route in ("log", "search"):
            for q in ("limit=\u00b2", "limit=\u0663", "limit=99999999999999999999"):
                r = await p.client.get(f"/api/lines/{p.line}/{route}?{q}")
                assert "must be a whole number from 1 to" in error(r, 400), (route, q)
        page = (await p.client.get(f"{notices}?offset=1000000000&limit=500")).json()
        assert (page["active"], page["conflicts"], page["offset"]) == ([], [], 0)  # past the end: empty
        reply = await _reply(p.a, json.dumps({"op": "view", "line": p.line, "what": "notices",
                                              "offset": 10**20}).encode())  # fmt: skip
        assert reply["ok"] and reply["result"]["active"] == [], reply

    run(tmp_path, scenario)


def test_export_from_a_station_named_in_cyrillic_downloads(tmp_path: Path) -> None:
    """The name rule allows any letters, but the file name went into Content-Disposition, which
    Starlette encodes as Latin-1: EXPORT BUNDLE was a 500 for a station named 'НЦУО'."""
    from redline.station import Station
    from redline.testing import make_station, pair_directly

    async def main() -> None:
        pa, pb = free_ports(2)
        da, db = make_station(tmp_path, "НЦУО", "ru", pa), make_station(tmp_path, "EUCOM", "en", pb)
        line = pair_directly(da, db)
        persons.add_user(da.path, "Dezhurny", "duty", PASSWORD, **FAST)
        st = Station(da)
        await st.start()
        try:
            transport = httpx.ASGITransport(app=create_app(st, CONFIG))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                assert (await c.post("/api/login", json=login_body("Dezhurny"))).status_code == 200
                r = await c.get(f"/api/lines/{line}/export")
                assert r.status_code == 200, r.text
                assert r.headers["content-disposition"] == (
                    f'attachment; filename="redline-{line[:8]}-____.bundle.json"; '
                    f"filename*=UTF-8''redline-{line[:8]}-%D0%9D%D0%A6%D0%A3%D0%9E.bundle.json"
                )
                assert r.json()["stations"]
        finally:
            await st.close()

    asyncio.run(main())


def test_a_login_body_that_never_finishes_is_408_and_its_connection_closed(tmp_path: Path) -> None:
    """Slowloris past the head: a body that trickles in (or stops) held its connection, one of
    api.max_connections, for as long as the sender liked, before any login."""
    config = dataclasses.replace(CONFIG, request_body_seconds=0.3)

    async def scenario(p: Pair) -> None:
        async def stalls() -> AsyncIterator[bytes]:
            yield b'{"user": '
            await asyncio.Event().wait()  # and nothing more, ever
            yield b""

        post = p.client.post("/api/login", content=stalls(), headers={"content-type": "application/json"})
        r = await asyncio.wait_for(post, 10)  # before: held for ever
        assert "not received within 0.3 s" in error(r, 408) and r.headers["connection"] == "close"
        assert (await p.login()).status_code == 200

    run(tmp_path, scenario, config)


# -- 7. only our own Host --------------------------------------------------------------------------------
def test_dns_rebinding_host_header_is_refused(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        assert (await p.login()).status_code == 200  # a real session: its cookie goes with every request
        before = sent_texts(p)
        evil = {"host": "evil.example:8080"}
        for r in (
            await p.client.get("/api/status", headers=evil),
            await p.client.get(f"/api/lines/{p.line}/log", headers=evil),
            await p.client.post(f"/api/lines/{p.line}/send", json={"text": "rebound"}, headers=evil),
            await p.client.post(f"/api/lines/{p.line}/send", json={"text": "rebound"},
                                headers={**evil, "origin": "http://evil.example:8080"}),
            await p.client.post("/api/login", json=login_body(), headers=evil),
            await p.client.get("/", headers=evil),
            await p.client.get("/api/status", headers={"host": "testserver.evil.example"}),
        ):
            assert "answers only to its own host names" in error(r, 421)
        assert sent_texts(p) == before  # nothing accepted or sent
        # our own names still work
        assert (await p.client.get("/api/status")).status_code == 200
        assert (await p.client.get("/api/status", headers={"host": "localhost"})).status_code == 200

    run(tmp_path, scenario)


def test_rebinding_origin_with_a_valid_host_is_refused(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        assert (await p.login()).status_code == 200
        before = sent_texts(p)
        url = f"/api/lines/{p.line}/send"
        for origin in ("http://evil.example", "http://evil.example:8080", "null", "http://testserver.evil.example",
                       "file://", "http://localhost.evil.example"):  # fmt: skip
            r = await p.client.post(url, json={"text": "cross-site"}, headers={"origin": origin})
            assert "another site" in error(r, 403), origin
        assert sent_texts(p) == before
        ok = await p.client.post(url, json={"text": "same site"}, headers={"origin": "http://testserver"})
        assert ok.status_code == 200, ok.text

    run(tmp_path, scenario)


def test_dns_rebinding_websocket_is_refused(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        cookie = p.client.cookies["redline_session"]
        rebound = AsgiWebSocket(p.app, cookie=cookie, host="evil.example:8080", origin="http://evil.example:8080")
        first = await rebound._next()
        assert first["type"] == "websocket.close"  # refused before it was accepted: nothing was sent
        assert await _closed(rebound) is None
        foreign = AsgiWebSocket(p.app, cookie=cookie, origin="http://evil.example")
        assert "another site" in (await foreign.receive())["error"]
        assert await foreign.closed_with() == 4403
        ours = AsgiWebSocket(p.app, cookie=cookie)
        assert (await ours.receive())["type"] == "hello"
        await p.client.post("/api/logout")
        while (await ours.receive())["type"] != "logout":
            pass
        assert await ours.closed_with() == 4401

    run(tmp_path, scenario)


async def _closed(ws: AsgiWebSocket) -> None:
    ws.outbox.put_nowait({"type": "websocket.disconnect", "code": 1008})
    await asyncio.wait_for(ws.task, 5)


def test_a_page_on_another_local_port_is_another_origin(tmp_path: Path) -> None:
    """The default list is the loopback names and the listening address, on the listening port: a
    page of another local service (localhost:3000) is same-site for cookies but not our origin."""

    async def scenario(p: Pair) -> None:
        app = create_app(p.a, dataclasses.replace(CONFIG, allowed_hosts=()), listen=("127.0.0.1", 8080))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8080") as c:
            assert (await c.post("/api/login", json=login_body())).status_code == 200
            url = f"/api/lines/{p.line}/send"
            before = sent_texts(p)
            for origin in ("http://localhost:3000", "http://127.0.0.1:3000", "http://127.0.0.1"):
                assert "another site" in error(await c.post(url, json={"text": "x"}, headers={"origin": origin}), 403)
            assert sent_texts(p) == before
            for origin in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
                r = await c.post(url, json={"text": f"from {origin}"}, headers={"origin": origin})
                assert r.status_code == 200, r.text
            error(await c.get("/api/me", headers={"host": "127.0.0.1:3000"}), 421)
            error(await c.get("/api/me", headers={"host": "testserver"}), 421)  # not configured here

    run(tmp_path, scenario)


def test_a_real_server_refuses_foreign_hosts_and_ignores_untrusted_forwarding_headers(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        (port,) = free_ports(1)
        http = await HttpServer.start(p.a, f"127.0.0.1:{port}", dataclasses.replace(CONFIG, allowed_hosts=()))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                r = await c.post("/api/login", json=login_body(), headers={"x-forwarded-proto": "https",
                                                                           "x-forwarded-for": "192.0.2.1"})  # fmt: skip
                assert r.status_code == 200, r.text
                assert "secure" not in r.headers["set-cookie"].lower()  # a header anyone can send proves nothing
                assert (await c.get("/api/me")).status_code == 200
                assert "own host names" in error(await c.get("/api/me", headers={"host": f"evil.example:{port}"}), 421)
                assert (await c.get("/", headers={"host": f"localhost:{port}"})).status_code == 200
        finally:
            await http.stop()

    run(tmp_path, scenario)


def test_idle_connections_cannot_exhaust_the_station_file_descriptors(tmp_path: Path) -> None:
    """The metrics address needs no login: connections that never send (or trickle) a request head
    were held for ever, and ~1,000 of them took every descriptor of the station's process. Now each
    HTTP listener holds at most max_connections (beyond: 503, closed at once) and closes one that has
    not sent a whole head within request_head_seconds; then the honest request is served."""
    from redline.station import Station
    from redline.testing import make_station

    async def main() -> None:
        port, mport = free_ports(2)
        st = Station(make_station(tmp_path, "EUCOM", "en", port))
        await st.start()
        limits = dataclasses.replace(CONFIG, max_connections=8, request_head_seconds=0.5)
        http = await HttpServer.start(st, f"127.0.0.1:{mport}", limits, monitoring_only=True)
        held = [await asyncio.open_connection("127.0.0.1", mport) for _ in range(8)]
        try:
            for i, (_, w) in enumerate(held[:4]):  # half of them trickle a head that never ends
                w.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" if i % 2 else b"G")
            await asyncio.sleep(0.1)
            r, _ = await asyncio.open_connection("127.0.0.1", mport)  # the 9th: over the cap
            assert (await asyncio.wait_for(r.read(), 2)).startswith(b"HTTP/1.1 503")
            for reader, _ in held:  # every one closed by the station at the deadline, none answered
                assert await asyncio.wait_for(reader.read(), 2) == b""
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{mport}") as c:
                assert (await c.get("/health")).status_code in (200, 503)
        finally:
            for _, w in held:
                w.close()
            await http.stop()
            await st.close()

    asyncio.run(main())


def test_one_source_cannot_take_every_connection_of_a_listener(tmp_path: Path) -> None:
    """With only the listener's cap, one host re-opening idle connections as fast as they were
    closed held all of them: the console and the metrics were out of reach for everyone else. Now
    one source holds at most max_connections_per_source; loopback (a local proxy) is not capped."""
    from redline.station import Station
    from redline.testing import make_station

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks our outgoing address
        ours = probe.getsockname()[0]
    except OSError:
        ours = "127.0.0.1"
    finally:
        probe.close()
    if ours.startswith("127."):
        pytest.skip("this machine has no address but loopback")

    async def main() -> None:
        port, mport = free_ports(2)
        st = Station(make_station(tmp_path, "EUCOM", "en", port))
        await st.start()
        limits = dataclasses.replace(CONFIG, max_connections=20, max_connections_per_source=4)
        http = await HttpServer.start(st, f"0.0.0.0:{mport}", limits, monitoring_only=True)
        held = [await asyncio.open_connection(ours, mport) for _ in range(4)]
        held += [await asyncio.open_connection("127.0.0.1", mport) for _ in range(6)]  # loopback: not capped
        try:
            await asyncio.sleep(0.1)
            r, _ = await asyncio.open_connection(ours, mport)  # the 5th from one source
            assert (await asyncio.wait_for(r.read(), 2)).startswith(b"HTTP/1.1 503")
            for reader, _ in held[4:]:  # the loopback ones are held as any other (until the head deadline)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(reader.read(1), 0.05)
        finally:
            for _, w in held:
                w.close()
            await http.stop()
            await st.close()

    asyncio.run(main())


def test_serve_raises_its_soft_open_files_limit_to_the_hard_one() -> None:
    """systemd starts a service at a soft limit of 1024 open files whatever the hard one is."""
    code = ("import resource; from redline.cli.station import raise_open_files_limit; "
            "raise_open_files_limit(); print(*resource.getrlimit(resource.RLIMIT_NOFILE))")  # fmt: skip

    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, (min(256, hard), hard))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, preexec_fn=low)
    expected = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    assert out.stdout.split() == [str(expected), str(hard)], out.stderr


# -- 11. secrets and sessions ----------------------------------------------------------------------------
def test_cookie_is_secure_only_when_https_is_configured_or_said_by_a_trusted_proxy(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        https = {"x-forwarded-proto": "https"}
        cases = [  # (config, source, headers, Secure?)
            (CONFIG, "127.0.0.1", {}, False),
            (CONFIG, "127.0.0.1", https, False),  # no trusted proxy: the header is ignored, even from loopback
            (dataclasses.replace(CONFIG, https=True), "127.0.0.1", {}, True),
            (dataclasses.replace(CONFIG, trusted_proxies=("10.0.0.0/8",)), "10.1.2.3", https, True),
            (dataclasses.replace(CONFIG, trusted_proxies=("10.0.0.0/8",)), "10.1.2.3", {}, False),
            (dataclasses.replace(CONFIG, trusted_proxies=("10.0.0.0/8",)), "192.0.2.1", https, False),
        ]
        for config, source, headers, secure in cases:
            async with client(p, config, source=source, clock=FakeClock()) as c:
                r = await c.post("/api/login", json=login_body(), headers=headers)
                assert r.status_code == 200, r.text
                flags = [f.strip().lower() for f in r.headers["set-cookie"].split(";")]
                assert ("secure" in flags) is secure, (config, source, headers)
                assert "httponly" in flags and "samesite=strict" in flags

    run(tmp_path, scenario)


def _set_role(home: Path, name: str, role: str) -> None:
    path = persons.users_dir(home) / f"{name}.json"
    obj = json.loads(path.read_text())
    path.write_text(json.dumps({**obj, "role": role}, indent=2))


def test_demoted_supervisor_is_limited_to_the_new_role_at_the_next_request(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        assert (await p.login("Chief")).json()["role"] == "supervisor"
        url = f"/api/lines/{p.line}"
        assert (await p.client.post(f"{url}/send", json={"text": "as supervisor"})).status_code == 200
        before = sent_texts(p)
        _set_role(p.a.home.path, "Chief", "auditor")  # demoted, with no restart and no new login
        assert "logged in as auditor" in error(await p.client.post(f"{url}/send", json={"text": "as auditor"}), 403)
        assert "auditor" in error(await p.client.post(f"{url}/confirm", json={"code": "000000"}), 403)
        assert sent_texts(p) == before == ["as supervisor"]
        me = (await p.client.get("/api/me")).json()
        assert me["role"] == "auditor" and me["capabilities"] == ["read"]
        assert (await p.client.get(f"{url}/log")).status_code == 200  # what the new role may, it still may
        _set_role(p.a.home.path, "Chief", "duty")  # and a promotion holds at once too
        assert (await p.client.post(f"{url}/send", json={"text": "as duty"})).status_code == 200

    run(tmp_path, scenario)


def test_removed_user_cookie_gets_401_at_once(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        cookie = p.client.cookies["redline_session"]
        ws = AsgiWebSocket(p.app, cookie=cookie)
        assert (await ws.receive())["type"] == "hello"
        async with client(p) as auditor:
            assert (await auditor.post("/api/login", json=login_body("Auditor"))).status_code == 200
            before = sent_texts(p)
            removed = await asyncio.to_thread(_cli, "user", "remove", "Duty EUCOM", "--station", str(p.a.home.path))
            assert removed.returncode == 0, removed.stderr
            assert "removed" in removed.stdout
            url = f"/api/lines/{p.line}"
            # refused at once (by the POST's own check, or the WebSocket's poll got there first);
            # whichever found the user gone says so ("removed"), for the console to say in its words
            refused = await p.client.post(f"{url}/send", json={"text": "after"})
            error(refused, 401)
            assert "not logged in" in error(await p.client.get("/api/me"), 401)  # the session is gone for good
            assert sent_texts(p) == before
            while (msg := await ws.receive())["type"] != "logout":
                pass
            assert await ws.closed_with() == 4401
            assert "removed" in (refused.json().get("code"), msg.get("code")), (refused.json(), msg)
            assert "no user 'Duty EUCOM'" in error(await p.login(), 401)
            assert (await auditor.get("/api/me")).json()["user"] == "Auditor"  # others keep their sessions
            # re-created under the same name with a new key: an old cookie is still not a session
            await p.login("Chief")
            chief = p.client.cookies["redline_session"]
            await asyncio.to_thread(_cli, "user", "remove", "Chief", "--station", str(p.a.home.path))
            persons.add_user(p.a.home.path, "Chief", "supervisor", PASSWORD, **FAST)
            p.client.cookies.set("redline_session", chief)
            again = await p.login("Chief")
            assert again.status_code == 200, again.text  # a stale cookie does not get in the way of a login
            p.client.cookies.clear()
            p.client.cookies.set("redline_session", again.cookies["redline_session"])
            assert (await p.client.get("/api/me")).json()["user"] == "Chief"
            p.client.cookies.set("redline_session", chief)
            error(await p.client.get("/api/me"), 401)
        assert msg["error"]

    run(tmp_path, scenario)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    cmd = [sys.executable, "-m", "redline", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_user_remove_of_an_unknown_or_malformed_name_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "st"
    persons.users_dir(home).mkdir(parents=True)
    persons.add_user(home, "Duty", "duty", PASSWORD, **FAST)
    for name in ("Nobody", "../Duty", "Duty/../Duty"):
        with pytest.raises(ConfigError, match="no user"):
            persons.remove_user(home, name)
    assert [p.name for p in persons.load_users(home)] == ["Duty"]


# -- settings ------------------------------------------------------------------------------------------
def test_api_settings_live_in_config_json_and_unknown_ones_are_refused() -> None:
    base = {"name": "EUCOM", "lang": "en", "listen": ["127.0.0.1:7401"]}
    api = {"https": True, "allowed_hosts": ["console.example.org"], "trusted_proxies": ["10.0.0.1"],
           "max_waiting_logins": 8}  # fmt: skip
    config = StationConfig.from_obj({**base, "api": api})
    assert config.api.https and config.api.allowed_hosts == ("console.example.org",)
    assert StationConfig.from_obj(config.to_obj()) == config
    with pytest.raises(ConfigError, match="unknown api setting"):
        StationConfig.from_obj({**base, "api": {"allowed_host": ["typo.example"]}})
    for bad in ({"allowed_hosts": ["http://x/"]}, {"trusted_proxies": ["proxy.example"]}, {"max_waiting_logins": 0}):
        with pytest.raises(ConfigError):
            StationConfig.from_obj({**base, "api": bad})


def test_every_api_setting_is_documented() -> None:
    api_md = (ROOT / "docs" / "API.md").read_text()
    missing = [f.name for f in dataclasses.fields(ApiConfig) if f"`{f.name}`" not in api_md]
    assert not missing, f"docs/API.md does not describe: {missing}"


def test_a_page_on_another_port_cannot_have_the_browser_fetch_our_api(tmp_path: Path) -> None:
    """A page served on another port of the same host is the same site, so SameSite=Strict sends
    our cookie with a GET it makes, and a GET carries no Origin: it could have the station build an
    export or run a search (it cannot read the answer). Browsers say where a request comes from
    in Sec-Fetch-Site: only same-origin and user-typed (none) requests reach the API; scripts,
    which send none, are judged by the session alone."""

    async def scenario(p: Pair) -> None:
        assert (await p.login()).status_code == 200
        for site in ("same-site", "cross-site"):
            for r in (
                await p.client.get(f"/api/lines/{p.line}/export", headers={"sec-fetch-site": site}),
                await p.client.get("/api/status", headers={"sec-fetch-site": site}),
                await p.client.post(f"/api/lines/{p.line}/send", json={"text": "x"}, headers={"sec-fetch-site": site}),
            ):
                assert "another origin" in error(r, 403)
        for ok in ({"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"}, {}):
            assert (await p.client.get("/api/status", headers=ok)).status_code == 200

    run(tmp_path, scenario)
