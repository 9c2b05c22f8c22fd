"""Durable send-to-receipt latency and throughput over a real line (issue 3).

NEEDS the control flag ``{"op": "send", ..., "wait": "receipt"}``: the station answers only once
the peer's signed receipt for that envelope has come back and been stored (``Station.wait_receipted``,
commit bf1b23c). With an older station the latency figures would be wrong, not merely missing.

Two real ``redline serve`` processes (EUCOM and NDMC, ``tests/procs.paired_stations`` with
``relays=False``: paired by the real ceremony, two paths of TLS 1.3 on loopback, WAL/FULL stores).

- **control round trip**: ``status`` on a held control connection: what the measuring client adds.
- **local accept**: ``send`` without waiting: the message is durable (signed and committed) at A.
- **durable latency** (one in flight): ``send`` with ``wait: receipt`` on a held control connection,
  timed from writing the request to reading the answer: A accepts, seals and commits, B verifies,
  commits and signs a receipt, A verifies the receipt (and keeps it in memory: it is stored with
  A's next commit or within a second, and B sends its latest again on every path that opens, so
  no commit of A's is on the path for it). Median and p99 over 2000 after
  200 warm-up. It includes one control-socket round trip (the row above). The stations' CPU over
  the same messages, per message, is what one in flight costs (beside the throughput's).
- **throughput** (many in flight): 20,000 sends of 1 KiB pipelined on one control connection to A;
  timed from the first request to B's ``their_seq`` covering them all (B's status polled every
  50 ms), and to A's ``unreceipted`` reaching 0. CPU seconds of each process are read from /proc.
- **with people** (last): durable latency over 500 with nobody at A, then 8 users added there and
  the same again, back to back (a real station has its duty officers; A looks at users/ for its
  roster at every batch).

``--profile DIR`` samples both station processes with py-spy (raw collapsed stacks; wall clock
with ``--idle`` for the latency phase, CPU only for the throughput phase);
``python -m bench.profile_top DIR/*.txt`` summarises them.

Run alone: ``.venv/bin/python -m bench.line_bench`` (measures the limits first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench import limits as machine
from bench.common import Figures, Row, median_p99, percentile, table
from redline.home import StationDir
from redline.testing import SessionPair
from tests.procs import StationProc, paired_stations, pipelined

TEXT = "x" * 1024
RECEIPTED = "receipted by the peer"  # the state a send with wait=receipt answers with
LATENCY_AIM_FACTOR = machine.IMPLIED_LATENCY_AIM_FACTOR
THROUGHPUT_AIM = machine.THROUGHPUT_AIM
PEOPLE = 8  # users at the sending station for the last latency phase


class Control:
    """One held connection to a station's control socket: requests answered in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, home: Path) -> Control:
        reader, writer = await asyncio.open_unix_connection(str(StationDir(home).control_path), limit=2**24)
        return cls(reader, writer)

    async def request(self, obj: dict[str, Any]) -> Any:
        self.writer.write(json.dumps(obj).encode() + b"\n")
        await self.writer.drain()
        reply = json.loads(await self.reader.readline())
        if not reply.get("ok"):
            raise RuntimeError(f"station refused {obj.get('op')}: {reply.get('error')}")
        return reply["result"]

    async def timed(
        self, obj: dict[str, Any], n: int, warmup: int, *, state: str | None = None, sched: Sched | None = None
    ) -> list[float]:
        """µs per request over ``n`` requests after ``warmup``, one in flight; with ``state``,
        every answer must report that state (a send that was not signed does not wait); with
        ``sched``, what the scheduler did for each timed request (read outside the timed span)."""
        samples: list[float] = []
        for i in range(warmup + n):
            before = sched.read() if sched is not None and i >= warmup else None
            start = time.perf_counter_ns()
            result = await self.request(obj)
            took = (time.perf_counter_ns() - start) / 1000
            if state is not None and result.get("state") != state:
                raise RuntimeError(f"expected state {state!r}, the station answered {result!r}")
            if i >= warmup:
                samples.append(took)
                if sched is not None and before is not None:
                    sched.add(before)
        return samples

    def close(self) -> None:
        self.writer.close()


