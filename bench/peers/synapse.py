"""Synapse (PyPI ``matrix-synapse``) on 127.0.0.1 with SQLite, client-server API only.

A fresh homeserver in a temp dir (``--generate-config``, then: one plain-HTTP client listener on
127.0.0.1, SQLite database, registration without verification, rate limits lifted, stock INFO
logging to a file), stopped by its PID afterwards. alice and bob register, alice creates a private
room and invites bob, bob joins. bob keeps one ``/sync`` long-poll open at all times (a thread).

- **latency**: alice ``PUT /rooms/{room}/send/m.room.message/{txn}`` with a 1 KiB text body, the
  clock stops when bob's pending ``/sync`` returns with that event; one message in flight; median
  and p99. The PUT alone (until Synapse answers alice with the event id) is reported too.
- **throughput**: N messages sent by alice on ``SENDERS`` HTTP connections at once (many in
  flight), timed until bob's ``/sync`` has returned every one of them.

What Synapse guarantees when the PUT returns: the event is persisted in its database (SQLite, WAL,
``synchronous`` left at SQLite's default, FULL); nothing is signed end to end by the clients (the
server signs events with its own key) and bob's receipt is not part of the answer.

Run (bench venv): ``.bench-venv/bin/python -m bench.peers.synapse``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from bench.common import Figures
from bench.peers.common import BODY, cpu_seconds, free_port, latency_figures, main_with, server, wait_port

SENDERS = 8
PASSWORD = "bench-password-1"
UNLIMITED = {"per_second": 1_000_000, "burst_count": 1_000_000}


def make_config(root: Path, port: int) -> Path:
    cfg = root / "homeserver.yaml"
    subprocess.run(
        [sys.executable, "-m", "synapse.app.homeserver", "--server-name", "localhost", "--config-path", str(cfg),
         "--data-directory", str(root), "--generate-config", "--report-stats=no"],
        check=True, capture_output=True, cwd=root, timeout=120,
    )  # fmt: skip
    conf: dict[str, Any] = yaml.safe_load(cfg.read_text())
    conf["listeners"] = [
        {"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False, "x_forwarded": False,
         "resources": [{"names": ["client"], "compress": False}]}
    ]  # fmt: skip
    conf["database"] = {"name": "sqlite3", "args": {"database": str(root / "homeserver.db")}}
    conf["enable_registration"] = True
    conf["enable_registration_without_verification"] = True
    conf["report_stats"] = False
    conf["trusted_key_servers"] = []
    conf["suppress_key_server_warning"] = True
    conf["federation_domain_whitelist"] = []
    conf["presence"] = {"enabled": False}
    for limit in ("rc_message", "rc_registration", "rc_admin_redaction"):
        conf[limit] = UNLIMITED
    conf["rc_joins"] = {"local": UNLIMITED, "remote": UNLIMITED}
    conf["rc_invites"] = {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED}
    conf["rc_login"] = {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED}
    cfg.write_text(yaml.safe_dump(conf))
    return cfg


class Api:
    """One keep-alive HTTP connection to the homeserver, as one user."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = (200,)) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status not in ok:
            raise RuntimeError(f"{method} {path.split('?')[0]}: HTTP {resp.status} {data[:300]!r}")
        return json.loads(data) if data else {}

    def close(self) -> None:
        self.conn.close()


def register(port: int, user: str) -> str:
    api = Api(port)
    try:
        r = api.call("POST", "/_matrix/client/v3/register",
                     {"username": user, "password": PASSWORD, "auth": {"type": "m.login.dummy"}})  # fmt: skip
        token: str = r["access_token"]
        return token
    finally:
        api.close()


