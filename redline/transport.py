"""asyncio TLS 1.3 connections per path: the only module that touches the network.

What it gives the layers above (DESIGN.md guarantee 5, "only the paired peer gets in"):

- **Frames.** ``u32 big-endian length | payload``. The length is checked against
  ``Limits.max_frame_bytes`` before a byte of the payload is read, so an oversized frame costs the
  peer its connection, not our memory. (The sans-IO decoder for what is inside lives in protocol/.)
- **TLS 1.3 only, mutual authentication, pinned keys, no 0-RTT, no resumption.** Python's ssl has
  no early data at all. Resumption is off twice: ``OP_NO_TICKET`` alone makes an OpenSSL TLS 1.3
  server issue *stateful* tickets instead of stateless ones, so the server also sets
  ``num_tickets = 0`` (a test checks that the client never holds a ticket); and asyncio never offers
  a session. Every handshake is therefore a full certificate handshake.
- **Pre-authentication is bounded.** At most ``max_preauth_per_source`` connections per source
  (an IPv4 address, or an IPv6 /64, since one host usually holds a whole /64) may be between TCP
  accept and a verified TLS peer; the excess is aborted at once. Each gets ``handshake_timeout``
  seconds to finish TLS and the pin check, then it is aborted.

Self-signed certificates and pinning
------------------------------------
Station TLS certificates are self-signed Ed25519 (``identity.new_tls_identity``); their own
signature proves nothing. Trust comes from the peer's root key certifying the certificate's SPKI
hash, pinned at pairing. So what must hold after a handshake is "the peer proved possession of the
private key whose SPKI hash we pinned". TLS 1.3 always verifies the peer's CertificateVerify
signature over the handshake with the presented certificate's key, whatever ``verify_mode`` says;
``verify_mode`` only decides whether the *chain* must lead to a trust anchor.

- **Client side (dial).** ``verify_mode = CERT_NONE`` (no chain to build), then, before a single
  application byte moves, the SPKI hash of the server's certificate must be in ``pins`` (a set of
  hex SPKI hashes) or the connection is aborted with ``UnknownKeyError``. Pinning by SPKI hash lets
  a joiner dial the inviter during pairing knowing only the hash (carried in the invite), and lets
  the peer re-issue its self-signed certificate around the same key.
- **Server side.** A server that uses ``CERT_NONE`` does not even ask for a client certificate, and
  with ``CERT_OPTIONAL``/``CERT_REQUIRED`` OpenSSL fails the handshake on any certificate that does
  not chain to a trust anchor; Python offers no verify callback to override that. So the server
  loads the pinned peers' certificates themselves (DER, from ``pins()``) as its only trust anchors
  and uses ``CERT_REQUIRED``: a self-signed certificate that is its own trust anchor verifies, any
  other does not. On top of that the leaf's SPKI hash must be one of the pinned certificates'
  hashes (defence in depth: chain building is not what we mean to trust). ``pins`` is a callable
  read on every accept; the context is rebuilt when the returned set changes (cached otherwise),
  so a pairing or a key rotation takes effect for the next connection without a restart. With no
  pinned peer every handshake fails, and the refusal says so.
- Validity dates are checked on the server side as a side effect of chain verification;
  ``new_tls_identity`` issues ten-year certificates, and key rotation (guarantee 6) replaces them
  long before.

Pairing mode
------------
A station being paired does not know the joiner's certificate yet, and (above) an OpenSSL server
cannot ask for a certificate it will not verify. ``Server.start_pairing`` therefore listens with
``CERT_NONE``: no client certificate is requested, and the ``Connection`` it hands out has
``peer_spki = None``. The joiner still dials with ``dial`` and pins the inviter's SPKI hash from
the invite, so the joiner knows whom it talks to; the inviter learns who the joiner is only from
the pairing frames (token secret, commit-then-reveal safety code), which carry the joiner's key
certificates. After pairing, the joiner reconnects to the normal, mutually authenticated listener.
A pairing connection never becomes "authenticated" at this layer, so it counts against
``max_preauth_per_source`` for its whole life; the pairing code must bound its own exchange.

Why the handshake is done by hand
---------------------------------
``asyncio.start_server(ssl=ctx)`` only calls back after the handshake, too late to count
connections that are still handshaking. So the server accepts plain TCP, counts the source, and
upgrades with ``StreamWriter.start_tls`` under ``handshake_timeout``; the count is released once
the peer is verified (or the attempt ends).

Errors are one line a duty officer can act on. Refusals on the server side go to the logger
``redline.transport`` and to the optional ``on_refused`` callback (for the station's status page).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from redline.config import Limits
from redline.errors import (
    ConfigError,
    ConnectionClosedError,
    LocalProtocolError,
    RemoteProtocolError,
    TransportError,
    UnknownKeyError,
)
from redline.identity import spki_hash

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
HEADER_BYTES = _HEADER.size

# Stream buffer: large enough that a typical frame needs few pause/resume cycles.
_STREAM_LIMIT = 256 * 1024


# --- frames ------------------------------------------------------------------------------------


def encode_frame(payload: bytes) -> bytes:
    """``u32 big-endian length | payload``."""
    if len(payload) > 0xFFFFFFFF:
        raise LocalProtocolError(f"a frame of {len(payload)} bytes cannot be encoded (u32 length)")
    return _HEADER.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, max_bytes: int, *, peer: str = "the peer") -> bytes:
    """Read one whole frame; raise before reading the payload if it is over ``max_bytes``.

    ``RemoteProtocolError`` for an oversized frame (the stream cannot be resynchronised: close it);
    ``ConnectionClosedError`` for an end of stream, with how far into a frame it came.
    """
    try:
        header = await reader.readexactly(HEADER_BYTES)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionClosedError(f"{peer} closed the connection") from None
        raise ConnectionClosedError(
            f"{peer} closed the connection inside a frame header ({len(exc.partial)} of {HEADER_BYTES} bytes)"
        ) from None
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise RemoteProtocolError(
            f"{peer} sent a frame of {length} bytes, over the {max_bytes}-byte limit (max_frame_bytes); "
            "closing the path"
        )
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionClosedError(
            f"{peer} closed the connection inside a frame ({len(exc.partial)} of {length} bytes)"
        ) from None


# --- TLS contexts ------------------------------------------------------------------------------


def _base_context(purpose: int, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET
    try:
        ctx.load_cert_chain(cert, key)
    except OSError as exc:
        raise ConfigError(
            f"cannot load this station's TLS certificate {cert} with key {key}: {exc}; "
            "were they made by 'redline init'?"
        ) from exc
    return ctx


def client_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Client side: present our certificate; the server's key is checked by SPKI pin after the handshake."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, cert, key)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # see module docstring: the pin check replaces chain building
    return ctx


def server_context(cert: Path, key: Path, pins: Sequence[bytes] | None) -> ssl.SSLContext:
    """Server side: require a client certificate that is one of ``pins`` (DER); ``None``: pairing mode."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, cert, key)
    ctx.num_tickets = 0  # OP_NO_TICKET alone still sends stateful TLS 1.3 tickets
    if pins is None:
        ctx.verify_mode = ssl.CERT_NONE  # no CertificateRequest at all
        return ctx
    ctx.verify_mode = ssl.CERT_REQUIRED
    for der in pins:
        try:
            ctx.load_verify_locations(cadata=der)
        except ssl.SSLError as exc:
            raise ConfigError(f"a pinned peer certificate is not valid DER X.509 ({exc}); re-pair the line") from exc
    return ctx


