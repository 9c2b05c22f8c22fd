"""The key ceremony as the running station performs it (the messages and checks are pairing.py's).

The inviter issues a single-use token and listens on a pairing port of its own; the joiner dials
it pinned to the token's TLS key, sends JOIN (proved with the token's secret), and gets REVEAL;
both compute the safety code the operators compare by voice. Every refusal reaches the other side
as one ``error`` message and is logged; nothing is recorded until the exchange is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from redline import canonical, identity, pairing, transport
from redline.config import parse_hostport
from redline.errors import PairingError, RedlineError
from redline.protocol.framing import FrameType, encode_frame

if TYPE_CHECKING:
    from redline.station import Station

log = logging.getLogger("redline.ceremony")


class Ceremony:
    def __init__(self, station: Station) -> None:
        self.st = station
        self._invites: dict[str, pairing.Invite] = {}
        self._server: transport.Server | None = None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _party(self) -> pairing.Party:
        st = self.st
        return pairing.Party(
            root=st.keys.root_public, signing_cert=st.keys.signing_cert, tls_cert=st.keys.tls_cert,
            tls_der=st.keys.tls_cert_der, name=st.config.name, lang=st.config.lang, addrs=st.config.addresses,
        )  # fmt: skip

    async def invite(self) -> dict[str, Any]:
        """Issue a single-use, expiring token and listen for the joiner on a pairing port."""
        st = self.st
        if self._server is None:
            host, _ = parse_hostport(st.config.listen[0])
            self._server = await transport.Server.start_pairing(
                host, 0, server_cert=st.home.keys / "tls.crt", server_key=st.home.keys / "tls.key",
                on_connection=self._inbound, limits=st.limits,
            )  # fmt: skip
        host, _ = parse_hostport(st.config.addresses[0])  # where the joiner can reach us (advertised)
        inv, token = pairing.new_invite(
            name=st.config.name, addrs=st.config.addresses, pair_addr=f"{host}:{self._server.port}",
            station=st.keys.fingerprint, spki=identity.spki_hash(st.keys.tls_cert_der), now=st.wall(),
            ttl_ms=int(st.limits.invite_ttl_seconds * 1000),
        )  # fmt: skip
        self._invites[inv.id] = inv
        return {"token": token.encode(), "expires": inv.expires}

    async def _inbound(self, conn: transport.Connection) -> None:
        st = self.st
        try:
            async with asyncio.timeout(st.limits.handshake_timeout * 2):
                msg = _decode(await conn.recv())
            inv = self._invites.get(str(msg.get("invite")))
            if inv is None:
                raise PairingError("the joining station used a token this station did not issue (foreign token)")
            party, nonce_j = pairing.check_join(inv, msg, st.wall())
            self._invites[inv.id] = pairing.Invite(**{**inv.__dict__, "used": True})
            peer_fp = party.check()
            code = pairing.safety_code(inv.line, st.keys.root_public, party.root, inv.nonce, nonce_j)
            st.add_line(inv.line, party, peer_fp, code, we_invited=True)
            await conn.send(_encode(pairing.reveal_message(inv, self._party())))
            st.alarm(inv.line, "info", "paired", peer=party.name, code=code)
        except (RedlineError, TimeoutError) as exc:  # a bad JOIN never kills the handler silently
            with contextlib.suppress(RedlineError):
                await conn.send(_encode({"step": "error", "message": str(exc)}))
            log.warning("pairing refused: %s", exc)

    async def pair(self, token_text: str) -> dict[str, Any]:
        st = self.st
        token = pairing.Token.decode(token_text)
        if st.wall() > token.expires:
            raise PairingError("this pairing token has expired; ask the other station for a new one")
        if token.station == st.keys.fingerprint:
            raise PairingError("this token was issued by this very station; give it to the other station")
        host, port = parse_hostport(token.pair_addr)
        try:
            conn = await transport.dial(
                host, port, cert=st.home.keys / "tls.crt", key=st.home.keys / "tls.key", pins={token.spki},
                limits=st.limits,
            )  # fmt: skip
        except RedlineError as exc:
            raise PairingError(f"cannot reach the inviting station at {token.pair_addr}: {exc}") from exc
        try:
            nonce_j = os.urandom(32)
            await conn.send(_encode(pairing.join_message(token, self._party(), nonce_j)))
            async with asyncio.timeout(st.limits.handshake_timeout * 2):
                answer = _decode(await conn.recv())
        except (RedlineError, TimeoutError) as exc:
            raise PairingError(f"the inviting station did not complete pairing: {exc}") from exc
        finally:
            conn.close()
        party, nonce_i, line = pairing.check_reveal(token, answer)
        code = pairing.safety_code(line, party.root, st.keys.root_public, nonce_i, nonce_j)
        st.add_line(line, party, token.station, code, we_invited=False)
        return {"line": line, "peer": party.name, "safety_code": code}


def _encode(obj: dict[str, Any]) -> bytes:
    return encode_frame(FrameType.PAIR, canonical.encode(obj))[4:]


def _decode(payload: bytes) -> dict[str, Any]:
    if not payload or payload[0] != FrameType.PAIR:
        raise PairingError("the other station did not answer with a pairing message")
    try:
        return canonical.decode_object(payload[1:], "pairing message")
    except RedlineError as exc:
        raise PairingError(f"malformed pairing message: {exc}") from exc
