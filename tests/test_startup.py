"""Start-up in O(log n): what the store keeps so a station never reads its whole transcript at start.

Four things used to be proportional to the transcript and are not any more; each is checked here
against the slow way it replaced:

- the Merkle tree of each chain is read back from the subtrees stored with each commit
  (``merkle.StoredLog``), not rebuilt from every id: after kill -9 in the middle of group
  commits, the stored tree equals one rebuilt from the chain, at every size;
- each chain's byte total (the disk budget) is kept with each commit: it equals the SUM it replaced;
- the full integrity check (``PRAGMA quick_check``, a minute at a million envelopes) runs only
  after an unclean shutdown: a clean close leaves a mark in the store, the first write after
  removes it, so a crash, a kill -9 or a ledger never closed all lead to the full check;
  ``redline verify`` runs it whatever the mark says;
- the operations engine is rebuilt from the envelopes it acts on (an indexed query: every kind but
  plain TEXT) and the first receipt covering each of ours, not from everything: its state equals
  the one a replay of every envelope and every receipt gives.

And a store of schema 1 is brought up to schema 2 when it is opened: the same trees, totals and
replay as a store that was schema 2 all along.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from redline import merkle
from redline.config import Limits
from redline.envelope import split
from redline.home import StationDir
from redline.ledger import integrity
from redline.ledger.model import SCHEMA_VERSION
from redline.ledger.sqlite import Ledger, leaf_of
from redline.ledger.verify import verify_line
from redline.ops.engine import LineOps
from redline.ops.notices import Notice
from redline.persons import Person, roster_content
from redline.station import Station, _entry
from redline.testing import SessionPair, make_station, pair_directly
from tests.test_ops import DEZHURNY, DUTY_EUCOM

HELPER = Path(__file__).parent / "helpers" / "crash_writer.py"


# -- helpers ----------------------------------------------------------------------------------------


def rebuilt_tree(ledger: Ledger, line: str, sender: str) -> merkle.MerkleLog:
    """The slow way: every id of the chain, hashed again."""
    log = merkle.MerkleLog()
    for (eid,) in ledger._db.execute("SELECT id FROM envelopes WHERE line=? AND sender=? ORDER BY seq", (line, sender)):
        log.append(leaf_of(eid))
    return log


def assert_tree_matches(ledger: Ledger, line: str, sender: str, rng: random.Random) -> None:
    stored, rebuilt = ledger.log(line, sender), rebuilt_tree(ledger, line, sender)
    assert stored.size == rebuilt.size == ledger.head(line, sender)[0]
    assert stored.root() == rebuilt.root()
    for size in {0, 1, stored.size, *(rng.randint(0, stored.size) for _ in range(20))}:
        if size <= stored.size:
            assert stored.root(size) == rebuilt.root(size), size
    if stored.size > 1:
        old = rng.randint(1, stored.size)
        assert stored.consistency_proof(old) == rebuilt.consistency_proof(old)
        index = rng.randrange(stored.size)
        assert stored.inclusion_proof(index) == rebuilt.inclusion_proof(index)


def summed_bytes(ledger: Ledger, line: str, sender: str) -> int:
    row = ledger._db.execute(
        "SELECT COALESCE(SUM(length(raw)), 0) FROM envelopes WHERE line=? AND sender=?", (line, sender)
    ).fetchone()
    return int(row[0])


def kill_writer_at_random(home: Path, line: str, rng: random.Random) -> None:
    """Start the crash writer (group commits of 37 into the real store) and SIGKILL it mid-flight."""
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(home), line, "37"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready "), proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.01, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


# -- the Merkle tree and the byte totals, after kill -9 -----------------------------------------------


@pytest.mark.timeout(120)
def test_stored_merkle_tree_equals_a_rebuilt_one_after_kill_minus_nine_mid_commit(tmp_path: Path) -> None:
    a = make_station(tmp_path, "EUCOM", "en", 7401)
    b = make_station(tmp_path, "NDMC", "ru", 7501)
    line = pair_directly(a, b)
    us = a.load_keys().fingerprint
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    sizes = []
    for _ in range(6):
        kill_writer_at_random(a.path, line, rng)
        ledger = Ledger(a.ledger_path)
        try:
            assert not ledger.opened_clean, "a killed writer left the clean-close mark"
            assert_tree_matches(ledger, line, us, rng)
            assert ledger.line_bytes(line, us) == summed_bytes(ledger, line, us)
            sizes.append(ledger.head(line, us)[0])
        finally:
            ledger.close()
    assert sizes[-1] > 2 * 2**merkle.STORED_HEIGHT, f"too little was written to test the stored subtrees (seed {seed})"
    # And the chain itself, with those trees, still verifies from bytes.
    ledger = Ledger(a.ledger_path)
    try:
        roots = {us: a.load_keys().root_public, b.load_keys().fingerprint: b.load_keys().root_public}
        report = verify_line(ledger.line_data(line, "EUCOM"), roots)
        assert report.ok, report.problems[:1]
        assert report.logs[us].root() == ledger.log(line, us).root()
    finally:
        ledger.close()


def test_trees_and_totals_follow_a_live_pair_and_a_rolled_back_batch(tmp_path: Path) -> None:
    pair = SessionPair(tmp_path, paths=1)
    rng = random.Random(7)
    try:
        pair.run()
        for i in range(150):
            pair.send("a", f"EUCOM {i}" * (i % 7 + 1))
            if i % 3 == 0:
                pair.send("b", f"NDMC {i}")
            if i % 10 == 0:
                pair.run()
        pair.run()
        for session in (pair.a, pair.b):
            for fp in (pair.a.us, pair.b.us):
                assert_tree_matches(session.ledger, pair.line, fp, rng)
                assert session.ledger.line_bytes(pair.line, fp) == summed_bytes(session.ledger, pair.line, fp)
        # A batch that rolls back leaves neither a subtree nor bytes behind.
        ledger, us = pair.a.ledger, pair.a.us
        before = (ledger.log(pair.line, us).root(), ledger.line_bytes(pair.line, us))
        with pytest.raises(RuntimeError), ledger.batch():
            for _ in range(70):
                pair.send("a", "rolled back")
            pair.a.flush(pair.clock.wall)
            assert ledger.line_bytes(pair.line, us) > before[1]
            raise RuntimeError("abandon the batch")
        assert (ledger.log(pair.line, us).root(), ledger.line_bytes(pair.line, us)) == before
        assert_tree_matches(ledger, pair.line, us, rng)
    finally:
        pair.close()


# -- the full integrity check: after an unclean shutdown only, and on verify ------------------------


@pytest.fixture
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every ``PRAGMA quick_check`` run from now on, by store."""
    calls: list[Path] = []
    real = integrity.quick_check

    def counting(path: Path, db: sqlite3.Connection, existed: set[Path]) -> None:
        calls.append(path)
        real(path, db, existed)

    monkeypatch.setattr(integrity, "quick_check", counting)
    return calls


