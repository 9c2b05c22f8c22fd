"""A station holding 1,000,000 envelopes: its memory idle and under load, its start-up time, and
``redline verify`` over that store (issue 6, items 4 and 6).

How the store is made (quickly, but every byte as a station would hold it):

1. EUCOM and NDMC are paired by the real ceremony (``tests/procs.paired_stations``, two paths) and
   stopped once both hold the same transcript.
2. Two worker processes seal the two chains with the stations' own signing keys
   (``envelope.seal``, 1 KiB of text each, alternating ``ROUTINE`` TEXT), in rounds of 2,000: in
   round k each side's envelopes name the other side's last envelope of round k-1 as ``seen``, so
   prev links and seen links are valid and the two workers seal in parallel.
3. EUCOM's store takes them through ``Ledger.append`` in batches of one round (about 4,000
   envelopes per transaction; ``synchronous=OFF`` while filling, a checkpoint of the WAL at the end:
   setup, not measured). NDMC's store gets the same rows copied with one ``INSERT ... SELECT``
   (the rows are byte-identical; this halves the set-up time).
4. Both stores get what two stations that exchanged all this would hold: each side's signed
   receipt for the other's chain head, and one co-signed checkpoint over both chain heads (so the
   stations do not resend or re-checkpoint a million envelopes when they start).

Then both stations are started with ``redline serve`` (timed: the start replays every envelope
into the operations engine), the line is let settle, and EUCOM's and NDMC's resident size
(``VmRSS`` in ``/proc/PID/status``) is read **idle** (after 3 s of heartbeats) and **under load**
(sampled every 100 ms while 20,000 1 KiB messages are sent pipelined through EUCOM); ``VmHWM``
(the peak since the start, start-up replay included) is read too. The same is read for a fresh,
empty pair first, as the baseline.

Finally the stations are stopped and ``redline verify --json`` runs on EUCOM's store as a separate
process (what an operator runs): envelopes per second over its wall time, set against one core
doing nothing but Ed25519 verifies, and its peak resident size.

``--quick``: 100,000 envelopes, 2,000 messages of load (the report says so).
Run alone: ``.venv/bin/python -m bench.memory [--quick] [--envelopes N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Figures, Row, table
from bench.line_bench import TEXT, cpu_seconds
from redline.envelope import Envelope, seal
from redline.home import StationDir
from redline.ledger.sqlite import Ledger
from redline.statements import Checkpoint, Cosign, Head, Receipt
from tests.procs import StationProc, paired_stations, pipelined

RSS_AIM_MB = 200.0
STARTUP_AIM_S = 5.0  # issue "close to the machine": start-up in seconds at any size
VERIFY_AIM = 1.4  # x one core's Ed25519 verify rate, with both cores
VERIFY_RSS_AIM_MB = 300.0
ROUND = 2000
FULL, QUICK = 1_000_000, 100_000
REPO = Path(__file__).resolve().parent.parent


# -- sealing, in two worker processes ---------------------------------------------------------------
def _sealer(conn: multiprocessing.connection.Connection, home: str, line: str, lang: str) -> None:
    """Seal the next ``count`` envelopes of this station's chain for each request on ``conn``."""
    keys = StationDir(Path(home)).load_keys()
    seq, prev = conn.recv()
    while (req := conn.recv()) is not None:
        seen_seq, seen_id, count, sent_at = req
        out: list[Envelope] = []
        for i in range(count):
            seq += 1
            env = seal(
                keys.signing, line=line, sender=keys.fingerprint, key=keys.key_id, seq=seq, sent_at=sent_at + i,
                kind="TEXT", prio="ROUTINE", prev=prev, seen_seq=seen_seq, seen_id=seen_id, lang=lang,
                content={"text": TEXT}, salt=os.urandom(16),
            )  # fmt: skip
            prev = env.id
            out.append(env)
        conn.send(out)
    conn.close()


