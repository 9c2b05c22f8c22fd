"""A real, throwaway PostgreSQL server for the tests (registered by tests/conftest.py).

``postgres_server`` (session): Debian's postgresql binaries (``pg_config --bindir``, or
/usr/lib/postgresql/N/bin), a new cluster made by ``initdb`` in a temporary folder, started by
``pg_ctl`` on a free loopback port with its socket in that folder. PostgreSQL refuses to run as
root, so as root the cluster belongs to the ``postgres`` user and every server command runs
through ``runuser -u postgres --``. Durability settings are the defaults a real station keeps
(fsync on, synchronous_commit on, full_page_writes on). Stopped (``pg_ctl stop -m immediate``) and
removed at the end of the session.

``pg_url`` (per test): a new, empty database on that server, dropped afterwards.

Without the binaries the tests that need the server skip with one line, unless
``REDLINE_REQUIRE_POSTGRES=1`` (CI: scripts/test installs the packages and sets it), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import free_ports


@dataclass(frozen=True)
class PgServer:
    bindir: Path
    datadir: Path
    sockdir: Path
    port: int
    user: str  # the OS user the server runs as (and its superuser role)
    pid: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(sql)  # type: ignore[arg-type]


def _bindir() -> Path | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def _missing(why: str) -> None:
    if os.environ.get("REDLINE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (REDLINE_REQUIRE_POSTGRES=1) but {why}")
    pytest.skip(f"no PostgreSQL server for these tests: {why} (apt-get install postgresql)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg is not installed (pip install 'psycopg[binary]')")
    bindir = _bindir()
    if bindir is None:
        _missing("initdb and pg_ctl were not found")
    assert bindir is not None
    root = os.getuid() == 0
    run_as = "postgres" if root else None
    if root and shutil.which("runuser") is None:
        _missing("running as root, and runuser is missing to start the server as the postgres user")
    top = Path(tempfile.mkdtemp(prefix="redline-pg-"))
    datadir, sockdir = top / "data", top / "sock"
    sockdir.mkdir()
    if root:
        shutil.chown(top, "postgres")
        shutil.chown(sockdir, "postgres")
    user = run_as or os.environ.get("USER") or "postgres"
    (port,) = free_ports(1)
    log = top / "server.log"
    try:
        subprocess.run(
            _as_user(run_as, [str(bindir / "initdb"), "-D", str(datadir), "-U", user, "-A", "trust", "-E", "UTF8",
                              "--no-locale", "--no-sync"]),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        options = f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on"
        subprocess.run(
            _as_user(run_as, [str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-o", options, "-w",
                              "-t", "60", "start"]),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()[-1:] or [""]
        with contextlib.suppress(OSError):
            detail += log.read_text().strip().splitlines()[-3:]
        shutil.rmtree(top, ignore_errors=True)
        _missing(f"the test server did not start: {' | '.join(detail)}")
    pid = int((datadir / "postmaster.pid").read_text().split()[0])
    server = PgServer(bindir, datadir, sockdir, port, user, pid)
    try:
        yield server
    finally:
        subprocess.run(
            _as_user(run_as, [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: PgServer) -> Iterator[str]:
    """A new empty database on the test server (dropped afterwards)."""
    name = "t_" + uuid.uuid4().hex[:16]
    postgres_server.admin(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- a primary and its synchronous standby (the database's own failover) ----------------------------
@dataclass
class PgCluster:
    """A primary and a synchronous standby made from it by ``pg_basebackup -R``, as a real pair
    would be: ``synchronous_standby_names`` and ``synchronous_commit = remote_apply`` are set on the
    primary with ALTER SYSTEM, so the standby's copy of the data folder inherits them (the trap
    ``promote`` handles). ``url``: the multi-host URL a station uses, which follows a promotion."""

    bindir: Path
    run_as: str | None
    top: Path
    nodes: list[tuple[Path, int]]  # (data folder, port): the primary first
    user: str

    def url(self, database: str) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for _, port in self.nodes)
        return f"postgresql://{self.user}@{hosts}/{database}?target_session_attrs=read-write"

    def node_url(self, i: int, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.nodes[i][1]}/{database}"

    def ctl(self, i: int, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_user(self.run_as, [str(self.bindir / "pg_ctl"), "-D", str(self.nodes[i][0]), *args]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def fail_primary(self) -> None:
        """The primary's machine dies: stopped at once, no checkpoint, no goodbye to the standby."""
        self.ctl(0, "-m", "immediate", "stop")

    def promote(self, *, reset: bool = True) -> None:
        """``pg_ctl promote`` the standby, then the trap: it inherited ``synchronous_standby_names``
        from the primary and would make every commit wait for a standby that no longer exists.
        ALTER SYSTEM RESET on the promoted node, and reload, before anything is written to it."""
        done = self.ctl(1, "-w", "-t", "60", "promote")
        assert done.returncode == 0, done.stderr
        if reset:
            self.reset_synchronous_standby_names()

    def reset_synchronous_standby_names(self) -> None:
        import psycopg

        with psycopg.connect(self.node_url(1), autocommit=True) as db:
            db.execute("ALTER SYSTEM RESET synchronous_standby_names")
            db.execute("SELECT pg_reload_conf()")

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.node_url(0), autocommit=True) as db:
            db.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    try:
        import psycopg
    except ImportError:
        _missing("psycopg is not installed (pip install 'psycopg[binary]')")
    bindir = _bindir()
    if bindir is None or not (bindir / "pg_basebackup").exists():
        _missing("initdb, pg_ctl and pg_basebackup were not found")
    assert bindir is not None
    run_as = "postgres" if os.getuid() == 0 else None
    top = Path(tempfile.mkdtemp(prefix="redline-pgha-"))
    if run_as:
        shutil.chown(top, run_as)
    user = run_as or os.environ.get("USER") or "postgres"
    p1, p2 = free_ports(2)
    primary, standby = top / "primary", top / "standby"
    cluster = PgCluster(bindir, run_as, top, [(primary, p1), (standby, p2)], user)

    def run(argv: list[str]) -> None:
        done = subprocess.run(_as_user(run_as, argv), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            shutil.rmtree(top, ignore_errors=True)
            _missing(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-300:]}")

    def start(i: int) -> None:
        datadir, port = cluster.nodes[i]
        options = f"-p {port} -k {top} -c listen_addresses=127.0.0.1"
        run([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(top / f"node{i}.log"), "-o", options, "-w",
             "-t", "60", "start"])  # fmt: skip

    run([str(bindir / "initdb"), "-D", str(primary), "-U", user, "-A", "trust", "-E", "UTF8", "--no-locale",
         "--no-sync"])  # fmt: skip
    start(0)
    try:
        with psycopg.connect(cluster.node_url(0), autocommit=True) as db:
            db.execute("ALTER SYSTEM SET synchronous_standby_names = 's1'")
            db.execute("ALTER SYSTEM SET synchronous_commit = 'remote_apply'")
            db.execute("SELECT pg_reload_conf()")
        # application_name in primary_conninfo is what names the standby 's1' (pg_rewind -R would
        # drop it unless given in --source-server: the second trap, for a node that comes back).
        conninfo = f"host=127.0.0.1 port={p1} user={user} application_name=s1"
        run([str(bindir / "pg_basebackup"), "-D", str(standby), "-R", "-X", "stream", "--no-sync", "-d", conninfo])
        with open(standby / "postgresql.auto.conf", "a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")
        start(1)
        deadline = time.monotonic() + 60
        with psycopg.connect(cluster.node_url(0), autocommit=True) as db:
            while time.monotonic() < deadline:
                row = db.execute("SELECT sync_state FROM pg_stat_replication WHERE application_name = 's1'").fetchone()
                if row and row[0] == "sync":
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the standby never became synchronous")
        yield cluster
    finally:
        for i in (0, 1):
            cluster.ctl(i, "-m", "immediate", "stop")
        shutil.rmtree(top, ignore_errors=True)
