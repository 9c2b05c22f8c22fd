"""A pairing cannot take over a line: real stations in this process, real TLS on loopback.

The inviter names the new line's id (commit-then-reveal binds it to the token, nothing more), and
storing a line was an upsert: an invitation naming the id of a line the joiner already held
replaced that line's record (peer, root, TLS pin, paths, confirmation) and its session, and once the
operators confirmed the (matching) safety code, the joiner sent the new peer the whole transcript.
Line ids are no secret: every bundle, console address and log names them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from redline import pairing
from redline.errors import PairingError
from redline.station import Station
from redline.testing import free_ports, make_station, pair_directly


def test_an_invitation_naming_a_line_already_held_is_refused_and_the_line_is_untouched(tmp_path: Path) -> None:
    async def main() -> None:
        pa, pb, pm = free_ports(3)
        da, db = make_station(tmp_path, "EUCOM", "en", pa), make_station(tmp_path, "NDMC", "ru", pb)
        dm = make_station(tmp_path, "MALLORY", "en", pm)
        line = pair_directly(da, db)  # the hotline, confirmed by voice long ago
        a, m = Station(da), Station(dm)
        await a.start()
        await m.start()
        try:
            before = a.ledger.line(line)
            # Mallory learned the line id and invites with a token committed to it.
            issued = await m.invite()
            token = pairing.Token.decode(issued["token"])
            inv = m.ceremony._invites[token.id]
            m.ceremony._invites[token.id] = dataclasses.replace(inv, line=line)
            forged = dataclasses.replace(token, commit=pairing.commitment(inv.nonce, line)).encode()
            with pytest.raises(PairingError, match="already holds with NDMC: refused, nothing changed"):
                await a.pair(forged)
            assert a.ledger.line(line) == before
            assert a.sessions[line].record == before and len(a.sessions) == 1
        finally:
            await a.close()
            await m.close()

    asyncio.run(main())


def test_a_joiner_presenting_our_own_identity_is_refused(tmp_path: Path) -> None:
    """The joiner's own token is refused at the joiner ("issued by this very station"); at the
    inviter, a JOIN whose party is the inviter's own public identity (all public: a copy of any
    bundle holds it) must not make a line with itself either. The rule is add_line's, both sides'."""
    (port,) = free_ports(1)
    a = Station(make_station(tmp_path, "EUCOM", "en", port))
    try:
        with pytest.raises(PairingError, match="this station itself"):
            a.add_line("ab" * 16, a.ceremony._party(), a.keys.fingerprint, "1234-5678", we_invited=True)
        assert a.ledger.lines() == [] and not a.sessions
    finally:
        asyncio.run(a.close())