def _short(spki: str) -> str:
    return spki[:16] + "…"


def _source(host: str) -> str:
    """What the pre-auth cap counts: an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- connections -------------------------------------------------------------------------------


class Connection:
    """One verified TLS connection on one path: whole frames in, whole frames out.

    ``peer_spki`` is the hex SHA-256 of the peer's certificate SPKI, checked against the pins;
    ``None`` only on a connection accepted by a pairing listener (no client certificate asked).
    One task may ``recv`` at a time; ``send`` may be called from several tasks (each frame is
    written whole, without an await in between).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer: str,
        peer_spki: str | None,
        limits: Limits,
        dialled: bool,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._dialled = dialled
        self._frames_in = 0
        self._closed = False
        self._refused: str | None = None  # why a frame was refused unread: nothing after it can be read
        self._broken: str | None = None  # why the network broke it, whichever of recv and drain saw it first
        self.peer = peer
        self.peer_spki = peer_spki
        _stall_timeout(writer, limits.path_stalled_after)

    @property
    def broken(self) -> str | None:
        """Why the network broke the connection (None: it did not, or not yet seen)."""
        return self._broken

    @property
    def closed(self) -> bool:
        return self._closed or self._writer.is_closing()

    @property
    def tls_version(self) -> str:
        sslobj = self._writer.get_extra_info("ssl_object")
        version = sslobj.version() if isinstance(sslobj, ssl.SSLObject) else None
        return version or "none"

    def _who(self) -> str:
        return f"peer at {self.peer}"

    async def send(self, payload: bytes) -> None:
        """Write one frame and wait until the transport has taken it (back-pressure)."""
        self.write(payload)
        await self.drain()

    def write(self, payload: bytes) -> None:
        """Queue one frame without waiting: frames written in one burst keep their order even when
        several tasks write to this connection. Call ``drain`` after the burst."""
        self.write_frames((payload,))

    def write_frames(self, payloads: Sequence[bytes]) -> None:
        """Queue several frames, in order, as one write: a burst of envelopes goes out in as few
        TLS records and ``send`` calls as fit, instead of one of each per frame. Nothing is queued
        if any of them is refused."""
        for payload in payloads:
            if len(payload) > self._limits.max_frame_bytes:
                raise LocalProtocolError(
                    f"refusing to send a frame of {len(payload)} bytes to {self.peer}: over the "
                    f"{self._limits.max_frame_bytes}-byte limit (max_frame_bytes)"
                )
        if self.closed:
            raise ConnectionClosedError(f"cannot send to {self.peer}: the connection is closed")
        self._writer.write(b"".join(part for payload in payloads for part in (_HEADER.pack(len(payload)), payload)))

    def must_drain(self) -> bool:
        """Whether ``drain`` may have to wait or fail: something written is still queued in the
        transport (the socket did not take it all), or the connection is closed. False means
        ``drain`` would return at once."""
        return self.closed or self._writer.transport.get_write_buffer_size() > 0

    async def drain(self) -> None:
        """Wait until the transport has taken what was written (back-pressure)."""
        if self.closed:
            raise ConnectionClosedError(f"cannot send to {self.peer}: the connection is closed")
        try:
            await self._writer.drain()
        except OSError as exc:
            self.abort()
            raise self._broke(exc, " while sending") from exc

    async def recv(self) -> bytes:
        """Read one whole frame (at most ``limits.max_frame_bytes``)."""
        if self._closed:
            raise ConnectionClosedError(self._broken or f"cannot receive from {self.peer}: the connection is closed")
        if self._refused is not None:
            raise RemoteProtocolError(self._refused)
        try:
            frame = await read_frame(self._reader, self._limits.max_frame_bytes, peer=self._who())
        except RemoteProtocolError as exc:
            # Refused by its length, its payload unread (PROTOCOL.md 8.2): the stream cannot be read
            # past it, but stays open for the caller to say why (an ERROR frame) and close; a peer
            # that goes on sending fills only the reader's bounded buffer meanwhile.
            self._refused = str(exc)
            raise
        except ConnectionClosedError as exc:
            self.abort()
            if self._dialled and self._frames_in == 0:
                raise ConnectionClosedError(
                    f"{exc}; it sent nothing after the TLS handshake, so it has probably refused our "
                    "TLS certificate (not paired with this station's current TLS key): check its log"
                ) from None
            raise
        except OSError as exc:
            self.abort()
            raise self._broke(exc) from exc
        self._frames_in += 1
        return frame

    def _broke(self, exc: OSError, doing: str = "") -> ConnectionClosedError:
        """Why the network broke the connection, kept for its reader (``recv``) when ``drain`` saw it."""
        if exc.errno == errno.ETIMEDOUT:  # TCP_USER_TIMEOUT (_stall_timeout), or TCP's own retries
            why = (
                f"path to {self.peer} closed as stalled: it took nothing we sent for "
                f"{self._limits.path_stalled_after:g} s (path_stalled_after); what it held is resent from the "
                "store when a path opens"
            )
        else:
            why = f"connection to {self.peer} broke{doing}: {_reason(exc)}"
        self._broken = self._broken or why
        return ConnectionClosedError(why)

    def close(self) -> None:
        """Close politely (TLS close_notify); idempotent."""
        self._closed = True
        if not self._writer.is_closing():
            self._writer.close()

    def abort(self) -> None:
        """Drop the connection at once, without waiting for buffered data."""
        self._closed = True
        self._writer.transport.abort()

    async def wait_closed(self) -> None:
        """Wait (at most ``handshake_timeout``) until the transport is gone; abort if it lingers."""
        self.close()
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                await self._writer.wait_closed()
        except TimeoutError:
            self.abort()
        except OSError:
            pass

    def __repr__(self) -> str:
        spki = _short(self.peer_spki) if self.peer_spki else "unauthenticated"
        return f"<Connection {self.peer} {spki}{' closed' if self.closed else ''}>"