class Sched:
    """Per timed request, from ``/proc/PID/schedstat`` of each process's main thread (the event
    loop's): the CPU each ran and the time each waited runnable for a core (the run queue), in µs.
    The wait is the box, not our code: on a shared two-core machine a station ready to go on waits
    while another process holds the cores, and that wait is part of the latency measured."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.ran: list[list[float]] = []  # per request, per process
        self.waited: list[list[float]] = []

    def read(self) -> list[tuple[int, int]]:
        out = []
        for pid in self.pids:
            with open(f"/proc/{pid}/schedstat") as f:
                ran, waited, _ = f.read().split()
            out.append((int(ran), int(waited)))
        return out

    def add(self, before: list[tuple[int, int]]) -> None:
        after = self.read()
        self.ran.append([(a[0] - b[0]) / 1000 for a, b in zip(after, before, strict=True)])
        self.waited.append([(a[1] - b[1]) / 1000 for a, b in zip(after, before, strict=True)])

    def figures(self, samples: list[float], prefix: str) -> Figures:
        """Over all requests and over the slowest 1 %: run-queue wait of all the processes
        together, and the CPU the stations (every process but the last, the client) ran."""
        cut = percentile(samples, 0.99)
        tail = [i for i, s in enumerate(samples) if s >= cut]
        every = range(len(samples))
        mean = statistics.fmean
        return {
            f"{prefix}_runq_us": mean(sum(self.waited[i]) for i in every),
            f"{prefix}_tail_runq_us": mean(sum(self.waited[i]) for i in tail),
            f"{prefix}_tail_us": mean(samples[i] for i in tail),
            f"{prefix}_stations_cpu_us": mean(sum(self.ran[i][:-1]) for i in every),
            f"{prefix}_tail_stations_cpu_us": mean(sum(self.ran[i][:-1]) for i in tail),
        }


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _pid(proc: StationProc) -> int:
    assert proc.proc is not None
    return proc.proc.pid


@contextlib.asynccontextmanager
async def profiled(
    folder: Path | None, phase: str, procs: dict[str, StationProc], *, idle: bool
) -> AsyncIterator[None]:
    """Sample ``procs`` with py-spy while the block runs (nothing when ``folder`` is None).

    ``idle`` keeps samples of a waiting thread (wall-clock profile: where the time goes, fsync
    and select included); without it only running samples count (a CPU profile)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if folder is None:
        yield
        return
    if not Path(spy).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(_pid(p)),
                *(["--idle"] if idle else []),
                "--format",
                "raw",
                "--rate",
                "250",
                "--output",
                str(folder / f"{phase}-{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, p in procs.items()
    ]
    await asyncio.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for s in spies:
            s.send_signal(signal.SIGINT)
        for s in spies:
            try:
                s.wait(timeout=30)
            except subprocess.TimeoutExpired:
                s.kill()
                s.wait()


