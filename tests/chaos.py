"""Randomized runs of two real stations over faulty paths, with kill -9, and the checker.

One run (``run``):

1. EUCOM and NDMC are paired by the real ceremony (tests/procs.py); EUCOM's two advertised paths
   go through a ``FaultProxy`` each (tests/faultnet.py), so NDMC dials both through them.
2. For ``seconds``: traffic both ways (TEXT, some FLASH; sizes from a few bytes to tens of KiB, in
   pipelined bursts; every send carries an idempotency key and is retried until the station says
   it is accepted), faults on both paths from a plan drawn from the seed, and kill -9 of EUCOM,
   NDMC or both at moments drawn from the seed (restarted after a drawn downtime).
3. Heal: faults end, both stations run; wait until both are in sync with nothing in the outbox,
   nothing unreceipted, both heads equal and both paths up, and both stores hold the same last
   co-signed checkpoint, covering every operational envelope of both chains (``_settled``: the
   last checkpoint round trip is over, not merely the last receipt's).
4. Check, from both stations' records on disk: every accepted message delivered exactly once and
   in the order it was accepted (at the receiver, and in the sender's own chain), both chains and
   the co-signed checkpoints byte-for-byte equal at both ends, every operational envelope (FLASH)
   covered by the last of them, ``redline verify`` passing at both, and no equivocation, fork or
   crash in the station logs.

All randomness comes from the seed: ``Random(f"{seed}:faults:0")`` for path 0's plan, ``...:1``
for path 1, ``:kills`` for the kills, ``:traffic:eucom`` / ``:traffic:ndmc`` for the traffic. A
failed run prints its seed and the command that replays it.

    python -m tests.chaos --seed 7 --seconds 60        # one run
    python -m tests.chaos --runs 20 --seconds 120      # twenty runs, fresh seeds
    python -m tests.chaos --soak --seconds 600         # scripts/soak: RSS and fds must stay flat
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redline import canonical, kinds
from redline.envelope import split
from redline.home import StationDir
from redline.ledger.sqlite import Ledger
from redline.statements import Checkpoint
from tests.faultnet import KINDS, FaultProxy, draw_plan
from tests.procs import StationProc, paired_stations, pipelined, wait_until

TRAFFIC_KINDS = ("TEXT", "FLASH")
# A line in a station log that means something went wrong beyond a lost connection.
BAD_LOG = re.compile(r"EQUIVOCATION|FORK|Task exception was never retrieved|refused envelope seq")


@dataclass
class ChaosConfig:
    seed: int
    seconds: float = 30.0
    fault_gap: float = 2.0  # mean seconds between faults, per path
    kill_gap: float = 6.0  # mean seconds between kills (0: no kills)
    rate: float = 60.0  # messages per second per station, on average
    flash_share: float = 0.03
    kinds: tuple[str, ...] = KINDS
    converge_timeout: float = 120.0
    workdir: Path | None = None
    keep: bool = False
    sample_every: float = 0.0  # soak: seconds between RSS/fd samples (0: none)
    soak: bool = False

    def replay(self) -> str:
        cmd = f"python -m tests.chaos --seed {self.seed} --seconds {self.seconds:g}"
        if self.soak:
            cmd += " --soak"
        elif self.kill_gap != 6.0:
            cmd += f" --kill-gap {self.kill_gap:g}"
        if self.fault_gap != 2.0:
            cmd += f" --fault-gap {self.fault_gap:g}"
        cmd += f" --rate {self.rate:g} --flash-share {self.flash_share:g}"
        return cmd


@dataclass
class ChaosResult:
    config: ChaosConfig
    messages: dict[str, int] = field(default_factory=dict)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    planned: Counter[str] = field(default_factory=Counter)
    kills: dict[str, int] = field(default_factory=lambda: {"EUCOM": 0, "NDMC": 0})
    connections: int = 0
    converge_s: float | None = None
    checkpoints: int = 0
    restarts_to_settle: int = 0  # stop-and-restart rounds after convergence (see ``_run``)
    settle_reasons: list[str] = field(default_factory=list)  # what differed on disk before each round
    lost: int = 0  # accepted but not delivered (summed over both directions and both copies)
    duplicated: int = 0
    reordered: int = 0
    problems: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # sends the station answered "not ok" (retried)
    log_findings: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    workdir: Path | None = None
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.config.seed, "seconds": self.config.seconds, "ok": self.ok,
            "messages": self.messages, "bytes": self.bytes_sent, "send_retries": self.retries,
            "faults": dict(sorted(self.faults.items())), "faults_missed": dict(sorted(self.missed.items())),
            "kills": self.kills, "connections": self.connections, "checkpoints": self.checkpoints,
            "lost": self.lost, "duplicated": self.duplicated, "reordered": self.reordered,
            "converge_s": None if self.converge_s is None else round(self.converge_s, 1),
            "restarts_to_settle": self.restarts_to_settle, "settle_reasons": self.settle_reasons,
            "problems": self.problems, "refusals": self.refusals[:5], "log_findings": self.log_findings[:20],
        }  # fmt: skip

    def failure_message(self) -> str:
        lines = [f"chaos run with seed {self.config.seed} FAILED ({len(self.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in self.problems[:30]]
        lines += [f"  log: {f}" for f in self.log_findings[:10]]
        lines += ["  last fault events:", *(f"    {e}" for e in self.events[-25:])]
        lines.append(f"  records kept in {self.workdir}")
        lines.append(f"  replay: {self.config.replay()}")
        return "\n".join(lines)


# -- traffic ----------------------------------------------------------------------------------------
async def _send_until_accepted(
    proc: StationProc, reqs: list[dict[str, Any]], result: ChaosResult, stop: asyncio.Event
) -> list[int] | None:
    """Send a burst until every request is accepted; their outbox numbers (the order of
    acceptance: each request of a burst is accepted on its own, so a later one can be accepted
    before a retry of an earlier one that was refused). A retry reuses the idempotency keys, so what
    was accepted just before a crash (answer lost) comes back as the same outbox item. Gives up
    (None: a problem, not a hang) only if the station accepts nothing for a minute after the faults end."""
    name = proc.home.name
    failing_since: float | None = None
    first = True
    while True:
        try:
            async with asyncio.timeout(60):
                replies = await pipelined(proc.home, reqs)
            bad = [r for r in replies if not r.get("ok")]
            if not bad:
                numbers = [r["result"]["outbox"] for r in replies]
                if first and (problem := burst_out_of_order(name, numbers)):
                    result.problems.append(problem)
                return numbers
            first = False
            result.refusals.append(f"{name}: {bad[0].get('error')}")
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            first = False
        now = time.monotonic()
        failing_since = failing_since or now
        if stop.is_set() and now - failing_since > 60:
            result.problems.append(f"{name.upper()} accepted nothing for 60 s after the faults ended")
            return None
        result.retries[name] = result.retries.get(name, 0) + 1
        await asyncio.sleep(0.05)


def burst_out_of_order(who: str, numbers: list[int]) -> str | None:
    """A pipelined burst accepted whole at its first try was accepted in the order of its requests:
    its outbox numbers increase. (A burst retried after a refusal may rightly be accepted in
    another order; ``in_accepted_order`` then holds the transcript to the order it got.)"""
    if all(a < b for a, b in itertools.pairwise(numbers)):
        return None
    return f"{who}: a burst accepted at its first try got outbox numbers {numbers}, not in the order of its requests"


def in_accepted_order(numbered: dict[str, int]) -> list[str]:
    """The texts a side accepted, in the order the station accepted them (their outbox numbers):
    the order its transcript must hold them in."""
    return sorted(numbered, key=numbered.__getitem__)


# What the outside review put in text fields; every run carries some of it (never a traceback,
# never an envelope left unstored).
HOSTILE_TEXT = (
    "Agenda items [/draft] to follow", "[bold red]FAKE[/] [link=https://evil.example]x[/link]",
    "\x1b[2J\x1b[31mwiped\x1b]0;t\x07", "ctl \x00\x01\x08\r\x7f\x9b", "\u202eMOCUE\u202c", ":warning:",
)


async def _traffic(
    proc: StationProc, line: str, cfg: ChaosConfig, stop: asyncio.Event, accepted: dict[str, int],
    result: ChaosResult,
) -> None:
    name = proc.home.name
    label = "EUCOM" if name == "eucom" else "НЦУО"
    rng = random.Random(f"{cfg.seed}:traffic:{name}")
    i = 0
    while not stop.is_set():
        burst: list[tuple[str, dict[str, Any]]] = []
        for _ in range(rng.choice((1, 1, 2, 5, 10, 30))):
            size = rng.choice((0, 0, 0, 40, 400, 3000, rng.randint(1, 60_000)))
            text = f"{label} {cfg.seed} {i:06d} " + ("ж" * (size // 2) if name == "ndmc" else "x" * size)
            if rng.random() < 0.2:  # hostile text: markup, escapes, controls, bidi overrides (issue 9)
                text += " " + rng.choice(HOSTILE_TEXT)
            req: dict[str, Any] = {"op": "send", "line": line, "text": text, "idem": f"chaos-{name}-{i}"}
            if rng.random() < cfg.flash_share:
                req |= {"kind": "FLASH", "priority": "flash"}
            burst.append((text, req))
            i += 1
        numbers = await _send_until_accepted(proc, [r for _, r in burst], result, stop)
        if numbers is None:
            return
        accepted.update(zip((t for t, _ in burst), numbers, strict=True))
        result.bytes_sent[name] = result.bytes_sent.get(name, 0) + sum(len(t.encode()) for t, _ in burst)
        await asyncio.sleep(rng.expovariate(cfg.rate / len(burst)))


async def _killer(a: StationProc, b: StationProc, cfg: ChaosConfig, result: ChaosResult) -> None:
    if cfg.kill_gap <= 0:
        return
    rng = random.Random(f"{cfg.seed}:kills")
    t0, at = time.monotonic(), 0.0
    while True:
        at += rng.expovariate(1 / cfg.kill_gap)
        if at >= cfg.seconds:
            return
        pick, down = rng.random(), rng.choice((0.0, rng.uniform(0.0, 1.0), rng.uniform(1.0, 4.0)))
        victims = [a, b] if pick < 0.1 else [a] if pick < 0.55 else [b]
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        for v in victims:
            v.kill9()
            result.kills["EUCOM" if v is a else "NDMC"] += 1
        await asyncio.sleep(down)
        for v in victims:
            await _restart(v, result)


async def _restart(proc: StationProc, result: ChaosResult) -> None:
    for attempt in range(3):
        try:
            await proc.start()
            return
        except RuntimeError as exc:
            result.problems.append(f"{proc.home.name} failed to restart (attempt {attempt + 1}): {exc}")
            await asyncio.sleep(1)
    raise RuntimeError(f"{proc.home.name} does not restart")


# -- sampling (soak) --------------------------------------------------------------------------------
def proc_sample(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def _sampler(a: StationProc, b: StationProc, every: float, result: ChaosResult) -> None:
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(every)
        row: dict[str, Any] = {"t": round(time.monotonic() - t0)}
        for name, p in (("EUCOM", a), ("NDMC", b)):
            assert p.proc is not None
            with contextlib.suppress(OSError):
                row[f"{name}_rss_kib"], row[f"{name}_fds"] = proc_sample(p.proc.pid)
        row["messages"] = dict(result.messages)
        result.samples.append(row)
        print(
            f"[{row['t']:4d} s] EUCOM rss {row.get('EUCOM_rss_kib', 0) / 1024:6.1f} MiB fds {row.get('EUCOM_fds')}"
            f" | NDMC rss {row.get('NDMC_rss_kib', 0) / 1024:6.1f} MiB fds {row.get('NDMC_fds')}"
            f" | sent {sum(result.messages.values())}",
            flush=True,
        )


# -- the run ----------------------------------------------------------------------------------------
async def _status(p: StationProc) -> dict[str, Any]:
    return await p.status_line()


async def _converged(a: StationProc, b: StationProc) -> bool:
    sa, sb = await _status(a), await _status(b)
    return bool(
        sa["synced"] and sb["synced"] and not sa["halted"] and not sb["halted"]
        and sa["outbox"] == sb["outbox"] == 0 and sa["unreceipted"] == sb["unreceipted"] == 0
        and sa["our_seq"] == sb["their_seq"] and sb["our_seq"] == sa["their_seq"]
        and sum(1 for p in sa["paths"].values() if p["up"]) == 2
        and sum(1 for p in sb["paths"].values() if p["up"]) == 2
    )  # fmt: skip


async def _settled(a: StationProc, b: StationProc, line: str) -> bool:
    """``_converged``, and the checkpoints too: both stores hold the same last co-signed checkpoint
    and it covers every operational envelope of both chains (PROTOCOL.md 8.7: one is proposed
    after each). The line's last receipt is not its last round trip: the proposal that follows an
    operational envelope, and its COSIGN, may still be in flight when both heads agree. Read
    from the running stations' stores through read-only connections."""
    if not await _converged(a, b):
        return False
    return await asyncio.to_thread(_checkpoints_settled, a.home, b.home, line, running=True) is None


