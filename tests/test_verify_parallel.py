"""``redline verify`` streamed from the store and on every core decides exactly what it decided before.

Three ways to verify one store must give the same report, problem for problem, for an intact
transcript and for every tampering: the old way (``Ledger.line_data`` loads everything, the gate
opens each envelope), the store streamed row by row (``Ledger.stored_line``) and the store streamed
with worker processes opening the envelopes ahead of the gate (``workers=2``). The chains are cut
into runs of a few rows here (``BATCH``), so every run boundary, the look-ahead and the causal
interleaving of the two chains are exercised on a small transcript. Worker processes only open
envelopes; what they refuse, the gate opens again itself and names the rule broken.
"""

from __future__ import annotations

import platform
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from redline.ledger import verify
from redline.ledger.sqlite import Ledger
from redline.ledger.verify import LineReport, verify_line
from redline.testing import SessionPair

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, dict[str, bytes], str]]:
    pair = SessionPair(tmp_path_factory.mktemp("parallel"), paths=1)
    pair.run()
    for i in range(60):
        pair.send("a", f"EUCOM {i}")
        if i % 3:
            pair.send("b", f"NDMC {i}")
        if i % 7 == 0:
            pair.run()
        if i == 30:
            pair.send("a", "FLASH: checkpoint me", kind="FLASH", prio="FLASH")
            pair.run()
    pair.run()
    pair.tick(1.0)
    pair.run()
    roots = {pair.a.us: pair.dir_a.load_keys().root_public, pair.b.us: pair.dir_b.load_keys().root_public}
    pair.close()
    yield pair.dir_a.path, pair.line, roots, pair.b.us


@pytest.fixture(autouse=True)
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "BATCH", 5)
    monkeypatch.setattr(verify, "AHEAD", 3)


def summary(r: LineReport) -> dict[str, Any]:
    return {
        "problems": [str(p) for p in r.problems],
        "evidence": [str(p) for p in r.evidence],
        "chains": r.chain_sizes,
        "cosigned": r.cosigned_sizes,
        "checkpoints": r.checkpoints,
        "receipts": r.receipts,
        "receipted": r.receipted,
        "roots": {fp: log.root().hex() for fp, log in r.logs.items()},
    }


def three_ways(store: Path, line: str, roots: dict[str, bytes]) -> list[dict[str, Any]]:
    ledger = Ledger(store)
    try:
        out = [summary(verify_line(ledger.line_data(line, "EUCOM"), roots))]
        for workers in (0, 2):
            with ledger.stored_line(line, "EUCOM") as held:
                out.append(summary(verify_line(held, roots, workers=workers)))
        return out
    finally:
        ledger.close()


Built = tuple[Path, str, dict[str, bytes], str]


def tampered(built: Built, tmp: Path, edit: Callable[[sqlite3.Connection], object]) -> Path:
    home = tmp / "copy"
    shutil.copytree(built[0], home)
    db = sqlite3.connect(home / "ledger.sqlite")
    edit(db)
    db.commit()
    db.close()
    return home / "ledger.sqlite"


def test_an_intact_store_verifies_alike_three_ways(built: tuple[Path, str, dict[str, bytes], str]) -> None:
    serial, streamed, parallel = three_ways(built[0] / "ledger.sqlite", built[1], built[2])
    assert serial["problems"] == [] and sum(serial["chains"].values()) > 100
    assert serial == streamed == parallel


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]


def _edit_raw(db: sqlite3.Connection, sender: str, seq: int, change: Callable[[bytes], bytes]) -> None:
    (raw,) = db.execute("SELECT raw FROM envelopes WHERE sender=? AND seq=?", (sender, seq)).fetchone()
    db.execute("UPDATE envelopes SET raw=? WHERE sender=? AND seq=?", (change(bytes(raw)), sender, seq))