def _stall_timeout(writer: asyncio.StreamWriter, seconds: float) -> None:
    """Have the kernel close the connection once what we wrote has waited ``seconds`` unacknowledged,
    or unsent behind a window the peer keeps shut (``TCP_USER_TIMEOUT``, Linux 2.6.37; zero windows
    since 5.x). Nobody in the station waits for a path to take its frames (``Station._perform_soon``),
    so without this a peer that keeps a path alive with heartbeats and reads nothing on it would
    have everything we send there queue in our memory. Where the option is missing, nothing is set:
    a path the network black-holes is still closed for silence (``path_dead_after``)."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or str(exc.reason)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    return str(exc) or type(exc).__name__


# --- client ------------------------------------------------------------------------------------


async def dial(host: str, port: int, *, cert: Path, key: Path, pins: Collection[str], limits: Limits) -> Connection:
    """Open a path to the peer: TCP, TLS 1.3 with our certificate, then the server's SPKI pin check.

    ``pins`` are hex SPKI hashes (``identity.spki_hash``) the server may present. The whole of
    connect + handshake + check is bounded by ``limits.handshake_timeout``. A server that refuses
    *our* certificate can only say so after our side of the TLS 1.3 handshake is done, so that
    shows up as the first ``recv`` failing with a message that says so.
    """
    addr = _addr(host, port)
    wanted = {p.lower() for p in pins}
    if not wanted:
        raise LocalProtocolError(f"cannot dial {addr}: no TLS key is pinned for the peer; pair the stations first")
    ctx = client_context(cert, key)
    try:
        async with asyncio.timeout(limits.handshake_timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, ssl_handshake_timeout=limits.handshake_timeout, limit=_STREAM_LIMIT
            )
    except TimeoutError:
        raise TransportError(
            f"peer at {addr} did not complete a TLS handshake within {limits.handshake_timeout:g} s "
            "(handshake_timeout); check the address and the network path"
        ) from None
    except ssl.SSLError as exc:
        raise TransportError(
            f"TLS handshake with {addr} failed ({_reason(exc)}); the peer must be a redline station speaking TLS 1.3"
        ) from exc
    except OSError as exc:
        raise TransportError(
            f"cannot connect to {addr}: {_reason(exc)}; is the peer station running and is the path open?"
        ) from exc
    sslobj = writer.get_extra_info("ssl_object")
    try:
        der = sslobj.getpeercert(binary_form=True) if isinstance(sslobj, ssl.SSLObject) else None
    except ValueError:
        writer.transport.abort()
        raise TransportError(f"TLS handshake with {addr} did not complete (the stream broke)") from None
    if der is None:  # not possible in TLS 1.3 without PSK, which we never offer
        writer.transport.abort()
        raise RemoteProtocolError(f"peer at {addr} presented no TLS certificate")
    got = spki_hash(der)
    if got not in wanted:
        writer.transport.abort()
        raise UnknownKeyError(
            f"peer at {addr} presented TLS key {_short(got)} which is not the paired station's key "
            f"({', '.join(sorted(_short(p) for p in wanted))}); if it rotated its TLS key, its KEY envelope "
            "must be accepted first, otherwise something else is answering at this address"
        )
    return Connection(reader, writer, peer=addr, peer_spki=got, limits=limits, dialled=True)


# --- server ------------------------------------------------------------------------------------


class _NoHalfClose(asyncio.StreamReaderProtocol):
    """End of stream ends the connection, before and after the TLS upgrade.

    The stock protocol keeps a plain TCP connection half-open on EOF; and when a peer's
    close_notify arrives in the same read as its last handshake message, asyncio (3.11) asks it
    before ``StreamWriter.start_tls`` has told it about TLS, and logs a spurious warning.
    """

    def eof_received(self) -> bool:
        super().eof_received()
        return False


class Server:
    """A TLS 1.3 listener that hands each verified connection to ``on_connection``.

    The connection is closed when ``on_connection`` returns or raises. Create with ``start`` (only
    pinned peers) or ``start_pairing`` (no client certificate; see the module docstring).
    """

    def __init__(
        self,
        *,
        server_cert: Path,
        server_key: Path,
        pins: Callable[[], Sequence[bytes]] | None,
        on_connection: Callable[[Connection], Awaitable[None]],
        limits: Limits,
        on_refused: Callable[[str], None] | None,
    ) -> None:
        self._cert = server_cert
        self._key = server_key
        self._pins = pins
        self._on_connection = on_connection
        self._limits = limits
        self._on_refused = on_refused
        self._preauth: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._cached: tuple[tuple[object, ...], ssl.SSLContext, frozenset[str]] | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @classmethod
    async def start(
        cls,
        host: str,
        port: int,
        *,
        server_cert: Path,
        server_key: Path,
        pins: Callable[[], Sequence[bytes]] | None,
        on_connection: Callable[[Connection], Awaitable[None]],
        limits: Limits,
        on_refused: Callable[[str], None] | None = None,
    ) -> Server:
        """Listen for the paired peer. ``pins()`` returns the DER certificates of the paired peers
        (``None``: a pairing listener, see ``start_pairing``)."""
        self = cls(
            server_cert=server_cert,
            server_key=server_key,
            pins=pins,
            on_connection=on_connection,
            limits=limits,
            on_refused=on_refused,
        )
        self._context()  # fail now, not on the first accept, if our own key or a pin is unusable
        await self._listen(host, port)
        return self

    @classmethod
    async def start_pairing(
        cls,
        host: str,
        port: int,
        *,
        server_cert: Path,
        server_key: Path,
        on_connection: Callable[[Connection], Awaitable[None]],
        limits: Limits,
        on_refused: Callable[[str], None] | None = None,
    ) -> Server:
        """Listen for a joiner during pairing: TLS 1.3, no client certificate, ``peer_spki`` None."""
        return await cls.start(
            host, port, server_cert=server_cert, server_key=server_key, pins=None,
            on_connection=on_connection, limits=limits, on_refused=on_refused,
        )  # fmt: skip

    async def _listen(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:  # what asyncio.start_server builds, minus half-close
            return _NoHalfClose(asyncio.StreamReader(limit=_STREAM_LIMIT, loop=loop), self._accept, loop=loop)

        try:
            self._server = await loop.create_server(protocol, host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {_addr(host, port)}: {_reason(exc)}") from exc
        self.port = self._server.sockets[0].getsockname()[1]

    def _context(self) -> tuple[ssl.SSLContext, frozenset[str]]:
        pins = None if self._pins is None else tuple(self._pins())
        # Our own certificate is part of the key: a TLS rotation renames a new one into place
        # (redline/keys.py), and the next handshake presents it.
        own = self._cert.stat()
        key = (*(pins if pins is not None else ()), own.st_ino, own.st_mtime_ns)
        if self._cached is None or self._cached[0] != key:
            ctx = server_context(self._cert, self._key, pins)
            hashes = frozenset(spki_hash(der) for der in pins or ())
            self._cached = (key, ctx, hashes)
        return self._cached[1], self._cached[2]

    def _refuse(self, message: str) -> None:
        log.warning("%s", message)
        if self._on_refused is not None:
            try:
                self._on_refused(message)
            except Exception:
                log.exception("on_refused callback failed")

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Called synchronously from connection_made: the count is exact, with no await to race.
        peername = writer.get_extra_info("peername")
        host, sport = (str(peername[0]), int(peername[1])) if peername else ("?", 0)
        addr = _addr(host, sport)
        source = _source(host)
        cap = self._limits.max_preauth_per_source
        if self._preauth.get(source, 0) >= cap:
            writer.transport.abort()
            self._refuse(
                f"refused connection from {addr}: {source} already has {cap} connection(s) waiting to "
                "authenticate (max_preauth_per_source)"
            )
            return
        self._preauth[source] = self._preauth.get(source, 0) + 1
        # Our own task, not asyncio's client_connected_cb task, so that close() may cancel it.
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer, source, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str, addr: str) -> None:
        held = True
        conn: Connection | None = None
        try:
            conn = await self._handshake(reader, writer, addr)
            if conn is None:
                return
            if self._pins is not None:  # verified: no longer pre-auth (pairing connections never are)
                held = False
                self._drop_preauth(source)
            try:
                await self._on_connection(conn)
            except Exception as exc:
                log.warning("connection from %s ended with an error: %s", addr, exc)
        finally:
            if held:
                self._drop_preauth(source)
            if conn is None:
                writer.transport.abort()  # refused (already aborted) or cancelled mid-handshake
            else:
                conn.close()

    def _drop_preauth(self, source: str) -> None:
        left = self._preauth.get(source, 1) - 1
        if left > 0:
            self._preauth[source] = left
        else:
            self._preauth.pop(source, None)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: str
    ) -> Connection | None:
        timeout = self._limits.handshake_timeout
        late = f"closed connection from {addr}: no TLS handshake within {timeout:g} s (handshake_timeout)"
        try:
            ctx, allowed = self._context()
        except ConfigError as exc:
            writer.transport.abort()
            self._refuse(f"refused connection from {addr}: {exc}")
            return None
        try:
            async with asyncio.timeout(timeout):
                await writer.start_tls(ctx, ssl_handshake_timeout=timeout)
        except TimeoutError:
            writer.transport.abort()
            self._refuse(late)
            return None
        except ssl.SSLCertVerificationError as exc:
            writer.transport.abort()
            if not allowed:
                self._refuse(
                    f"refused connection from {addr}: this station has no paired peer, so no TLS certificate "
                    "is accepted on this port; pair through the invite listener first"
                )
            else:
                self._refuse(
                    f"refused connection from {addr}: its TLS certificate is not the paired station's "
                    f"({_reason(exc)}); if the peer rotated its TLS key, accept its KEY envelope first"
                )
            return None
        except ssl.SSLError as exc:
            writer.transport.abort()
            if exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
                self._refuse(
                    f"refused connection from {addr}: it presented no TLS certificate (a paired station always does)"
                )
            else:
                self._refuse(
                    f"refused connection from {addr}: TLS handshake failed ({_reason(exc)}); "
                    "a redline peer speaks TLS 1.3 with its station certificate"
                )
            return None
        except OSError as exc:
            writer.transport.abort()
            if isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc):  # asyncio's own timer
                self._refuse(late)
            else:
                self._refuse(f"connection from {addr} dropped during the TLS handshake: {_reason(exc)}")
            return None
        if self._pins is None:
            return Connection(reader, writer, peer=addr, peer_spki=None, limits=self._limits, dialled=False)
        sslobj = writer.get_extra_info("ssl_object")
        try:
            der = sslobj.getpeercert(binary_form=True) if isinstance(sslobj, ssl.SSLObject) else None
        except ValueError:  # the stream broke right as the handshake ended: a failed handshake
            der = None
        got = spki_hash(der) if der else None
        if got is None or got not in allowed:
            writer.transport.abort()
            shown = _short(got) if got else "none"
            self._refuse(f"refused connection from {addr}: it presented TLS key {shown}, not the paired station's key")
            return None
        return Connection(reader, writer, peer=addr, peer_spki=got, limits=self._limits, dialled=False)

    def close(self) -> None:
        """Stop listening and close every connection this server accepted (handshaking or not)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# --- staying connected -------------------------------------------------------------------------


