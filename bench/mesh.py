"""Where one machine ends: a mesh of stations, every pair paired, on the sans-IO core (issue 12).

``python -m bench.mesh [--stations N] [--messages M] [--seed S] [--json FILE]``: N stations (100 by
default: 4,950 lines), each with its own keys and one SQLite store holding all its lines; every
line a pair of real ``LineSession``s joined by a simulated path on a simulated clock. Each side of
each line sends M messages while a seeded fault plan cuts paths (and every frame in flight on
them) and redials them; then everything runs until it settles and the protocol's properties are
checked on every line: nothing lost, nothing twice, in order, the two stores' chains byte-equal, no
fork. Printed: envelopes per second per core (one process, one core) and memory per line, next to
this run's Ed25519 sign+verify rate, which bounds it.

Nothing here passes or fails on time; a broken property is an error (exit 1).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing

from bench.common import Row
from redline import canonical
from redline.config import Limits
from redline.envelope import split
from redline.home import StationDir
from redline.ledger.model import LineRecord
from redline.ledger.sqlite import Ledger
from redline.protocol.events import Action, Close, Send
from redline.session import LineSession
from redline.testing import SimClock


@dataclass
class _Path:
    up: bool = True
    to_hi: deque[bytes] = field(default_factory=deque)  # frames for the higher-numbered station
    to_lo: deque[bytes] = field(default_factory=deque)


@dataclass
class _Line:
    id: str
    lo: int
    hi: int
    s_lo: LineSession
    s_hi: LineSession
    path: _Path = field(default_factory=_Path)
    sent: dict[int, list[str]] = field(default_factory=dict)


class Mesh:
    def __init__(self, root: Path, n: int, limits: Limits) -> None:
        self.clock = SimClock()
        self.limits = limits
        self.dirs = [StationDir(root / f"S{i:03d}") for i in range(n)]
        for i, d in enumerate(self.dirs):
            d.init(name=f"S{i:03d}", lang="en", listen=[f"127.0.0.1:{10000 + i}"], limits=limits)
        self.keys = [d.load_keys() for d in self.dirs]
        self.ledgers: list[Ledger] = [d.open_ledger() for d in self.dirs]
        self.lines: list[_Line] = []
        for i in range(n):  # each station pins every other, in one transaction
            with self.ledgers[i].batch():
                for j in range(n):
                    if j != i:
                        self._pin(i, j)
        for i in range(n):
            for j in range(i + 1, n):
                self.lines.append(self._pair(i, j))

    @staticmethod
    def _id(i: int, j: int) -> str:
        return f"{min(i, j):04x}{max(i, j):04x}".ljust(32, "0")

    def _pin(self, mine: int, theirs: int) -> None:
        k = self.keys[theirs]
        record = LineRecord(
            line=self._id(mine, theirs), peer=k.fingerprint, peer_name=f"S{theirs:03d}",
            peer_root=k.root_public.hex(), peer_tls_cert=k.tls_cert_der.hex(),
            paths=(f"127.0.0.1:{10000 + theirs}",), peer_lang="en", we_invited=mine < theirs, confirmed_local=True,
            confirmed_peer=True, safety_code="00000000",
        )
        self.ledgers[mine].put_line(record)
        self.ledgers[mine].put_cert(k.fingerprint, k.key_id, "signing", k.signing_cert)

    def _pair(self, i: int, j: int) -> _Line:
        line = self._id(i, j)
        sessions = [
            LineSession(
                self.ledgers[s], self.keys[s], self.ledgers[s].line(line), lang="en", limits=self.limits,
                alarm=lambda level, text: None,
            )
            for s in (i, j)
        ]
        ln = _Line(line, i, j, sessions[0], sessions[1])
        self._connect(ln)
        return ln

    def _do(self, ln: _Line, from_lo: bool, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, Send) and ln.path.up:
                (ln.path.to_hi if from_lo else ln.path.to_lo).append(act.data)
            elif isinstance(act, Close) and ln.path.up:
                self._cut(ln)

    def _connect(self, ln: _Line) -> None:
        ln.path.up = True
        now, wall = self.clock.now, self.clock.wall
        self._do(ln, True, ln.s_lo.path_up("p", now, wall))
        self._do(ln, False, ln.s_hi.path_up("p", now, wall))

    def _cut(self, ln: _Line) -> None:
        ln.path.up = False
        ln.path.to_hi.clear()
        ln.path.to_lo.clear()
        self._do(ln, True, ln.s_lo.path_down("p", "cut", self.clock.wall))
        self._do(ln, False, ln.s_hi.path_down("p", "cut", self.clock.wall))

    def send(self, ln: _Line, lo: bool, text: str) -> None:
        s = ln.s_lo if lo else ln.s_hi
        with s.ledger.batch():
            s.accept("TEXT", "ROUTINE", {"text": text}, None, self.clock.wall)
        ln.sent.setdefault(ln.lo if lo else ln.hi, []).append(text)

    def step(self) -> bool:
        """Every station commits once (one transaction for all its lines), then every frame in
        flight is delivered once. Returns whether anything moved."""
        now, wall = self.clock.now, self.clock.wall
        for i, ledger in enumerate(self.ledgers):
            with ledger.batch():
                for ln in self.lines:
                    if ln.lo == i:
                        self._do(ln, True, ln.s_lo.flush(wall))
                    elif ln.hi == i:
                        self._do(ln, False, ln.s_hi.flush(wall))
        moved = False
        for ln in self.lines:
            while ln.path.up and ln.path.to_hi:
                moved = True
                self._do(ln, False, ln.s_hi.receive("p", ln.path.to_hi.popleft(), now, wall))
            while ln.path.up and ln.path.to_lo:
                moved = True
                self._do(ln, True, ln.s_lo.receive("p", ln.path.to_lo.popleft(), now, wall))
        return moved

    def settle(self, max_steps: int = 10_000) -> int:
        for n in range(max_steps):
            if not self.step():
                return n
        raise AssertionError("the mesh did not settle")

    def check(self) -> list[str]:
        """The protocol's properties on every line; each problem in words."""
        problems: list[str] = []
        for ln in self.lines:
            for sender in (ln.lo, ln.hi):
                fp = self.keys[sender].fingerprint
                chains = [list(self.ledgers[s].raw_envelopes(ln.id, fp)) for s in (ln.lo, ln.hi)]
                if chains[0] != chains[1]:
                    problems.append(f"line {ln.id}: the two stores differ on S{sender:03d}'s chain")
                texts = [canonical.decode_object(split(raw).body_bytes or b"{}", "body")["content"].get("text")
                         for _, raw in chains[1 if sender == ln.lo else 0]]  # fmt: skip
                if texts != ln.sent.get(sender, []):
                    problems.append(f"line {ln.id}: S{sender:03d}'s messages arrived as {len(texts)} of "
                                    f"{len(ln.sent.get(sender, []))}, or out of order")  # fmt: skip
            if self.ledgers[ln.lo].equivocations(ln.id) or self.ledgers[ln.hi].equivocations(ln.id):
                problems.append(f"line {ln.id}: a fork")
        return problems