async def run(cfg: ChaosConfig) -> ChaosResult:
    result = ChaosResult(config=cfg)
    work = cfg.workdir or Path(tempfile.mkdtemp(prefix=f"redline-chaos-{cfg.seed}-"))
    work.mkdir(parents=True, exist_ok=True)
    result.workdir = work
    try:
        await _run(cfg, work, result)
    except Exception as exc:  # a crash of the harness or a station that will not start: still a seed to replay
        result.problems.append(f"run aborted: {type(exc).__name__}: {exc}")
    if result.ok and not cfg.keep and cfg.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


async def _run(cfg: ChaosConfig, work: Path, result: ChaosResult) -> None:
    a, b, line, relays = await paired_stations(work, relays=True)
    proxies: list[FaultProxy] = []
    tasks: list[asyncio.Task[Any]] = []
    accepted: dict[str, dict[str, int]] = {"eucom": {}, "ndmc": {}}  # text -> outbox number
    try:
        # The relays become fault proxies on the same ports: NDMC redials through them.
        for i, r in enumerate(relays):
            await r.cut()
            plan = draw_plan(random.Random(f"{cfg.seed}:faults:{i}"), cfg.seconds, mean_gap=cfg.fault_gap,
                             kinds=cfg.kinds)  # fmt: skip
            result.planned.update(f.kind for f in plan)
            proxy = FaultProxy(r.listen_port, r.target_port, name=f"path{i}", plan=plan)
            await proxy.start()
            proxies.append(proxy)
        await wait_until(lambda: _converged(a, b), "both paths up through the fault proxies", timeout=30)

        stop = asyncio.Event()
        senders = [asyncio.ensure_future(_traffic(p, line, cfg, stop, accepted[p.home.name], result)) for p in (a, b)]
        tasks += [asyncio.ensure_future(p.run()) for p in proxies]
        killer = asyncio.ensure_future(_killer(a, b, cfg, result))
        if cfg.sample_every:
            tasks.append(asyncio.ensure_future(_sampler(a, b, cfg.sample_every, result)))
        tasks += [asyncio.ensure_future(_count(accepted, result)), *senders, killer]
        await asyncio.sleep(cfg.seconds)
        stop.set()
        await killer  # every station running again
        await asyncio.gather(*senders)
        for p in proxies:
            p.heal()
        for t in tasks[: len(proxies)]:
            t.cancel()
        t_heal = time.monotonic()
        for _attempt in range(5):
            try:
                await wait_until(lambda: _settled(a, b, line), "convergence", timeout=cfg.converge_timeout)
            except AssertionError:
                sa, sb = await _status(a), await _status(b)
                cps = await asyncio.to_thread(_checkpoints_settled, a.home, b.home, line, running=True)
                result.problems.append(
                    f"the stations did not converge within {cfg.converge_timeout:g} s of the faults ending: "
                    f"EUCOM {_brief(sa)}; NDMC {_brief(sb)}; checkpoints: {cps or 'settled'}"
                )
                break
            if result.converge_s is None:
                result.converge_s = time.monotonic() - t_heal
            # Stop both and compare heads and checkpoints on disk. A station may sign on its own
            # at any moment (an escalation step, a test result) and be stopped before the peer
            # receipts it, or before the checkpoint that follows it is countersigned (a stop
            # aborts the connections, and a COSIGN still in the send buffer goes with them): then
            # run both again until what one holds the other holds (a restarted proposer proposes
            # again, and is given back the pair the other side stored). The stops wait in a
            # thread: on this loop they froze the proxies, so the frames EUCOM wrote last waited
            # in them while it stopped, and went with its connection (procs.StationProc.stop).
            await asyncio.to_thread(a.stop)
            await asyncio.to_thread(b.stop)
            differ = await asyncio.to_thread(_records_differ, a.home, b.home, line)
            if differ is None:
                break
            result.restarts_to_settle += 1
            result.settle_reasons.append(differ)
            await _restart(a, result)
            await _restart(b, result)
        else:
            result.problems.append("heads or co-signed checkpoints still differ after five stop-and-restart rounds")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        a.stop()
        b.stop()
        for p in proxies:
            result.faults.update(p.counts)
            result.missed.update(p.missed)
            result.connections += p.connections
            result.events += list(p.events)
            await p.close()
        for r in relays:
            await r.cut()
    result.events.sort()
    result.messages = {k.upper(): len(v) for k, v in accepted.items()}
    await asyncio.to_thread(check, a.home, b.home, line, accepted, result)


