"""Attacks from a security review of the trust gate, the live session's recovery, verification,
the control socket and the text shown to operators. Each test is named after the attack.

Tests marked ``xfail(strict=True)`` are holes found by the review: they assert the promise and fail
on the current code for the reason given; they pass (and must lose the mark) once it is fixed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redline import canonical, control
from redline.config import Limits
from redline.display import SafeConsole
from redline.envelope import seal, split
from redline.ledger.verify import LineData, StoredRow, verify_line
from redline.protocol.framing import FrameType, encode_frame
from redline.session import LineSession
from redline.testing import SessionPair, StationPair

# -- helpers ------------------------------------------------------------------------------------------


def _session(sp: SessionPair, who: str) -> LineSession:
    return sp.a if who == "a" else sp.b


def _backup(sp: SessionPair, who: str, to: Path) -> None:
    d = sp.dir_a if who == "a" else sp.dir_b
    src, dst = sqlite3.connect(d.ledger_path), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _restore(sp: SessionPair, who: str, backup: Path) -> None:
    """Put an old copy of one station's store in place (no WAL) and restart it."""
    d = sp.dir_a if who == "a" else sp.dir_b
    _session(sp, who).ledger.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{d.ledger_path}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, d.ledger_path)
    sp.restart(who)


def _settle(sp: SessionPair) -> None:
    """``sp.run()``, plus the extra flush the station schedules when recovery handed over more
    in a flush (``Station._flush``: ``if session.has_pending``)."""
    for _ in range(1000):
        sp.run()
        if not (sp.a.has_pending or sp.b.has_pending):
            return
        sp.flush()
    raise AssertionError("the sessions did not settle")


def _tick(sp: SessionPair, seconds: int) -> None:
    for _ in range(seconds):
        sp.tick(1.0)
        _settle(sp)


def _texts(sp: SessionPair, holder: str, sender: str) -> list[str]:
    s, fp = _session(sp, holder), _session(sp, sender).us
    rows = list(s.ledger.raw_envelopes(sp.line, fp))
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))
    out = []
    for _, raw in rows:
        body = split(raw).body_bytes
        assert body is not None
        out.append(canonical.decode_object(body, "body")["content"]["text"])
    return out


def _interleaved_then_restore(tmp_path: Path, limits: Limits, rounds: int) -> SessionPair:
    """A's store is backed up empty; then A and B take turns, so each of A's envelopes has seen
    B's previous one (recovery must bring both chains back in causal order); then A's old copy is
    put back."""
    sp = SessionPair(tmp_path, limits=limits)
    sp.run()
    backup = tmp_path / "a-backup.sqlite"
    _backup(sp, "a", backup)
    for i in range(rounds):
        sp.send("a", f"a{i}")
        sp.run()
        sp.send("b", f"b{i}")
        sp.run()
    assert sp.b.ledger.head(sp.line, sp.a.us)[0] == rounds
    _restore(sp, "a", backup)
    _settle(sp)
    return sp


@pytest.fixture
def sp(tmp_path: Path) -> Iterator[SessionPair]:
    pair = SessionPair(tmp_path)
    pair.run()
    yield pair
    pair.close()


# -- recovery of our own chain from the peer (guarantee 2): liveness ----------------------------------


def test_recovery_of_own_chain_interleaved_with_the_peers_still_works_within_limits(tmp_path: Path) -> None:
    """Control for the two holes below: with room enough, a restored store gets both chains back
    in causal order and signs again after them."""
    sp = _interleaved_then_restore(tmp_path, Limits(), rounds=10)
    try:
        local = sp.send("a", "after restore")
        _settle(sp)
        assert sp.a.ledger.outbox_item(local).seq == 11
        assert _texts(sp, "b", "a") == [*(f"a{i}" for i in range(10)), "after restore"]
        assert _texts(sp, "a", "b") == [f"b{i}" for i in range(10)]
    finally:
        sp.close()


def test_restored_store_with_more_interleaved_envelopes_than_the_window_is_not_stalled(tmp_path: Path) -> None:
    sp = _interleaved_then_restore(tmp_path, Limits(window=4), rounds=10)
    try:
        _tick(sp, 5)
        local = sp.send("a", "after restore")
        _settle(sp)
        _tick(sp, 5)
        assert sp.a.ledger.head(sp.line, sp.a.us)[0] >= 10, "our own chain was not recovered"
        assert sp.a.ledger.outbox_item(local).seq == 11, "nothing new is ever signed"
        assert _texts(sp, "b", "a") == [*(f"a{i}" for i in range(10)), "after restore"]
    finally:
        sp.close()


