"""A retired TLS key stays retired across our restart (attack_ops K1; PROTOCOL.md 5.9, KEY).

A TLS key is rotated because the old one may have leaked. Once a connection has proven the peer's
new key, the old pin expires; that used to live in memory only, so after any restart of ours (or a
session rebuilt after a storage fault) the retired key was pinned again until the real peer
connected: a fresh window for whoever holds it, at each of our restarts. The proof is now kept with
the line. A restart *before* the new key was proven still accepts both, as 5.9 says."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redline import identity, rotation
from redline import keys as keyfiles
from redline.testing import StationPair
from tests.test_keys import root_of
from tests.test_keys_tls import _recycle


async def _restart_a_with_b_away(sp: StationPair) -> list[str]:
    """A restarts while NDMC is down (the real peer has not connected yet): A's pins then."""
    await sp.crash("b", start_again=False)
    await sp.crash("a", start_again=False)
    sp.a = sp._new("a")
    await sp.a.start()
    pins = [h for _, h in sp.a.sessions[sp.line].tls_pins()]
    await sp.start("b")
    return pins


def test_a_retired_tls_key_stays_retired_after_our_restart(tmp_path: Path) -> None:
    async def body() -> None:
        async with StationPair(tmp_path) as sp:
            old_spki = identity.spki_hash(sp.b.keys.tls_cert_der)
            keyfiles.prepare_tls(sp.dir_b.keys, root_of(sp.dir_b), sp.dir_b.config().name)
            new_spki = (await rotation.file_tls_running(sp.b))["spki"]
            await sp.synced()
            await _recycle(sp, "b")  # a connection authenticated by the new key: the old pin expires
            assert [h for _, h in sp.a.sessions[sp.line].tls_pins()] == [new_spki] != [old_spki]
            assert await _restart_a_with_b_away(sp) == [new_spki]
            await sp.synced()  # and the line comes back on the new key
            await sp.send("b", "after the restart")

    asyncio.run(body())


def test_a_restart_before_the_new_tls_key_is_proven_accepts_both(tmp_path: Path) -> None:
    async def body() -> None:
        async with StationPair(tmp_path) as sp:
            old_spki = identity.spki_hash(sp.b.keys.tls_cert_der)
            keyfiles.prepare_tls(sp.dir_b.keys, root_of(sp.dir_b), sp.dir_b.config().name)
            new_spki = (await rotation.file_tls_running(sp.b))["spki"]
            await sp.synced()  # the KEY is stored at A; no connection has proven the new key yet
            assert [h for _, h in sp.a.sessions[sp.line].tls_pins()] == [old_spki, new_spki]
            assert await _restart_a_with_b_away(sp) == [old_spki, new_spki]

    asyncio.run(body())