def _rss_kib() -> int:
    """This process's resident memory now (VmRSS). Not ``ru_maxrss``: a peak, which Linux carries
    over ``fork`` and ``exec``, so run from ``run_all`` (whose own peak is far higher) it never moved
    and the memory per line read 0."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _ed25519_rate(seconds: float = 0.5) -> float:
    key = nacl.signing.SigningKey.generate()
    verify = key.verify_key
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        verify.verify(key.sign(b"x" * 200))
        n += 1
    return n / (time.perf_counter() - start)


def run(stations: int, messages: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    limits = Limits(test_times_utc=(), checkpoint_every_envelopes=10_000, checkpoint_every_seconds=3600.0)
    with tempfile.TemporaryDirectory(prefix="redline-mesh-") as tmp:
        rss_base = _rss_kib()
        t0 = time.perf_counter()
        mesh = Mesh(Path(tmp), stations, limits)
        setup_s = time.perf_counter() - t0
        mesh.settle()
        rss_lines = _rss_kib() - rss_base  # sessions, links, stores
        cpu0, t1 = time.process_time(), time.perf_counter()
        faults = 0
        for m in range(messages):
            for ln in mesh.lines:
                mesh.send(ln, True, f"{ln.id} lo {m}")
                mesh.send(ln, False, f"{ln.id} hi {m}")
            mesh.step()
            for ln in rng.sample(mesh.lines, max(1, len(mesh.lines) // 20)):  # 5 % of paths cut, then back
                mesh._cut(ln)
                faults += 1
            mesh.step()
            for ln in mesh.lines:
                if not ln.path.up:
                    mesh._connect(ln)
        steps = mesh.settle()
        cpu, wall_s = time.process_time() - cpu0, time.perf_counter() - t1
        problems = mesh.check()
        envelopes = 2 * messages * len(mesh.lines)
        for ledger in mesh.ledgers:
            ledger.close()
    rate = _ed25519_rate()
    result = {
        "stations": stations, "lines": len(mesh.lines), "messages_per_side": messages, "seed": seed,
        "envelopes": envelopes, "path_cuts": faults, "settle_steps": steps, "setup_seconds": round(setup_s, 2),
        "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall_s, 2),
        "envelopes_per_cpu_second": round(envelopes / cpu, 1),
        "ed25519_sign_verify_per_second": round(rate, 1),
        "envelopes_per_cpu_second_vs_ed25519_ratio": round(envelopes / cpu / rate, 3),
        "rss_kib_after": _rss_kib(),
        "rss_kib_per_line": round(rss_lines / max(1, len(mesh.lines)), 1),  # both ends of it, before traffic
        "problems": problems,
    }
    return result


def rows(r: dict[str, Any]) -> list[Row]:
    """The mesh's figures as report rows (``run_all``'s part "lines")."""
    n = int(r["stations"])
    return [
        Row(f"mesh of {n} stations, {int(r['lines']):,} lines: properties broken", len(r["problems"]), "",
            "aim", 0.0, note=f"{int(r['envelopes']):,} envelopes, {int(r['path_cuts'])} path cuts; nothing lost, "
            "nothing twice, in order, chains byte-equal, no fork"),
        Row("mesh: envelopes per CPU second (one core)", r["envelopes_per_cpu_second"], "/s",
            "Ed25519 sign+verify, same run", r["ed25519_sign_verify_per_second"]),
        Row("mesh: memory per line (both ends, sans-IO)", r["rss_kib_per_line"], "KiB"),
    ]  # fmt: skip


def measure(stations: int, messages: int = 2, seed: int = 1) -> dict[str, Any]:
    """``run`` in a process of its own (its memory per line is that process's peak RSS, which
    whatever ran before it in the caller's process would hide)."""
    with tempfile.TemporaryDirectory(prefix="redline-mesh-out-") as tmp:
        out = Path(tmp) / "mesh.json"
        cmd = [sys.executable, "-m", "bench.mesh", "--stations", str(stations), "--messages", str(messages),
               "--seed", str(seed), "--json", str(out)]  # fmt: skip
        done = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                              check=False, timeout=1800)  # fmt: skip
        if not out.exists():
            raise RuntimeError(f"bench.mesh exited {done.returncode}: {done.stderr[-500:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=100)
    ap.add_argument("--messages", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result = run(args.stations, args.messages, args.seed)
    for k, v in result.items():
        if k != "problems":
            print(f"{k:45} {v}")
    print(f"{'problems':45} {len(result['problems'])}")
    for p in result["problems"][:20]:
        print("  ", p)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    raise SystemExit(1 if result["problems"] else 0)


if __name__ == "__main__":
    main()