def fill(home_a: Path, home_b: Path, line: str, n: int) -> Figures:
    """Add ``n`` envelopes (half per chain) to both stores, with receipts and a checkpoint."""
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    sa, sb = StationDir(home_a), StationDir(home_b)
    ka, kb = sa.load_keys(), sb.load_keys()
    fa, fb = ka.fingerprint, kb.fingerprint
    la = sa.open_ledger()
    heads = {fa: la.head(line, fa), fb: la.head(line, fb)}
    pipes: dict[str, multiprocessing.connection.Connection] = {}
    workers = []
    for fp, home, lang in ((fa, home_a, "en"), (fb, home_b, "ru")):
        parent, child = ctx.Pipe()
        w = ctx.Process(target=_sealer, args=(child, str(home), line, lang), daemon=True)
        w.start()
        child.close()
        parent.send(heads[fp])
        pipes[fp] = parent
        workers.append(w)
    wall = int(time.time() * 1000) - n  # one ms per envelope, ending about now
    per_chain = n // 2
    done = 0
    try:
        la._db.execute("PRAGMA synchronous=OFF")  # filling is set-up, not a measurement

        def ask(k: int) -> None:
            count = min(ROUND, per_chain - k)
            pipes[fa].send((heads[fb][0], heads[fb][1], count, wall + 2 * k))
            pipes[fb].send((heads[fa][0], heads[fa][1], count, wall + 2 * k + 1))

        ask(0)
        while done < per_chain:
            ea: list[Envelope] = pipes[fa].recv()
            eb: list[Envelope] = pipes[fb].recv()
            heads[fa], heads[fb] = (ea[-1].seq, ea[-1].id), (eb[-1].seq, eb[-1].id)
            done += len(ea)
            if done < per_chain:
                ask(done)  # the workers seal the next round while this one is stored
            with la.batch():
                for ia, ib in zip(ea, eb, strict=True):
                    la.append(ia, ia.header.sent_at)
                    la.append(ib, ib.header.sent_at)
        for p in pipes.values():
            p.send(None)
        sealed = time.perf_counter()
        finish_store(la, sa, sb, line, ka, kb)
        la._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        la.close()
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
    copied = time.perf_counter()
    return {"fill_seal_append_s": sealed - started, "fill_copy_s": copied - sealed, "envelopes_added": 2.0 * done}


def finish_store(la: Ledger, sa: StationDir, sb: StationDir, line: str, ka: Any, kb: Any) -> None:
    """Copy the new rows to NDMC's store; give both stores receipts and one co-signed checkpoint."""
    fa, fb = ka.fingerprint, kb.fingerprint
    lb = sb.open_ledger()
    try:
        lb._db.execute("PRAGMA synchronous=OFF")
        base = {fp: lb.head(line, fp)[0] for fp in (fa, fb)}
        cols = ", ".join(r[1] for r in lb._db.execute("PRAGMA table_info(envelopes)"))
        lb._db.execute("ATTACH DATABASE ? AS src", (str(sa.ledger_path),))
        with lb.batch():
            lb._db.execute(
                f"INSERT INTO main.envelopes ({cols}) SELECT {cols} FROM src.envelopes "
                "WHERE line=? AND ((sender=? AND seq>?) OR (sender=? AND seq>?)) ORDER BY rowid",
                (line, fa, base[fa], fb, base[fb]),
            )
            # What the ledger keeps with each commit (schema 2): the same chains have the same Merkle
            # subtrees and byte totals, so they are copied too.
            lb._db.execute("INSERT OR IGNORE INTO main.merkle SELECT * FROM src.merkle WHERE line=?", (line,))
            copy = "INSERT OR REPLACE INTO main.chain_bytes SELECT * FROM src.chain_bytes WHERE line=?"
            lb._db.execute(copy, (line,))
        lb._db.execute("DETACH DATABASE src")
        lb._heads.clear()
        lb._logs.clear()
        ha, hb = la.head(line, fa), la.head(line, fb)
        if (lb.head(line, fa), lb.head(line, fb)) != (ha, hb) or ha[1] is None or hb[1] is None:
            raise RuntimeError("the copied store does not end where the original does")
        now = int(time.time() * 1000)
        rec_a = Receipt(line=line, by=fb, key=kb.key_id, of=fa, seq=ha[0], id=ha[1], received_at=now).sign(kb.signing)
        rec_b = Receipt(line=line, by=fa, key=ka.key_id, of=fb, seq=hb[0], id=hb[1], received_at=now).sign(ka.signing)
        last = la.last_checkpoint(line)
        proposer, other = (ka, kb) if fa < fb else (kb, ka)
        heads = sorted(
            (Head(station=fp, size=la.head(line, fp)[0], root=la.log(line, fp).root(la.head(line, fp)[0]).hex())
             for fp in (fa, fb)),
            key=lambda h: h.station,
        )  # fmt: skip
        proposal = Checkpoint(
            line=line, n=last[0] + 1 if last else 1, prev=last[1].digest(Checkpoint.DOMAIN) if last else None,
            heads=(heads[0], heads[1]), by=proposer.fingerprint, key=proposer.key_id, time=now,
        ).sign(proposer.signing)  # fmt: skip
        cosign = Cosign(
            line=line, checkpoint=proposal.digest(Checkpoint.DOMAIN), by=other.fingerprint, key=other.key_id, time=now
        ).sign(other.signing)
        n_cp = last[0] + 1 if last else 1
        for ledger in (la, lb):
            with ledger.batch():
                ledger.add_receipt(line, fb, ha[0], rec_a, now)
                ledger.add_receipt(line, fa, hb[0], rec_b, now)
                ledger.add_checkpoint(line, n_cp, proposal, cosign)
        lb._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        lb.close()