async def latency(a: StationProc, b: StationProc, line: str, n: int, warmup: int, prof: Path | None) -> Figures:
    f: Figures = {}
    ctl = await Control.open(a.home)
    try:
        f["control_p50_us"], f["control_p99_us"] = median_p99(await ctl.timed({"op": "status"}, 1000, 100))
        send = {"op": "send", "line": line, "text": TEXT}
        f["accept_p50_us"], f["accept_p99_us"] = median_p99(await ctl.timed(send, 1000, 100))
        # let the burst above be receipted before timing one-in-flight latency
        await _until(lambda st: st["unreceipted"] == 0 and st["outbox"] == 0, a, 30)
        durable = {**send, "wait": "receipt"}
        await ctl.timed(durable, 0, warmup, state=RECEIPTED)
        async with profiled(prof, "latency", {"a": a, "b": b}, idle=True):
            sched = Sched([_pid(a), _pid(b), os.getpid()])
            cpu_a, cpu_b = cpu_seconds(_pid(a)), cpu_seconds(_pid(b))
            samples = await ctl.timed(durable, n, 0, state=RECEIPTED, sched=sched)
            end_a, end_b = cpu_seconds(_pid(a)), cpu_seconds(_pid(b))
        f["durable_p50_us"], f["durable_p99_us"] = median_p99(samples)
        f.update(sched.figures(samples, "durable"))
        # One in flight, each message pays every per-batch and per-wakeup cost alone: this is where
        # the latency goes (the stations' CPU is nearly all of it), beside the throughput's figures.
        f["one_cpu_a_us"] = (sum(end_a) - sum(cpu_a)) / n * 1e6
        f["one_cpu_b_us"] = (sum(end_b) - sum(cpu_b)) / n * 1e6
    finally:
        ctl.close()
    return f


async def with_people(a: StationProc, line: str, n: int, people: int = PEOPLE) -> Figures:
    """Durable latency without people at A and then with ``people`` users there (users/, as
    'redline user add' makes them, with the cheapest Argon2id so the setup is quick), the two
    measured back to back: a real station has its duty officers, and what A does per batch must
    not grow with them."""
    import nacl.pwhash.argon2id as argon2id

    from redline import persons

    ctl = await Control.open(a.home)
    durable = {"op": "send", "line": line, "text": TEXT, "wait": "receipt"}

    async def measured() -> tuple[float, float]:
        await ctl.timed(durable, 0, 50, state=RECEIPTED)  # warm; with people, the new ROSTER goes out
        cpu = cpu_seconds(_pid(a))
        p50, _ = median_p99(await ctl.timed(durable, n, 0, state=RECEIPTED))
        end = cpu_seconds(_pid(a))
        return p50, (sum(end) - sum(cpu)) / n * 1e6

    try:
        f: Figures = {}
        f["nobody_p50_us"], f["nobody_cpu_a_us"] = await measured()
        for i in range(people):
            persons.add_user(a.home, f"Officer{i}", "duty", "bench-password-1",
                             ops=argon2id.OPSLIMIT_MIN, mem=argon2id.MEMLIMIT_MIN)  # fmt: skip
        f["people_p50_us"], f["people_cpu_a_us"] = await measured()
    finally:
        ctl.close()
    return f


