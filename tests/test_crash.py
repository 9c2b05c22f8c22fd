"""Guarantee 1 under kill -9: a crash during a group commit loses nothing reported accepted.

A real writer process (tests/helpers/crash_writer.py) appends to a real station's SQLite ledger in
batches of 50, each batch one ``ledger.batch()`` holding outbox acceptances, envelopes and
mark-signed updates, and reports a seq only after COMMIT returned. The parent kills it with SIGKILL
at a random moment, again and again, restarting it from whatever the store holds. Afterwards the
store must hold every reported seq, whole batches only (no half-committed group), a contiguous
chain that verifies from bytes, and an outbox that agrees with the chain.

What this can and cannot show: SIGKILL ends the process, not the machine, so the OS page cache
survives and this does not prove fsync ordering (``synchronous=FULL`` is checked in
test_ledger.py). It does prove that "reported" never runs ahead of COMMIT, that SQLite's WAL
recovery leaves no partial batch, and that the ledger reopens and continues after any interruption.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redline.ledger.sqlite import Ledger
from redline.ledger.verify import verify_line
from redline.testing import make_station, pair_directly
from tests.procs import kill_9_and_read

HELPER = Path(__file__).parent / "helpers" / "crash_writer.py"
BATCH = 50
ROUNDS = 14


@pytest.mark.timeout(90)
def test_kill_minus_nine_during_group_commits_loses_nothing_reported(tmp_path: Path) -> None:
    a = make_station(tmp_path, "EUCOM", "en", 7401)
    b = make_station(tmp_path, "NDMC", "ru", 7501)
    line = pair_directly(a, b)
    keys_a, keys_b = a.load_keys(), b.load_keys()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    started = time.monotonic()

    reported = 0  # highest seq any writer said was committed
    progressed = 0  # rounds in which the writer reported at least one commit
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, str(HELPER), str(a.path), line, str(BATCH)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if not ready.startswith("ready "):
                proc.kill()
                raise AssertionError(f"writer did not start (seed {seed}): {ready!r} {proc.communicate()[1]}")
            head = int(ready.split()[1])
            assert head >= reported, f"round {round_no} (seed {seed}): reopened at {head} but {reported} was reported"
            assert head % BATCH == 0, f"round {round_no} (seed {seed}): reopened at {head}, inside a batch"
            time.sleep(rng.uniform(0.005, 0.300))
            out, err = kill_9_and_read(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"writer died on its own (seed {seed}): {err}"
        seqs = [int(s) for s in out.split()]
        assert seqs == sorted(seqs) and all(s % BATCH == 0 for s in seqs), seqs
        if seqs:
            assert seqs[0] == head + BATCH, f"writer skipped or repeated a batch after seq {head}: {seqs[:3]}"
            reported = seqs[-1]
            progressed += 1
    assert progressed >= ROUNDS // 2, f"the writer rarely got to commit (seed {seed}); the test proved little"
    assert reported >= 10 * BATCH

    # Every reported seq is there; only whole batches; nothing past a gap.
    db = sqlite3.connect(a.ledger_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        held = [
            r[0] for r in db.execute("SELECT seq FROM envelopes WHERE sender=? ORDER BY seq", (keys_a.fingerprint,))
        ]
        outbox = db.execute("SELECT idem, seq, envelope_id FROM outbox ORDER BY local").fetchall()
        ids = dict(db.execute("SELECT seq, id FROM envelopes WHERE sender=?", (keys_a.fingerprint,)).fetchall())
    finally:
        db.close()
    assert held, "nothing was stored"
    top = held[-1]
    assert top >= reported, f"seq {reported} was reported committed but the store ends at {top} (seed {seed})"
    assert held == list(range(1, top + 1)), f"the chain has gaps (seed {seed})"
    assert top % BATCH == 0, f"a partial group commit survived the crash: head {top} (seed {seed})"
    # The outbox committed with the envelopes: each accepted message is signed, none half-way.
    assert [(idem, seq, eid) for idem, seq, eid in outbox] == [(f"m{n}", n, ids[n]) for n in range(1, top + 1)]

    # The store verifies from bytes against roots from outside it, and the ledger carries on.
    ledger = Ledger(a.ledger_path)
    try:
        assert ledger.head(line, keys_a.fingerprint)[0] == top
        assert ledger.pending_count(line) == 0
        report = verify_line(
            ledger.line_data(line, "EUCOM"),
            {keys_a.fingerprint: keys_a.root_public, keys_b.fingerprint: keys_b.root_public},
        )
        assert report.ok, [str(p) for p in report.problems]
        assert report.chain_sizes[keys_a.fingerprint] == top
        assert ledger.log(line, keys_a.fingerprint).size == top
    finally:
        ledger.close()
    assert time.monotonic() - started < 60, "keep this test under a minute"