# -- the running stations ---------------------------------------------------------------------------
def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB (10^6 bytes)."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0]) * 1024 / 1e6
    return vals["VmRSS"], vals["VmHWM"]


def _pid(p: StationProc) -> int:
    assert p.proc is not None
    return p.proc.pid


async def start_slow(p: StationProc, timeout: float) -> float:
    """``StationProc.start`` with a longer deadline (a big store takes a while to open); seconds taken."""
    sock = StationDir(p.home).control_path
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    began = time.perf_counter()
    with open(p.log, "ab") as log:
        p.proc = subprocess.Popen(
            [sys.executable, "-m", "redline", "serve", "--station", str(p.home)], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"station exited: {p.log.read_text()[-2000:]}")
        if sock.exists():
            with contextlib.suppress(Exception):
                await p.call({"op": "status"})
                return time.perf_counter() - began
        await asyncio.sleep(0.05)
    raise RuntimeError(f"station did not start within {timeout:g} s")


async def in_sync(a: StationProc, b: StationProc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            sa, sb = await a.status_line(), await b.status_line()
            if sa["synced"] and sb["synced"] and sa["unreceipted"] == 0 and sb["unreceipted"] == 0:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the line did not get in sync")


async def idle_and_load(a: StationProc, b: StationProc, line: str, n_load: int, prefix: str) -> Figures:
    f: Figures = {}
    await asyncio.sleep(3.0)  # idle: heartbeats only
    f[f"{prefix}_idle_rss_a_mb"], _ = rss_mb(_pid(a))
    f[f"{prefix}_idle_rss_b_mb"], _ = rss_mb(_pid(b))
    if n_load:
        peak = {"a": 0.0, "b": 0.0}
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                peak["a"] = max(peak["a"], rss_mb(_pid(a))[0])
                peak["b"] = max(peak["b"], rss_mb(_pid(b))[0])
                await asyncio.sleep(0.1)

        sampler = asyncio.ensure_future(sample())
        base = (await b.status_line())["their_seq"]
        cpu = cpu_seconds(_pid(a))
        began = time.perf_counter()
        replies = await pipelined(a.home, [{"op": "send", "line": line, "text": TEXT} for _ in range(n_load)])
        if not all(r.get("ok") for r in replies):
            raise RuntimeError("a send under load was refused")
        deadline = time.monotonic() + 300
        while (await b.status_line())["their_seq"] < base + n_load:
            if time.monotonic() > deadline:
                raise RuntimeError("the load did not arrive")
            await asyncio.sleep(0.05)
        f[f"{prefix}_load_per_s"] = n_load / (time.perf_counter() - began)
        f[f"{prefix}_load_cpu_a_us"] = (sum(cpu_seconds(_pid(a))) - sum(cpu)) / n_load * 1e6
        stop.set()
        await sampler
        f[f"{prefix}_load_rss_a_mb"], f[f"{prefix}_load_rss_b_mb"] = peak["a"], peak["b"]
        f[f"{prefix}_load_n"] = float(n_load)
    f[f"{prefix}_hwm_a_mb"] = rss_mb(_pid(a))[1]
    f[f"{prefix}_hwm_b_mb"] = rss_mb(_pid(b))[1]
    return f


# -- verify -----------------------------------------------------------------------------------------
def _tree_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS of ``pid``, VmRSS summed over its descendants), in MB; 0 for what has gone."""

    def rss(p: int) -> float:
        try:
            return rss_mb(p)[0]
        except (OSError, KeyError):
            return 0.0

    def children(p: int) -> list[int]:
        out: list[int] = []
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
        return out

    below, todo = 0.0, children(pid)
    while todo:
        child = todo.pop()
        below += rss(child)
        todo += children(child)
    return rss(pid), below


def verify_cli(home: Path) -> Figures:
    """``redline verify --json`` on a stopped station's store, as a separate process: its wall time,
    the CPU it and its worker processes used, and the resident size of the verifier and of its
    workers (``VmRSS`` sampled every 50 ms; also ``wait4``'s peak, the largest single process)."""
    peaks = {"main": 0.0, "workers": 0.0, "sum": 0.0}
    main_cpu = [0.0]  # the verifier's own CPU seconds (its threads, not its workers), last sampled
    wal = home / "ledger.sqlite-wal"
    wal_mb = wal.stat().st_size / 1e6 if wal.exists() else 0.0  # a stopped station leaves none if it closed cleanly
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "redline", "verify", "--station", str(home), "--json"], stdout=out, stderr=err
        )
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    main_cpu[0] = sum(cpu_seconds(proc.pid))
                main_mb, workers_mb = _tree_rss_mb(proc.pid)
                peaks["main"] = max(peaks["main"], main_mb)
                peaks["workers"] = max(peaks["workers"], workers_mb)
                peaks["sum"] = max(peaks["sum"], main_mb + workers_mb)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - began
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, problem = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"redline verify failed ({proc.returncode}): {problem[-500:]} {text[-500:]}")
    reports = json.loads(text)
    n = sum(sum(r["chains"].values()) for r in reports)
    return {
        "verify_envelopes": float(n),
        "verify_s": seconds,
        "verify_per_s": n / seconds,
        "verify_ok": float(all(r["ok"] for r in reports)),
        # wait4's peak counts the bench's own pages the child had between fork and exec (hundreds of
        # MB after building the store): kept in the JSON for comparison, not shown; the sampled
        # figures below are the verifier's.
        "verify_peak_rss_mb": usage.ru_maxrss * 1024 / 1e6,
        "verify_rss_main_mb": peaks["main"],
        "verify_rss_workers_mb": peaks["workers"],
        "verify_rss_sum_mb": peaks["sum"],
        "verify_cpu_us": (usage.ru_utime + usage.ru_stime) / max(1, n) * 1e6,
        # the sequential part (the replay through the gate, reading answers; the integrity check's
        # thread) apart from the workers' (reading and opening envelopes): sampled every 50 ms, so
        # the verifier's last moments are missed
        "verify_cpu_main_us": main_cpu[0] / max(1, n) * 1e6,
        "verify_wal_mb": wal_mb,
    }