async def _count(accepted: dict[str, dict[str, int]], result: ChaosResult) -> None:
    while True:
        result.messages = {k.upper(): len(v) for k, v in accepted.items()}
        await asyncio.sleep(1)


def _brief(st: dict[str, Any]) -> str:
    paths = ", ".join(f"{p} {'up' if s['up'] else 'down: ' + s['reason']}" for p, s in st["paths"].items())
    return (
        f"synced={st['synced']} halted={st['halted']} our_seq={st['our_seq']} their_seq={st['their_seq']} "
        f"outbox={st['outbox']} unreceipted={st['unreceipted']} paths=[{paths}]"
    )


# -- the checker -------------------------------------------------------------------------------------
def _chain(home: Path, line: str, sender: str) -> list[bytes]:
    ledger = Ledger(StationDir(home).ledger_path)
    try:
        return [raw for _, raw in ledger.raw_envelopes(line, sender)]
    finally:
        ledger.close()


def _heads_agree(eucom: Path, ndmc: Path, line: str) -> bool:
    heads = []
    for home in (eucom, ndmc):
        ledger = Ledger(StationDir(home).ledger_path)
        try:
            heads.append([ledger.head(line, StationDir(h).load_keys().fingerprint) for h in (eucom, ndmc)])
        finally:
            ledger.close()
    return heads[0] == heads[1]


