"""Signing-key rotation (guarantee 6, issue 13): a KEY envelope signed by the old key names the new
one, certified by the station's root; the gate closes the old key's window at the KEY's seq and
opens the new key's at the next. Attacks are run as in tests/test_gate.py: live, by ``verify`` and
in a bundle; crashes between the rotation's steps as in StationPair.crash (kill -9, in process)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from redline import errors, identity, rotation
from redline import keys as keyfiles
from redline.bundle import build_bundle, verify_bundle
from redline.envelope import Envelope, seal
from redline.gate import KeyWindow
from redline.home import StationDir
from redline.identity import KeyCert, SignedCert
from redline.ledger.verify import StoredRow, verify_line
from redline.protocol.framing import FrameType, encode_frame
from redline.testing import SessionPair, StationPair

# -- helpers ----------------------------------------------------------------------------------------


def in_loop(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (StationPair needs one)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


def root_of(d: StationDir) -> nacl.signing.SigningKey:
    return keyfiles.read_root(d.keys / "root.key", d.load_keys().root_public)


def rotate_in_session(sp: SessionPair, who: str) -> tuple[nacl.signing.SigningKey, SignedCert]:
    """What ``redline keys rotate --signing`` does, for a SessionPair: prepare, file the KEY."""
    d = sp.dir_a if who == "a" else sp.dir_b
    s = sp.a if who == "a" else sp.b
    key, cert = keyfiles.prepare_signing(d.keys, root_of(d), d.config().name)
    s.keys = dataclasses.replace(s.keys, next_signing=key, next_cert=cert)
    with s.ledger.batch():
        s.ledger.put_cert(s.us, identity.key_id(bytes(key.verify_key)), "signing", cert)
        s.accept("KEY", "PRIORITY", keyfiles.key_content(cert), None, sp.clock.wall)
    return key, cert


def roots(sp: SessionPair | StationPair) -> dict[str, bytes]:
    ka, kb = sp.dir_a.load_keys(), sp.dir_b.load_keys()
    return {ka.fingerprint: ka.root_public, kb.fingerprint: kb.root_public}


def next_b(sp: SessionPair, signer: nacl.signing.SigningKey, **override: Any) -> Envelope:
    """NDMC's next envelope as EUCOM holds its chain, signed by ``signer``."""
    us, peer = sp.a.us, sp.b.us
    seq, prev = sp.a.ledger.head(sp.line, peer)
    our_seq, our_id = sp.a.ledger.head(sp.line, us)
    fields: dict[str, Any] = {
        "line": sp.line, "sender": peer, "key": identity.key_id(bytes(signer.verify_key)), "seq": seq + 1,
        "sent_at": sp.clock.wall, "kind": "TEXT", "prio": "ROUTINE", "prev": prev, "seen_seq": our_seq,
        "seen_id": our_id, "lang": "ru", "content": {"text": "forged"}, "salt": os.urandom(16),
    }  # fmt: skip
    fields.update(override)
    return seal(signer, **fields)


def refused_everywhere(sp: SessionPair, env: Envelope, error: type[errors.VerificationError], words: str,
                       extra_certs: list[SignedCert] = ()) -> None:  # type: ignore[assignment]  # fmt: skip
    """Refused live (trusted state unchanged, an alarm), by verify over the store's bytes plus the
    envelope, and in a bundle of the same."""
    def state() -> tuple[Any, ...]:
        gate = sp.a.gate
        return sp.a.ledger.head(sp.line, sp.b.us), dict(gate.tails), {k: list(v) for k, v in gate.windows.items()}

    before = state()
    sp.alarms.clear()
    sp.a.receive("path0", encode_frame(FrameType.ENVELOPE, env.encode()), sp.clock.now, sp.clock.wall)
    sp.a.flush(sp.clock.wall)
    assert state() == before
    assert any(who == "a" and words in text for who, _, text in sp.alarms), sp.alarms
    with pytest.raises(error):
        sp.a.gate.accept_envelope(env.encode(), sender=sp.b.us)
    data = sp.a.ledger.line_data(sp.line, "EUCOM")
    assert verify_line(data, roots(sp)).ok
    chains = dict(data.chains)
    chains[sp.b.us] = [*chains[sp.b.us], StoredRow(env.seq, env.id, env.encode())]
    certs = {fp: [*c, *(extra_certs if fp == sp.b.us else [])] for fp, c in data.certs.items()}
    forged = dataclasses.replace(data, chains=chains, certs=certs)
    report = verify_line(forged, roots(sp))
    assert not report.ok and any(words in str(p) for p in report.problems), [str(p) for p in report.problems]
    bundle = build_bundle(forged, roots(sp), sp.a.us, exported_at=sp.clock.wall)
    breport = verify_bundle(bundle, sorted(roots(sp)))
    assert not breport.ok and any(words in str(p) for p in breport.all_problems), breport.summary()