def test_a_clean_close_skips_the_full_check_and_any_write_takes_the_mark_away(
    tmp_path: Path, quick_checks: list[Path]
) -> None:
    pair = SessionPair(tmp_path, paths=1)
    pair.run()
    pair.send("a", "hello")
    pair.run()
    pair.close()  # a clean stop: both ledgers marked
    store = pair.dir_a.ledger_path
    quick_checks.clear()
    ledger = Ledger(store)
    assert ledger.opened_clean and quick_checks == []
    # A reader that writes nothing leaves the mark for the next open.
    ledger.close()
    reader = Ledger(store)
    assert reader.opened_clean and quick_checks == []
    # A second connection opened meanwhile (another process, say) writes: the mark goes with its
    # first commit, so a crash of that writer is not mistaken for a clean stop.
    writer = Ledger(store)
    writer.put_line(writer.line(pair.line))
    assert writer._db.execute("SELECT count(*) FROM meta WHERE key='clean_close'").fetchone()[0] == 0
    reader.close()  # the reader wrote nothing: it does not put the mark back
    writer._closer()  # the writer dies without close(): no mark
    again = Ledger(store)
    try:
        assert not again.opened_clean and quick_checks == [store]
    finally:
        again.close()


@pytest.mark.timeout(60)
def test_an_unclean_shutdown_still_triggers_the_full_check(tmp_path: Path, quick_checks: list[Path]) -> None:
    a = make_station(tmp_path, "EUCOM", "en", 7401)
    b = make_station(tmp_path, "NDMC", "ru", 7501)
    line = pair_directly(a, b)
    quick_checks.clear()
    ledger = Ledger(a.ledger_path)
    assert ledger.opened_clean and quick_checks == []  # init and pairing closed cleanly
    ledger.close()
    kill_writer_at_random(a.path, line, random.Random(3))
    ledger = Ledger(a.ledger_path)
    try:
        assert not ledger.opened_clean and quick_checks == [a.ledger_path]
    finally:
        ledger.close()  # this one wrote nothing: the store stays unmarked until a writer closes it
    ledger = Ledger(a.ledger_path)
    assert not ledger.opened_clean and len(quick_checks) == 2
    ledger.put_line(ledger.line(line))
    ledger.close()
    ledger = Ledger(a.ledger_path)
    assert ledger.opened_clean and len(quick_checks) == 2
    ledger.close()