def _records_differ(eucom: Path, ndmc: Path, line: str) -> str | None:
    """What differs between the two stopped stations' stores (None: nothing): heads first, then
    the co-signed checkpoints (``_checkpoints_settled``)."""
    if not _heads_agree(eucom, ndmc, line):
        return "heads differ"
    return _checkpoints_settled(eucom, ndmc, line)


def _checkpoint_state(home: Path, line: str, running: bool) -> tuple[tuple[int, bytes, bytes] | None, dict[str, int],
                                                                     dict[str, int]]:  # fmt: skip
    """One store's last co-signed checkpoint (n, proposal, cosign), the chain sizes it covers, and
    the seq of each chain's last operational envelope, read in one snapshot."""
    path = StationDir(home).ledger_path
    ledger = Ledger.open_read_only(path, raw_check=False) if running else Ledger(path)
    try:
        with ledger.snapshot():
            last = ledger.last_checkpoint(line)
            ops: dict[str, int] = {}
            for sender, seq, raw, _ in ledger.stored_for_ops(line):
                if canonical.decode_object(split(raw).header_bytes, "header")["kind"] in kinds.OPERATIONAL:
                    ops[sender] = max(ops.get(sender, 0), seq)
    finally:
        ledger.close()
    if last is None:
        return None, {}, ops
    covered = {h.station: h.size for h in Checkpoint.peek(last[1]).heads}
    return (last[0], last[1].encode(), last[2].encode()), covered, ops