@pytest.fixture
def rotated(tmp_path: Path) -> Iterator[tuple[SessionPair, nacl.signing.SigningKey, nacl.signing.SigningKey, int]]:
    """NDMC rotated its signing key under traffic both ways: (pair, old key, new key, KEY seq)."""
    sp = SessionPair(tmp_path)
    sp.run()
    for i in range(3):
        sp.send("a", f"EUCOM {i}")
        sp.send("b", f"NDMC {i}")
        sp.run()
    old = sp.b.keys.signing
    new, _ = rotate_in_session(sp, "b")
    sp.send("b", "NDMC after the KEY")
    sp.send("a", "EUCOM meanwhile")
    sp.run()
    sp.tick(1.5)
    sp.run()
    key_seq = next(seq for seq, raw in sp.b.ledger.raw_envelopes(sp.line, sp.b.us) if b'"KEY"' in raw)
    yield sp, old, new, key_seq
    sp.close()


# -- the rotation -----------------------------------------------------------------------------------


def test_rotation_in_a_session_pair_moves_both_ends_windows_the_same_way(rotated: Any) -> None:
    sp, old, new, s = rotated
    old_id, new_id = identity.key_id(bytes(old.verify_key)), identity.key_id(bytes(new.verify_key))
    want = [KeyWindow(old_id, 1, s), KeyWindow(new_id, s + 1)]
    assert sp.a.gate.windows[sp.b.us] == sp.b.gate.windows[sp.b.us] == want
    assert sp.b.keys.key_id == new_id
    assert sp.a.ledger.head(sp.line, sp.b.us) == sp.b.ledger.head(sp.line, sp.b.us)
    assert new_id in {k for k, _, _ in sp.a.ledger.certs(sp.b.us)}  # the peer's new certificate is kept
    for ledger in (sp.a.ledger, sp.b.ledger):
        assert verify_line(ledger.line_data(sp.line, "x"), roots(sp)).ok
    # a restart rebuilds the windows from the KEY envelopes in the chains, at both ends
    sp.restart("a")
    sp.restart("b")
    sp.run()
    assert sp.a.gate.windows[sp.b.us] == sp.b.gate.windows[sp.b.us] == want
    sp.send("b", "NDMC after the restart")
    sp.run()
    assert sp.a.ledger.head(sp.line, sp.b.us) == sp.b.ledger.head(sp.line, sp.b.us)


def test_envelope_signed_with_the_old_key_after_the_rotation_is_refused(rotated: Any) -> None:
    sp, old, _, s = rotated
    refused_everywhere(sp, next_b(sp, old), errors.KeyWindowError, f"window closed at seq {s}")


def test_envelope_signed_with_the_new_key_before_its_key_envelope_is_refused(tmp_path: Path) -> None:
    """The new key's certificate is known (it is in the store, in a bundle), but no KEY envelope
    opened its window: at a seq before it, the new key signs nothing."""
    sp = SessionPair(tmp_path)
    sp.run()
    sp.send("b", "NDMC 1")
    sp.run()
    key, cert = keyfiles.prepare_signing(sp.dir_b.keys, root_of(sp.dir_b), "NDMC")
    kid = identity.key_id(bytes(key.verify_key))
    sp.a.gate._keys[sp.b.us][kid] = bytes(key.verify_key)  # as if the certificate had been learnt
    refused_everywhere(sp, next_b(sp, key), errors.KeyWindowError, "has not opened its window", [cert])
    sp.close()


