"""TLS key rotation with the paths up (guarantee 6, issue 13): ``redline keys rotate --tls`` files a
KEY naming the new TLS key (the root's ``tls`` certificate and the X.509 certificate itself); the
peer pins it beside the old one as soon as it stores the KEY, the rotating station presents it
once the KEY is receipted, and the old pin expires when a connection proves the new key. Real TLS
over loopback (StationPair); a KEY whose certificate is not the one the root certified is refused
live, by verify and in a bundle."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from redline import errors, identity, rotation, transport
from redline import keys as keyfiles
from redline.testing import SessionPair, StationPair
from tests.test_keys import next_b, refused_everywhere, root_of


def _texts(st: object, line: str) -> set[str]:
    from tests.test_keys import _envelopes

    return {str(e.content().get("text")) for e in _envelopes(st, line)}


async def _recycle(sp: StationPair, who: str) -> None:
    """Drop ``who``'s connections (as a network blip would); the dialer redials."""
    for conn in list(sp.station(who)._conns.values()):
        conn.abort()
    await asyncio.sleep(0.05)
    await sp.synced()


@pytest.mark.slow
@pytest.mark.parametrize("who", ["b", "a"])  # NDMC dials EUCOM's listener: the client's key, then the server's
def test_tls_rotation_under_two_way_traffic_keeps_the_paths_up_and_loses_nothing(tmp_path: Path, who: str) -> None:
    async def body() -> None:
        async with StationPair(tmp_path) as sp:
            rot, other = sp.station(who), sp.station("a" if who == "b" else "b")
            d = sp.dir_a if who == "a" else sp.dir_b
            old_spki = identity.spki_hash(rot.keys.tls_cert_der)
            shutil.copy(d.keys / "tls.crt", d.path / "old.crt")
            shutil.copy(d.keys / "tls.key", d.path / "old.key")
            down: list[str] = []
            for i in range(3):
                await sp.send("a", f"EUCOM {i}")
                await sp.send("b", f"NDMC {i}")
            keyfiles.prepare_tls(d.keys, root_of(d), d.config().name)
            spans = [0.0]  # runs of real time either end was not in sync, seconds
            watching = asyncio.ensure_future(_out_of_sync(sp, spans))
            sends = [sp.station("a").send(sp.line, f"EUCOM during {i}") for i in range(5)]
            sends += [sp.station("b").send(sp.line, f"NDMC during {i}") for i in range(5)]
            *_, result = await asyncio.gather(*sends, rotation.file_tls_running(rot))
            await sp.synced()
            new_spki = result["spki"]
            session = other.sessions[sp.line]
            # the peer pins the new key beside the old one; the rotating side presents it from now on
            assert [h for _, h in session.tls_pins()] == [old_spki, new_spki]
            assert rot.tls_next is None and identity.spki_hash(d.load_keys().tls_cert_der) == new_spki
            # the paths stayed up through it all, and the line never out of sync for a heartbeat
            for st in (sp.a, sp.b):
                down += [p for p, s in st.sessions[sp.line].paths.items() if not s.up]
            assert down == []
            watching.cancel()
            assert max(spans) < sp.limits.heartbeat_interval, max(spans)
            for i in range(3):
                await sp.send("a", f"EUCOM after {i}")
                await sp.send("b", f"NDMC after {i}")
            # a blip: the new connection is authenticated by the new key, and the old pin expires
            await _recycle(sp, "b")
            assert [h for _, h in session.tls_pins()] == [new_spki]
            assert any("new TLS key is in use" in t for _, _, t in sp.alarms)
            await sp.send("b", "NDMC after the blip")
            await sp.send("a", "EUCOM after the blip")
            want = {f"{s} {w}{i}" for s in ("EUCOM", "NDMC") for w in ("", "during ", "after ") for i in range(3)}
            for st in (sp.a, sp.b):  # every message, both ways, at both ends
                assert want | {"NDMC after the blip", "EUCOM after the blip"} <= _texts(st, sp.line)
            # the old key is refused now (as a client, or as the server a dialler expects)
            if who == "b":
                port = int(sp.dir_a.config().listen[0].rsplit(":", 1)[1])
                pins = {identity.spki_hash(sp.a.keys.tls_cert_der)}
                with pytest.raises((errors.TransportError, OSError)):  # TLS 1.3: refused after the client's Finished
                    conn = await transport.dial("127.0.0.1", port, cert=d.path / "old.crt", key=d.path / "old.key",
                                                pins=pins, limits=sp.limits)  # fmt: skip
                    await asyncio.wait_for(conn.recv(), 5)
            else:
                assert old_spki not in list(transport_pins(sp))
            # a restart keeps the new key at both ends (the chain names it)
            await sp.crash(who)
            await sp.send(who, "after the restart")
            assert identity.spki_hash(sp.station(who).keys.tls_cert_der) == new_spki

    asyncio.run(body())


async def _out_of_sync(sp: StationPair, spans: list[float]) -> None:
    """Sample both ends every 5 ms: how long each run of 'not in sync' has lasted so far."""
    import time

    since: float | None = None
    while True:
        ok = all(st.status().lines[0].synced for st in (sp.a, sp.b))
        now = time.monotonic()
        if ok:
            since = None
        else:
            since = since if since is not None else now
            spans.append(now - since)
        await asyncio.sleep(0.005)


def transport_pins(sp: StationPair) -> list[str]:
    """What NDMC's dialled paths accept of EUCOM's server keys now."""
    from redline.station import _PeerPins

    return list(_PeerPins(sp.b, sp.line))


def test_key_whose_tls_certificate_is_not_the_one_the_root_certified_is_refused(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    sp.run()
    sp.send("b", "NDMC 1")
    sp.run()
    _, cert = keyfiles.prepare_tls(sp.dir_b.keys, root_of(sp.dir_b), "NDMC")
    stranger = identity.new_tls_identity(tmp_path / "s.key", tmp_path / "s.crt", "NDMC")
    content = keyfiles.tls_key_content(cert, stranger)
    env = next_b(sp, sp.b.keys.signing, kind="KEY", prio="PRIORITY", content=content)
    refused_everywhere(sp, env, errors.KeyWindowError, "tls_der is not the certificate its root certified")
    sp.close()