def _checkpoints_settled(eucom: Path, ndmc: Path, line: str, running: bool = False) -> str | None:
    """None when both stores hold the same last co-signed checkpoint and it covers every
    operational envelope either holds; else what is not so, in words."""
    (last_e, covered, ops_e), (last_n, _, ops_n) = (_checkpoint_state(h, line, running) for h in (eucom, ndmc))
    if last_e != last_n:
        ne, nn = (last[0] if last else 0 for last in (last_e, last_n))
        return f"the last co-signed checkpoint is {ne} at EUCOM, {nn} at NDMC (or differs in its bytes)"
    names = {StationDir(h).load_keys().fingerprint: h.name.upper() for h in (eucom, ndmc)}
    for sender in sorted(set(ops_e) | set(ops_n)):
        seq = max(ops_e.get(sender, 0), ops_n.get(sender, 0))
        if covered.get(sender, 0) < seq:
            n = last_e[0] if last_e else 0
            return (f"{names.get(sender, sender[:12])}'s operational envelope {seq} is not covered by a co-signed "
                    f"checkpoint (the last, {n}, covers {covered.get(sender, 0)})")  # fmt: skip
    return None


def _checkpoints(home: Path, line: str) -> list[tuple[int, bytes, bytes]]:
    ledger = Ledger(StationDir(home).ledger_path)
    try:
        return [(n, p.encode(), c.encode()) for n, p, c in ledger.checkpoints(line)]
    finally:
        ledger.close()


