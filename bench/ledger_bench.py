"""Ledger and verification speed (issue 2), each figure next to this run's machine limits.

- **append throughput**: envelopes/s stored through ``Ledger.append`` inside ``Ledger.batch()``
  (group commit: one transaction, one fsync per batch) at batch sizes 1, 16 and 256, from
  envelopes sealed beforehand (1 KiB of text each); every store is a fresh WAL/FULL ledger, warmed
  up with the same batch size before timing. One extra row with ``synchronous=OFF`` shows what the
  Python and SQLite work costs without any fsync (not durable; for the breakdown only).
- **seal** and **open**: µs per envelope for ``envelope.seal`` (canonical JSON + body hash +
  Ed25519 sign) and ``envelope.open_envelope`` (split + canonical parse + body hash + verify).
- **verify_line**: envelopes/s over a transcript of 20,000 envelopes in two chains (10,000 per
  station, every ``seen`` linking the other chain's latest), as ``redline verify`` does it:
  ``Ledger.line_data`` (read) then ``verify_line`` (check).

Run alone: ``.venv/bin/python -m bench.ledger_bench`` (measures the limits first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import limits as machine
from bench.common import Figures, Row, no_gc, per_op_us, table
from redline.envelope import Envelope, open_envelope, seal
from redline.home import StationDir, StationKeys
from redline.ledger.interface import LedgerStore
from redline.ledger.sqlite import Ledger
from redline.ledger.verify import verify_line
from redline.testing import make_station, pair_directly

TEXT = "x" * 1024  # 1 KiB of message text, as in shared/LIMITS.md
WALL = 1_700_000_000_000

# batch size -> (warm-up envelopes, timed envelopes)
BATCHES: dict[int, tuple[int, int]] = {1: (1000, 2000), 16: (1024, 8000), 256: (2560, 20_480)}


@dataclass(frozen=True)
class Pair:
    dir_a: StationDir
    dir_b: StationDir
    keys_a: StationKeys
    keys_b: StationKeys
    line: str


def make_pair(root: Path) -> Pair:
    a = make_station(root, "EUCOM", "en", 7401)
    b = make_station(root, "NDMC", "ru", 7501)
    line = pair_directly(a, b)
    return Pair(a, b, a.load_keys(), b.load_keys(), line)


def seal_next(keys: StationKeys, line: str, prev: Envelope | None, seen: Envelope | None, lang: str) -> Envelope:
    """The next envelope of ``keys``' chain after ``prev``, having seen ``seen`` of the other chain."""
    return seal(
        keys.signing, line=line, sender=keys.fingerprint, key=keys.key_id, seq=prev.seq + 1 if prev else 1,
        sent_at=WALL, kind="TEXT", prio="ROUTINE", prev=prev.id if prev else None,
        seen_seq=seen.seq if seen else 0, seen_id=seen.id if seen else None, lang=lang,
        content={"text": TEXT}, salt=os.urandom(16),
    )  # fmt: skip


def one_chain(keys: StationKeys, line: str, n: int) -> list[Envelope]:
    chain: list[Envelope] = []
    prev: Envelope | None = None
    for _ in range(n):
        prev = seal_next(keys, line, prev, None, "en")
        chain.append(prev)
    return chain


@contextmanager
def fresh_ledger(folder: Path, station: str, name: str) -> Iterator[Ledger]:
    ledger = Ledger(folder / f"{name}.sqlite", create=True, station=station)
    try:
        yield ledger
    finally:
        ledger.close()


def append_batches(ledger: LedgerStore, envs: list[Envelope], batch: int) -> list[float]:
    """Append ``envs`` in group commits of ``batch``; return the seconds each batch took."""
    times: list[float] = []
    for i in range(0, len(envs), batch):
        start = time.perf_counter()
        with ledger.batch():
            for env in envs[i : i + batch]:
                ledger.append(env, WALL)
        times.append(time.perf_counter() - start)
    return times