class Syncer(threading.Thread):
    """bob's /sync long-poll, always pending; records when each numbered message came back."""

    def __init__(self, port: int, token: str, room: str) -> None:
        super().__init__(daemon=True)
        self.api = Api(port, token)
        self.room = room
        self.seen: dict[int, int] = {}
        self.cond = threading.Condition()
        self.stopping = False
        flt = {"room": {"rooms": [room], "timeline": {"limit": 1000}, "state": {"lazy_load_members": True},
                        "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
               "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}}  # fmt: skip
        self.filter = urllib.parse.quote(json.dumps(flt, separators=(",", ":")))
        first = self.api.call("GET", f"/_matrix/client/v3/sync?filter={self.filter}&timeout=0")
        self.since = first["next_batch"]
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping:
                r = self.api.call(
                    "GET", f"/_matrix/client/v3/sync?filter={self.filter}&timeout=5000&since={self.since}"
                )
                now = time.perf_counter_ns()
                self.since = r["next_batch"]
                events = r.get("rooms", {}).get("join", {}).get(self.room, {}).get("timeline", {}).get("events", [])
                with self.cond:
                    for e in events:
                        if e.get("type") == "m.room.message":
                            self.seen.setdefault(int(e["content"]["body"][:9]), now)
                    self.cond.notify_all()
        except BaseException as exc:  # reported by the waiter
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while n not in self.seen:
                if self.error is not None:
                    raise RuntimeError(f"bob's /sync failed: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"message {n} did not reach bob's /sync within {timeout:g} s")
                self.cond.wait(left)
            return self.seen[n]

    def wait_count(self, numbers: range, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(n in self.seen for n in numbers):
                if self.error is not None:
                    raise RuntimeError(f"bob's /sync failed: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    got = sum(n in self.seen for n in numbers)
                    raise RuntimeError(f"only {got} of {len(numbers)} messages reached bob within {timeout:g} s")
                self.cond.wait(left)
            return max(self.seen[n] for n in numbers)


def body(n: int) -> dict[str, str]:
    return {"msgtype": "m.text", "body": f"{n:09d}" + BODY[9:]}


def drive(port: int, pid: int, *, n_latency: int, warmup: int, n_burst: int) -> Figures:
    alice_token, bob_token = register(port, "alice"), register(port, "bob")
    alice = Api(port, alice_token)
    bob = Api(port, bob_token)
    room = alice.call("POST", "/_matrix/client/v3/createRoom",
                      {"preset": "private_chat", "invite": ["@bob:localhost"]})["room_id"]  # fmt: skip
    bob.call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room)}", {})
    bob.close()
    syncer = Syncer(port, bob_token, room)
    syncer.start()
    f: Figures = {}
    quoted = urllib.parse.quote(room)
    try:
        samples: list[float] = []
        puts: list[float] = []
        for i in range(warmup + n_latency):
            start = time.perf_counter_ns()
            alice.call("PUT", f"/_matrix/client/v3/rooms/{quoted}/send/m.room.message/lat{i}", body(i))
            answered = time.perf_counter_ns()
            seen = syncer.wait_for(i)
            if i >= warmup:
                samples.append((seen - start) / 1000)
                puts.append((answered - start) / 1000)
        f.update(latency_figures("latency", samples))
        f.update(latency_figures("put", puts))

        base = 1_000_000
        numbers = range(base, base + n_burst)
        errors: list[BaseException] = []

        def sender(k: int) -> None:
            api = Api(port, alice_token)
            try:
                for n in numbers[k::SENDERS]:
                    api.call("PUT", f"/_matrix/client/v3/rooms/{quoted}/send/m.room.message/tp{n}", body(n))
            except BaseException as exc:
                errors.append(exc)
            finally:
                api.close()

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
        cpu = cpu_seconds(pid)
        start = time.perf_counter_ns()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"a sender failed: {errors[0]}")
        done = syncer.wait_count(numbers, 600)
        f["burst_n"] = float(n_burst)
        f["senders"] = float(SENDERS)
        f["throughput_per_s"] = n_burst / ((done - start) / 1e9)
        f["server_cpu_us_per_msg"] = (cpu_seconds(pid) - cpu) / n_burst * 1e6
        f["received"] = float(sum(1 for n in syncer.seen if n >= base))
    finally:
        syncer.stopping = True
        alice.close()
    return f


def measure(args: argparse.Namespace) -> Figures:
    with tempfile.TemporaryDirectory(prefix="redline-bench-synapse-") as tmp:
        root = Path(os.environ.get("REDLINE_BENCH_KEEP") or tmp)  # keep the server's files to look at
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        cfg = make_config(root, port)
        log = root / "stdout.log"
        started = time.perf_counter()
        with server([sys.executable, "-m", "synapse.app.homeserver", "-c", str(cfg)], log, cwd=root) as proc:
            wait_port(port, proc, 180, log)
            f: Figures = {"startup_s": time.perf_counter() - started}
            n_latency, warmup, n_burst = (50, 10, 100) if args.quick else (300, 30, 1000)
            f.update(drive(port, proc.pid, n_latency=n_latency, warmup=warmup, n_burst=n_burst))
    return f


def main() -> None:
    main_with(measure, argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0]))


if __name__ == "__main__":
    main()