def traffic_texts(chain: list[bytes], prefix: str) -> list[str]:
    """The texts of our traffic in a chain, in chain order (other kinds, e.g. ESCALATED, skipped)."""
    out = []
    for raw in chain:
        env = split(raw)
        kind = canonical.decode_object(env.header_bytes, "header")["kind"]
        if kind in TRAFFIC_KINDS and env.body_bytes is not None:
            text = canonical.decode_object(env.body_bytes, "body")["content"].get("text", "")
            if text.startswith(prefix):
                out.append(text)
    return out


def compare(what: str, expected: list[str], got: list[str]) -> list[str]:
    """Exactly once and in order; on a difference, say which kind of difference, with examples."""
    if got == expected:
        return []
    short = [t[:24] for t in expected]
    counts = Counter(got)
    dups = [t[:24] for t, n in counts.items() if n > 1]
    missing = [t[:24] for t in expected if t not in counts]
    extra = [t[:24] for t in counts if t not in set(expected)]
    first = next(
        (i for i, (x, y) in enumerate(zip(expected, got, strict=False)) if x != y), min(len(got), len(expected))
    )
    out = [f"{what}: {len(got)} delivered, {len(expected)} accepted; first difference at #{first}"]
    if missing:
        out.append(f"{what}: LOST {len(missing)}: {missing[:5]}")
    if dups:
        out.append(f"{what}: DUPLICATED {len(dups)}: {dups[:5]}")
    if extra:
        out.append(f"{what}: never accepted but delivered {len(extra)}: {extra[:5]}")
    if not (missing or dups or extra):
        out.append(f"{what}: REORDERED near #{first}: expected {short[first : first + 3]}, got "
                   f"{[t[:24] for t in got[first : first + 3]]}")  # fmt: skip
    return out


def verify_cli(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redline", "verify", "--station", str(home)], capture_output=True, text=True, timeout=600
    )