def append_throughput(
    folder: Path, p: Pair, chain: list[Envelope], batch: int, *, sync: str = "FULL", scale: int = 1
) -> Figures:
    warm, timed = (n // scale for n in BATCHES[batch])
    with fresh_ledger(folder, p.keys_a.fingerprint, f"append-{batch}-{sync}") as ledger:
        if sync != "FULL":
            ledger._db.execute(f"PRAGMA synchronous={sync}")  # benchmark-only: isolate the CPU part
        append_batches(ledger, chain[:warm], batch)
        with no_gc():
            times = append_batches(ledger, chain[warm : warm + timed], batch)
    return {"per_s": timed / sum(times), "batch_p50_us": statistics.median(times) * 1e6}


def seal_open_cost(p: Pair) -> Figures:
    keys = p.keys_a
    sample = seal_next(keys, p.line, None, None, "en")
    raw = sample.encode()
    public = bytes(keys.signing.verify_key)

    def lookup(sender: str, key_id: str) -> bytes:
        return public

    with no_gc():
        seal_us = per_op_us(lambda: seal_next(keys, p.line, None, None, "en"), 2000)
        open_us = per_op_us(lambda: open_envelope(raw, lookup), 2000)
    return {"seal_us": seal_us, "open_us": open_us, "envelope_bytes": float(len(raw))}


def build_transcript(p: Pair, per_chain: int) -> Ledger:
    """Two chains of ``per_chain`` envelopes each in EUCOM's store, seen-links alternating."""
    ledger = p.dir_a.open_ledger()
    a_last: Envelope | None = None
    b_last: Envelope | None = None
    pending: list[Envelope] = []
    for _ in range(per_chain):
        a_last = seal_next(p.keys_a, p.line, a_last, b_last, "en")
        b_last = seal_next(p.keys_b, p.line, b_last, a_last, "ru")
        pending += (a_last, b_last)
        if len(pending) >= 256:
            with ledger.batch():
                for env in pending:
                    ledger.append(env, WALL)
            pending.clear()
    with ledger.batch():
        for env in pending:
            ledger.append(env, WALL)
    return ledger


def verify_speed(p: Pair, per_chain: int = 10_000) -> Figures:
    ledger = build_transcript(p, per_chain)
    try:
        roots = {p.keys_a.fingerprint: p.keys_a.root_public, p.keys_b.fingerprint: p.keys_b.root_public}
        with no_gc():
            start = time.perf_counter()
            data = ledger.line_data(p.line, "EUCOM")
            loaded = time.perf_counter()
            report = verify_line(data, roots)
            done = time.perf_counter()
    finally:
        ledger.close()
    n = sum(report.chain_sizes.values())
    if not report.ok or n != 2 * per_chain:
        raise RuntimeError(f"the benchmark transcript did not verify: {report.problems[:1]}, {report.chain_sizes}")
    return {
        "envelopes": float(n),
        "load_s": loaded - start,
        "verify_s": done - loaded,
        "verify_per_s": n / (done - loaded),
        "total_per_s": n / (done - start),
    }


def measure(limits: Figures, folder: Path | None = None, *, quick: bool = False) -> Figures:
    f: Figures = {}
    with tempfile.TemporaryDirectory(prefix="redline-ledger-bench-", dir=folder) as tmp:
        root = Path(tmp)
        p = make_pair(root / "stations")
        f.update(seal_open_cost(p))
        longest = max(w + t for w, t in BATCHES.values())
        chain = one_chain(p.keys_a, p.line, longest // (10 if quick else 1))
        scale = 10 if quick else 1
        for batch in BATCHES:
            r = append_throughput(root, p, chain, batch, scale=scale)
            f[f"append_{batch}_per_s"], f[f"append_{batch}_batch_p50_us"] = r["per_s"], r["batch_p50_us"]
        r = append_throughput(root, p, chain, 256, sync="OFF", scale=scale)
        f["append_256_nosync_per_s"] = r["per_s"]
        v = verify_speed(p, 1000 if quick else 10_000)
        f.update({f"verify_{k}": val for k, val in v.items()})
    f["append_cpu_us"] = 1e6 / f["append_256_nosync_per_s"]
    return f


def rows(f: Figures, lim: Figures) -> list[Row]:
    commit_rate = 1e6 / lim["sqlite_full_p50_us"]
    out = [
        Row("append, batch 1 (one fsync per envelope)", f["append_1_per_s"], "/s",
            "1 / SQLite FULL commit", commit_rate),
        Row("append, batch 1: one commit, median", f["append_1_batch_p50_us"], "µs",
            "SQLite FULL commit median", lim["sqlite_full_p50_us"]),
        Row("append, batch 16", f["append_16_per_s"], "/s",
            "SQLite FULL, 100 rows/commit", lim["sqlite_full_100rows_per_s"]),
        Row("append, batch 256", f["append_256_per_s"], "/s",
            "SQLite FULL, 100 rows/commit", lim["sqlite_full_100rows_per_s"]),
        Row("append, batch 256: one commit of 256, median", f["append_256_batch_p50_us"], "µs",
            note=f"{f['append_256_batch_p50_us'] / 256:.1f} µs per envelope"),
        Row("append, batch 256, synchronous=OFF (CPU only)", f["append_256_nosync_per_s"], "/s",
            note=f"{f['append_cpu_us']:.1f} µs of Python+SQLite per append"),
        Row("seal one envelope (1 KiB text)", f["seal_us"], "µs", "Ed25519 sign", lim["sign_us"],
            note=f"envelope {f['envelope_bytes']:.0f} bytes; LIMITS.md prototype 24.5 µs"),
        Row("open (verify) one envelope", f["open_us"], "µs", "Ed25519 verify", lim["verify_us"],
            note="LIMITS.md prototype 45.2 µs"),
        Row(f"verify_line over {f['verify_envelopes']:,.0f} envelopes", f["verify_verify_per_s"], "/s",
            "1 / Ed25519 verify", 1e6 / lim["verify_us"],
            note=f"{f['verify_verify_s']:.2f} s; {1e6 / f['verify_verify_per_s']:.1f} µs per envelope"),
        Row("line_data + verify_line (what `redline verify` does)", f["verify_total_per_s"], "/s",
            "1 / Ed25519 verify", 1e6 / lim["verify_us"], note=f"reading took {f['verify_load_s']:.2f} s"),
    ]  # fmt: skip
    return out


def report(f: Figures, lim: Figures) -> str:
    return table("Ledger and verification (issue 2)", rows(f, lim))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loops: a smoke run, not figures")
    args = parser.parse_args(argv)
    lim = machine.measure(quick=args.quick)
    print(machine.report(lim))
    print()
    print(report(measure(lim, quick=args.quick), lim))


if __name__ == "__main__":
    main()