ATTACKS: dict[str, Callable[[sqlite3.Connection, str], object]] = {
    "forged signature": lambda db, b: _edit_raw(db, b, 17, lambda raw: raw[:-1] + bytes([raw[-1] ^ 1])),
    "edited body": lambda db, b: _edit_raw(db, b, 2, lambda raw: raw.replace(b"NDMC 2", b"NDMC 9")),
    "deleted entry": lambda db, b: db.execute("DELETE FROM envelopes WHERE sender=? AND seq=11", (b,)),
    "deleted last entries of one chain": lambda db, b: db.execute(
        "DELETE FROM envelopes WHERE sender!=? AND seq>40", (b,)
    ),
    "changed seq": lambda db, b: db.execute("UPDATE envelopes SET seq=99 WHERE sender=? AND seq=20", (b,)),
    "seq stored as text": lambda db, b: db.execute("UPDATE envelopes SET seq='7th' WHERE sender=? AND seq=7", (b,)),
    "checkpoint number stored as text": lambda db, b: db.execute("UPDATE checkpoints SET n='1st' WHERE n=1"),
    "deleted receipts and a checkpoint": lambda db, b: db.executescript(
        "DELETE FROM checkpoints WHERE n=1; DELETE FROM receipts WHERE rowid % 2 = 0;"
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_tampered_store_is_reported_alike_three_ways(
    built: tuple[Path, str, dict[str, bytes], str], tmp_path: Path, attack: str
) -> None:
    store = tampered(built, tmp_path, lambda db: ATTACKS[attack](db, built[3]))
    serial, streamed, parallel = three_ways(store, built[1], built[2])
    assert serial["problems"], f"{attack} was not found at all"
    assert serial == streamed == parallel


def test_random_bit_flips_are_reported_alike_three_ways(
    built: tuple[Path, str, dict[str, bytes], str], tmp_path: Path
) -> None:
    rng = random.Random(20261202)
    db = sqlite3.connect(built[0] / "ledger.sqlite")
    rows = db.execute("SELECT rowid, length(raw) FROM envelopes").fetchall()
    db.close()
    for n in range(8):
        rowid, size = rng.choice(rows)
        at = rng.randrange(size)

        def flip(db: sqlite3.Connection, rowid: int = rowid, at: int = at) -> None:
            (raw,) = db.execute("SELECT raw FROM envelopes WHERE rowid=?", (rowid,)).fetchone()
            db.execute("UPDATE envelopes SET raw=? WHERE rowid=?", (_flip(bytes(raw), at), rowid))

        store = tampered(built, tmp_path / str(n), flip)
        serial, streamed, parallel = three_ways(store, built[1], built[2])
        assert serial["problems"], f"a flip at byte {at} of row {rowid} was not found"
        assert serial == streamed == parallel, (rowid, at)


def test_cli_verify_over_a_large_line_uses_workers_and_agrees(
    built: tuple[Path, str, dict[str, bytes], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command itself, with the threshold for workers lowered so this small line uses them."""
    home = tmp_path / "copy"
    shutil.copytree(built[0], home)
    script = (
        "import sys; from redline.ledger import verify; verify.PARALLEL_FROM = 10; verify.BATCH = 7; "
        "from redline.cli import main; sys.argv = ['redline', 'verify', '--station', sys.argv[1], '--json']; main()"
    )
    out = subprocess.run([sys.executable, "-c", script, str(home)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and '"ok": true' in out.stdout, out.stdout + out.stderr
    ledger = Ledger(home / "ledger.sqlite")
    try:
        with ledger.stored_line(built[1]) as held:
            assert verify.workers_for(held) == 0  # the real threshold: a line this small stays in process
    finally:
        ledger.close()


@pytest.mark.slow  # worker processes
def test_people_and_a_forged_signature_deep_in_a_chain_alike_with_and_without_workers(tmp_path: Path) -> None:
    """The workers hand the gate each envelope as they opened it, its decoded content included:
    the person signatures (one valid, one under a key the roster does not hold) and the first
    failing entry, a forged signature many runs deep in each chain, are reported exactly as when
    the gate opens every envelope itself."""
    from tests.test_keys import root_of, roots
    from tests.test_keys_people import ack, person, publish

    sp = SessionPair(tmp_path / "pair", paths=1)
    sp.run()
    orlov, key = person("Dezhurny Orlov", root_of(sp.dir_b))
    publish(sp, [orlov])
    for i in range(40):
        sp.send("a", f"EUCOM {i}")
        sp.send("b", f"NDMC {i}")
        if i % 6 == 0:
            sp.run()
        if i == 20:
            ack(sp, orlov, key)
            ack(sp, orlov, person("Dezhurny Orlov", None)[1])  # a key the roster does not pin
    sp.run()
    line, keys, fp_a, fp_b = sp.line, roots(sp), sp.a.us, sp.b.us
    sp.close()

    def report(store: Path, workers: int) -> dict[str, Any]:
        ledger = Ledger(store)
        try:
            with ledger.stored_line(line, "EUCOM") as held:
                r = verify_line(held, keys, workers=workers)
        finally:
            ledger.close()
        return {**summary(r), "people": r.people, "people_invalid": r.people_invalid, "flagged": r.flagged}

    intact = [report(sp.dir_a.path / "ledger.sqlite", w) for w in (0, 2)]
    assert intact[0] == intact[1] and intact[0]["problems"] == []
    assert intact[0]["people_invalid"] == 1 and intact[0]["people"][0].startswith("person signatures of NDMC: 1 valid")

    def forge(db: sqlite3.Connection) -> None:
        for sender, seq in ((fp_b, 33), (fp_a, 38)):
            _edit_raw(db, sender, seq, lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]))

    store = tampered((sp.dir_a.path, line, keys, fp_b), tmp_path, forge)
    serial, parallel = (report(store, w) for w in (0, 2))
    assert serial == parallel
    # NDMC's forgery comes first in causal order; EUCOM's chain stops, unreported, at the first
    # envelope that had seen past it (that break is the problem, reported there).
    assert [p.split(": ", 1)[0] for p in serial["problems"]] == [f"line {line[:8]}, NDMC chain, entry 33"]
    assert "signature does not verify" in serial["problems"][0]
    assert serial["chains"][fp_b] == 32 and 0 < serial["chains"][fp_a] < 38


def test_an_envelope_a_worker_opened_arrives_equal_to_the_one_it_opened(built: Built) -> None:
    """What crosses from a worker is the envelope ``open_envelope`` returned, header, bytes, id and
    decoded content alike; a row it refuses comes back as the row, for the gate to open."""
    import marshal

    from redline.envelope import open_envelope, split

    store, line, roots, _ = built
    ledger = Ledger(store / "ledger.sqlite")
    try:
        with ledger.stored_line(line, "EUCOM") as held:
            keys = verify._verified_keys(held, roots, LineReport(line, {}))
            rows = [row for fp in held.stations() for row in held.chain(fp)][::7]
    finally:
        ledger.close()

    def key(station: str, key_id: str) -> bytes:
        return keys[station][key_id]

    rows[1] = verify.StoredRow(rows[1].seq, rows[1].id, _flip(rows[1].raw, len(rows[1].raw) - 1))
    got = verify._received(marshal.loads(marshal.dumps([verify._answer_row(row, key) for row in rows])))
    assert got[1].opened is None and got[1].raw == rows[1].raw
    for row, nxt in zip(rows[2:], got[2:], strict=True):
        env = open_envelope(split(row.raw), key)
        assert nxt.opened == env and nxt.opened.header == env.header and nxt.opened.parsed == env.parsed
        assert nxt.opened.content() == env.content() and nxt.seen == env.header.seen_seq
        assert (nxt.seq, nxt.id, nxt.leaf) == (row.seq, row.id, verify.merkle.leaf_hash(bytes.fromhex(env.id)))


@pytest.mark.slow  # worker processes
def test_a_verify_worker_that_dies_is_a_storage_error_not_a_hang(built: Built) -> None:
    """A worker killed (out of memory, an operator's kill) leaves tasks that nobody will answer:
    the replay says so in one line instead of waiting for them, and the next task is refused too."""
    from redline.errors import StorageError

    store, line, _, _ = built
    ledger = Ledger(store / "ledger.sqlite")
    workers = verify._Workers(2, {})
    try:
        with ledger.stored_line(line, "EUCOM") as held:
            part = next(held.chain_parts(held.stations()[0], 5))
        assert workers._result(workers._submit(part))  # answered (every row refused: no keys given)
        workers._procs[0].kill()
        workers._procs[0].join()
        with pytest.raises(StorageError, match="a verify worker stopped"):
            workers._result(workers._sent + 1)  # a task no worker will ever answer
        with pytest.raises(StorageError, match="a verify worker stopped"):
            workers._submit(part)
    finally:
        workers.close()
        ledger.close()


_FAULTS = """
import marshal, os, resource, sys
from redline.ledger import verify
kept = verify._keep_freed_memory() if sys.argv[1] == "keep" else None
def task(i):  # an answer's size and shape: 512 opened envelopes of about 3 KB each, marshalled
    return marshal.dumps([(i, "a" * 64, {"header": {"k": "x" * 300}, "body": os.urandom(1100), "text": "y" * 1000})
                          for _ in range(512)])
for i in range(3):
    task(i)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(10):
    answer = task(i)
    del answer
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.slow  # two Python processes
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_a_verify_worker_reuses_the_memory_of_its_last_answer_instead_of_faulting_it_in_again() -> None:
    """A worker's answers are megabytes each; glibc gave each one back to the kernel when freed, and
    the next task faulted every page in again (system time, about 2 µs per envelope). With the
    worker's setting, the next answer reuses them."""

    def faults(how: str) -> tuple[str, float]:
        out = subprocess.run([sys.executable, "-c", _FAULTS, how], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        kept, per_task = out.stdout.split()
        return kept, float(per_task)

    assert faults("keep") == ("True", 0.0)
    assert faults("as is")[1] > 100  # the default faults an answer's pages in again: what the test would miss