def check(eucom: Path, ndmc: Path, line: str, accepted: dict[str, dict[str, int]], result: ChaosResult) -> None:
    fp = {h: StationDir(h).load_keys().fingerprint for h in (eucom, ndmc)}
    for sender, receiver, prefix in ((eucom, ndmc, "EUCOM "), (ndmc, eucom, "НЦУО ")):
        name, expected = sender.name.upper(), in_accepted_order(accepted[sender.name])
        at_receiver = _chain(receiver, line, fp[sender])
        at_sender = _chain(sender, line, fp[sender])
        for what, got in ((f"{name} -> {receiver.name.upper()}", traffic_texts(at_receiver, prefix)),
                          (f"{name}'s own chain", traffic_texts(at_sender, prefix))):  # fmt: skip
            result.problems += compare(what, expected, got)
            counts, wanted = Counter(got), set(expected)
            result.lost += sum(1 for t in expected if t not in counts)
            result.duplicated += sum(n - 1 for n in counts.values())
            kept = [t for t in got if t in wanted]
            result.reordered += int(list(dict.fromkeys(kept)) != [t for t in expected if t in counts])
        if at_receiver != at_sender:
            result.problems.append(
                f"transcripts differ: {name}'s chain has {len(at_sender)} envelopes at {name} and "
                f"{len(at_receiver)} at {receiver.name.upper()} (or differs in content)"
            )
    cps = [_checkpoints(h, line) for h in (eucom, ndmc)]
    result.checkpoints = min(len(c) for c in cps)
    if cps[0] != cps[1]:
        result.problems.append(f"co-signed checkpoints differ: EUCOM holds {len(cps[0])}, NDMC {len(cps[1])}")
    else:
        uncovered = _checkpoints_settled(eucom, ndmc, line)
        if uncovered is not None:
            result.problems.append(f"co-signed checkpoints: {uncovered}")
    for home in (eucom, ndmc):
        verdict = verify_cli(home)
        if verdict.returncode != 0 or "VERIFIED" not in verdict.stdout:
            result.problems.append(f"redline verify failed at {home.name.upper()}: {verdict.stdout[-800:]}"
                                   f"{verdict.stderr[-400:]}")  # fmt: skip
        log = home / "serve.log"
        if log.exists():
            result.log_findings += [f"{home.name.upper()}: {f}" for f in scan_log(log.read_text(errors="replace"))]
    for f in result.log_findings:
        if "EQUIVOCATION" in f or "FORK" in f:
            result.problems.append(f"station log: {f}")