def test_damage_after_a_clean_close_is_found_by_verify(tmp_path: Path) -> None:
    """The price of a fast start: a page damaged while the station was cleanly stopped is not looked
    for at start (SQLite finds it when it reads that page), but ``redline verify`` finds it."""
    pair = SessionPair(tmp_path, paths=1)
    pair.run()
    for i in range(40):
        pair.send("a", f"EUCOM {i} " + "x" * 2000)
        pair.run()
    pair.close()
    store = pair.dir_a.ledger_path
    db = sqlite3.connect(store)
    (page,) = db.execute(
        "SELECT pageno FROM dbstat WHERE name='envelopes' AND pagetype='leaf' ORDER BY pageno LIMIT 1 OFFSET 2"
    ).fetchone()
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    assert not (store.parent / (store.name + "-wal")).exists()
    with open(store, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(bytes(page_size))
    ledger = Ledger(store)  # the start does not look
    assert ledger.opened_clean
    from redline.errors import StorageError

    with pytest.raises(StorageError, match="integrity check found"):
        ledger.check_integrity()
    ledger.close()
    out = subprocess.run(
        [sys.executable, "-m", "redline", "verify", "--station", str(pair.dir_a.path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "integrity check found" in " ".join(out.stderr.split()), out.stdout + out.stderr


# -- the operations engine: rebuilt from what it acts on, equal to a replay of everything ----------


def full_replay(ledger: Ledger, line: str) -> LineOps:
    """The slow way the station used to start: every envelope, every receipt."""
    record = ledger.line(line)
    ops = LineOps(us=ledger.station, peer=record.peer, limits=Limits(), since=record.created_at)
    for sender, _, raw, stored_at in ledger.stored_in_order(line):
        ops.observe(_entry(split(raw), sender == ledger.station, stored_at))
    for seq, at in ledger.receipt_times(line, record.peer):
        ops.receipted(seq, at)
    return ops


def ops_state(ops: LineOps, now: int) -> dict[str, Any]:
    """Everything ops shows or decides, at ``now``."""
    intents, alarms = ops.due(now)
    return {
        "entries": sorted(ops.entries),
        "tests": ops.tests.history(now),
        "flash": sorted((f.view() for f in ops.flash.flashes.values()), key=lambda v: v.id),
        "pending_levels": ops.flash.pending_levels(now),
        "calls": ops.calls.summary(now, ops.us, ops.peer),
        "notices": ops.notices_view(now),
        "translations": ops.translations,
        "refused": [(e.id, why) for e, why in ops.refused],
        "rosters": {side: sorted(r) for side, r in ops.rosters.items()},
        "due": [(i.kind, i.idem, i.content) for i in intents],
        "alarms": [(a.level, a.text) for a in alarms],
    }


def test_ops_rebuilt_from_the_filtered_replay_equals_one_rebuilt_from_everything(tmp_path: Path) -> None:
    pair = SessionPair(tmp_path, paths=1)
    wall = pair.clock.wall
    officer_b = Person(name=DEZHURNY.person.name, role="duty", key=DEZHURNY.person.key)
    notice = Notice(
        ref="x:0", kind="air", area={"type": "Polygon", "coordinates": [[[36.0, 50.0], [36.2, 50.0], [36.2, 50.2],
        [36.0, 50.2], [36.0, 50.0]]]}, floor_m=0, ceiling_m=3000, start=wall, end=wall + 4 * 3_600_000,
        margin_m=0, text="exercise",
    ).to_content()  # fmt: skip

    def file(who: str, kind: str, content: dict[str, Any], prio: str = "PRIORITY") -> str:
        s = pair.a if who == "a" else pair.b
        with s.ledger.batch():
            s.accept(kind, prio, content, None, pair.clock.wall)
        pair.run()
        return s.ledger.head(pair.line, s.us)[1] or ""

    def ref(who: str, eid: str) -> dict[str, Any]:
        s = pair.a if who == "a" else pair.b
        return {"sender": s.us, "seq": s.ledger.head(pair.line, s.us)[0], "id": eid}

    try:
        pair.run()
        file("a", "ROSTER", roster_content([DUTY_EUCOM.person]))
        file("b", "ROSTER", roster_content([officer_b]))
        for i in range(30):  # plain text both ways, receipted as it goes: what the replay skips
            pair.send("a", f"routine {i}")
            pair.send("b", f"обычное {i}")
            if i % 4 == 0:
                pair.run()
        pair.run()
        flash = file("a", "FLASH", {"text": "FLASH: aircraft near the border"}, "FLASH")
        flash_ref = ref("a", flash)
        text_flash = file("a", "TEXT", {"text": "a TEXT sent as FLASH is a FLASH"}, "FLASH")
        file("b", "READ", {"ref": flash_ref, "by": "Dezhurny"}, "FLASH")
        file("b", "ESCALATED", {"flash": flash_ref, "level": "deputy", "step": 1}, "FLASH")
        file("b", "ACK", DEZHURNY.sign({"ref": flash_ref}), "FLASH")
        test = file("a", "TEST", {"text": "Line test."})
        file("b", "TEST_ANSWER", DEZHURNY.sign({"test": ref("a", test), "text": "here"}))
        request = file("a", "CALL_REQUEST", {"from_role": "Secretary", "to_role": "Minister", "subject": "Talks",
                                            "windows": [], "expires": wall + 86_400_000})  # fmt: skip
        file("b", "CALL_REPLY", {"request": ref("a", request), "answer": "accept", "time": wall + 3_600_000})
        file("b", "NOTICE", notice)
        file("a", "TRANSLATION", {"ref": ref("b", text_flash), "text": "translated", "translator": "machine"})
        file("b", "ACK", {"ref": {"sender": "nobody", "seq": 1, "id": "00"}}, "FLASH")  # refused: not signed
        for i in range(20):  # more text after, some of it never receipted
            pair.send("a", f"late {i}")
        pair.a.flush(pair.clock.wall)
        pair.send("a", "unsent")  # one accepted, still in the outbox
        pair.close()

        station = Station(pair.dir_a)
        try:
            filtered = station.ops[pair.line]
            ledger = station.ledger
            rows = list(ledger.stored_for_ops(pair.line))
            assert 0 < len(rows) < ledger.head(pair.line, pair.a.us)[0], "the replay did not skip plain text"
            assert any(split(raw).id == text_flash for _, _, raw, _ in rows), "a TEXT sent as FLASH was skipped"
            full = full_replay(ledger, pair.line)
            for later in (0, 60_000, 600_000, 90_000_000):
                assert ops_state(filtered, wall + later) == ops_state(full, wall + later)
        finally:
            station.ledger.close()
    finally:
        pair.close()


# -- a schema 1 store is brought up to date at open ------------------------------------------------


def downgrade_to_schema_1(store: Path) -> None:
    """What redline 1 left: no trees, no totals, no prio column, no operations index."""
    db = sqlite3.connect(store)
    db.executescript(
        "DROP TABLE merkle; DROP TABLE chain_bytes; DROP INDEX envelopes_ops; "
        "ALTER TABLE envelopes DROP COLUMN prio; UPDATE meta SET value='1' WHERE key='schema_version';"
    )
    db.close()


def test_a_schema_1_store_is_migrated_at_open_to_what_schema_2_keeps(tmp_path: Path) -> None:
    pair = SessionPair(tmp_path, paths=1)
    pair.run()
    for i in range(140):
        pair.send("a", f"EUCOM {i}", prio="FLASH" if i % 50 == 7 else "ROUTINE")
        pair.send("b", f"NDMC {i}")
        if i % 9 == 0:
            pair.run()
    pair.run()
    line, us, peer = pair.line, pair.a.us, pair.b.us
    expect = {
        fp: (pair.a.ledger.log(line, fp).root(), pair.a.ledger.line_bytes(line, fp)) for fp in (us, peer)
    }
    ops_rows = [split(raw).id for _, _, raw, _ in pair.a.ledger.stored_for_ops(line)]
    pair.close()
    store = pair.dir_a.ledger_path
    downgrade_to_schema_1(store)
    with pytest.raises(Exception, match="older than this redline"):
        Ledger.open_read_only(store)  # a reader does not migrate: it says how
    ledger = Ledger(store)
    try:
        assert ledger._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION
        )
        rng = random.Random(11)
        for fp in (us, peer):
            assert (ledger.log(line, fp).root(), ledger.line_bytes(line, fp)) == expect[fp]
            assert_tree_matches(ledger, line, fp, rng)
        # The TEXT rows sent as FLASH were found in the raw bytes: the same rows replayed as before.
        assert [split(raw).id for _, _, raw, _ in ledger.stored_for_ops(line)] == ops_rows
    finally:
        ledger.close()


def test_the_replay_query_reads_through_the_operations_index(tmp_path: Path) -> None:
    d = make_station(tmp_path, "EUCOM", "en", 7401)
    ledger = StationDir(d.path).open_ledger()
    try:
        plan = " ".join(
            str(r[-1])
            for r in ledger._db.execute(
                "EXPLAIN QUERY PLAN SELECT sender, seq, raw, stored_at FROM envelopes "
                "WHERE line=? AND (kind != 'TEXT' OR prio = 'FLASH') ORDER BY rowid",
                ("x",),
            )
        )
        assert "envelopes_ops" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        ledger.close()


def test_what_start_up_reads_never_walks_a_whole_chain(tmp_path: Path) -> None:
    """Start-up reads the operational envelopes (ops replay) and the trust kinds (KEY, REVOKE, ROOT,
    ROOT_CONFIRM: the gate's key and root history) through the partial index of operational rows.
    A plan that walks a sender's chain by its primary key instead cost 0.18 s a query at 200,000
    envelopes (8.8 s of start-up at a million): each statement start-up runs is planned here."""
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, create=True, station="ab" * 32)
    statements: list[str] = []
    ledger._db.set_trace_callback(statements.append)
    line, sender = "cd" * 16, "ab" * 32
    for kind in ("KEY", "REVOKE", "ROOT", "ROOT_CONFIRM"):
        ledger.raw_of_kind(line, sender, kind)
    list(ledger.stored_for_ops(line))
    ledger._db.set_trace_callback(None)
    assert len(statements) == 5
    for sql in statements:
        plan = " ".join(str(row[3]) for row in ledger._db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "envelopes_ops" in plan and "sqlite_autoindex_envelopes_1" not in plan, (sql, plan)
    ledger.close()
