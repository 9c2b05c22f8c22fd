"""Where `redline verify`'s CPU per envelope goes, stage by stage, beside one core's Ed25519 rate.

``.venv/bin/python -m bench.verify_stages STATION [--rows N] [--repeats R]`` on a stopped station's
folder (``bench.memory --keep DIR`` leaves two with 1,000,000 envelopes; any station with a line
will do). Each stage is timed on one core over the first ``N`` rows of each chain (best of ``R``
runs, collector off), the way the parallel verify runs it (redline/ledger/verify.py):

- in a worker: read the rows (``ChainPart.rows``), ``open_envelope`` them (of which the Ed25519
  check alone, as ``identity.verify`` makes it), answer each (``_answer_row``) and marshal the answer;
- in the verifier: take the answer back (``_received``) and replay both chains through the gate
  (``_replay_chains``: the gate's rules, the Merkle trees).

It then does the arithmetic of issue 12's aim (verify at 1.4x one core's Ed25519 verify rate on 2
cores): the CPU per envelope the stages add up to, the rate two cores of our own would give, and
the CPU per envelope 1.4x allows. Not measured here: the system time of handing answers over a
socket, the worker's share of the verifier's thread reading them and the integrity check running
beside (``bench.memory``'s verify figures hold those: compare its CPU per envelope with the sum).
"""

from __future__ import annotations

import argparse
import marshal
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from bench.common import Figures, no_gc
from bench.limits import crypto
from redline.envelope import DOMAIN, open_envelope, split
from redline.gate import TrustedLine
from redline.home import StationDir
from redline.identity import verify
from redline.ledger import verify as V
from redline.ledger.sqlite import Ledger
from redline.ledger.verify import LineReport


def best_us(fn: Callable[[], object], n: int, repeats: int) -> float:
    """Best over ``repeats`` runs of ``fn`` (one pass over ``n`` envelopes), in µs per envelope."""
    best = float("inf")
    with no_gc():
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def measure(station: Path, rows: int, repeats: int) -> Figures:
    home = StationDir(station)
    ledger = Ledger.open_read_only(home.ledger_path, raw_check=False)
    try:
        record = ledger.lines()[0]
        root = bytes.fromhex((home.keys / "root.pub").read_text().strip())
        roots = {ledger.station: root, record.peer: bytes.fromhex(record.peer_root)}
        with ledger.stored_line(record.line) as held:
            return _measure(held, roots, rows, repeats)
    finally:
        ledger.close()


def _measure(held: Any, roots: dict[str, bytes], rows: int, repeats: int) -> Figures:
    stations = held.stations()
    keys = V._verified_keys(held, roots, LineReport(held.line, held.names))

    def key(station: str, key_id: str) -> bytes:
        return keys[station][key_id]

    # the first ``rows`` rows of each chain, as the parts a worker is handed
    parts = {fp: list(islice(held.chain_parts(fp, V.BATCH), max(1, rows // V.BATCH))) for fp in stations}
    ours = parts[stations[0]]
    stored = [row for part in ours for row in part.rows()]
    n = len(stored)
    raws = [split(row.raw) for row in stored]
    opened = [open_envelope(raw, key) for raw in raws]
    answers = [marshal.dumps([V._answer_row(row, key) for row in part.rows()]) for part in ours]

    def read() -> None:
        for part in ours:
            part.rows()

    def ed25519() -> None:
        for raw, env in zip(raws, opened, strict=True):
            verify(key(env.header.sender, env.header.key), DOMAIN, raw.header_bytes, raw.sig, "bench")

    def opening() -> None:
        for row in stored:
            open_envelope(split(row.raw), key)

    def answer() -> None:
        for part in ours:
            marshal.dumps([V._answer_row(row, key) for row in part.rows()])

    def receive() -> None:
        for payload in answers:
            V._received(marshal.loads(payload))

    # the replay: both chains' first rows, opened ahead as the workers hand them over
    batches = {fp: [V._received(marshal.loads(marshal.dumps([V._answer_row(r, key) for r in p.rows()])))
                    for p in parts[fp]] for fp in stations}  # fmt: skip
    replayed = [0]

    def replay() -> None:
        report = LineReport(held.line, held.names)
        state = V._Replay(stations)
        gate = TrustedLine(held.line, keys, state, roots=roots, people=True)
        chains = {fp: V._ChainReader(_each(batches[fp]), V._Counted(None)) for fp in stations}
        V._replay_chains(held, chains, gate, state, report)
        replayed[0] = sum(report.chain_sizes.values())

    figures: Figures = {"rows": float(n)}
    figures["ed25519_reference_us"] = crypto()["verify_us"]
    for name, fn in (("read_us", read), ("ed25519_us", ed25519), ("open_envelope_us", opening),
                     ("worker_answer_us", answer), ("receive_us", receive)):  # fmt: skip
        figures[name] = best_us(fn, n, repeats)
    replay()  # how many envelopes the replay accepts of these rows (a chain cut short stops where it sees beyond)
    figures["replay_us"] = best_us(replay, max(1, replayed[0]), repeats)
    figures["ed25519_reference_after_us"] = crypto()["verify_us"]
    return figures


def _each(batches: list[list[Any]]) -> Iterator[list[Any]]:
    yield from batches


def report(f: Figures) -> str:
    ref = (f["ed25519_reference_us"] + f["ed25519_reference_after_us"]) / 2
    worker = f["read_us"] + f["worker_answer_us"]
    verifier = f["receive_us"] + f["replay_us"]
    total = worker + verifier
    rest = f["open_envelope_us"] - f["ed25519_us"]
    lines = [
        f"verify, stage by stage, µs per envelope (best of runs over {f['rows']:.0f} rows of one chain, one core)",
        "",
        "| stage | µs per envelope |",
        "|---|---|",
        f"| one core's Ed25519 verify (bench.limits: 512-byte message), before / after | "
        f"{f['ed25519_reference_us']:.2f} / {f['ed25519_reference_after_us']:.2f} |",
        f"| worker: read the rows (ChainPart.rows) | {f['read_us']:.2f} |",
        f"| worker: open_envelope | {f['open_envelope_us']:.2f} |",
        f"|   of which the Ed25519 check (identity.verify) | {f['ed25519_us']:.2f} |",
        f"|   of which the rest (split, header, body, hashes, Envelope) | {rest:.2f} |",
        f"| worker: open and answer (_answer_row, marshal) | {f['worker_answer_us']:.2f} |",
        f"| verifier: take the answer back (marshal, _received) | {f['receive_us']:.2f} |",
        f"| verifier: replay through the gate (rules, Merkle trees) | {f['replay_us']:.2f} |",
        f"| in all (no socket, no integrity check) | {total:.2f} |",
        "",
        f"Two cores of our own would verify at about 2 x {ref:.1f} / {total:.1f} = {2 * ref / total:.2f}x one core's "
        f"Ed25519 rate; 1.4x allows {2 * ref / 1.4:.1f} µs of CPU per envelope in all, of which the Ed25519 check "
        f"takes {f['ed25519_us']:.1f}: {2 * ref / 1.4 - f['ed25519_us']:.1f} µs for everything else, against "
        f"{total - f['ed25519_us']:.1f} µs here.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("station", type=Path, help="a stopped station's folder (bench.memory --keep DIR leaves two)")
    parser.add_argument("--rows", type=int, default=2048, help="rows of each chain to time (whole batches)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    print(report(measure(args.station, args.rows, args.repeats)))


if __name__ == "__main__":
    main()