def test_key_envelope_naming_a_key_the_pinned_root_did_not_certify_is_refused(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    sp.run()
    sp.send("b", "NDMC 1")
    sp.run()
    stranger_root = nacl.signing.SigningKey.generate()  # a root NDMC's peer never pinned
    new = nacl.signing.SigningKey.generate()
    pub = bytes(new.verify_key)
    cert = identity.certify(stranger_root, KeyCert(
        station=identity.fingerprint(bytes(stranger_root.verify_key)), name="NDMC", role="signing", key=pub.hex(),
        key_id=identity.key_id(pub), issued_at=1))  # fmt: skip
    env = next_b(sp, sp.b.keys.signing, kind="KEY", prio="PRIORITY", content=keyfiles.key_content(cert))
    refused_everywhere(sp, env, errors.KeyWindowError, "root in force did not certify")
    sp.close()


def test_bundle_spanning_a_rotation_verifies_offline(rotated: Any) -> None:
    sp, _, new, _ = rotated
    new_id = identity.key_id(bytes(new.verify_key))
    data = sp.a.ledger.line_data(sp.line, "EUCOM")
    bundle = build_bundle(data, roots(sp), sp.a.us, exported_at=sp.clock.wall)
    report = verify_bundle(bundle, sorted(roots(sp)))
    assert report.ok, report.summary()
    # even without the new certificate among the bundle's: the KEY envelope carries it
    certs = {fp: [c for c in held if json.loads(c.data)["key_id"] != new_id] for fp, held in data.certs.items()}
    bundle = build_bundle(dataclasses.replace(data, certs=certs), roots(sp), sp.a.us, exported_at=sp.clock.wall)
    report = verify_bundle(bundle, sorted(roots(sp)))
    assert report.ok, report.summary()


# -- a whole station: the command's procedure, traffic, crashes ----------------------------------------


async def _rotate(sp: StationPair, who: str) -> str:
    d = sp.dir_a if who == "a" else sp.dir_b
    keyfiles.prepare_signing(d.keys, root_of(d), d.config().name)
    result = await rotation.file_running(sp.station(who))
    await sp.synced()
    return str(result["key_id"])


def _consistent(sp: StationPair, who: str, new_id: str) -> None:
    """One key history at both ends: the same windows for ``who``'s chain, its files promoted, the
    stores verify."""
    st = sp.station(who)
    other = sp.station("b" if who == "a" else "a")
    fp = st.keys.fingerprint
    mine, theirs = st.sessions[sp.line].gate.windows[fp], other.sessions[sp.line].gate.windows[fp]
    assert mine == theirs and mine[-1].key_id == new_id and len(mine) == 2, (mine, theirs)
    assert st.sessions[sp.line].keys.key_id == new_id
    d = sp.dir_a if who == "a" else sp.dir_b
    assert d.load_keys().key_id == new_id and not (d.keys / keyfiles.NEXT_KEY).exists()
    for s in (sp.a, sp.b):
        assert verify_line(s.ledger.line_data(sp.line, "x"), roots(sp)).ok


@in_loop
async def test_rotation_under_two_way_traffic_loses_nothing_and_the_line_stays_in_sync(tmp_path: Path) -> None:
    async with StationPair(tmp_path) as sp:
        for i in range(5):
            await sp.send("a", f"EUCOM {i}")
            await sp.send("b", f"NDMC {i}")
        sends = [sp.station("a").send(sp.line, f"EUCOM during {i}") for i in range(5)]
        sends += [sp.station("b").send(sp.line, f"NDMC during {i}") for i in range(5)]
        results = await asyncio.gather(*sends, _rotate(sp, "b"))
        new_id = results[-1]
        for i in range(5):
            await sp.send("a", f"EUCOM after {i}")
            await sp.send("b", f"NDMC after {i}")
        await sp.advance(2)
        _consistent(sp, "b", new_id)
        for s in (sp.a, sp.b):  # every message, both ways, held at both ends
            texts = {e.content().get("text") for e in _envelopes(s, sp.line)}
            assert {f"EUCOM during {i}" for i in range(5)} | {f"NDMC after {i}" for i in range(5)} <= texts
        # a checkpoint covers the KEY at both ends
        last = sp.a.ledger.last_checkpoint(sp.line)
        assert last is not None
        await sp.crash("a")
        await sp.send("b", "NDMC after EUCOM's crash")
        _consistent(sp, "b", new_id)


def _envelopes(st: Any, line: str) -> list[Envelope]:
    from redline.session import _stored

    out = []
    for fp in (st.keys.fingerprint, st.sessions[line].peer):
        out += [_stored(raw) for _, raw in st.ledger.raw_envelopes(line, fp)]
    return out


@in_loop
async def test_crash_after_the_next_key_is_written_before_the_key_is_filed(tmp_path: Path) -> None:
    async with StationPair(tmp_path) as sp:
        await sp.send("b", "NDMC 1")
        keyfiles.prepare_signing(sp.dir_b.keys, root_of(sp.dir_b), "NDMC")
        await sp.crash("b")  # kill -9 before the KEY was filed: the old key still signs
        old = sp.b.keys.key_id
        await sp.send("b", "NDMC 2")
        assert sp.b.sessions[sp.line].keys.key_id == old
        new_id = await _rotate(sp, "b")  # the command again: the prepared key is taken up
        await sp.send("b", "NDMC 3")
        _consistent(sp, "b", new_id)


@in_loop
async def test_crash_after_the_key_is_sealed_before_the_files_are_promoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with StationPair(tmp_path) as sp:
        await sp.send("b", "NDMC 1")
        monkeypatch.setattr(rotation, "promote_if_done", lambda st: None)
        new_id = await _rotate(sp, "b")
        await sp.send("b", "NDMC signed by the new key, files not promoted")
        assert sp.b.sessions[sp.line].keys.key_id == new_id
        assert sp.dir_b.load_keys().key_id != new_id  # signing.key is still the old one on disk
        monkeypatch.undo()
        await sp.crash("b")  # the chain decides: this line signs with the next key at start
        await sp.send("b", "NDMC after the crash")
        await sp.send("a", "EUCOM after the crash")
        _consistent(sp, "b", new_id)


@in_loop
async def test_crash_in_the_middle_of_promoting_the_key_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with StationPair(tmp_path) as sp:
        await sp.send("b", "NDMC 1")

        def certs_only(keys_dir: Path) -> None:  # killed after certs.json, before the key file's rename
            return None

        monkeypatch.setattr(keyfiles, "finish_signing", certs_only)
        new_id = await _rotate(sp, "b")
        assert (sp.dir_b.keys / keyfiles.NEXT_KEY).exists()
        monkeypatch.undo()
        await sp.crash("b")
        await sp.send("b", "NDMC after the crash")
        _consistent(sp, "b", new_id)


@in_loop
async def test_crash_with_the_key_in_the_outbox_before_it_is_sealed(tmp_path: Path) -> None:
    """A stopped station: the command files the KEY itself; the station seals it when it runs."""
    async with StationPair(tmp_path) as sp:
        await sp.send("b", "NDMC 1")
        st = sp.b
        await st.close()
        keyfiles.prepare_signing(sp.dir_b.keys, root_of(sp.dir_b), "NDMC")
        result = rotation.file_offline(sp.dir_b)
        assert result["lines"] == [sp.line]
        fresh = sp._new("b")
        sp.b = fresh
        await fresh.start()
        await sp.synced()
        await sp.send("b", "NDMC after")
        _consistent(sp, "b", str(result["key_id"]))


def test_a_receipt_under_the_peers_new_key_that_overtakes_its_key_is_taken_from_its_copy(tmp_path: Path) -> None:
    """The peer's first receipt under its new signing key arrives on one path before the KEY that
    names the key (the paths are independent): it is refused then, with a warning. Its copy on the
    other path, byte for byte the same, comes after the KEY there and must be judged again and
    taken: the sender drops copies of the last receipt it took before parsing them, never of one it
    refused (else the delivery counts only at the peer's next receipt)."""
    sp = SessionPair(tmp_path)
    try:
        sp.run()
        sp.send("a", "before")
        sp.run()
        rotate_in_session(sp, "b")
        sp.send("a", "overtaken")
        sp.flush()  # A seals it; B seals its KEY
        for p in sp.paths:  # B stores A's envelope and receipts it under its new key
            while p.a_to_b:
                sp._do("b", sp.b.receive(p.name, p.a_to_b.popleft(), sp.clock.now, sp.clock.wall))
        sp._do("b", sp.b.flush(sp.clock.wall))
        first, second = sp.paths
        [receipt] = [f for f in first.b_to_a if f[4] == FrameType.RECEIPT]
        assert [f for f in second.b_to_a if f[4] == FrameType.RECEIPT] == [receipt]  # the same bytes on both
        first.b_to_a.remove(receipt)
        sp.alarms.clear()
        sp._do("a", sp.a.receive(first.name, receipt, sp.clock.now, sp.clock.wall))  # before the KEY
        assert any("refused a receipt" in text for who, _, text in sp.alarms if who == "a"), sp.alarms
        sealed = sp.a.ledger.head(sp.line, sp.a.us)[0]
        assert sp.a.receipted_seq < sealed
        for p in (first, second):  # the KEY on each path, then the receipt's copy behind it
            while p.b_to_a:
                sp._do("a", sp.a.receive(p.name, p.b_to_a.popleft(), sp.clock.now, sp.clock.wall))
        assert sp.a.receipted_seq == sealed
    finally:
        sp.close()
