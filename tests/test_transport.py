"""transport.py over real TLS on 127.0.0.1: no mocks, each test well under two seconds."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from redline import identity
from redline.config import Limits
from redline.errors import LocalProtocolError, RemoteProtocolError, UnknownKeyError
from redline.transport import (
    Connection,
    ConnectionClosedError,
    Server,
    TransportError,
    _source,
    backoff,
    client_context,
    dial,
    encode_frame,
    keep_connected,
    read_frame,
)

pytestmark = pytest.mark.timeout(10)

FAST = Limits(handshake_timeout=1.0, max_preauth_per_source=4, redial_initial=0.2, redial_max=5.0)


@dataclass(frozen=True)
class Tls:
    name: str
    cert: Path
    key: Path
    der: bytes

    @property
    def spki(self) -> str:
        return identity.spki_hash(self.der)


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tls]:
    """``a``: the listening station, ``b``: its paired peer, ``c``: a stranger."""
    d = tmp_path_factory.mktemp("tls")
    out = {}
    for name in "abc":
        der = identity.new_tls_identity(d / f"{name}.key", d / f"{name}.pem", name)
        out[name] = Tls(name, d / f"{name}.pem", d / f"{name}.key", der)
    return out


@pytest.fixture(autouse=True)
def asyncio_stays_quiet(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """asyncio logs what it cannot hand to anyone (a task that died unseen, a misused transport)."""
    yield
    noise = [r.getMessage() for r in caplog.get_records("call") if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert noise == []


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))


@dataclass
class Listener:
    """A Server plus what it saw: accepted connections' frames and its refusals."""

    server: Server
    refused: list[str] = field(default_factory=list)
    accepted: list[Connection] = field(default_factory=list)
    received: asyncio.Queue[bytes | Exception] = field(default_factory=asyncio.Queue)


async def listen(
    a: Tls,
    pins: Callable[[], list[bytes]] | None,
    limits: Limits = FAST,
    handler: Callable[[Connection], Awaitable[None]] | None = None,
) -> Listener:
    refused: list[str] = []
    accepted: list[Connection] = []
    received: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    async def echo(conn: Connection) -> None:
        accepted.append(conn)
        try:
            while True:
                frame = await conn.recv()
                await received.put(frame)
                await conn.send(b"echo:" + frame)
        except Exception as exc:
            await received.put(exc)

    common: dict[str, Any] = dict(
        server_cert=a.cert, server_key=a.key, on_connection=handler or echo, limits=limits, on_refused=refused.append
    )
    if pins is None:
        server = await Server.start_pairing("127.0.0.1", 0, **common)
    else:
        server = await Server.start("127.0.0.1", 0, pins=pins, **common)
    return Listener(server, refused, accepted, received)


async def stop(listener: Listener) -> None:
    listener.server.close()
    await listener.server.wait_closed()


