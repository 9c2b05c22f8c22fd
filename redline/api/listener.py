"""The HTTP listeners' connection bounds: at most ``max_connections`` at once, and a request head
within ``request_head_seconds`` (``config.json``, section ``api``).

uvicorn holds a connection that never sends a request for as long as the other side likes (its
keep-alive timer runs only after a response, and any byte stops it), and accepts as many as the
kernel gives it. Every such connection is one of the station's file descriptors: a few hundred
idle sockets to the metrics address (no login) used to exhaust them, and then the control socket,
the store and the line's own paths could not open one. The line and pairing listeners are bounded
in transport.py; this bounds the console's and the metrics' (``HttpServer`` in app.py).
"""

from __future__ import annotations

import asyncio
import logging
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
    head_seconds = 5.0
    refused = 0  # refusals at the cap since it was last below it (logged at 1, 10, 100, ...)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cls = type(self)
        if len(self.connections) >= cls.max_connections:
            cls.refused += 1
            if _is_power_of_ten(cls.refused):
                log.warning("HTTP listener: %d connection(s) refused, %d open is the cap (api.max_connections)",
                            cls.refused, cls.max_connections)  # fmt: skip
            transport.write(_BUSY)
            transport.close()  # never added to the server's connections: nothing else to undo
            return
        cls.refused = 0
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


def bounded(max_connections: int, head_seconds: float) -> type[BoundedH11]:
    """The protocol class for one listener: its own cap, its own count of refusals."""
    return type("BoundedH11", (BoundedH11,), {"max_connections": max_connections, "head_seconds": head_seconds,
                                              "refused": 0})  # fmt: skip


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