def test_peer_envelopes_beyond_the_gap_buffer_during_recovery_do_not_stall_it(tmp_path: Path) -> None:
    sp = _interleaved_then_restore(tmp_path, Limits(window=64, max_gap_buffer=4), rounds=10)
    try:
        _tick(sp, 5)
        local = sp.send("a", "after restore")
        _settle(sp)
        _tick(sp, 5)
        assert sp.a.ledger.head(sp.line, sp.b.us)[0] == 10, "the peer's chain was not recovered"
        assert sp.a.ledger.head(sp.line, sp.a.us)[0] >= 10, "our own chain was not recovered"
        assert sp.a.ledger.outbox_item(local).seq == 11, "nothing new is ever signed"
    finally:
        sp.close()


def test_receipt_refused_during_recovery_does_not_leave_recovered_envelopes_unreceipted(
    sp: SessionPair, tmp_path: Path
) -> None:
    backup = tmp_path / "a-backup.sqlite"
    _backup(sp, "a", backup)
    for i in range(3):
        sp.send("a", f"m{i}")
    sp.run()
    _restore(sp, "a", backup)
    _settle(sp)
    _tick(sp, 3)
    assert sp.a.status().to_obj()["our_seq"] == 3 and sp.a.status().to_obj()["synced"]
    assert sp.a.status().to_obj()["unreceipted"] == 0  # the peer holds all three, and signed a receipt saying so


# -- checkpoints after a restore (guarantee 3): liveness --------------------------------------------


def test_restored_non_proposer_missing_a_checkpoint_countersigns_again(sp: SessionPair, tmp_path: Path) -> None:
    who = "a" if not sp.a.is_proposer else "b"  # the restored side must be the one that countersigns
    other = "b" if who == "a" else "a"
    backup = tmp_path / "backup.sqlite"
    _backup(sp, who, backup)
    sp.send(who, "flash 1", kind="FLASH", prio="FLASH")
    _settle(sp)
    assert len(_session(sp, other).ledger.checkpoints(sp.line)) == 1
    _restore(sp, who, backup)
    _settle(sp)
    sp.send(who, "flash 2", kind="FLASH", prio="FLASH")
    sp.send(other, "flash 3", kind="FLASH", prio="FLASH")
    _settle(sp)
    _tick(sp, 70)  # past checkpoint_every_seconds
    refused = [t for w, lvl, t in sp.alarms if w == who and "refused to countersign" in t]
    assert refused == []
    mine, theirs = _session(sp, who).ledger, _session(sp, other).ledger
    assert len(theirs.checkpoints(sp.line)) >= 2, "no checkpoint after the restore covers the new FLASHes"
    assert mine.last_checkpoint(sp.line) is not None


def test_restored_proposer_missing_a_checkpoint_gets_it_back_and_goes_on(sp: SessionPair, tmp_path: Path) -> None:
    who = "a" if sp.a.is_proposer else "b"
    other = "b" if who == "a" else "a"
    backup = tmp_path / "backup.sqlite"
    _backup(sp, who, backup)
    sp.send(who, "flash 1", kind="FLASH", prio="FLASH")
    _settle(sp)
    _restore(sp, who, backup)
    _settle(sp)
    sp.send(who, "flash 2", kind="FLASH", prio="FLASH")
    _settle(sp)
    _tick(sp, 3)
    mine, theirs = _session(sp, who).ledger.checkpoints(sp.line), _session(sp, other).ledger.checkpoints(sp.line)
    assert len(mine) == len(theirs) >= 2
    assert [c[1].encode() for c in mine] == [c[1].encode() for c in theirs]


# -- peer text in alarms (guarantee 9: one clear line) ----------------------------------------------


def _peer_error(sp: SessionPair, message: str) -> list[str]:
    frame = encode_frame(FrameType.ERROR, canonical.encode({"message": message}))
    sp._do("a", sp.a.receive("path0", frame, sp.clock.now, sp.clock.wall))
    return [t for w, _, t in sp.alarms if w == "a" and t.startswith("peer closed path")]


FORGED = "bye\n[alarm] 00000000 LINE UP again: a path to NDMC is open\n[info] all is well"


def test_peer_error_reason_cannot_forge_alarm_lines_on_the_operators_terminal(sp: SessionPair) -> None:
    (text,) = _peer_error(sp, FORGED)
    out = io.StringIO()
    SafeConsole(file=out, width=300).print(f"[warning] {sp.line[:8]} {text}")  # as cli.serve's alarm sink
    assert len(out.getvalue().rstrip("\n").splitlines()) == 1, out.getvalue()


def test_peer_error_reason_of_a_megabyte_is_cut_in_the_alarm(sp: SessionPair) -> None:
    (text,) = _peer_error(sp, "x" * ((1 << 20) - 64))
    assert len(text) <= 2000


def test_peer_error_reason_with_escapes_is_shown_as_data(sp: SessionPair) -> None:
    (text,) = _peer_error(sp, "\x1b[2J\x1b]8;;http://evil/\x07click\u202eLANE")
    out = io.StringIO()
    SafeConsole(file=out, width=300).print(text)
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue() and "\x07" not in out.getvalue()


# -- the causal-order replay in verify cannot be made to loop ------------------------------------------