async def wait_for(predicate: Callable[[], bool], timeout: float = 1.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- handshake and pinning ---------------------------------------------------------------------


def test_mutual_handshake_and_frames_both_ways(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        conn = await dial("127.0.0.1", srv.server.port, cert=b.cert, key=b.key, pins={a.spki}, limits=FAST)
        assert conn.peer_spki == a.spki
        assert conn.tls_version == "TLSv1.3"
        for payload in (b"hello", b"", bytes(range(256)) * 40):
            await conn.send(payload)
            assert await conn.recv() == b"echo:" + payload
            assert await srv.received.get() == payload
        (server_side,) = srv.accepted
        assert server_side.peer_spki == b.spki
        assert server_side.tls_version == "TLSv1.3"
        conn.close()
        assert conn.closed
        assert isinstance(await srv.received.get(), ConnectionClosedError)  # server saw the clean close
        assert srv.refused == []
        await conn.wait_closed()
        await stop(srv)

    run(main())


def test_tls_1_2_client_is_refused(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        ctx = client_context(b.cert, b.key)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(OSError):  # an alert (ssl.SSLError) or a reset, depending on timing
            await asyncio.open_connection("127.0.0.1", srv.server.port, ssl=ctx)
        await wait_for(lambda: bool(srv.refused))
        assert "TLS handshake failed" in srv.refused[0]
        assert srv.accepted == []
        await stop(srv)

    run(main())


def test_no_session_tickets_so_no_resumption(ids: dict[str, Tls]) -> None:
    """OP_NO_TICKET alone still yields stateful TLS 1.3 tickets; num_tickets = 0 must stop them."""
    a, b = ids["a"], ids["b"]

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.server.port, ssl=client_context(b.cert, b.key))
        writer.write(encode_frame(b"x"))
        assert await read_frame(reader, 100) == b"echo:x"  # tickets, if any, arrived before this
        sslobj = writer.get_extra_info("ssl_object")
        assert sslobj.session is not None
        assert not sslobj.session.has_ticket
        assert not sslobj.session_reused
        writer.close()
        await stop(srv)

    run(main())


def test_client_with_unpinned_certificate_is_refused(ids: dict[str, Tls]) -> None:
    a, b, c = ids["a"], ids["b"], ids["c"]

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        # c is not pinned: TLS 1.3 lets the client finish first, so the refusal shows on recv.
        conn = await dial("127.0.0.1", srv.server.port, cert=c.cert, key=c.key, pins={a.spki}, limits=FAST)
        with pytest.raises(ConnectionClosedError, match="probably refused our TLS certificate"):
            await conn.recv()
        await wait_for(lambda: bool(srv.refused))
        assert "its TLS certificate is not the paired station's" in srv.refused[0]
        assert srv.accepted == []
        await stop(srv)

    run(main())


def test_client_without_certificate_is_refused(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.server.port, ssl=ctx)
        writer.write(encode_frame(b"let me in"))
        with pytest.raises((ConnectionClosedError, ssl.SSLError, ConnectionResetError)):
            await read_frame(reader, 100)
        await wait_for(lambda: bool(srv.refused))
        assert "presented no TLS certificate" in srv.refused[0]
        assert srv.accepted == []
        writer.close()
        await stop(srv)

    run(main())


def test_server_with_unpinned_certificate_is_refused_by_client(ids: dict[str, Tls]) -> None:
    a, b, c = ids["a"], ids["b"], ids["c"]

    async def main() -> None:
        srv = await listen(c, lambda: [b.der])  # c answers where a was expected
        with pytest.raises(UnknownKeyError, match="which is not the paired station's key") as err:
            await dial("127.0.0.1", srv.server.port, cert=b.cert, key=b.key, pins={a.spki}, limits=FAST)
        assert c.spki[:16] in str(err.value) and a.spki[:16] in str(err.value)
        assert "\n" not in str(err.value)
        await stop(srv)

    run(main())


def test_server_with_no_paired_peer_refuses_everyone(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]

    async def main() -> None:
        srv = await listen(a, lambda: [])
        conn = await dial("127.0.0.1", srv.server.port, cert=b.cert, key=b.key, pins={a.spki}, limits=FAST)
        with pytest.raises(ConnectionClosedError):
            await conn.recv()
        await wait_for(lambda: bool(srv.refused))
        assert "no paired peer" in srv.refused[0]
        await stop(srv)

    run(main())


def test_new_pin_takes_effect_without_restart(ids: dict[str, Tls]) -> None:
    a, b, c = ids["a"], ids["b"], ids["c"]

    async def main() -> None:
        pinned = [b.der]
        srv = await listen(a, lambda: list(pinned))
        conn = await dial("127.0.0.1", srv.server.port, cert=c.cert, key=c.key, pins={a.spki}, limits=FAST)
        with pytest.raises(ConnectionClosedError):
            await conn.recv()
        pinned.append(c.der)
        conn = await dial("127.0.0.1", srv.server.port, cert=c.cert, key=c.key, pins={a.spki}, limits=FAST)
        await conn.send(b"now paired")
        assert await conn.recv() == b"echo:now paired"
        assert srv.accepted[0].peer_spki == c.spki
        pinned.remove(c.der)  # unpaired again: the next handshake is refused
        conn2 = await dial("127.0.0.1", srv.server.port, cert=c.cert, key=c.key, pins={a.spki}, limits=FAST)
        with pytest.raises(ConnectionClosedError):
            await conn2.recv()
        conn.close()
        await stop(srv)

    run(main())


def test_dial_without_pins_is_a_local_error(ids: dict[str, Tls]) -> None:
    b = ids["b"]
    with pytest.raises(LocalProtocolError, match="pair the stations first"):
        asyncio.run(dial("127.0.0.1", 1, cert=b.cert, key=b.key, pins=set(), limits=FAST))


def test_dial_to_closed_port_says_so(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]
    port = closed_port()
    with pytest.raises(TransportError, match=f"cannot connect to 127.0.0.1:{port}"):
        asyncio.run(dial("127.0.0.1", port, cert=b.cert, key=b.key, pins={a.spki}, limits=FAST))


# --- pairing listener --------------------------------------------------------------------------


def test_pairing_listener_asks_no_certificate_but_client_still_pins_server(ids: dict[str, Tls]) -> None:
    a, b, c = ids["a"], ids["b"], ids["c"]

    async def main() -> None:
        srv = await listen(a, None)
        conn = await dial("127.0.0.1", srv.server.port, cert=c.cert, key=c.key, pins={a.spki}, limits=FAST)
        await conn.send(b"pairing hello")
        assert await conn.recv() == b"echo:pairing hello"
        assert srv.accepted[0].peer_spki is None  # who the joiner is comes from the pairing frames
        assert conn.peer_spki == a.spki
        with pytest.raises(UnknownKeyError):
            await dial("127.0.0.1", srv.server.port, cert=c.cert, key=c.key, pins={b.spki}, limits=FAST)
        conn.close()
        await stop(srv)

    run(main())


def test_pairing_connections_stay_counted_as_preauth(ids: dict[str, Tls]) -> None:
    a, c = ids["a"], ids["c"]
    limits = Limits(handshake_timeout=1.0, max_preauth_per_source=1)

    async def main() -> None:
        srv = await listen(a, None, limits)
        conn = await dial("127.0.0.1", srv.server.port, cert=c.cert, key=c.key, pins={a.spki}, limits=limits)
        await conn.send(b"x")
        assert await conn.recv() == b"echo:x"
        with pytest.raises(TransportError):  # the second joiner from this source is cut at accept
            await dial("127.0.0.1", srv.server.port, cert=c.cert, key=c.key, pins={a.spki}, limits=limits)
        assert "max_preauth_per_source" in srv.refused[0]
        conn.close()
        await stop(srv)

    run(main())


# --- frames ------------------------------------------------------------------------------------


def test_oversize_frame_from_peer_is_a_remote_protocol_error(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]
    small = Limits(handshake_timeout=1.0, max_frame_bytes=1000)

    async def main() -> None:
        srv = await listen(a, lambda: [b.der], small)
        big = Limits(handshake_timeout=1.0, max_frame_bytes=10_000)
        conn = await dial("127.0.0.1", srv.server.port, cert=b.cert, key=b.key, pins={a.spki}, limits=big)
        await conn.send(b"x" * 995)  # the echo is 1000 bytes: at the limit, fine
        assert await srv.received.get() == b"x" * 995
        assert await conn.recv() == b"echo:" + b"x" * 995
        await conn.send(b"x" * 1001)
        err = await srv.received.get()
        assert isinstance(err, RemoteProtocolError)
        assert "1001 bytes, over the 1000-byte limit (max_frame_bytes)" in str(err)
        assert srv.accepted[0].closed
        with pytest.raises(ConnectionClosedError):
            await conn.recv()
        await stop(srv)

    run(main())


def test_oversize_frame_is_refused_before_sending(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]
    small = Limits(handshake_timeout=1.0, max_frame_bytes=10)

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        conn = await dial("127.0.0.1", srv.server.port, cert=b.cert, key=b.key, pins={a.spki}, limits=small)
        with pytest.raises(LocalProtocolError, match="max_frame_bytes"):
            await conn.send(b"x" * 11)
        assert not conn.closed
        conn.close()
        await stop(srv)

    run(main())


def test_read_frame_rejects_oversize_header_without_reading_payload() -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"\xff\xff\xff\xff")  # 4 GiB announced, nothing behind it
        with pytest.raises(RemoteProtocolError, match="4294967295 bytes"):
            await read_frame(reader, 1024)

    run(main())


def test_frames_fed_in_pieces_arrive_whole_in_memory() -> None:
    payloads = [b"", b"a", b"hello world", bytes(range(256)) * 3]
    stream = b"".join(encode_frame(p) for p in payloads)

    async def main() -> None:
        for step in (1, 2, 3, 7, len(stream)):
            reader = asyncio.StreamReader()

            async def feed(reader: asyncio.StreamReader = reader, step: int = step) -> None:
                for i in range(0, len(stream), step):
                    reader.feed_data(stream[i : i + step])
                    await asyncio.sleep(0)
                reader.feed_eof()

            feeder = asyncio.create_task(feed())
            got = [await read_frame(reader, 10_000) for _ in payloads]
            assert got == payloads
            with pytest.raises(ConnectionClosedError, match=r"closed the connection$"):
                await read_frame(reader, 10_000)
            await feeder

    run(main())


def test_frames_fed_in_pieces_arrive_whole_over_tls(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]
    payloads = [b"first", bytes(range(200)), b"", b"last"]
    stream = b"".join(encode_frame(p) for p in payloads)

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        _, writer = await asyncio.open_connection("127.0.0.1", srv.server.port, ssl=client_context(b.cert, b.key))
        for i in range(len(stream)):  # one TLS record per byte
            writer.write(stream[i : i + 1])
            await writer.drain()
        for p in payloads:
            assert await srv.received.get() == p
        writer.write(encode_frame(b"one") + encode_frame(b"two")[:5])  # a frame and a piece in one write
        await writer.drain()
        assert await srv.received.get() == b"one"
        await asyncio.sleep(0.05)
        assert srv.received.empty()
        writer.write(encode_frame(b"two")[5:])
        assert await srv.received.get() == b"two"
        writer.write(encode_frame(b"cut short")[:6])  # then hang up mid-frame
        writer.close()
        err = await srv.received.get()
        assert isinstance(err, ConnectionClosedError)
        assert "inside a frame (2 of 9 bytes)" in str(err)
        await stop(srv)

    run(main())


# --- pre-authentication limits -----------------------------------------------------------------


async def read_or_eof(reader: asyncio.StreamReader, timeout: float) -> str:
    """'closed' if the server hung up within ``timeout``, 'open' if it kept waiting."""
    try:
        data = await asyncio.wait_for(reader.read(1), timeout)
    except TimeoutError:
        return "open"
    except ConnectionResetError:
        return "closed"
    assert data == b""
    return "closed"


def test_preauth_cap_per_source_closes_the_excess_at_once(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]
    limits = Limits(handshake_timeout=1.5, max_preauth_per_source=3)

    async def main() -> None:
        srv = await listen(a, lambda: [b.der], limits)
        silent = []
        for _ in range(3):  # plain TCP that never says a word of TLS
            silent.append(await asyncio.open_connection("127.0.0.1", srv.server.port))
            await asyncio.sleep(0.02)
        started = time.monotonic()
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", srv.server.port)
        assert await read_or_eof(extra_reader, 0.5) == "closed"
        assert time.monotonic() - started < 0.3  # at once, not at the handshake timeout
        assert "127.0.0.1 already has 3 connection(s) waiting to authenticate" in srv.refused[0]
        for reader, _ in silent:
            assert await read_or_eof(reader, 0.01) == "open"
        # one slot frees up: the paired peer gets in again
        silent[0][1].transport.abort()
        await asyncio.sleep(0.05)
        conn = await dial("127.0.0.1", srv.server.port, cert=b.cert, key=b.key, pins={a.spki}, limits=limits)
        await conn.send(b"still reachable")
        assert await conn.recv() == b"echo:still reachable"
        # a verified connection no longer counts: the slot is free for another newcomer
        r, w = await asyncio.open_connection("127.0.0.1", srv.server.port)
        assert await read_or_eof(r, 0.05) == "open"
        for _, writer in [*silent, (extra_reader, extra_writer), (r, w)]:
            writer.transport.abort()
        conn.close()
        await stop(srv)

    run(main())


def test_preauth_cap_counts_ipv6_by_64_prefix() -> None:
    assert _source("2001:db8:1:2::1") == _source("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert _source("2001:db8:1:3::1") != _source("2001:db8:1:2::1")
    assert _source("::ffff:192.0.2.7") == _source("192.0.2.7") == "192.0.2.7"


def test_handshake_timeout_closes_a_silent_socket(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]
    limits = Limits(handshake_timeout=0.3)

    async def main() -> None:
        srv = await listen(a, lambda: [b.der], limits)
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.server.port)
        writer.write(b"\x16\x03\x01")  # the start of a ClientHello, then silence
        assert await read_or_eof(reader, 1.5) == "closed"
        elapsed = time.monotonic() - started
        assert 0.25 < elapsed < 1.0
        await wait_for(lambda: bool(srv.refused))
        assert "no TLS handshake within 0.3 s (handshake_timeout)" in srv.refused[0]
        writer.close()
        await stop(srv)

    run(main())


def test_server_close_closes_accepted_connections(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        conn = await dial("127.0.0.1", srv.server.port, cert=b.cert, key=b.key, pins={a.spki}, limits=FAST)
        await conn.send(b"x")
        assert await conn.recv() == b"echo:x"
        await stop(srv)
        with pytest.raises(ConnectionClosedError):
            await conn.recv()

    run(main())


# --- redial ------------------------------------------------------------------------------------


class Stop(BaseException):
    """Ends a keep_connected loop from inside the injected sleep."""


def test_backoff_doubles_to_the_cap_and_never_ends() -> None:
    limits = Limits(redial_initial=0.2, redial_max=5.0)
    top = backoff(limits, rng=lambda: 1.0)
    assert [round(next(top), 6) for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    bottom = backoff(limits, rng=lambda: 0.0)
    assert [round(next(bottom), 6) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5]
    jittered = backoff(limits)
    assert all(0.1 <= next(jittered) <= 5.0 for _ in range(10_000))


def test_redial_backs_off_bounded_and_never_gives_up(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]
    port = closed_port()
    limits = Limits(redial_initial=0.2, redial_max=5.0, handshake_timeout=1.0)
    slept: list[float] = []
    downs: list[str] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 200:
            raise Stop

    async def never(conn: Connection) -> None:
        raise AssertionError("nothing listens there")

    async def main() -> None:
        with pytest.raises(Stop):
            await keep_connected(
                lambda: dial("127.0.0.1", port, cert=b.cert, key=b.key, pins={a.spki}, limits=limits),
                never,
                limits=limits,
                sleep=sleep,
                rng=lambda: 1.0,
                on_down=lambda message, delay: downs.append(message),
            )

    run(main())
    assert len(slept) == 200  # 200 failures later it is still trying
    assert [round(d, 6) for d in slept[:7]] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert max(slept) == 5.0 and all(d == 5.0 for d in slept[5:])
    assert f"cannot connect to 127.0.0.1:{port}" in downs[0]


def test_redial_after_the_connection_ends_and_backoff_resets_only_after_a_stable_one(ids: dict[str, Tls]) -> None:
    a, b = ids["a"], ids["b"]
    limits = Limits(redial_initial=0.2, redial_max=5.0, handshake_timeout=1.0)

    async def main() -> None:
        srv = await listen(a, lambda: [b.der])
        now = [0.0]
        slept: list[float] = []
        uptime = [0.0, 0.0, 0.0, 10.0, 0.0, 0.0]  # the 4th connection stays up 10 s
        seen: list[str | None] = []

        async def sleep(delay: float) -> None:
            slept.append(delay)
            if len(slept) == len(uptime):
                raise Stop

        async def on_connected(conn: Connection) -> None:
            seen.append(conn.peer_spki)
            await conn.send(b"ping")
            assert await conn.recv() == b"echo:ping"
            now[0] += uptime[len(seen) - 1]
            if len(seen) == 2:
                raise RuntimeError("link error")

        with pytest.raises(Stop):
            await keep_connected(
                lambda: dial("127.0.0.1", srv.server.port, cert=b.cert, key=b.key, pins={a.spki}, limits=limits),
                on_connected,
                limits=limits,
                sleep=sleep,
                clock=lambda: now[0],
                rng=lambda: 1.0,
            )
        assert seen == [a.spki] * 6
        assert [round(d, 6) for d in slept] == [0.2, 0.4, 0.8, 0.2, 0.4, 0.8]
        await stop(srv)

    run(main())
