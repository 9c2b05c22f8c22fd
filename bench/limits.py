"""This machine's limits, measured in the same run as the benchmarks that are set against them.

The machines are shared and noisy (shared/LIMITS.md), so every benchmark run measures again:

- SQLite in WAL mode with ``synchronous=FULL``, one 1 KiB row per commit: median and p99 over
  2000 commits after 1200 warm-up commits (a fresh WAL is dearer while it grows), and rows/s at
  100 rows per commit;
- ``write`` of 1 KiB appended to a file + ``fsync``: median and p99 over 2000 after 200 warm-up;
- Ed25519 sign and verify with PyNaCl (what redline uses), µs per op, over a 512-byte message
  (an envelope header is about that size);
- SHA-256 of 1 KiB, µs per op;
- TLS 1.3 round trip on loopback: an echo server in its own process, mutual authentication with
  Ed25519 certificates from ``redline.identity.new_tls_identity``, redline's own
  ``transport.Server``/``dial`` and framing, 1 KiB frames, one in flight: median and p99 over 5000
  echoes after 300 warm-up; and pipelined echo throughput over 20,000 frames.

Run alone: ``.venv/bin/python -m bench.limits``. ``measure()`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nacl.signing

from bench.common import Figures, Row, median_p99, no_gc, per_op_us, table
from redline.config import Limits
from redline.identity import new_tls_identity, spki_hash
from redline.transport import Connection, Server, dial

KIB = b"x" * 1024
REPO = Path(__file__).resolve().parent.parent

# The realistic Python path of shared/LIMITS.md section 4, rebuilt from this run's figures:
# sign + A commit + TLS one-way + verify + B commit + sign the ack + ack one-way + verify the ack.
IMPLIED_LATENCY_AIM_FACTOR = 1.5  # issue 3: "p50 within 1.5x of the limit they imply"
THROUGHPUT_AIM = 12_000.0  # issue 3: "throughput at least 12,000 messages/s"


# -- disk -------------------------------------------------------------------------------------------
def sqlite_full_commit(folder: Path, commits: int = 2000, warmup: int = 1200) -> tuple[float, float, float]:
    """(median, p99, CPU) µs of one 1 KiB-row commit in WAL mode with synchronous=FULL.

    CPU is user + system time per commit: in this VM an fsync burns CPU in the guest kernel."""
    db = sqlite3.connect(folder / "limits.sqlite", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        samples: list[float] = []
        with no_gc():
            for i in range(warmup + commits):
                if i == warmup:
                    cpu = time.process_time()
                start = time.perf_counter_ns()
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t (data) VALUES (?)", (KIB,))
                db.execute("COMMIT")
                if i >= warmup:
                    samples.append((time.perf_counter_ns() - start) / 1000)
            cpu_us = (time.process_time() - cpu) / commits * 1e6
        return (*median_p99(samples), cpu_us)
    finally:
        db.close()


def sqlite_full_rows_per_s(folder: Path, rows_per_commit: int = 100, commits: int = 200) -> float:
    """1 KiB rows per second when ``rows_per_commit`` rows share one FULL commit."""
    db = sqlite3.connect(folder / "limits-batch.sqlite", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        rows = [(KIB,)] * rows_per_commit
        for _ in range(20):  # warm-up: let the WAL grow first
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO t (data) VALUES (?)", rows)
            db.execute("COMMIT")
        with no_gc():
            start = time.perf_counter()
            for _ in range(commits):
                db.execute("BEGIN IMMEDIATE")
                for row in rows:  # one execute per row, as Ledger.append does
                    db.execute("INSERT INTO t (data) VALUES (?)", row)
                db.execute("COMMIT")
            elapsed = time.perf_counter() - start
        return rows_per_commit * commits / elapsed
    finally:
        db.close()


def fsync_append(folder: Path, ops: int = 2000, warmup: int = 200) -> tuple[float, float]:
    """(median, p99) µs of write(1 KiB, append) + fsync."""
    fd = os.open(folder / "limits.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        samples: list[float] = []
        with no_gc():
            for i in range(warmup + ops):
                start = time.perf_counter_ns()
                os.write(fd, KIB)
                os.fsync(fd)
                if i >= warmup:
                    samples.append((time.perf_counter_ns() - start) / 1000)
        return median_p99(samples)
    finally:
        os.close(fd)


# -- crypto -----------------------------------------------------------------------------------------
def crypto() -> Figures:
    key = nacl.signing.SigningKey.generate()
    public = bytes(key.verify_key)
    message = os.urandom(512)
    signature = key.sign(message).signature
    verify_key = nacl.signing.VerifyKey(public)
    with no_gc():
        sign_us = per_op_us(lambda: key.sign(message), 2000)
        verify_us = per_op_us(lambda: verify_key.verify(message, signature), 2000)
        sha_us = per_op_us(lambda: hashlib.sha256(KIB).digest(), 50_000)
    return {"sign_us": sign_us, "verify_us": verify_us, "sha256_1k_us": sha_us}


# -- TLS echo ---------------------------------------------------------------------------------------
def _tls_files(folder: Path) -> tuple[Path, Path, Path, Path]:
    skey, scrt, ckey, ccrt = (folder / n for n in ("server.key", "server.crt", "client.key", "client.crt"))
    if not scrt.exists():
        new_tls_identity(skey, scrt, "bench-echo-server")
        new_tls_identity(ckey, ccrt, "bench-echo-client")
    return skey, scrt, ckey, ccrt


def _der(pem_path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem_path.read_bytes()).public_bytes(Encoding.DER)


async def _echo_server(folder: Path, lifetime: float) -> None:
    """Serve TLS echo on 127.0.0.1 (port printed on stdout) for at most ``lifetime`` seconds."""
    skey, scrt, _, ccrt = _tls_files(folder)
    client_der = _der(ccrt)

    async def echo(conn: Connection) -> None:
        with contextlib.suppress(Exception):
            while True:
                conn.write(await conn.recv())
                await conn.drain()

    server = await Server.start(
        "127.0.0.1", 0, server_cert=scrt, server_key=skey, pins=lambda: [client_der], on_connection=echo,
        limits=Limits(),
    )  # fmt: skip
    print(server.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), lifetime)
    server.close()
    await server.wait_closed()


async def _tls_client(folder: Path, port: int, echoes: int, warmup: int, pipelined: int) -> Figures:
    _, scrt, ckey, ccrt = _tls_files(folder)
    conn = await dial("127.0.0.1", port, cert=ccrt, key=ckey, pins={spki_hash(_der(scrt))}, limits=Limits())
    try:
        samples: list[float] = []
        with no_gc():
            for i in range(warmup + echoes):
                start = time.perf_counter_ns()
                conn.write(KIB)
                await conn.drain()
                await conn.recv()
                if i >= warmup:
                    samples.append((time.perf_counter_ns() - start) / 1000)
        p50, p99 = median_p99(samples)

        async def writer() -> None:
            for i in range(pipelined):
                conn.write(KIB)
                if i % 64 == 63:
                    await conn.drain()
            await conn.drain()

        began = time.perf_counter()
        task = asyncio.ensure_future(writer())
        for _ in range(pipelined):
            await conn.recv()
        await task
        per_s = pipelined / (time.perf_counter() - began)
        return {"tls_rtt_p50_us": p50, "tls_rtt_p99_us": p99, "tls_echo_per_s": per_s}
    finally:
        conn.close()


def tls_echo(folder: Path, echoes: int = 5000, warmup: int = 300, pipelined: int = 20_000) -> Figures:
    """TLS 1.3 mutual-auth echo with the server in its own process (stopped by its own PID)."""
    _tls_files(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.limits", "--echo-server", str(folder)],
        stdout=subprocess.PIPE, cwd=REPO, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        return asyncio.run(_tls_client(folder, port, echoes, warmup, pipelined))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- all --------------------------------------------------------------------------------------------
def implied_latency_us(f: Figures) -> float:
    """LIMITS.md's realistic path for one durable, acknowledged message, from this run's figures."""
    return 2 * f["sqlite_full_p50_us"] + 2 * f["sign_us"] + 2 * f["verify_us"] + f["tls_rtt_p50_us"]


def measure(folder: Path | None = None, *, quick: bool = False) -> Figures:
    """Measure every limit once; ``quick`` shortens the loops (for a smoke run, not for figures)."""
    scale = 10 if quick else 1
    with tempfile.TemporaryDirectory(prefix="redline-limits-", dir=folder) as tmp:
        root = Path(tmp)
        f: Figures = {}
        f["sqlite_full_p50_us"], f["sqlite_full_p99_us"], f["sqlite_full_cpu_us"] = sqlite_full_commit(
            root, 2000 // scale, 1200 // scale
        )
        f["sqlite_full_100rows_per_s"] = sqlite_full_rows_per_s(root, commits=200 // scale)
        f["fsync_p50_us"], f["fsync_p99_us"] = fsync_append(root, 2000 // scale, 200 // scale)
        f.update(crypto())
        f.update(tls_echo(root, 5000 // scale, 300 // scale, 20_000 // scale))
    f["implied_latency_us"] = implied_latency_us(f)
    return f


def rows(f: Figures) -> list[Row]:
    return [
        Row("SQLite WAL FULL, 1 row/commit, median", f["sqlite_full_p50_us"], "µs", "LIMITS.md", 195),
        Row("SQLite WAL FULL, 1 row/commit, p99", f["sqlite_full_p99_us"], "µs", "LIMITS.md", 555),
        Row(
            "SQLite WAL FULL, 1 row/commit, CPU per commit",
            f["sqlite_full_cpu_us"],
            "µs",
            note="user + kernel: the guest's fsync is not free",
        ),
        Row("SQLite WAL FULL, 100 rows/commit", f["sqlite_full_100rows_per_s"], "/s", "LIMITS.md", 133_000),
        Row("write 1 KiB + fsync, median", f["fsync_p50_us"], "µs", "LIMITS.md", 226),
        Row("write 1 KiB + fsync, p99", f["fsync_p99_us"], "µs", "LIMITS.md", 628),
        Row("Ed25519 sign (PyNaCl)", f["sign_us"], "µs", "LIMITS.md", 19.2),
        Row("Ed25519 verify (PyNaCl)", f["verify_us"], "µs", "LIMITS.md", 41.6),
        Row("SHA-256, 1 KiB", f["sha256_1k_us"], "µs", "LIMITS.md", 0.80),
        Row("TLS 1.3 mutual-auth echo RTT, median", f["tls_rtt_p50_us"], "µs", "LIMITS.md", 126),
        Row("TLS 1.3 mutual-auth echo RTT, p99", f["tls_rtt_p99_us"], "µs", "LIMITS.md", 179),
        Row("TLS 1.3 pipelined echo", f["tls_echo_per_s"], "/s", "LIMITS.md", 144_000),
        Row(
            "implied durable-ack latency (2 commits + 2 signs + 2 verifies + RTT)",
            f["implied_latency_us"],
            "µs",
            "LIMITS.md",
            640,
        ),
    ]


def report(f: Figures) -> str:
    return table("Machine limits (this run)", rows(f))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loops: a smoke run, not figures")
    parser.add_argument("--echo-server", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        asyncio.run(_echo_server(Path(args.echo_server), lifetime=300.0))
        return
    print(report(measure(quick=args.quick)))


if __name__ == "__main__":
    main()