# -- all --------------------------------------------------------------------------------------------
async def run(root: Path, n: int, n_load: int, *, verify: bool) -> Figures:
    f: Figures = {"envelopes_target": float(n), "load_target": float(n_load)}
    a, b, line, _ = await paired_stations(root, relays=False)
    try:
        await in_sync(a, b, 30)
        f.update(await idle_and_load(a, b, line, 0, "empty"))
    finally:
        a.stop()
        b.stop()
    f.update(await asyncio.to_thread(fill, a.home, b.home, line, n))
    ta, tb = await asyncio.gather(start_slow(a, 1800), start_slow(b, 1800))
    f["startup_a_s"], f["startup_b_s"] = ta, tb
    try:
        await in_sync(a, b, 300)
        st = await a.status_line()
        f["held_a"] = float(st["our_seq"] + st["their_seq"])
        f.update(await idle_and_load(a, b, line, n_load, "full"))
        # An unclean shutdown: kill -9, and the next start runs the full integrity check first.
        a.kill9()
        f["startup_unclean_a_s"] = await start_slow(a, 1800)
        await in_sync(a, b, 300)
    finally:
        a.stop()
        b.stop()
    if verify:
        f.update(await asyncio.to_thread(verify_cli, a.home))
    return f


def measure(
    folder: Path | None = None,
    *,
    quick: bool = False,
    envelopes: int | None = None,
    verify: bool = True,
    keep: Path | None = None,
) -> Figures:
    """``keep``: build the stations in this (new) folder and leave them there, to profile them."""
    n = envelopes or (QUICK if quick else FULL)
    load = 2000 if quick else 20_000
    if keep is not None:
        keep.mkdir(parents=True)
        return asyncio.run(run(keep, n, load, verify=verify))
    with tempfile.TemporaryDirectory(prefix="redline-memory-", dir=folder) as tmp:
        return asyncio.run(run(Path(tmp), n, load, verify=verify))


