"""Signing-key rotation in a running or stopped station: filing the KEY envelopes (step 1's second
half) and promoting the key files once every line signs with the new key (step 3). The files and
their order are ``keys.py``'s; the window rules are the gate's; the switch is the session's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from redline import identity
from redline import keys as keyfiles
from redline.errors import LocalProtocolError, StorageError
from redline.home import StationDir

if TYPE_CHECKING:
    from redline.station import Station


def idem(line: str, key_id: str) -> str:
    """The KEY's idempotency key: filing the same rotation twice files one KEY per line."""
    return f"redline-key-rotation:{key_id}"


def file_offline(home: StationDir) -> dict[str, Any]:
    """A stopped station: the prepared next key's KEY filed in every line's outbox and its
    certificate among our own, in one commit. The station seals them when each line is in sync."""
    keys = home.load_keys()
    if keys.next_signing is None or keys.next_cert is None:
        raise LocalProtocolError("no next signing key is prepared (keys/signing.next.key)")
    kid = identity.key_id(bytes(keys.next_signing.verify_key))
    ledger = home.open_ledger()
    try:
        with ledger.batch():
            ledger.put_cert(keys.fingerprint, kid, "signing", keys.next_cert)
            lines = [r.line for r in ledger.lines()]
            for line in lines:
                ledger.accept(line, "KEY", "PRIORITY", keyfiles.key_content(keys.next_cert), idem(line, kid), 0)
    finally:
        ledger.close()
    if not lines:
        keyfiles.promote_signing(home.keys, keys.next_cert)
    return {"key_id": kid, "lines": lines, "running": False}


async def file_running(st: Station) -> dict[str, Any]:
    """A running station: take up the prepared next key and file a KEY on every line (one commit);
    each line switches when its KEY is sealed, and the files are promoted when all have."""
    pending = keyfiles.pending_signing(st.home.keys)
    if pending is None:
        raise LocalProtocolError("no next signing key is prepared (keys/signing.next.key); run 'redline keys rotate'")
    key, cert = pending
    kid = identity.key_id(bytes(key.verify_key))
    st.keys = replace(st.keys, next_signing=key, next_cert=cert)
    wall = st.wall()
    try:
        with st.ledger.batch():
            st.ledger.put_cert(st.keys.fingerprint, kid, "signing", cert)
            for s in st.sessions.values():
                if s.keys.key_id != kid:
                    s.keys = replace(s.keys, next_signing=key, next_cert=cert)
                    s.accept("KEY", "PRIORITY", keyfiles.key_content(cert), idem(s.line, kid), wall)
            flushed = [(s, s.flush(wall)) for s in st.sessions.values()]
    except StorageError as exc:
        for s in list(st.sessions.values()):
            st._storage_failed(s, exc)
        raise
    for s, actions in flushed:
        await st._perform(s, actions)
    promote_if_done(st)
    return {"key_id": kid, "lines": sorted(st.sessions), "running": True}


def promote_if_done(st: Station) -> None:
    """Step 3, once every line's chain has switched to the next key (after a commit)."""
    kid = st.keys.next_key_id
    if kid is None or st.keys.next_cert is None or any(s.keys.key_id != kid for s in st.sessions.values()):
        return
    keyfiles.promote_signing(st.home.keys, st.keys.next_cert)
    switched = st.keys.for_key(kid)
    assert switched is not None
    st.keys = switched