async def _until(pred: Any, proc: StationProc, timeout: float, every: float = 0.05) -> float:
    """Poll ``proc``'s line status until ``pred`` holds; return the time it was seen to hold."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred(await proc.status_line()):
            return time.perf_counter()
        await asyncio.sleep(every)
    raise RuntimeError(f"station {proc.home.name} did not reach the expected state within {timeout:g} s")


async def throughput(a: StationProc, b: StationProc, line: str, n: int, prof: Path | None) -> Figures:
    base_b = (await b.status_line())["their_seq"]
    requests = [{"op": "send", "line": line, "text": TEXT} for _ in range(n)]
    async with profiled(prof, "throughput", {"a": a, "b": b}, idle=False):
        cpu_a, cpu_b = cpu_seconds(_pid(a)), cpu_seconds(_pid(b))
        start = time.perf_counter()

        async def send_all() -> float:
            replies = await pipelined(a.home, requests)
            bad = [r for r in replies if not r.get("ok")]
            if bad:
                raise RuntimeError(f"{len(bad)} sends refused, first: {bad[0].get('error')}")
            return time.perf_counter()

        accepted, stored_b = await asyncio.gather(send_all(), _until(lambda st: st["their_seq"] >= base_b + n, b, 300))
        receipted = await _until(lambda st: st["unreceipted"] == 0 and st["outbox"] == 0, a, 300)
        end_a, end_b = cpu_seconds(_pid(a)), cpu_seconds(_pid(b))
    return {
        "tput_n": float(n),
        "tput_accept_per_s": n / (accepted - start),
        "tput_stored_per_s": n / (stored_b - start),
        "tput_receipted_per_s": n / (receipted - start),
        "tput_cpu_a_us": (sum(end_a) - sum(cpu_a)) / n * 1e6,
        "tput_cpu_a_sys_us": (end_a[1] - cpu_a[1]) / n * 1e6,
        "tput_cpu_b_us": (sum(end_b) - sum(cpu_b)) / n * 1e6,
        "tput_cpu_b_sys_us": (end_b[1] - cpu_b[1]) / n * 1e6,
    }


def sessions_in_memory(root: Path, n: int = 8192, per_batch: int = 256) -> Figures:
    """Both sides' sessions and ledgers in this one process, bytes moved by ``SessionPair`` (one
    path, no sockets, no TLS, no control socket): what the protocol and storage cost on their own.
    ``per_batch`` messages are accepted in one transaction, then the pair runs until it settles."""
    pair = SessionPair(root, paths=1)
    try:
        pair.run()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(n // per_batch):
            with pair.a.ledger.batch():
                for _ in range(per_batch):
                    pair.send("a", TEXT)
            pair.run()
        wall, used = time.perf_counter() - start, time.process_time() - cpu
        stored = pair.b.ledger.head(pair.line, pair.a.us)[0]
    finally:
        pair.close()
    if stored != n // per_batch * per_batch:
        raise RuntimeError(f"in-memory pair stored {stored} of {n} envelopes")
    return {"mem_per_s": stored / wall, "mem_cpu_us": used / stored * 1e6}


async def run(root: Path, *, n_latency: int, warmup: int, n_tput: int, prof: Path | None, store: str = "") -> Figures:
    """Both phases on a new pair; ``store``: EUCOM's store (a postgresql:// URL, bench.pg_line),
    "" for SQLite in its folder. NDMC's is always SQLite."""
    a, b, line, _ = await paired_stations(root, relays=False, store=store)
    try:
        f = await latency(a, b, line, n_latency, warmup, prof)
        f.update(await throughput(a, b, line, n_tput, prof))
        f.update(await with_people(a, line, max(100, n_latency // 4)))
        f["paths"] = float(len((await a.status_line())["paths"]))
        return f
    finally:
        a.stop()
        b.stop()


def measure(
    limits: Figures, folder: Path | None = None, *, quick: bool = False, profile: Path | None = None
) -> Figures:
    with tempfile.TemporaryDirectory(prefix="redline-line-bench-", dir=folder) as tmp:
        f = sessions_in_memory(Path(tmp) / "in-memory", n=1024 if quick else 8192)
        if quick:
            f.update(asyncio.run(run(Path(tmp), n_latency=100, warmup=20, n_tput=1000, prof=profile)))
        else:
            f.update(asyncio.run(run(Path(tmp), n_latency=2000, warmup=200, n_tput=20_000, prof=profile)))
        return f


def measure_baseline(rev: str, *, quick: bool = False) -> Figures:
    """The same measurement by revision ``rev``'s own code and bench (``bench.baseline``): its two
    stations, its line_bench, in this run, for the "before" column."""
    from bench import baseline

    code = (
        "import json\n"
        "from bench import line_bench\n"
        f"print(json.dumps(line_bench.measure({{}}, quick={quick!r})))\n"
    )
    with baseline.tree(rev) as old:
        figures: Figures = baseline.run_python(old, code)
    return figures


def rows(f: Figures, lim: Figures) -> list[Row]:
    implied = lim["implied_latency_us"]
    out = [
        Row("control round trip (status), median", f["control_p50_us"], "µs", "TLS echo RTT", lim["tls_rtt_p50_us"],
            note="what the measuring client adds"),
        Row("local accept (send, no wait), median", f["accept_p50_us"], "µs", "SQLite FULL commit",
            lim["sqlite_full_p50_us"], note=f"p99 {f['accept_p99_us']:,.0f} µs"),
        Row("durable send-to-receipt latency, p50", f["durable_p50_us"], "µs", "implied limit", implied,
            note=f"aim ≤ {LATENCY_AIM_FACTOR}x = {LATENCY_AIM_FACTOR * implied:,.0f} µs; "
                 f"{f['durable_p50_us'] - f['control_p50_us']:,.0f} µs without the control round trip"),
        Row("durable send-to-receipt latency, p99", f["durable_p99_us"], "µs", "implied limit", implied,
            note="LIMITS.md: p99 of 1.5-2 ms is realistic"),
        *([Row("waiting for a core (run queue) per send, slowest 1 %", f["durable_tail_runq_us"], "µs", "all sends",
               f["durable_runq_us"], note=f"A, B and the client; those sends took {f['durable_tail_us']:,.0f} µs"),
           Row("CPU of A and B per send, slowest 1 %", f["durable_tail_stations_cpu_us"], "µs", "all sends",
               f["durable_stations_cpu_us"], note="above all sends: time on the stations' cores, not waiting for one")]
          if "durable_runq_us" in f else []),
        *([Row("CPU per message, one in flight, at A (sender)", f["one_cpu_a_us"], "µs", "under load",
               f["tput_cpu_a_us"], note="every per-batch and per-wakeup cost paid by one message"),
           Row("CPU per message, one in flight, at B (receiver)", f["one_cpu_b_us"], "µs", "under load",
               f["tput_cpu_b_us"])] if "one_cpu_a_us" in f else []),
        *([Row(f"durable latency p50 with {PEOPLE} people at A", f["people_p50_us"], "µs", "just before, none",
               f["nobody_p50_us"], note=f"A's CPU per message {f['people_cpu_a_us']:,.0f} µs, "
                                        f"{f['nobody_cpu_a_us']:,.0f} µs with none")]
          if "people_p50_us" in f else []),
        Row("throughput: accepted at A (pipelined)", f["tput_accept_per_s"], "/s", "aim", THROUGHPUT_AIM),
        Row(f"throughput: {f['tput_n']:,.0f} stored at B", f["tput_stored_per_s"], "/s", "aim", THROUGHPUT_AIM),
        Row("throughput: all receipted back at A", f["tput_receipted_per_s"], "/s", "aim", THROUGHPUT_AIM),
        Row("throughput ceiling of one core doing only Ed25519 verify", 1e6 / lim["verify_us"], "/s", "aim",
            THROUGHPUT_AIM),
        Row("in-memory session pair, 256 accepted per commit", f["mem_per_s"], "/s", "aim", THROUGHPUT_AIM,
            note=f"no sockets; {f['mem_cpu_us']:.0f} µs CPU per message for both sides"),
        Row("CPU per message at A (sender)", f["tput_cpu_a_us"], "µs", "Ed25519 sign", lim["sign_us"],
            note=f"of which kernel {f['tput_cpu_a_sys_us']:.0f} µs"),
        Row("CPU per message at B (receiver)", f["tput_cpu_b_us"], "µs", "Ed25519 verify", lim["verify_us"],
            note=f"of which kernel {f['tput_cpu_b_sys_us']:.0f} µs"),
    ]  # fmt: skip
    return out


def report(f: Figures, lim: Figures) -> str:
    return table(f"Line over real TLS, two station processes, {f['paths']:.0f} paths (issue 3)", rows(f, lim))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loops: a smoke run, not figures")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="sample the stations with py-spy into DIR")
    args = parser.parse_args(argv)
    lim = machine.measure(quick=args.quick)
    print(machine.report(lim))
    print()
    print(report(measure(lim, quick=args.quick, profile=args.profile), lim))


if __name__ == "__main__":
    main()
