"""The HTTP listeners' connection bounds: at most ``max_connections`` at once, of them at most
``max_connections_per_source`` from one source, and a request head within
``request_head_seconds`` (``config.json``, section ``api``).

uvicorn holds a connection that never sends a request for as long as the other side likes (its
keep-alive timer runs only after a response, and any byte stops it), and accepts as many as the
kernel gives it. Every such connection is one of the station's file descriptors: a few hundred
idle sockets to the metrics address (no login) used to exhaust them, and then the control socket,
the store and the line's own paths could not open one. The line and pairing listeners are bounded
in transport.py; this bounds the console's and the metrics' (``HttpServer`` in app.py).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("redline.api")

# The listen queue, and how many connections asyncio accepts at one wake-up before any of them is
# refused at the cap (uvicorn's default is 2048: a burst of 1,100 connects took ~1,000 descriptors
# at once and logged a traceback per failed accept, ~1,000 in 85 ms, measured before the cap ran).
# So a burst holds at most a few times this many descriptors beyond the cap, for a moment.
BACKLOG = 64

# Written before closing a connection refused at the cap: a browser shows why, a script gets a status.
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
         b"connection: close\r\ncontent-length: 42\r\n\r\ntoo many connections to the station; retry\n")  # fmt: skip


class BoundedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a connection cap and a request-head deadline.

    The deadline runs from the connection's start, and again from the end of each response, until
    the next request's head is complete (bytes that trickle in do not reset it). A request being
    answered (a 30 s ``wait_receipt``, a WebSocket) is not timed here. ``HttpServer`` makes one
    subclass per listener with its limits (``bounded``)."""

    max_connections = 256
    per_source = 64
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # trusted proxies: every client's
    head_seconds = 5.0
    # Refusals of the current run (logged at the 1st, 10th, 100th...): a run ends after a quiet
    # minute, not at the next connection taken, which a source at its cap gets every few seconds.
    refused = 0
    last_refused = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cls = type(self)
        why = None
        if len(self.connections) >= cls.max_connections:
            why = f"{cls.max_connections} open is the cap (api.max_connections)"
        else:
            peer = transport.get_extra_info("peername")
            source = _source(peer[0]) if isinstance(peer, Sequence) and peer else None
            if source is not None and not _exempt(source, cls.exempt):
                held = sum(1 for c in self.connections if _source(_host(c)) == source)
                if held >= cls.per_source:
                    why = f"{cls.per_source} open from {source} is the cap (api.max_connections_per_source)"
        if why is not None:
            now = time.monotonic()
            cls.refused = 1 if now - cls.last_refused > 60 else cls.refused + 1
            cls.last_refused = now
            if _is_power_of_ten(cls.refused):
                log.warning("HTTP listener: %d connection(s) refused, %s", cls.refused, why)
            transport.write(_BUSY)
            transport.close()  # never added to the server's connections: nothing else to undo
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is None:  # refused at the cap: uvicorn never saw it
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:  # a request head arrived: its handler takes it from here
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()
        before = self.cycle
        super().on_response_complete()
        if self.cycle is not before or self.transport.is_closing():  # a pipelined request, or closed
            self._disarm()

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._disarm()  # the WebSocket protocol takes the connection (and its own keep-alive pings)
        super().handle_websocket_upgrade(event)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(type(self).head_seconds, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # no answer: nothing was asked; not logged (one per idle socket)


def bounded(
    max_connections: int, per_source: int, trusted_proxies: Sequence[str], head_seconds: float
) -> type[BoundedH11]:
    """The protocol class for one listener: its own caps, its own count of refusals. Loopback and
    the trusted proxies are not capped per source (a local proxy's clients all come from it)."""
    exempt = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
    attrs = {"max_connections": max_connections, "per_source": per_source, "exempt": exempt,
             "head_seconds": head_seconds, "refused": 0, "last_refused": 0.0}  # fmt: skip
    return type("BoundedH11", (BoundedH11,), attrs)


def _host(conn: object) -> str | None:
    client = getattr(conn, "client", None)  # HTTP and WebSocket protocols alike: (host, port) or None
    return str(client[0]) if isinstance(client, tuple) and client else None


@functools.lru_cache(maxsize=4096)
def _source(host: str | None) -> str | None:
    """A connection's source as the login guard counts it: the address, an IPv6 one by its /64
    (one site's block). Cached: it is asked for every open connection at each accept."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def _exempt(source: str, proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    net = ipaddress.ip_network(source, strict=False)
    return net.is_loopback or any(net.subnet_of(p) for p in proxies if p.version == net.version)  # type: ignore[arg-type]


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