def _forged_pair(sp: SessionPair, n: int, seen: Any) -> LineData:
    """Two chains of ``n`` envelopes, each signed with the station's real key, whose seen links
    (``seen(station, seq)`` -> (seq, id) of the other chain) are whatever the attacker likes."""
    ka, kb = sp.dir_a.load_keys(), sp.dir_b.load_keys()
    chains: dict[str, list[StoredRow]] = {ka.fingerprint: [], kb.fingerprint: []}
    for k in (ka, kb):
        prev = None
        for seq in range(1, n + 1):
            seen_seq, seen_id = seen(k.fingerprint, seq)
            env = seal(
                k.signing, line=sp.line, sender=k.fingerprint, key=k.key_id, seq=seq, sent_at=sp.clock.wall,
                kind="TEXT", prio="ROUTINE", prev=prev, seen_seq=seen_seq, seen_id=seen_id, lang="en",
                content={"text": f"{seq}"}, salt=os.urandom(16),
            )  # fmt: skip
            chains[k.fingerprint].append(StoredRow(seq, env.id, env.encode()))
            prev = env.id
    return LineData(
        line=sp.line, names={ka.fingerprint: "EUCOM", kb.fingerprint: "NDMC"},
        certs={ka.fingerprint: [ka.signing_cert], kb.fingerprint: [kb.signing_cert]}, chains=chains,
    )  # fmt: skip


def test_chains_that_each_claim_to_have_seen_the_other_first_are_refused_by_verify_without_looping(
    sp: SessionPair,
) -> None:
    """A cycle of seen links (each chain's first envelope says it saw the other's first): no causal
    order exists. verify must stop with a problem at once, not spin or accept either."""
    data = _forged_pair(sp, 3, lambda fp, seq: (seq, "00" * 32))
    roots = {sp.a.us: sp.a.keys.root_public, sp.b.us: sp.b.keys.root_public}
    report = verify_line(data, roots)
    assert not report.ok
    assert all(size == 0 for size in report.chain_sizes.values())
    assert "claims to have seen" in report.problems[0].what


def test_seen_links_far_beyond_the_other_chain_are_refused_by_verify_in_linear_time(sp: SessionPair) -> None:
    data = _forged_pair(sp, 200, lambda fp, seq: (10**15, "00" * 32) if seq == 100 else (0, None))
    roots = {sp.a.us: sp.a.keys.root_public, sp.b.us: sp.b.keys.root_public}
    report = verify_line(data, roots)
    assert report.chain_sizes == {sp.a.us: 99, sp.b.us: 99}
    # the other chain's entry 100 is stopped too: its break is the same, reported once (by design)
    assert len(report.problems) == 1 and "claims to have seen" in report.problems[0].what


# -- the control socket: bad requests get one clear answer and change nothing ------------------------


def _run_stations(tmp_path: Path, body: Any) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as pair:
            await body(pair)

    asyncio.run(main())


def test_control_request_with_an_idempotency_key_that_is_not_a_string_changes_nothing(tmp_path: Path) -> None:
    async def body(pair: StationPair) -> None:
        good = {"op": "send", "line": pair.line, "text": "an honest operator's message"}
        bad = {"op": "send", "line": pair.line, "text": "x", "idem": {"not": "a string"}}
        answers = await asyncio.gather(
            control._reply(pair.a, json.dumps(good).encode()), control._reply(pair.a, json.dumps(bad).encode())
        )
        assert answers[1]["ok"] is False
        assert answers[0]["ok"] is True, answers[0]  # the other request in the same group commit
        assert not [t for _, _, t in pair.alarms if "STORAGE FAILURE" in t]

    _run_stations(tmp_path, body)


BAD_FIELDS = [
    {"op": "send", "text": 5},
    {"op": "send", "text": ["x"]},
    {"op": "send", "text": "x", "priority": 5},
    {"op": "act", "kind": "TEXT", "content": {"text": "x"}, "priority": ["flash"]},
    {"op": "view", "what": "notices", "offset": 1e400},
    {"op": "view", "what": "notices", "limit": 1e400},
    {"op": "pair", "token": 5},
    {"op": "resolve", "kind": "TEST", "content": {"text": "x"}, "idem": ["x"]},
]


def test_control_request_with_fields_of_the_wrong_type_gets_one_clear_refusal(tmp_path: Path) -> None:
    async def body(pair: StationPair) -> None:
        crashed = []
        for request in BAD_FIELDS:
            raw = json.dumps({**request, "line": pair.line}).encode()
            try:
                answer = await control._reply(pair.a, raw)
            except Exception as exc:  # what the review is looking for
                crashed.append(f"{request}: {type(exc).__name__}")
                continue
            assert answer["ok"] is False and "\n" not in answer["error"], answer
        assert crashed == []
        assert pair.a.status().to_obj()["lines"][0]["our_seq"] == 0  # nothing was accepted

    _run_stations(tmp_path, body)
