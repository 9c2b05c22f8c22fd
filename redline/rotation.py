"""Signing-key rotation in a running or stopped station: filing the KEY envelopes (step 1's second
half) and promoting the key files once every line signs with the new key (step 3). The files and
their order are ``keys.py``'s; the window rules are the gate's; the switch is the session's.

Revocation (``redline keys revoke``) is a rotation too: the same next key, but on each line that
has a co-signed checkpoint to name, a REVOKE (signed by the root, ``revocation.py``) stands in for
the KEY and carries the next key's certificate; a line with nothing to name gets a plain KEY.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import nacl.signing

from redline import canonical, identity, revocation
from redline import keys as keyfiles
from redline.errors import ConfigError, LocalProtocolError, SchemaError, StorageError, VerificationError
from redline.home import StationDir
from redline.statements import Checkpoint, Cosign, Signed

if TYPE_CHECKING:
    from redline.envelope import Envelope
    from redline.ledger.interface import LedgerStore
    from redline.station import Station


def idem(line: str, key_id: str, kind: str = "KEY") -> str:
    """The KEY's (or REVOKE's) idempotency key: filing the same rotation twice files one per line."""
    return f"redline-key-rotation:{key_id}" if kind == "KEY" else f"redline-revoke:{key_id}"


def _filing(
    revokes: dict[str, dict[str, Any]] | None, line: str, cert: identity.SignedCert
) -> tuple[str, str, dict[str, Any]]:
    """What to file on ``line``: its REVOKE if there is one, else the KEY naming ``cert``."""
    if revokes and line in revokes:
        return "REVOKE", "FLASH", revokes[line]
    return "KEY", "PRIORITY", keyfiles.key_content(cert)


def our_time(proposal: Signed, cosign: Signed, us: str) -> int:
    """When WE signed our part of a co-signed checkpoint, by our own clock: our proposal's time if
    we proposed it, else our countersignature's. The other part's time is the peer's claim (DESIGN:
    time is a claim), and a peer that backdates it must not move a revocation's "last checkpoint
    before the compromise" past the compromise (attack finding 4)."""
    peek = Checkpoint.peek(proposal)
    return peek.time if peek.by == us else Cosign.peek(cosign).time


