"""An HA pair of real processes (redline/standby.py): EUCOM runs as two ``redline serve`` processes
on one PostgreSQL store (tests/pg.py), listening on two loopback ports that stand in for two
hosts; NDMC (SQLite) dials both addresses, which the pairing token carried. Traffic runs both
ways while the active EUCOM process is killed (kill -9) or paused (SIGSTOP), and the checker of
the proving ground (tests/chaos.py) then reads both transcripts: every accepted message delivered
exactly once and in order, both chains byte-equal at both ends, ``redline verify`` passing at
both, no equivocation in any log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from redline.config import Limits, StationConfig
from redline.home import StationDir
from redline.testing import free_ports
from tests.chaos import burst_out_of_order, compare, in_accepted_order, scan_log, traffic_texts, verify_cli
from tests.pg import PgServer
from tests.procs import StationProc, pipelined, wait_until

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("REDLINE_HA_KILLS", "20"))


@dataclass
class Pair:
    """EUCOM's two processes (a, b), NDMC, the line, and what each side had accepted: each text
    with the outbox number the station answered it with (the order of acceptance)."""

    a: StationProc
    b: StationProc
    ndmc: StationProc
    line: str
    url: str
    accepted: dict[str, dict[str, int]] = field(default_factory=lambda: {"eucom": {}, "ndmc": {}})
    problems: list[str] = field(default_factory=list)  # found while sending (a burst out of order)
    ports: list[int] = field(default_factory=list)

    def procs(self) -> list[StationProc]:
        return [self.a, self.b, self.ndmc]


async def role(p: StationProc) -> str:
    try:
        st = await p.call({"op": "status"})
    except Exception:
        return "down"
    return str(st.get("ha", {}).get("role", "?"))


async def active(pair: Pair) -> StationProc | None:
    for p in (pair.a, pair.b):
        if p.proc is not None and p.proc.poll() is None and await role(p) == "active":
            return p
    return None


async def synced(p: StationProc) -> bool:
    st = await p.call({"op": "status"})
    return bool(st["lines"] and st["lines"][0]["synced"] and any(x["up"] for x in st["lines"][0]["paths"].values()))


@contextlib.contextmanager
def running_pair(
    root: Path, url: str, a_url: str | None = None, metrics: bool = False, advertise_both: bool = True
) -> Iterator[Pair]:
    """EUCOM's two processes on the store at ``url`` (created here), NDMC, paired and in sync.
    ``a_url``: the first process reaches the same store by another way (a relay that can stall).
    ``metrics``: each EUCOM process serves ``--metrics`` (a on p[3], b on p[4]).
    ``advertise_both`` False: the pairing token carries only the first host's address."""
    p = free_ports(5)
    far = (datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M")
    hosts = [f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"]
    a_dir, b_dir = StationDir(root / "eucom-a"), root / "eucom-b"
    a_dir.init(name="EUCOM", lang="en", listen=hosts[:1], advertise=hosts if advertise_both else hosts[:1], store=url,
               limits=Limits(test_times_utc=(far,)))  # fmt: skip
    # The second host: the same station folder (keys, config), listening on its own address.
    shutil.copytree(a_dir.path, b_dir)
    config = StationConfig.load(StationDir(b_dir).config_path)
    obj = config.to_obj() | {"listen": hosts[1:]}
    StationDir(b_dir).config_path.write_text(json.dumps(obj))
    if a_url is not None:
        a_dir.config_path.write_text(json.dumps(config.to_obj() | {"store": a_url}))
    ndmc = StationDir(root / "ndmc")
    # The peer of a pair redials each address within a second: one of the two is always refused.
    fast = Limits(test_times_utc=(far,), redial_max=1.0)
    ndmc.init(name="NDMC", lang="ru", listen=[f"127.0.0.1:{p[2]}"], limits=fast)
    on = [("--metrics", f"127.0.0.1:{port}") if metrics else () for port in p[3:5]]
    pair = Pair(StationProc(a_dir.path, on[0]), StationProc(b_dir, on[1]), StationProc(ndmc.path), "", url)
    pair.ports = p

    async def setup() -> None:
        await pair.a.start()
        await wait_until(lambda: _is(pair.a, "active"), "a active", 20)
        await pair.b.start()
        await wait_until(lambda: _is(pair.b, "standby"), "b standby", 20)
        await pair.ndmc.start()
        token = (await pair.a.call({"op": "invite"}))["token"]
        paired = await pair.ndmc.call({"op": "pair", "token": token})
        pair.line = paired["line"]
        await wait_until(lambda: _has_line(pair.a), "the line at EUCOM", 20)
        for p_ in (pair.a, pair.ndmc):
            await p_.call({"op": "confirm", "line": pair.line, "code": paired["safety_code"]})
        await wait_until(lambda: _both_synced(pair.a, pair.ndmc), "line in sync", 30)

    try:
        asyncio.run(setup())
        yield pair
    finally:
        for proc in pair.procs():
            with contextlib.suppress(Exception):
                if proc.proc is not None:
                    proc.proc.send_signal(signal.SIGCONT)
            proc.stop()


@pytest.fixture
def ha_pair(tmp_path: Path, postgres_server: PgServer) -> Iterator[Pair]:
    name = "ha_" + uuid.uuid4().hex[:12]
    postgres_server.admin(f"CREATE DATABASE {name}")
    try:
        with running_pair(tmp_path, postgres_server.url(name)) as pair:
            yield pair
    finally:
        postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _is(p: StationProc, want: str) -> bool:
    return await role(p) == want


async def _has_line(p: StationProc) -> bool:
    return bool((await p.call({"op": "status"}))["lines"])


async def _both_synced(x: StationProc, y: StationProc) -> bool:
    return await synced(x) and await synced(y)


# -- traffic -----------------------------------------------------------------------------------------
async def _send(pair: Pair, side: str, reqs: list[dict[str, Any]]) -> list[int]:
    """Send a burst to EUCOM's active process (whichever it is now) or to NDMC, until accepted:
    a retry reuses the idempotency keys, so what was accepted just before a kill comes back as the
    same outbox item, from the store, at the process that took over. Its outbox numbers: the
    requests of one burst are accepted each on its own, so while the store comes back the third can
    be accepted before a retry of the first two (then it is sent first, as accepted)."""
    first = True
    while True:
        targets = [pair.ndmc] if side == "ndmc" else [pair.a, pair.b]
        for p in targets:
            if p.proc is None or p.proc.poll() is not None:
                continue
            try:
                async with asyncio.timeout(10):
                    replies = await pipelined(p.home, reqs)
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
                first = False
                continue
            if all(r.get("ok") for r in replies):
                numbers = [r["result"]["outbox"] for r in replies]
                if first and (problem := burst_out_of_order(side, numbers)):
                    pair.problems.append(problem)
                return numbers
            first = False
        await asyncio.sleep(0.05)


async def traffic(pair: Pair, side: str, stop: asyncio.Event) -> None:
    label = "EUCOM" if side == "eucom" else "НЦУО"
    i = 0
    while not stop.is_set():
        burst = []
        for _ in range(3):
            text = f"{label} ha {i:06d} " + "x" * (i % 7 * 100)
            burst.append((text, {"op": "send", "line": pair.line, "text": text, "idem": f"ha-{side}-{i}"}))
            i += 1
        numbers = await _send(pair, side, [r for _, r in burst])
        pair.accepted[side].update(zip((t for t, _ in burst), numbers, strict=True))
        await asyncio.sleep(0.05)


# -- the checker -------------------------------------------------------------------------------------
def check(pair: Pair) -> list[str]:
    """chaos.check's rules, reading EUCOM's transcript from PostgreSQL."""
    problems: list[str] = list(pair.problems)
    homes = {"eucom": pair.a.home, "ndmc": pair.ndmc.home}
    fp = {side: StationDir(h).load_keys().fingerprint for side, h in homes.items()}
    chains: dict[tuple[str, str], list[bytes]] = {}
    for holder, home in homes.items():
        ledger = StationDir(home).read_ledger()
        try:
            for sender in homes:
                chains[(holder, sender)] = [raw for _, raw in ledger.raw_envelopes(pair.line, fp[sender])]
            if ledger.equivocations(pair.line):
                problems.append(f"{holder.upper()} holds equivocation evidence")
        finally:
            ledger.close()
    for sender, receiver, prefix in (("eucom", "ndmc", "EUCOM "), ("ndmc", "eucom", "НЦУО ")):
        expected = in_accepted_order(pair.accepted[sender])
        problems += compare(f"{sender} -> {receiver}", expected, traffic_texts(chains[(receiver, sender)], prefix))
        problems += compare(f"{sender}'s own chain", expected, traffic_texts(chains[(sender, sender)], prefix))
        if chains[(receiver, sender)] != chains[(sender, sender)]:
            problems.append(f"{sender.upper()}'s chain differs between the two ends (a fork, or something "
                            "sent that the store does not hold)")  # fmt: skip
    for home in (pair.a.home, pair.ndmc.home):
        verdict = verify_cli(home)
        if verdict.returncode != 0 or "VERIFIED" not in verdict.stdout:
            problems.append(f"redline verify failed at {home.name}: {verdict.stdout[-600:]}{verdict.stderr[-300:]}")
    for p in pair.procs():
        for finding in scan_log(p.log.read_text(errors="replace")):
            if "EQUIVOCATION" in finding or "FORK" in finding or "traceback" in finding:
                problems.append(f"{p.home.name} log: {finding}")
    return problems


async def converge(pair: Pair) -> None:
    async def done() -> bool:
        act = await active(pair)
        if act is None:
            return False
        x, y = (await act.status_line()), (await pair.ndmc.status_line())
        return bool(
            x["synced"] and y["synced"] and x["outbox"] == y["outbox"] == 0
            and x["unreceipted"] == y["unreceipted"] == 0 and x["our_seq"] == y["their_seq"]
            and y["our_seq"] == x["their_seq"]
        )  # fmt: skip

    await wait_until(done, "convergence after the traffic", 60)


def _report(name: str, values: list[float]) -> None:
    if values:
        print(f"\n{name}: n={len(values)} median {statistics.median(values):.2f} s, max {max(values):.2f} s, "
              f"all {[round(v, 2) for v in values]}")  # fmt: skip


# -- the tests ---------------------------------------------------------------------------------------
def test_kill_9_of_the_active_process_under_two_way_traffic_loses_duplicates_and_forks_nothing(
    ha_pair: Pair,
) -> None:
    pair = ha_pair
    failovers: list[float] = []

    async def run() -> None:
        stop = asyncio.Event()
        senders = [asyncio.ensure_future(traffic(pair, side, stop)) for side in ("eucom", "ndmc")]
        try:
            for _ in range(KILLS):
                await asyncio.sleep(0.5)  # traffic flows through the active one
                victim = await active(pair)
                assert victim is not None, "no active EUCOM process"
                other = pair.b if victim is pair.a else pair.a
                before = (await pair.ndmc.status_line())["their_seq"]
                victim.kill9()
                t0 = time.monotonic()

                async def flowing(other: StationProc = other, before: int = before) -> bool:
                    # The other process took over and the peer stores new EUCOM envelopes from it.
                    return await _is(other, "active") and (await pair.ndmc.status_line())["their_seq"] > before

                await wait_until(flowing, "traffic from the process that took over", 30)
                failovers.append(time.monotonic() - t0)
                await victim.start()  # back as the standby
                await wait_until(lambda v=victim: _is(v, "standby"), "the killed process back as standby", 20)
        finally:
            stop.set()
            await asyncio.gather(*senders)
        await converge(pair)

    asyncio.run(run())
    for proc in pair.procs():
        proc.stop()
    _report(f"failover after kill -9 (lease {Limits().lease_seconds:g} s)", failovers)
    problems = check(pair)
    assert not problems, "\n".join(problems)
    assert len(pair.accepted["eucom"]) > KILLS and len(pair.accepted["ndmc"]) > KILLS
    # Each failover was an alarm at the peer too, once per new term (PROTOCOL §8.3: HELLO's term):
    # every term from 2 on, one for each kill at least. More than KILLS is a failover the box's load
    # made (a starved active process missing its lease renewal is deposed, as it must be; seen
    # with the suite on both cores): the transcript checks above hold either way.
    seen = " ".join(pair.ndmc.log.read_text(errors="replace").split())
    said = re.findall(r"PEER FAILOVER: the peer station failed over \(term \d+ -> (\d+)\)", seen)
    terms = sorted({int(t) for t in said})
    assert terms == list(range(2, max(terms, default=1) + 1)) and len(terms) >= KILLS, terms


def test_a_paused_active_process_is_deposed_commits_and_sends_nothing_and_steps_down_with_an_alarm(
    ha_pair: Pair,
) -> None:
    pair = ha_pair

    async def run() -> float:
        stop = asyncio.Event()
        senders = [asyncio.ensure_future(traffic(pair, side, stop)) for side in ("eucom", "ndmc")]
        try:
            await asyncio.sleep(1.0)
            assert pair.a.proc is not None
            pair.a.proc.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            await wait_until(lambda: _is(pair.b, "active"), "the standby took over", 30)
            took = time.monotonic() - t0
            await wait_until(lambda: synced(pair.b), "traffic through the new active process", 30)
            seen = (await pair.ndmc.status_line())["their_seq"]
            pair.a.proc.send_signal(signal.SIGCONT)
            # The old process wakes up with a line session, connections and a lease it believes in.
            await wait_until(lambda: _is(pair.a, "standby"), "the old process back as standby", 30)
            st = await pair.a.call({"op": "status"})
            assert any("DEPOSED" in a["text"] for a in st["alarms"]), st["alarms"]
            assert st["ha"]["active_holder"] == (await pair.b.call({"op": "status"}))["ha"]["holder"]
            await asyncio.sleep(1.0)
            assert (await pair.ndmc.status_line())["their_seq"] >= seen
            # The other end alarms too (the term in HELLO rose, PROTOCOL §8.3), once.
            peer = [a for a in (await pair.ndmc.call({"op": "status"}))["alarms"] if "PEER FAILOVER" in a["text"]]
            assert len(peer) == 1 and peer[0]["level"] == "alarm" and peer[0]["count"] == 1, peer
        finally:
            stop.set()
            await asyncio.gather(*senders)
        await converge(pair)
        return took

    took = asyncio.run(run())
    for proc in pair.procs():
        proc.stop()
    _report("takeover after SIGSTOP", [took])
    log = pair.a.log.read_text(errors="replace")
    assert "DEPOSED" in log
    problems = check(pair)
    assert not problems, "\n".join(problems)


def test_a_clean_stop_of_the_active_process_hands_over_at_once_as_a_switchover(ha_pair: Pair) -> None:
    pair = ha_pair

    async def run() -> float:
        assert pair.a.proc is not None
        t0 = time.monotonic()
        await asyncio.to_thread(pair.a.stop)  # SIGTERM: the lease is released, not left to lapse
        await wait_until(lambda: _is(pair.b, "active"), "the standby took over", 10)
        took = time.monotonic() - t0
        await wait_until(lambda: synced(pair.b), "the line through the new active process", 20)
        alarms = (await pair.b.call({"op": "status"}))["alarms"]
        assert any(a["level"] == "info" and a["text"].startswith("SWITCHOVER") for a in alarms), alarms
        assert not any("FAILOVER" in a["text"] for a in alarms)
        return took

    took = asyncio.run(run())
    _report("switchover after a clean stop (SIGTERM)", [took])
    assert took < Limits().lease_seconds  # it did not wait for the lease to lapse


def test_a_peer_paired_before_the_second_host_learns_it_and_follows_the_failover(
    tmp_path: Path, postgres_server: PgServer
) -> None:
    """The issue's 'later address update': NDMC paired when EUCOM advertised one host. The operator
    adds the second to ``advertise`` (both hosts), stops the standby, restarts the active process
    and starts the standby again: the active's HELLO tells NDMC both addresses (PROTOCOL §8.3), NDMC
    keeps and dials the new one, and a failover to the second host then reaches NDMC."""
    name = "ha_" + uuid.uuid4().hex[:12]
    postgres_server.admin(f"CREATE DATABASE {name}")
    try:
        with running_pair(tmp_path, postgres_server.url(name), advertise_both=False) as pair:

            async def run() -> None:
                ndmc = StationDir(pair.ndmc.home)
                first = (await pair.ndmc.status_line())["paths"]
                assert len(first) == 1, first
                hosts = [*first, *StationConfig.load(StationDir(pair.b.home).config_path).listen]
                for home in (pair.a.home, pair.b.home):
                    cfg = StationDir(home).config_path
                    cfg.write_text(json.dumps(StationConfig.load(cfg).to_obj() | {"advertise": hosts}))
                await asyncio.to_thread(pair.b.stop)
                await asyncio.to_thread(pair.a.stop)
                await pair.a.start()
                await wait_until(lambda: _is(pair.a, "active"), "a active again", 20)

                async def learned() -> bool:
                    return set((await pair.ndmc.status_line())["paths"]) == set(hosts)

                await wait_until(learned, "NDMC dialling both hosts", 20)
                await pair.b.start()
                await wait_until(lambda: _is(pair.b, "standby"), "b standby", 20)
                await asyncio.to_thread(pair.a.stop)  # now the second host takes over
                await wait_until(lambda: _is(pair.b, "active"), "b took over", 10)
                await wait_until(lambda: _both_synced(pair.b, pair.ndmc), "the line through the second host", 20)
                sent = await pair.b.call({"op": "send", "line": pair.line, "text": "from the second host"})
                assert sent["seq"] or sent["outbox"]
                alarms = (await pair.ndmc.call({"op": "status"}))["alarms"]
                assert any("announced an address" in a["text"] and hosts[1] in a["text"] for a in alarms), alarms
                pair.ndmc.stop()
                ledger = ndmc.read_ledger()
                try:
                    assert ledger.line(pair.line).paths == tuple(hosts)  # kept in the store
                finally:
                    ledger.close()

            asyncio.run(run())
    finally:
        postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_status_of_a_standby_says_so_and_refuses_operations(tmp_path: Path, postgres_server: PgServer) -> None:
    name = "ha_" + uuid.uuid4().hex[:12]
    postgres_server.admin(f"CREATE DATABASE {name}")
    try:
        with running_pair(tmp_path, postgres_server.url(name), metrics=True) as pair:
            _standby_status(pair)
    finally:
        postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _standby_status(ha_pair: Pair) -> None:
    async def run() -> None:
        st = await ha_pair.b.call({"op": "status"})
        assert st["ha"]["role"] == "standby" and st["lines"] == []
        act = (await ha_pair.a.call({"op": "status"}))["ha"]
        assert act["role"] == "active" and act["term"] == st["ha"]["term"] and act["database"] == "primary"
        assert st["ha"]["active_holder"] == act["holder"]
        with pytest.raises(Exception, match="standby of the pair"):
            await ha_pair.b.call({"op": "send", "line": ha_pair.line, "text": "x"})

    asyncio.run(run())
    shown = subprocess.run([sys.executable, "-m", "redline", "status", "--station", str(ha_pair.b.home)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    words = " ".join(shown.stdout.split())  # rich wraps at the terminal's width
    assert "This process: STANDBY" in words and "lease term 1" in words and "database: primary" in words, words
    assert "serves no line" in words
    # --exit-code: a healthy standby is 3 (not 2, the 'no line in sync' failure); the active 0.
    for proc, code in ((ha_pair.b, 3), (ha_pair.a, 0)):
        done = subprocess.run([sys.executable, "-m", "redline", "status", "--exit-code", "--station", str(proc.home)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == code, (proc.home.name, done.returncode, done.stdout[-300:], done.stderr[-300:])
    # Monitoring on the standby's --metrics address: alive, not ready, the pair's gauges.
    a_port, b_port = ha_pair.ports[3], ha_pair.ports[4]
    assert _get(b_port, "/health") == (200, '{"ok":true,"role":"standby"}')
    assert _get(b_port, "/ready") == (503, '{"ready":false,"role":"standby"}')
    code, text = _get(b_port, "/metrics")
    assert code == 200 and 'redline_ha_role{role="standby"} 1.0' in text and "redline_ha_term 1.0" in text, text
    assert "redline_ha_active_process 1.0" in text and "redline_ha_database_up 1.0" in text, text
    assert _get(a_port, "/ready")[0] == 200
    code, text = _get(a_port, "/metrics")
    assert code == 200 and 'redline_ha_role{role="active"} 1.0' in text and "redline_ha_term 1.0" in text
    assert "redline_line_in_sync" in text  # the active's own metrics, beside the pair's
    # A second 'serve' of a folder a process already serves (review_s8 M1): on PostgreSQL every
    # serve waits as a standby first, whose control socket replaced the running process's. Now it
    # stops at once, in one line naming the first, and both sockets answer as before.
    for proc in (ha_pair.a, ha_pair.b):
        second = subprocess.run([sys.executable, "-m", "redline", "serve", "--station", str(proc.home)],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        said = (second.stdout + second.stderr).strip()
        assert second.returncode != 0 and "(redline serve)" in said and len(said.splitlines()) == 1, said
    for proc, role in ((ha_pair.a, "active"), (ha_pair.b, "standby")):
        assert asyncio.run(_is(proc, role)), (proc.home.name, role)

    async def switch() -> float:  # b takes over: its standby monitor gives the address to the station's
        t0 = time.monotonic()
        await asyncio.to_thread(ha_pair.a.stop)
        await wait_until(lambda: _is(ha_pair.b, "active"), "b took over", 10)
        took = time.monotonic() - t0
        await wait_until(lambda: synced(ha_pair.b), "the line through b", 20)

        async def ready() -> bool:
            return (await asyncio.to_thread(_get, b_port, "/ready"))[0] == 200

        await wait_until(ready, "b ready on its --metrics address", 10)
        return took

    _report("switchover after a clean stop, the standby serving --metrics", [asyncio.run(switch())])
    code, text = _get(b_port, "/metrics")
    assert 'redline_ha_role{role="active"} 1.0' in text and "redline_ha_term 2.0" in text, text


class PartitionRelay:
    """A TCP relay standing in for the network between one process and the database. ``stall``
    partitions it as a real network partition does to a TCP stream: nothing gets through either
    way, nothing is lost; what was sent meanwhile arrives after ``release`` (TCP retransmits)."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self.flowing = asyncio.Event()
        self.flowing.set()

    def stall(self) -> None:
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()

    async def start(self) -> None:
        self.flowing = asyncio.Event()  # of the relay's own loop
        self.flowing.set()
        await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def test_a_partition_between_the_active_process_and_the_database_behaves_like_a_pause(
    tmp_path: Path, postgres_server: PgServer
) -> None:
    # The active process reaches the database through a relay that partitions it (nothing gets
    # through, nothing is refused). Its store calls hang; the standby takes over when the lease
    # lapses; when the partition heals the old process finds itself deposed and steps down.
    name = "ha_" + uuid.uuid4().hex[:12]
    postgres_server.admin(f"CREATE DATABASE {name}")
    (relay_port,) = free_ports(1)
    relay = PartitionRelay(relay_port, postgres_server.port)
    via_relay = f"postgresql://{postgres_server.user}@127.0.0.1:{relay_port}/{name}"

    async def start_relay() -> None:
        await relay.start()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(start_relay())
    import threading

    relay_thread = threading.Thread(target=loop.run_forever, daemon=True)
    relay_thread.start()
    try:
        with running_pair(tmp_path, postgres_server.url(name), a_url=via_relay) as pair:

            async def run() -> float:
                stop = asyncio.Event()
                senders = [asyncio.ensure_future(traffic(pair, side, stop)) for side in ("eucom", "ndmc")]
                try:
                    await asyncio.sleep(1.0)
                    loop.call_soon_threadsafe(relay.stall)
                    t0 = time.monotonic()
                    await wait_until(lambda: _is(pair.b, "active"), "the standby took over", 30)
                    took = time.monotonic() - t0
                    await wait_until(lambda: synced(pair.b), "traffic through the new active process", 30)
                    loop.call_soon_threadsafe(relay.release)
                    await wait_until(lambda: _is(pair.a, "standby"), "the cut-off process back as standby", 60)
                    st = await pair.a.call({"op": "status"})
                    assert any("DEPOSED" in a["text"] for a in st["alarms"]), st["alarms"]
                finally:
                    stop.set()
                    await asyncio.gather(*senders)
                await converge(pair)
                return took

            took = asyncio.run(run())
            for proc in pair.procs():
                proc.stop()
            _report("takeover after the active process was cut off from the database", [took])
            problems = check(pair)
            assert not problems, "\n".join(problems)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        relay_thread.join(timeout=5)
        postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
