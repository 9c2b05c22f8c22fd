"""Metrics, health, readiness and structured logs (docs/OPERATIONS.md, "Monitoring").

/metrics is scraped from a real pair of station processes (``tests.procs.paired_stations``) and
parsed with prometheus_client's own parser; /health and /ready are asked without a login and must
say one word; the JSON log of a real station is one JSON object per line and never carries a
message's text. Time is moved with the stations' settable clock, never waited for.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from redline import persons
from redline.logs import StationJsonFormatter, configure
from redline.metrics import metrics_for
from tests.procs import StationProc, both, free_ports, paired_stations, wait_until
from tests.test_api import FAST, PASSWORD, Pair
from tests.test_api import run as run_pair

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by (name, sorted labels), parsed by prometheus_client."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: Samples, name: str, **labels: str) -> float:
    return got[(name, tuple(sorted(labels.items())))]


def labelled(got: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in got.items() if n == name}


def rl(*args: str, station: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "REDLINE_STATION": str(station)}
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env,
                          timeout=60, input=stdin)  # fmt: skip


async def send(p: StationProc, line: str, text: str, priority: str = "routine") -> dict[str, Any]:
    kind = "FLASH" if priority == "flash" else "TEXT"
    request = {"op": "send", "line": line, "text": text, "priority": priority, "kind": kind}
    result: dict[str, Any] = await p.call(request)
    return result


# -- a real pair, scraped --------------------------------------------------------------------------
@pytest.mark.slow
def test_metrics_of_a_real_pair_parse_and_say_what_the_line_is_doing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDLINE_SETTABLE_CLOCK", "1")  # tests/procs.py: the stations' clocks can be moved
    http_a, metrics_a, metrics_b = free_ports(3)
    marker = f"MARKER-{uuid.uuid4().hex}"

    async def main() -> None:
        args_a = ("--http", f"127.0.0.1:{http_a}", "--metrics", f"127.0.0.1:{metrics_a}")
        a, b, line, _ = await paired_stations(tmp_path, serve_args=(args_a, ("--metrics", f"127.0.0.1:{metrics_b}")))
        try:
            for i in range(5):
                await send(a, line, f"{marker} EUCOM {i}")
                await send(b, line, f"{marker} NDMC {i}")
            flash = await send(b, line, f"{marker} FLASH from NDMC", "flash")
            await wait_until(lambda: both(a, b, lambda ln: ln["our_seq"] + ln["their_seq"] == 11), "traffic stored")
            # Ninety seconds pass at EUCOM (its clock is moved, not waited for): the FLASH it holds is
            # 90 s old and has been escalated twice (duty, deputy at 40 s, supervisor at 80 s).
            await a.call({"op": "clock", "advance_ms": 90_000})
            await wait_until(lambda: both(a, b, measured), "escalations sent, heartbeats measured on every path")

            async with httpx.AsyncClient() as client:
                got = await scrape(client, metrics_a)
                st_a = await a.status_line()
                await wait_until(lambda: _escalations_seen(client, metrics_b), "NDMC holds the escalations")
                got_b = await scrape(client, metrics_b)
                st_b = await b.status_line()
                text = (await client.get(f"http://127.0.0.1:{metrics_a}/metrics")).text
                # The console listener serves the same metrics, but only to a logged-in person.
                console = f"http://127.0.0.1:{http_a}"
                assert (await client.get(f"{console}/metrics")).status_code == 401
                persons.add_user(a.home, "Watch", "auditor", PASSWORD, **FAST)
                bad = await client.post(f"{console}/api/login", json={"user": "Watch", "password": "wrong password!"})
                assert bad.status_code == 401
                good = await client.post(f"{console}/api/login", json={"user": "Watch", "password": PASSWORD})
                assert good.is_success
                logged_in = await client.get(f"{console}/metrics")
                assert logged_in.status_code == 200 and logged_in.headers["content-type"].startswith("text/plain")
                after = samples(logged_in.text)
        finally:
            a.stop()
            b.stop()

        # No message content anywhere: not in a label, not in a help text, not in a value.
        assert marker not in text
        names = {family.name for family in text_string_to_metric_families(text)}
        assert all(n.startswith("redline_") for n in names), names
        # docs/OPERATIONS.md lists every metric, and its alert rules name only metrics that exist.
        section = (ROOT / "docs" / "OPERATIONS.md").read_text().split("## 9. Monitoring")[1].split("\n## ")[0]
        documented = set(re.findall(r"`(redline_[a-z_]+)`", section))
        assert all({n, f"{n}_total"} & documented for n in names), names - documented
        rules = section.split("```yaml")[1].split("```")[0]
        exposed = names | {s.name for f in text_string_to_metric_families(text) for s in f.samples}
        assert set(re.findall(r"\bredline_[a-z_]+", rules)) <= exposed
        for family in text_string_to_metric_families(text):
            if family.type == "counter":
                assert all(s.name.endswith("_total") for s in family.samples), family.name

        for side, st, m in (("EUCOM", st_a, got), ("NDMC", st_b, got_b)):
            assert value(m, "redline_line_in_sync", line=line) == 1, side
            assert value(m, "redline_line_up", line=line) == 1
            assert value(m, "redline_line_active", line=line) == 1
            assert value(m, "redline_line_halted", line=line) == 0
            assert value(m, "redline_line_outbox_messages", line=line) == 0
            assert value(m, "redline_line_unreceipted_envelopes", line=line) == 0
            assert value(m, "redline_envelopes_total", line=line, direction="sent") == st["our_seq"]
            assert value(m, "redline_envelopes_total", line=line, direction="received") == st["their_seq"]
            paths = labelled(m, "redline_path_up")
            assert len(paths) == 2 and set(paths.values()) == {1.0}, paths
            for labels in paths:
                path = dict(labels)["path"]
                assert value(m, "redline_path_rtt_seconds", line=line, path=path) >= 0
                assert (("redline_path_clock_skew_seconds", labels)) in m
                for direction in ("sent", "received"):
                    assert value(m, "redline_path_bytes_total", line=line, path=path, direction=direction) > 0
            for direction in ("sent", "received"):
                used = value(m, "redline_line_disk_bytes", line=line, direction=direction)
                assert 0 < used < value(m, "redline_line_disk_limit_bytes", line=line, direction=direction)
            assert value(m, "redline_commit_duration_seconds_count") > 0
            assert value(m, "redline_group_commit_envelopes_count") > 0
            assert value(m, "redline_group_commit_envelopes_sum") >= 1
            assert value(m, "redline_line_last_checkpoint_timestamp_seconds", line=line) > 0  # FLASH is operational
            assert value(m, "redline_line_checkpoint_lag_seconds", line=line) >= 0
            assert value(m, "redline_line_tests_missed_total", line=line, answerer="peer") == 0
            assert ("redline_line_last_proven_age_seconds", (("line", line),)) in m
            assert value(m, "redline_store_bytes") > 0 and value(m, "redline_store_filesystem_free_bytes") > 0
            assert value(m, "redline_line_info", line=line, peer="NDMC" if side == "EUCOM" else "EUCOM") == 1
        # The FLASH NDMC sent waits for a person at EUCOM: 90 s old there, escalated twice so far.
        assert value(got, "redline_flash_pending", line=line, direction="received") == 1
        assert value(got, "redline_flash_pending", line=line, direction="sent") == 0
        assert value(got, "redline_flash_pending_oldest_age_seconds", line=line, direction="received") >= 90
        assert value(got, "redline_flash_escalations_total", line=line, direction="received") == 2
        assert value(got_b, "redline_flash_pending", line=line, direction="sent") == 1
        assert value(got_b, "redline_flash_escalations_total", line=line, direction="sent") == 2
        assert flash["seq"] == st_b["our_seq"]
        # One wrong password at the console, counted by reason (and nothing else counted).
        assert value(after, "redline_login_failures_total", reason="wrong_password") == 1
        assert value(after, "redline_login_failures_total", reason="locked_out") == 0

    asyncio.run(main())


def measured(ln: dict[str, Any]) -> bool:
    paths = ln["paths"].values()
    return bool(ln["synced"] and ln["unreceipted"] == 0 and len(paths) == 2
                and all(p["up"] and p["rtt_ms"] is not None and p["skew_ms"] is not None for p in paths))  # fmt: skip


async def scrape(client: httpx.AsyncClient, port: int) -> Samples:
    r = await client.get(f"http://127.0.0.1:{port}/metrics")  # the metrics-only address: no login
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


async def _escalations_seen(client: httpx.AsyncClient, port: int) -> bool:
    got = await scrape(client, port)
    return any(v == 2 for v in labelled(got, "redline_flash_escalations_total").values())


@pytest.mark.slow
def test_health_ready_and_the_exit_code_follow_the_line(tmp_path: Path) -> None:
    """/health and /ready on the metrics-only address, and 'redline status --exit-code': in sync,
    then the peer gone (not ready, still healthy), then the station itself gone (exit 1)."""
    m_a, m_b = free_ports(2)

    async def main() -> None:
        a, b, line, _ = await paired_stations(
            tmp_path, relays=False, serve_args=(("--metrics", f"127.0.0.1:{m_a}"), ("--metrics", f"127.0.0.1:{m_b}"))
        )
        try:
            async with httpx.AsyncClient() as client:
                for port in (m_a, m_b):
                    health = await client.get(f"http://127.0.0.1:{port}/health")
                    ready = await client.get(f"http://127.0.0.1:{port}/ready")
                    assert (health.status_code, health.json()) == (200, {"ok": True})
                    assert (ready.status_code, ready.json()) == (200, {"ready": True})
                    # Nothing else is served there: not the console, not the API, not a login.
                    for path in ("/", "/api/status", "/api/openapi.json"):
                        assert (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 404
                    assert (await client.post(f"http://127.0.0.1:{port}/api/login", json={})).status_code == 404
                    # DNS rebinding: a page of another site, pointed at this address, reads nothing.
                    rebound = await client.get(f"http://127.0.0.1:{port}/metrics", headers={"host": "evil.example"})
                    assert rebound.status_code == 421 and "redline_" not in rebound.text
                ok = await asyncio.to_thread(rl, "status", "--exit-code", station=b.home)
                assert ok.returncode == 0, ok.stderr
                a.stop()
                await wait_until(lambda: _not_ready(client, m_b), "NDMC not ready once EUCOM is gone")
                health = await client.get(f"http://127.0.0.1:{m_b}/health")
                assert (health.status_code, health.json()) == (200, {"ok": True})  # alive; the line is not
            down = await asyncio.to_thread(rl, "status", "--exit-code", station=b.home)
            assert down.returncode == 2, (down.stdout, down.stderr)
            assert "NOT IN SYNC" in down.stdout
            gone = await asyncio.to_thread(rl, "status", "--exit-code", station=a.home)
            assert gone.returncode == 1 and "no running station" in gone.stderr
            assert line
        finally:
            a.stop()
            b.stop()

    asyncio.run(main())


async def _not_ready(client: httpx.AsyncClient, port: int) -> bool:
    r = await client.get(f"http://127.0.0.1:{port}/ready")
    return r.status_code == 503 and r.json() == {"ready": False}


# -- in process: the console listener ---------------------------------------------------------------
def test_health_and_ready_without_login_reveal_nothing_else(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        for path, body in (("/health", {"ok": True}), ("/ready", {"ready": True})):
            r = await p.client.get(path)
            assert r.status_code == 200 and r.json() == body, r.text
            assert r.headers["cache-control"] == "no-store" and "set-cookie" not in r.headers
            # DNS rebinding: another Host gets nothing, not even the one word.
            assert (await p.client.get(path, headers={"host": "evil.example:8080"})).status_code == 421
        assert (await p.client.get("/metrics")).status_code == 401  # the console listener needs a login

    run_pair(tmp_path, scenario)


def test_health_fails_while_the_store_refuses_writes_and_recovers_after(tmp_path: Path) -> None:
    """Another connection holds the store's write lock (as a stuck backup tool or a full disk
    would stop writes): /health says 503 at once, and 200 as soon as writes go through again."""

    async def scenario(p: Pair) -> None:
        db = p.a.ledger._db
        db.execute("PRAGMA busy_timeout=0")  # fail at once instead of waiting five seconds
        blocker = sqlite3.connect(p.a.home.ledger_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            r = await p.client.get("/health")
            assert (r.status_code, r.json()) == (503, {"ok": False})
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        r = await p.client.get("/health")
        assert (r.status_code, r.json()) == (200, {"ok": True})

    run_pair(tmp_path, scenario)


def test_a_failed_commit_keeps_health_failing_until_a_real_write_succeeds(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        m = metrics_for(p.a)
        m.last_commit_failed = True  # what a commit refused by the disk leaves behind
        r = await p.client.get("/health")
        # The probe write goes through (this disk is fine): healthy again, and the flag is cleared.
        assert (r.status_code, r.json()) == (200, {"ok": True}) and not m.last_commit_failed

    run_pair(tmp_path, scenario)


# -- JSON logs --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_json_log_is_one_object_per_line_and_never_carries_a_message_body(tmp_path: Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"

    async def main() -> None:
        a, b, line, relays = await paired_stations(tmp_path, serve_args=(("--log-format", "json", "-v"), ()))
        try:
            await send(a, line, f"{marker} routine from EUCOM")
            await send(b, line, f"{marker} FLASH to EUCOM", "flash")  # raises an alarm at EUCOM
            await wait_until(lambda: both(a, b, lambda ln: ln["their_seq"] >= 1 and ln["unreceipted"] == 0), "sent")
            await relays[0].cut()  # a path drops: logged
            await wait_until(lambda: _path_down(a), "EUCOM saw the path drop")
        finally:
            a.stop()
            b.stop()
        raw = a.log.read_text(encoding="utf-8")
        assert marker not in raw
        records = [json.loads(row) for row in raw.splitlines() if row.strip()]
        assert records and all(isinstance(r, dict) for r in records)
        for r in records:
            assert {"time", "level", "logger", "event", "message"} <= set(r), r
        alarms = [r for r in records if r["event"] == "alarm"]
        assert any(r["line"] == line and r["alarm_level"] == "alarm" and "FLASH" in r["message"] for r in alarms)
        assert marker not in b.log.read_text(encoding="utf-8")  # nor in the human log

    asyncio.run(main())


async def _path_down(p: StationProc) -> bool:
    return any(not s["up"] for s in (await p.status_line())["paths"].values())


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("redline.station").level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("redline.station").setLevel(saved[2])


def test_peer_text_in_a_json_log_cannot_move_the_terminal_or_reorder_it(root_logging: None) -> None:
    """ANSI escapes and bidirectional overrides from the peer (an ERROR reason, a station name)
    reach the JSON log as visible escapes: no raw control byte, no raw override, still one line."""
    configure("json", verbose=True)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, StationJsonFormatter)
    handler.setStream(stream)
    hostile = "EUCOM\u202e\u2066 evil \x1b[2J\x1b]0;owned\x07\nsecond line\u0085 Привет"
    logging.getLogger("redline.station").warning(
        "path %s of line %s closed: %s", "p1", "abcd1234", hostile, extra={"line": "ab" * 16, "event": "path_closed"}
    )
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    assert not any(ch in out for ch in "\x1b\x07\u202e\u2066\u0085")
    record = json.loads(out)
    assert record["event"] == "path_closed" and record["line"] == "ab" * 16 and record["level"] == "warning"
    assert "\\u202e" in record["message"] and "\\x1b[2J" in record["message"] and "Привет" in record["message"]