def revoke_contents(
    ledger: LedgerStore, root: nacl.signing.SigningKey, *, key: str, cert: identity.SignedCert, reason: str,
    issued_at: int, checkpoint: int | None = None, line: str | None = None, before: int | None = None,
    station: str | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:  # fmt: skip
    """The REVOKE content of each line (``key`` revoked, ``cert`` the next key), and the lines that
    have no co-signed checkpoint to name (they get a KEY). The checkpoint named is ``checkpoint``
    on ``line`` (the only line, if None), or on every line the last one we signed our part of before
    ``before`` (ms, by our own clock: ``our_time``)."""
    records = ledger.lines()
    if checkpoint is not None:
        if line is None and len(records) != 1:
            raise LocalProtocolError("this station has several lines: say which one the checkpoint is of (--line)")
        records = [ledger.find_line(line)] if line is not None else records
    elif before is None:
        raise LocalProtocolError(
            "say which checkpoint was the last before the compromise: --checkpoint N or --before TIME"
        )
    out: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    us = station or identity.fingerprint(bytes(root.verify_key))
    for rec in records:
        held = ledger.checkpoints(rec.line)
        if checkpoint is not None:
            chosen = next((c for c in held if c[0] == checkpoint), None)
            if chosen is None:
                raise LocalProtocolError(f"line {rec.line[:8]} holds no co-signed checkpoint {checkpoint}")
        else:
            assert before is not None
            earlier = [c for c in held if our_time(c[1], c[2], us) < before]
            chosen = earlier[-1] if earlier else None
        if chosen is None or ledger.head(rec.line, us)[0] == 0:
            missing.append(rec.line)
            continue
        try:
            out[rec.line] = revocation.build(root, line=rec.line, key=key, checkpoint=chosen, reason=reason,
                                             issued_at=issued_at, certs=[cert], station=us)  # fmt: skip
        except SchemaError as exc:
            raise LocalProtocolError(str(exc)) from exc
    return out, missing


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _stopped(fn: Callable[Concatenate[StationDir, _P], _R]) -> Callable[Concatenate[StationDir, _P], _R]:
    """A change made to a stopped station's folder (its store, its key files) holds the folder
    throughout (``StationDir.hold``): a station that starts meanwhile is refused, in one line, and
    this change is not made under a running one."""

    def held(home: StationDir, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        hold = home.hold(f"redline, {fn.__name__.replace('_', ' ')}")
        try:
            return fn(home, *args, **kwargs)
        finally:
            hold.release()

    return held


@_stopped
def file_offline(home: StationDir, revokes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A stopped station: the prepared next key's KEY (or the line's REVOKE) filed in every line's
    outbox and its certificate among our own, in one commit. The station seals them when each line
    is in sync."""
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
                kind, prio, content = _filing(revokes, line, keys.next_cert)
                ledger.accept(line, kind, prio, content, idem(line, kid, kind), 0)
    finally:
        ledger.close()
    if not lines:
        keyfiles.promote_signing(home.keys, keys.next_cert)
    return {"key_id": kid, "lines": lines, "revoked": sorted(revokes or {}), "running": False}


async def _file_everywhere(st: Station, file: Callable[[int], None]) -> None:
    """``file(wall)`` accepts a station's key change on its lines in one commit; then every line is
    flushed and what it sealed is sent. A failed commit is a storage failure of every line (their
    memory ran ahead of the store), as for any batch of the station."""
    wall = st.wall()
    try:
        with st.ledger.batch():
            file(wall)
            flushed = [(s, s.flush(wall)) for s in st.sessions.values()]
    except StorageError as exc:
        for s in list(st.sessions.values()):
            st._storage_failed(s, exc)
        raise
    for s, actions in flushed:
        await st._perform(s, actions)


async def file_running(st: Station, revokes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A running station: take up the prepared next key and file a KEY (or the line's REVOKE) on
    every line (one commit); each line switches when its KEY is sealed, and the files are promoted
    when all have."""
    pending = keyfiles.pending_signing(st.home.keys)
    if pending is None:
        raise LocalProtocolError("no next signing key is prepared (keys/signing.next.key); run 'redline keys rotate'")
    key, cert = pending
    _in_force_everywhere(st, cert)
    kid = identity.key_id(bytes(key.verify_key))
    st.keys = replace(st.keys, next_signing=key, next_cert=cert)

    def file(wall: int) -> None:
        st.ledger.put_cert(st.keys.fingerprint, kid, "signing", cert)
        for s in st.sessions.values():
            if s.keys.key_id != kid:
                s.keys = replace(s.keys, next_signing=key, next_cert=cert)
                kind, prio, content = _filing(revokes, s.line, cert)
                s.accept(kind, prio, content, idem(s.line, kid, kind), wall)

    await _file_everywhere(st, file)
    promote_if_done(st)
    return {"key_id": kid, "lines": sorted(st.sessions), "revoked": sorted(revokes or {}), "running": True}


def _in_force_everywhere(st: Station, cert: identity.SignedCert) -> None:
    """The root that certified ``cert`` is our root in force on every line (the peer confirmed it,
    PROTOCOL.md 5.9 ROOT): otherwise our own gate would refuse the KEY when it is sealed."""
    for s in st.sessions.values():
        root = s.gate.root_for(s.us, s.gate.tails[s.peer].seq)
        try:
            cert.verify(root, station=s.us)
        except VerificationError as exc:
            raise LocalProtocolError(
                f"line {s.line[:8]}: the next key is not certified by this station's root in force there (has the "
                f"peer confirmed the new root?): {exc}"
            ) from exc


def promote_if_done(st: Station) -> None:
    """Step 3, once every line's chain has switched to the next key (after a commit)."""
    kid = st.keys.next_key_id
    if kid is None or st.keys.next_cert is None or any(s.keys.key_id != kid for s in st.sessions.values()):
        return
    keyfiles.promote_signing(st.home.keys, st.keys.next_cert)
    switched = st.keys.for_key(kid)
    assert switched is not None
    st.keys = switched


# -- TLS keys (keys.py's steps; the pins are the session's) --------------------------------------------


def _tls_idem(cert: identity.SignedCert) -> str:
    return "redline-tls-rotation:" + str(canonical.decode_object(cert.data, "key certificate")["key_id"])


@_stopped
def file_tls_offline(home: StationDir) -> dict[str, Any]:
    """A stopped station: the prepared TLS key's KEY filed on every line (one commit); promoted
    when every line's peer has receipted it, or now if there is no line."""
    pending = keyfiles.pending_tls(home.keys)
    if pending is None:
        raise LocalProtocolError("no next TLS key is prepared (keys/tls.next.cert.json)")
    der, cert = pending
    fp = identity.fingerprint(bytes.fromhex((home.keys / "root.pub").read_text().strip()))
    ledger = home.open_ledger()
    try:
        with ledger.batch():
            ledger.put_cert(fp, identity.spki_hash(der)[:32], "tls", cert)
            lines = [r.line for r in ledger.lines()]
            for line in lines:
                ledger.accept(line, "KEY", "PRIORITY", keyfiles.tls_key_content(cert, der), _tls_idem(cert), 0)
    finally:
        ledger.close()
    if not lines:
        keyfiles.promote_tls(home.keys, cert)
    return {"spki": identity.spki_hash(der), "lines": lines, "running": False}


async def file_tls_running(st: Station) -> dict[str, Any]:
    """A running station: the prepared TLS key's KEY on every line (one commit). The peer pins the
    new key beside the old one when it stores the KEY; ours switch when every line's is receipted."""
    pending = keyfiles.pending_tls(st.home.keys)
    if pending is None:
        raise LocalProtocolError("no next TLS key is prepared (keys/tls.next.cert.json); run 'redline keys rotate'")
    der, cert = pending
    _in_force_everywhere(st, cert)
    st.tls_next = pending

    def file(wall: int) -> None:
        st.ledger.put_cert(st.keys.fingerprint, identity.spki_hash(der)[:32], "tls", cert)
        for s in st.sessions.values():
            s.accept("KEY", "PRIORITY", keyfiles.tls_key_content(cert, der), _tls_idem(cert), wall)

    await _file_everywhere(st, file)
    promote_tls_if_done(st)
    return {"spki": identity.spki_hash(der), "lines": sorted(st.sessions), "running": True}


def promote_tls_if_done(st: Station) -> None:
    """Step 3 for the TLS key, once the peer of every line has receipted our KEY naming it (so it
    pins the new key): new connections present it; those up stay up."""
    if st.tls_next is None:
        return
    der, cert = st.tls_next
    want = der.hex()
    for s in st.sessions.values():
        sealed = [e.seq for e in (_stored_env(raw) for raw in st.ledger.raw_of_kind(s.line, s.us, "KEY"))
                  if e.content().get("tls_der") == want]  # fmt: skip
        if not sealed or s.receipted_seq < sealed[0]:
            return
    keyfiles.promote_tls(st.home.keys, cert)
    st.tls_next = None
    st.keys = replace(st.keys, tls_cert=cert, tls_cert_der=der)


def _stored_env(raw: bytes) -> Envelope:
    from redline.session import _stored

    return _stored(raw)


# -- the root (PROTOCOL.md section 5.9, ROOT; keys.py's roots.json) ------------------------------------


def root_idem(version: int) -> str:
    """The ROOT's idempotency key: running the same rotation twice files one ROOT per line."""
    return f"redline-root-rotation:{version}"


def root_content(
    old: nacl.signing.SigningKey, new: nacl.signing.SigningKey, *, station: str, version: int, issued_at: int
) -> dict[str, Any]:
    """The ROOT content naming ``new`` as the station's root ``version``, signed by both roots."""
    from redline import rootrotation

    try:
        rot = rootrotation.RootRotation(station=station, version=version, prev=bytes(old.verify_key).hex(),
                                        root=bytes(new.verify_key).hex(), issued_at=issued_at)  # fmt: skip
    except SchemaError as exc:
        raise LocalProtocolError(str(exc)) from exc
    return rootrotation.content(rot.sign(old, new))


def filed_roots(ledger: LedgerStore, us: str, first: bytes) -> list[tuple[int, bytes]]:
    """Our later roots as our own chains hold them: (version, public key) for each ROOT we filed,
    in version order. Each line's ROOTs are opened in chain order against the root before them,
    from ``first`` (keys/root.pub, version 1), by the gate's own check (``open_rotation``: both
    signatures, the next version), so a store vouches for these and keys/roots.json need not: a
    backup's certificates are checked under them, a restore records them, and a key command that
    asks for the root in force learns any a restore from an older copy missed (``record_roots``)."""
    from redline import kinds, rootrotation

    found: dict[int, bytes] = {}
    for record in ledger.lines():
        version, current = 1, first
        for raw in ledger.raw_of_kind(record.line, us, "ROOT"):
            try:
                r = kinds.Root.parse(_stored_env(raw).content(), strict=True).rotation
                signed = {"data": r.data, "prev_sig": r.prev_sig, "root_sig": r.root_sig}
                rot = rootrotation.open_rotation(signed, station=us, current=current, version=version)
            # The gate refused none it stored, but a backup's store is read before it is verified:
            # a row that does not open (what ``gate.claimed_roots`` skips) ends the chain of roots.
            except (VerificationError, KeyError, TypeError, ValueError, AttributeError):
                break
            version, current = rot.version, bytes.fromhex(rot.root)
            found.setdefault(version, current)
    return sorted(found.items())


def record_roots(home: StationDir) -> tuple[int, bytes]:
    """keys/roots.json brought up to what our chains filed (a station restored from a copy older
    than a root rotation gets the ROOT back from the peer, not the file), then the root in force."""
    ledger = home.read_ledger()
    try:
        first = bytes.fromhex((home.keys / "root.pub").read_text().strip())
        for version, public in filed_roots(ledger, identity.fingerprint(first), first):
            keyfiles.record_root(home.keys, version, public)
    finally:
        ledger.close()
    return keyfiles.root_in_force(home.keys)


def root_codes(lines: list[str], content: dict[str, Any]) -> dict[str, str]:
    """The new safety code of the ROOT ``content`` on each line (both operators read it)."""
    from redline import rootrotation

    signed = content["rotation"]
    obj = canonical.decode_object(bytes.fromhex(signed["data"]), "root rotation")
    digest = rootrotation.digest(signed)
    prev, root = bytes.fromhex(obj["prev"]), bytes.fromhex(obj["root"])
    return {line: rootrotation.safety_code(line, prev, root, digest) for line in lines}


def filed_root_codes(ledger: LedgerStore, version: int) -> dict[str, str]:
    """Each line's new safety code of our ROOT ``version`` as filed (sealed or still in the
    outbox): what a run again of 'keys rotate --root' after one that finished says once more."""
    codes = {}
    for rec in ledger.lines():
        item = ledger.outbox_by_idem(rec.line, root_idem(version))
        if item is not None:
            codes.update(root_codes([rec.line], dict(item.content)))
    return codes


@_stopped
def file_root_offline(home: StationDir, content: dict[str, Any], version: int) -> dict[str, Any]:
    """A stopped station: the ROOT in every line's outbox (one commit); sealed when each line is in sync."""
    ledger = home.open_ledger()
    try:
        with ledger.batch():
            lines = [r.line for r in ledger.lines()]
            for line in lines:
                ledger.accept(line, "ROOT", "FLASH", content, root_idem(version), 0)
    finally:
        ledger.close()
    return {"version": version, "lines": lines, "codes": root_codes(lines, content), "running": False}


async def file_root_running(st: Station, content: dict[str, Any], version: int) -> dict[str, Any]:
    """A running station: the ROOT on every line (one commit), sent at once."""

    def file(wall: int) -> None:
        for s in st.sessions.values():
            s.accept("ROOT", "FLASH", content, root_idem(version), wall)

    await _file_everywhere(st, file)
    lines = sorted(st.sessions)
    return {"version": version, "lines": lines, "codes": root_codes(lines, content), "running": True}


def require_confirmed(home: StationDir, version: int, what: str) -> None:
    """Refuse, in one line, to certify ``what`` under our root ``version`` while the peer of any
    line has not confirmed it: the peer would refuse what it certifies (a key, a revocation, a
    person), so nothing is signed until the peer's operator has typed the new safety code."""
    if version == 1:
        return
    ledger = home.read_ledger()
    try:
        waiting = unconfirmed_roots(ledger, home.load_keys().fingerprint, version)
    finally:
        ledger.close()
    if waiting:
        raise ConfigError(f"the peer of line(s) {', '.join(w[:8] for w in waiting)} has not confirmed root version "
                          f"{version} yet: {what} it certifies would be refused there; have the peer's operator "
                          "type the new safety code ('redline keys confirm-root') first")  # fmt: skip


def unconfirmed_roots(ledger: LedgerStore, us: str, version: int) -> list[str]:
    """The lines whose peer has not confirmed our root ``version`` yet (its ROOT not sealed, or no
    ROOT_CONFIRM naming it): keys certified by that root would be refused there."""
    if version == 1:
        return []
    waiting = []
    for rec in ledger.lines():
        ours = {}
        for raw in ledger.raw_of_kind(rec.line, us, "ROOT"):
            env = _stored_env(raw)
            obj = canonical.decode_object(bytes.fromhex(env.content()["rotation"]["data"]), "root rotation")
            ours[env.id] = obj["version"]
        confirmed = {_stored_env(raw).content().get("root", {}).get("id")
                     for raw in ledger.raw_of_kind(rec.line, rec.peer, "ROOT_CONFIRM")}  # fmt: skip
        if not any(v == version and i in confirmed for i, v in ours.items()):
            waiting.append(rec.line)
    return waiting