def scan_log(text: str) -> list[str]:
    """Lines that mean more than a lost connection; a traceback becomes one line: its exception
    and the innermost redline frame."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback"):
            where, j = "", i + 1
            while j < len(lines) and (lines[j][:1] in (" ", "") or lines[j].startswith(("Traceback", "During"))):
                if "/redline/" in lines[j] and lines[j].strip().startswith("File"):
                    where = lines[j].strip().split("/redline/")[-1]
                j += 1
            exc = lines[j].strip() if j < len(lines) else "?"
            out.append(f"traceback: {exc[:200]} (last redline frame: {where or 'none'})")
            i = j + 1
            continue
        if BAD_LOG.search(line):
            out.append(line.strip()[:300])
        i += 1
    return out


def run_sync(cfg: ChaosConfig) -> ChaosResult:
    return asyncio.run(run(cfg))


def fresh_seed() -> int:
    return secrets.randbits(31)


# -- soak ---------------------------------------------------------------------------------------------
SOAK_RATE = 20.0  # messages per second per station: a very busy hotline
SOAK_FLASH = 0.005
RSS_BOUND_MIB = 16.0
FD_BOUND = 4


def judge_soak(result: ChaosResult, rss_bound_mib: float = RSS_BOUND_MIB, fd_bound: int = FD_BOUND) -> list[str]:
    """Flat means: the mean of the last three samples is within the bound of the mean of the three
    samples after the first tenth of the run (for ten minutes: after the first minute, when
    start-up is over and the bounded caches have mostly filled)."""
    rows = result.samples
    if len(rows) < 9:
        return [f"only {len(rows)} samples: run the soak longer"]
    warm = max(1, len(rows) // 10)
    base, last = rows[warm : warm + 3], rows[-3:]
    problems = []

    def mean(rs: list[dict[str, Any]], key: str) -> float:
        vals: list[float] = [r[key] for r in rs if key in r]
        return sum(vals) / max(1, len(vals))

    for name in ("EUCOM", "NDMC"):
        rss = (mean(last, f"{name}_rss_kib") - mean(base, f"{name}_rss_kib")) / 1024
        fds = mean(last, f"{name}_fds") - mean(base, f"{name}_fds")
        print(f"{name}: RSS grew {rss:+.1f} MiB (bound {rss_bound_mib:g}), fds {fds:+.1f} (bound {fd_bound})")
        if rss > rss_bound_mib:
            problems.append(f"{name}: RSS grew {rss:.1f} MiB over the soak (bound {rss_bound_mib:g} MiB)")
        if fds > fd_bound:
            problems.append(f"{name}: open descriptors grew by {fds:.0f} (bound {fd_bound})")
    return problems


def summarize(paths: list[Path]) -> str:
    """A markdown table over the JSON lines of many runs (``--json``): docs/RELIABILITY.md's."""
    runs = [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.strip()]
    hits: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    bad: Counter[str] = Counter()  # lost + duplicated + reordered, in runs where the kind hit
    seeds: dict[str, list[int]] = {}
    for r in runs:
        hits.update(r["faults"])
        missed.update(r.get("faults_missed", {}))
        for k in r["faults"]:
            seeds.setdefault(k, []).append(r["seed"])
            bad[k] += r.get("lost", 0) + r.get("duplicated", 0) + r.get("reordered", 0)
    failed = [r for r in runs if not r["ok"]]
    messages = sum(sum(r["messages"].values()) for r in runs)
    kills = {k: sum(r["kills"][k] for r in runs) for k in ("EUCOM", "NDMC")}
    seconds = sum(r["seconds"] for r in runs)
    out = [
        f"{len(runs)} runs, {seconds / 60:.0f} min of faults, {messages} messages accepted, "
        f"{sum(hits.values())} faults hit traffic, kill -9: EUCOM {kills['EUCOM']}, NDMC {kills['NDMC']}; "
        f"failed runs: {len(failed)} {[r['seed'] for r in failed]}",
        "",
        "| kind | hit | no connection to hit | runs | lost, duplicated or reordered |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for k in KINDS:
        out.append(f"| {k} | {hits[k]} | {missed[k]} | {len(seeds.get(k, []))} | {bad[k]} |")
    out.append(f"\nseeds: {' '.join(str(r['seed']) for r in runs)}")
    return "\n".join(out)


# -- command line --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, action="append", help="replay this seed (repeatable)")
    ap.add_argument("--runs", type=int, default=1, help="runs with fresh seeds (when no --seed)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the faulty phase of each run")
    ap.add_argument("--fault-gap", type=float, default=2.0, help="mean seconds between faults, per path")
    ap.add_argument("--kill-gap", type=float, default=6.0, help="mean seconds between kill -9 (0: none)")
    ap.add_argument("--rate", type=float, help="messages per second per station (default 60; soak 20)")
    ap.add_argument("--flash-share", type=float, help="share of FLASH among the messages (default 0.03; soak 0.005)")
    ap.add_argument("--keep", action="store_true", help="keep the station directories of passing runs too")
    ap.add_argument("--soak", action="store_true", help="no kills; sample RSS and fds every 10 s; fail if they grow")
    ap.add_argument("--rss-bound", type=float, default=RSS_BOUND_MIB, help="soak: allowed RSS growth, MiB")
    ap.add_argument("--fd-bound", type=int, default=FD_BOUND, help="soak: allowed growth in open descriptors")
    ap.add_argument("--json", type=Path, help="append each run's summary as a JSON line to this file")
    ap.add_argument("--summarize", type=Path, nargs="+", help="print a table over --json files and exit")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    seeds = args.seed or [fresh_seed() for _ in range(args.runs)]
    failed: list[ChaosResult] = []
    for seed in seeds:
        cfg = ChaosConfig(
            seed=seed, seconds=args.seconds, fault_gap=args.fault_gap, keep=args.keep,
            rate=args.rate or (SOAK_RATE if args.soak else 60.0),
            flash_share=args.flash_share if args.flash_share is not None else (SOAK_FLASH if args.soak else 0.03),
            kill_gap=0.0 if args.soak else args.kill_gap, sample_every=10.0 if args.soak else 0.0, soak=args.soak,
        )  # fmt: skip
        print(f"== chaos seed {seed}: {cfg.seconds:g} s; replay: {cfg.replay()}", flush=True)
        result = run_sync(cfg)
        if args.soak:
            result.problems += judge_soak(result, args.rss_bound, args.fd_bound)
        summary = result.summary()
        print(json.dumps(summary, ensure_ascii=False), flush=True)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps({**summary, "samples": result.samples}, ensure_ascii=False) + "\n")
        if not result.ok:
            print(result.failure_message(), flush=True)
            failed.append(result)
    print(f"== {len(seeds) - len(failed)} of {len(seeds)} run(s) passed; seeds {seeds}")
    for r in failed:
        print(f"FAILED seed {r.config.seed}: replay with: {r.config.replay()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