def backoff(limits: Limits, rng: Callable[[], float] = random.random) -> Iterator[float]:
    """Endless redial delays: ``redial_initial`` doubling up to ``redial_max``, each jittered into
    ``[d/2, d]`` so two stations (or many paths) do not redial in lockstep. No retry cliff."""
    if not 0 < limits.redial_initial <= limits.redial_max:
        raise ConfigError(
            f"redial_initial ({limits.redial_initial:g} s) must be > 0 and at most redial_max "
            f"({limits.redial_max:g} s); fix them in config.json"
        )
    step = limits.redial_initial
    while True:
        yield step * (0.5 + 0.5 * rng())
        step = min(step * 2, limits.redial_max)


async def keep_connected(
    connect: Callable[[], Awaitable[Connection]],
    on_connected: Callable[[Connection], Awaitable[None]],
    *,
    limits: Limits,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    on_down: Callable[[str, float], None] | None = None,
) -> NoReturn:
    """Keep one path connected forever; cancel the task to stop.

    ``connect`` is usually ``functools.partial(dial, host, port, cert=..., key=..., pins=..., limits=...)``.
    Each connection is handed to ``on_connected``; when that returns or raises, the connection is
    closed and the path redialled. Failures never stop the loop, they back off (``backoff``); the
    backoff starts again from ``redial_initial`` only after a connection that stayed up for at least
    ``redial_max`` seconds, so a peer that accepts and drops at once is not hammered.
    ``on_down(message, delay)`` hears each failure, one line, with the wait before the next try.
    """
    delays = backoff(limits, rng)

    def down(message: str, delay: float) -> None:
        log.info("%s; redialling in %.1f s", message, delay)
        if on_down is not None:
            on_down(message, delay)

    while True:
        try:
            conn = await connect()
        except Exception as exc:  # keep trying whatever went wrong; the message says what to fix
            delay = next(delays)
            down(str(exc) or type(exc).__name__, delay)
            await sleep(delay)
            continue
        started = clock()
        message = f"path to {conn.peer} closed"
        try:
            await on_connected(conn)
        except Exception as exc:
            message = f"path to {conn.peer} lost: {str(exc) or type(exc).__name__}"
        finally:
            conn.close()
        if clock() - started >= limits.redial_max:
            delays = backoff(limits, rng)
        delay = next(delays)
        down(message, delay)
        await sleep(delay)
