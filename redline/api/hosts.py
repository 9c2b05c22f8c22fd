"""Only our own Host, only our own Origin: the console refuses DNS rebinding and other sites.

A page of ``evil.example`` whose name an attacker re-points at 127.0.0.1 (DNS rebinding) is, to
the browser, the same origin as itself: its requests go to the station's console with
``Host: evil.example:8080`` and ``Origin: http://evil.example:8080``, and comparing the two proves
nothing. So both are checked against one list of names the console is *for*: the loopback names
(``localhost``, ``127.0.0.1``, ``[::1]``) and the address it listens on, each on the port it
listens on, plus ``allowed_hosts`` from the config (``name`` for any port, ``name:port`` for
one). A request with any other Host is refused with 421 before routing (static files too); a POST
or a WebSocket whose Origin is not on the list is refused with 403. A request without an Origin is
not a browser's cross-site request (browsers send one on every POST and WebSocket), so it passes.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from redline.config import ApiConfig, parse_host
from redline.errors import ConfigError

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
_WILDCARD = ("0.0.0.0", "[::]")
_DEFAULT_PORT = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class Hosts:
    """The (host, port) pairs the console answers to; port None: any port."""

    def __init__(self, config: ApiConfig, listen: tuple[str, int] | None = None) -> None:
        port = listen[1] if listen else None
        names = list(LOOPBACK)
        if listen:
            bound = parse_host(listen[0])[0]
            if bound not in _WILDCARD:
                names.append(bound)
        allowed = {(name, port) for name in names}
        allowed |= {parse_host(entry) for entry in config.allowed_hosts}
        self.allowed = frozenset(allowed)

    def allows(self, host: str, port: int | None) -> bool:
        return (host, None) in self.allowed or (host, port) in self.allowed

    def shown(self) -> str:
        return ", ".join(sorted(h if p is None else f"{h}:{p}" for h, p in self.allowed))

    def host_refusal(self, header: str | None) -> str | None:
        """Why a request with this Host header is refused, or None. A Host without a port is
        matched by name only (a browser always sends a port that is not the scheme's default)."""
        try:
            host, port = parse_host(header or "")
        except ConfigError:
            host, port = "", None
        if host and ((port is None and any(h == host for h, _ in self.allowed)) or self.allows(host, port)):
            return None
        return (
            f"this station's console answers only to its own host names ({self.shown()}), not to "
            f"{(header or '(none)')[:100]!r}; an operator adds names with api.allowed_hosts in config.json"
        )

    def origin_allowed(self, origin: str) -> bool:
        try:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.path or parts.query:
                return False
            host, port = parse_host(parts.netloc)
        except (ValueError, ConfigError):
            return False
        return self.allows(host, _DEFAULT_PORT[parts.scheme] if port is None else port)


class HostCheck:
    """ASGI middleware: 421 for a request (HTTP or WebSocket) whose Host is not one of ours."""

    def __init__(self, app: ASGIApp, hosts: Hosts) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        why = self.hosts.host_refusal(Headers(scope=scope).get("host"))
        if why is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting refuses the upgrade (the server answers 403): no session,
            # no event, nothing of the station reaches a page of another name.
            await send({"type": "websocket.close", "code": 1008, "reason": "misdirected request"})
            return
        body = json.dumps({"error": why}).encode()
        await send({
            "type": "http.response.start", "status": 421,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"cache-control", b"no-store")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})