def rows(f: Figures) -> list[Row]:
    held = f"{f['held_a']:,.0f} envelopes"
    per_env = (f["full_idle_rss_a_mb"] - f["empty_idle_rss_a_mb"]) * 1e6 / max(1.0, f["held_a"])
    return [
        Row("station RSS, empty store, idle (EUCOM)", f["empty_idle_rss_a_mb"], "MB", note="baseline"),
        Row(f"station RSS holding {held}, idle (EUCOM)", f["full_idle_rss_a_mb"], "MB", "aim", RSS_AIM_MB,
            note=f"{per_env:,.0f} bytes per envelope over the empty station"),
        Row(f"station RSS holding {held}, idle (NDMC)", f["full_idle_rss_b_mb"], "MB", "aim", RSS_AIM_MB),
        Row(f"station RSS holding {held}, under load (EUCOM, max)", f["full_load_rss_a_mb"], "MB", "aim",
            RSS_AIM_MB, note=f"{f['full_load_n']:,.0f} x 1 KiB pipelined, {f['full_load_per_s']:,.0f} msg/s"),
        Row(f"station RSS holding {held}, under load (NDMC, max)", f["full_load_rss_b_mb"], "MB", "aim", RSS_AIM_MB),
        Row("station peak RSS since start, start-up included (EUCOM, VmHWM)", f["full_hwm_a_mb"], "MB", "aim",
            RSS_AIM_MB),
        Row(f"station start-up holding {held}, after a clean stop (EUCOM)", f["startup_a_s"], "s", "aim",
            STARTUP_AIM_S, note="until the control socket answers: open, frontier, ops replay"),
        Row(f"station start-up holding {held}, after a clean stop (NDMC)", f["startup_b_s"], "s", "aim",
            STARTUP_AIM_S, note="both started at once"),
        Row(f"station start-up holding {held}, after kill -9 (EUCOM)", f["startup_unclean_a_s"], "s",
            note="the full integrity check (PRAGMA quick_check over the whole store) runs first"),
        Row(f"set-up: seal and append {f['envelopes_added']:,.0f} envelopes", f["fill_seal_append_s"], "s",
            note=f"then {f['fill_copy_s']:.0f} s to copy them to NDMC's store (not a product figure)"),
    ]  # fmt: skip


def verify_row(f: Figures, lim: Figures) -> Row:
    """``redline verify`` envelopes/s against one core doing nothing but Ed25519 verifies."""
    return Row(f"`redline verify` over {f['verify_envelopes']:,.0f} envelopes", f["verify_per_s"], "/s",
               "1 core of Ed25519 verify", 1e6 / lim["verify_us"],
               note=f"{f['verify_s']:.1f} s wall (integrity check included); aim ≥ {VERIFY_AIM:.1f}x")  # fmt: skip


def verify_rows(f: Figures, lim: Figures) -> list[Row]:
    rows_ = [verify_row(f, lim)]
    if "verify_rss_sum_mb" in f:
        rows_ += [
            Row("`redline verify`: peak RSS, verifier and workers together", f["verify_rss_sum_mb"], "MB", "aim",
                VERIFY_RSS_AIM_MB, note=f"verifier {f['verify_rss_main_mb']:,.0f} MB, workers "
                f"{f['verify_rss_workers_mb']:,.0f} MB (sampled every 50 ms); WAL left by the station "
                f"{f.get('verify_wal_mb', 0):,.0f} MB"),
            Row("`redline verify`: CPU per envelope, all processes", f["verify_cpu_us"], "µs", "Ed25519 verify",
                lim["verify_us"], note=f"{os.cpu_count()} cores; of which the verifier itself (the sequential "
                f"replay) {f.get('verify_cpu_main_us', 0):.1f} µs, its workers the rest"),
        ]  # fmt: skip
    return rows_


def report(f: Figures, lim: Figures | None = None) -> str:
    quick = f" (not the {FULL:,} of the full run)" if f["envelopes_target"] < FULL else ""
    text = table(f"6. A station holding {f['held_a']:,.0f} envelopes{quick}", rows(f))
    if lim is not None and "verify_per_s" in f:
        text += "\n\n" + table("4. `redline verify` over that store", verify_rows(f, lim))
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 envelopes instead of 1,000,000")
    parser.add_argument("--envelopes", type=int, help="how many envelopes (both chains together)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="leave both stations in DIR (new) afterwards")
    parser.add_argument("--no-verify", action="store_true", help="do not run redline verify afterwards")
    args = parser.parse_args(argv)
    from bench import limits as machine

    f = measure(quick=args.quick, envelopes=args.envelopes, verify=not args.no_verify, keep=args.keep)
    lim = machine.crypto()
    print(report(f, lim))


if __name__ == "__main__":
    main()
