"""``redline doctor``: what an engineer checks at 3 a.m., each finding with what to do about it.

Checks: the secrets' owners and modes (``StationDir.check_private``, the same rule the station
starts by) and a root key left on the station; the station answering; each line confirmed, in sync
and not halted; each path up (or, with the station stopped, reachable by TCP); the clock against
the peer (heartbeat skew); disk against each direction's budget and the file system's free room;
the store's integrity (``PRAGMA quick_check`` on a read-only connection, run by the station itself
when it runs: nothing else may open its files then); the TLS certificates' expiry (ours and each
pinned peer's: a pinned certificate past its date is refused by TLS); the line's last proof (the
last passed line test); checkpoints keeping up; the latest backup's age.

Severity: ``ok``, ``warning`` (something to fix in working hours) and ``critical`` (the line is or
will soon be unusable, or evidence is at risk). The exit code is the worst: 0, 1 or 2.

The checks are pure over ``Facts`` (what the station reported, or what was read from a stopped
one) and a time, so each finding is tested without a clock or a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redline import backup
from redline.config import Limits, StationConfig, parse_hostport
from redline.errors import ConfigError, RedlineError, SchemaVersionError, WrongStoreError
from redline.home import StationDir
from redline.ledger.interface import LedgerStore
from redline.ledger.sqlite import Ledger
from redline.statements import Checkpoint

if TYPE_CHECKING:
    from redline.station import Station

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY_EXIT = {OK: 0, WARNING: 1, CRITICAL: 2}
DAY_MS = 86_400_000


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Where a finding turns from ok to warning to critical."""

    skew_warning_seconds: float = 1.0  # sent-at claims drift; deadlines still run on our own clock
    skew_critical_seconds: float = 30.0
    disk_critical_fraction: float = 0.95  # the warning is at Limits.line_disk_warn_fraction (80 %)
    cert_warning_days: float = 30.0
    backup_warning_hours: float = 26.0  # a daily backup, with slack
    backup_critical_hours: float = 7 * 24.0
    proof_slack_seconds: float = 900.0  # beyond the longest gap between scheduled tests + answer window
    checkpoint_lag_factor: float = 5.0  # times checkpoint_every_seconds (at least 5 min)
    reach_timeout_seconds: float = 2.0


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    text: str
    fix: str = ""

    def to_obj(self) -> dict[str, str]:
        return {"check": self.check, "severity": self.severity, "text": self.text, "fix": self.fix}


@dataclass
class Facts:
    """What the doctor looks at. From a running station (``station_facts``, over its control
    socket) or read from a stopped one's files (``stopped_facts``)."""

    running: bool
    now: int  # ms
    lines: list[dict[str, Any]] = field(default_factory=list)  # status() rows + disk, tests, checkpoint
    integrity: list[str] = field(default_factory=list)  # quick_check rows; ["ok"] when whole
    reachable: dict[str, str | None] = field(default_factory=dict)  # stopped: path -> None or why not
    # A stopped station's store refused for its layout's version (not damage), in words, and
    # whether a newer redline wrote it; "" when the store opened.
    schema: str = ""
    schema_newer: bool = False


# -- gathering ---------------------------------------------------------------------------------------
ON_POSTGRES = "store on PostgreSQL"


def quick_check(path: Path) -> list[str]:
    """``PRAGMA quick_check`` on a read-only connection (``Ledger.open_read_only``); a store that
    cannot even be opened is reported by the reason it was refused."""
    try:
        with backup.read_only_store(path) as db:
            return [str(r[0]) for r in db.execute("PRAGMA quick_check(20)").fetchall()]
    except (RedlineError, sqlite3.DatabaseError) as exc:
        return [str(exc)]


def _line_extras(ledger: LedgerStore, line: str, us: str, peer: str, now: int) -> dict[str, Any]:
    """Checkpoint time and lag, read from the ledger (the station's own, or a read-only one)."""
    last = ledger.last_checkpoint(line)
    covered: dict[str, int] = {}
    at = None
    if last is not None:
        cp = Checkpoint.peek(last[1])
        at, covered = cp.time, {h.station: h.size for h in cp.heads}
    oldest = now
    for fp in (us, peer):
        size = covered.get(fp, 0)
        if ledger.head(line, fp)[0] > size:
            oldest = min(oldest, ledger.stored_at(line, fp, size + 1) or now)
    return {"checkpoint_at": at, "checkpoint_lag_ms": now - oldest}


async def station_facts(station: Station) -> dict[str, Any]:
    """Control op ``doctor``: what only the running station can tell, read in its own event loop;
    the store's quick check runs in a worker thread on a read-only connection of its own."""
    now = station.wall()
    lines = []
    for row in station.status().to_obj()["lines"]:
        session = station.sessions[row["line"]]
        history = station.tests_view(row["line"])
        lines.append({
            **row, "disk_sent": session.disk_ours, "disk_received": session.disk_theirs,
            "created_at": session.record.created_at, "peer_tls_cert": session.record.peer_tls_cert,
            "since_last_proven_ms": history.since_last_proven_ms,
            "last_test": history.tests[-1].result if history.tests else None,
            **_line_extras(station.ledger, row["line"], session.us, session.peer, now),
        })  # fmt: skip
    if station.config.store:  # PostgreSQL: its own checks; the transcript is checked by 'redline verify'
        return {"now": now, "lines": lines, "integrity": [ON_POSTGRES]}
    integrity = await asyncio.to_thread(quick_check, station.home.ledger_path)
    return {"now": now, "lines": lines, "integrity": integrity}


def stopped_facts(home: StationDir, now: int, thresholds: Thresholds) -> Facts:
    """A stopped station, read from its files: the store opened read-only (which checks its files
    and runs SQLite's quick check as it opens), each dialled path tried by TCP."""
    facts = Facts(running=False, now=now, integrity=["ok"])
    with contextlib.suppress(ConfigError):
        if home.config().store:
            facts.integrity = [ON_POSTGRES]  # no SQLite file to read; the database keeps its own
            try:  # but it must be this station's store (an unreachable database is told elsewhere)
                home.read_ledger().close()
            except WrongStoreError as exc:
                facts.integrity = [str(exc)]
            except RedlineError:
                pass
            return facts
    try:
        station = home.fingerprint()
    except ConfigError:
        station = None  # keys unreadable: the keys check says so; the store is still checked
    try:
        ledger = Ledger.open_read_only(home.ledger_path, station=station)
    except SchemaVersionError as exc:  # a store of another version is not a damaged one
        facts.integrity, facts.schema, facts.schema_newer = [], str(exc), exc.newer
        return facts
    except (RedlineError, sqlite3.DatabaseError) as exc:
        facts.integrity = [str(exc)]
        return facts
    try:
        # The full page-by-page check, whatever a clean-close mark would let an ordinary open skip.
        try:
            facts.integrity = [str(r[0]) for r in ledger._db.execute("PRAGMA quick_check(20)").fetchall()]
        except sqlite3.DatabaseError as exc:
            facts.integrity = [str(exc)]
        if facts.integrity != ["ok"]:
            return facts  # a damaged store is not read further
        try:
            _read_lines(ledger, facts, now, thresholds)
        except (RedlineError, sqlite3.DatabaseError) as exc:  # a row quick_check cannot see is damaged
            facts.integrity, facts.lines, facts.reachable = [str(exc)], [], {}
    finally:
        ledger.close()
    return facts


def _read_lines(ledger: Ledger, facts: Facts, now: int, thresholds: Thresholds) -> None:
    """What ``stopped_facts`` reads of each line (raises ``StorageError`` for a damaged row)."""
    us = ledger.station
    for record in ledger.lines():
        facts.lines.append({
            "line": record.line, "peer": record.peer_name, "active": record.active,
            "confirmed": {"local": record.confirmed_local, "peer": record.confirmed_peer},
            "synced": None, "halted": bool(ledger.equivocations(record.line)), "paths": {},
            "disk_sent": ledger.line_bytes(record.line, us),
            "disk_received": ledger.line_bytes(record.line, record.peer),
            "created_at": record.created_at, "peer_tls_cert": record.peer_tls_cert,
            "since_last_proven_ms": None, "last_test": None,
            **_line_extras(ledger, record.line, us, record.peer, now),
        })  # fmt: skip
        if not record.we_invited:
            for addr in record.paths:
                facts.reachable[addr] = _reach(addr, thresholds.reach_timeout_seconds)


def _reach(addr: str, timeout: float) -> str | None:
    try:
        host, port = parse_hostport(addr)
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except (OSError, ConfigError) as exc:
        return str(getattr(exc, "strerror", None) or exc)


# -- the checks --------------------------------------------------------------------------------------
def examine(home: StationDir, facts: Facts, thresholds: Thresholds | None = None) -> list[Finding]:
    t = thresholds or Thresholds()
    out: list[Finding] = []
    out += _keys(home)
    config: StationConfig | None = None
    try:
        config = home.config()
    except ConfigError as exc:
        out.append(Finding("config", CRITICAL, str(exc), "fix config.json; the station does not start without it"))
    limits = config.limits if config else Limits()
    if facts.running:
        out.append(Finding("station", OK, "running; its control socket answers"))
    else:
        out.append(Finding("station", CRITICAL, "not running (no control socket answers)",
                           f"start it: redline serve --station {home.path} (or systemctl start)"))  # fmt: skip
    out += _store(facts, home)
    if not facts.lines:
        out.append(Finding("line", WARNING, "no line is paired yet", "pair with the other station: redline invite"))
    for ln in facts.lines:
        out += _line(ln, facts, limits, t)
    out += _disk(home, facts, limits, t)
    out += _certificates(home, facts, t)
    out += _backups(home, facts, t)
    out += _dependencies()
    return out


# What redline needs at least (pyproject.toml says the same); libsodium through PyNaCl does the
# Ed25519 checks, OpenSSL through Python and cryptography the TLS 1.3.
_NEEDS = {"pynacl": "1.5", "cryptography": "42", "click": "8.1", "rich": "13", "shapely": "2", "starlette": "0.37",
          "uvicorn": "0.29", "prometheus-client": "0.17"}  # fmt: skip


def _dependencies() -> list[Finding]:
    """The version of every dependency, libsodium and OpenSSL; one too old is a warning."""
    import ssl
    from importlib import metadata

    def parts(version: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", version)[:3])

    found, old = [], []
    for name, least in _NEEDS.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            old.append(f"{name} is missing (needs {least} or later)")
            continue
        found.append(f"{name} {have}")
        if parts(have) < parts(least):
            old.append(f"{name} {have} is older than {least}")
    found.append(ssl.OPENSSL_VERSION)  # libsodium comes inside the PyNaCl wheel, with its version
    if old:
        return [Finding("versions", WARNING, "; ".join(old), "reinstall: pip install -U redline (in its venv)")]
    return [Finding("versions", OK, ", ".join(found))]


def worst(findings: list[Finding]) -> str:
    return max((f.severity for f in findings), key=SEVERITY_EXIT.__getitem__, default=OK)


def _keys(home: StationDir) -> list[Finding]:
    out = []
    try:
        home.check_private()
        out.append(Finding("keys", OK, "the directory, keys and users belong to this user and are closed to others"))
    except ConfigError as exc:
        fix = "run the chmod/chown commands above; the station refuses to start until then"
        out.append(Finding("keys", CRITICAL, str(exc), fix))
    if (home.keys / "root.key").exists():
        text = f"the root key is on the station's disk ({home.keys / 'root.key'})"
        fix = ("move it to offline storage (encrypted USB in a safe); key and root rotation, revocation "
               "and user add/rotate/remove need it")
        out.append(Finding("keys", WARNING, text, fix))
    return out


def _store(facts: Facts, home: StationDir) -> list[Finding]:
    # Never the damaged store's advice (restore a backup) for a store of another version: a
    # rollback to an older redline, or an upgrade not yet started, would throw away what is newer.
    if facts.schema and facts.schema_newer:
        fix = ("run the redline release that wrote it, or a newer one, and its 'redline doctor' (this one "
               "cannot check the store's pages); do not restore a backup for this: it would lose what was "
               "written since")  # fmt: skip
        return [Finding("store", CRITICAL, f"this redline cannot open the store: {facts.schema}", fix)]
    if facts.schema:
        fix = ("start the station once: it checks the store and brings it up to date in one transaction "
               "(docs/OPERATIONS.md, 'Upgrading redline'); then run 'redline doctor' again")  # fmt: skip
        return [Finding("store", WARNING, f"the store is of an older layout: {facts.schema}", fix)]
    if facts.integrity == [ON_POSTGRES]:
        text = ("on PostgreSQL: the database checks its own pages; 'redline verify' checks the transcript (and "
                "pg_dump backs it up: docs/OPERATIONS.md, section 12)")
        return [Finding("store", OK, text)]
    if facts.integrity == ["ok"]:
        how = "run by the station on a read-only connection" if facts.running else "store opened read-only"
        return [Finding("store", OK, f"integrity check passed ({how})")]
    shown = "; ".join(facts.integrity[:5])
    fix = ("stop the station, keep its files as evidence, restore the latest backup into an empty directory "
           f"(redline restore BACKUP --station {home.path}-restored): docs/OPERATIONS.md, 'Backup and restore'")
    return [Finding("store", CRITICAL, f"the store failed its integrity check: {shown}", fix)]


def _line(ln: dict[str, Any], facts: Facts, limits: Limits, t: Thresholds) -> list[Finding]:
    name = f"line {ln['line'][:8]} ({ln['peer']})"
    out: list[Finding] = []
    if ln["halted"]:
        out.append(Finding("line", CRITICAL, f"{name} is HALTED: the peer signed two envelopes at one seq",
                           "call the other side's engineers; export the store; delete nothing"))  # fmt: skip
    if not ln["active"]:
        out.append(Finding("line", WARNING, f"{name} waits for safety-code confirmation "
                           f"(here: {ln['confirmed']['local']}, peer: {ln['confirmed']['peer']})",
                           "compare the safety code by voice, then: redline confirm LINE CODE"))  # fmt: skip
    elif facts.running and not ln["synced"]:
        out.append(Finding("line", CRITICAL, f"{name} is NOT IN SYNC: no traffic is signed or sent",
                           "see the paths below; redline status shows why each is down"))  # fmt: skip
    elif facts.running:
        out.append(Finding("line", OK, f"{name} in sync; outbox {ln['outbox']}, unreceipted {ln['unreceipted']}"))
    out += _paths(ln, name, facts)
    out += _clock(ln, name, t)
    if ln["active"]:
        out += _proof(ln, name, facts, limits, t)
    lag_s = ln["checkpoint_lag_ms"] / 1000
    allowed = max(300.0, t.checkpoint_lag_factor * limits.checkpoint_every_seconds)
    if lag_s > allowed:
        text = f"{name}: envelopes wait {lag_s:.0f} s for a co-signed checkpoint (more than {allowed:.0f} s)"
        fix = "the peer is not countersigning, or the line is down: see its status and alarms"
        out.append(Finding("checkpoint", WARNING, text, fix))
    else:
        out.append(Finding("checkpoint", OK, f"{name}: checkpoints keep up (oldest uncovered {lag_s:.0f} s)"))
    return out


def _paths(ln: dict[str, Any], name: str, facts: Facts) -> list[Finding]:
    if not facts.running:
        out = []
        for addr, why in sorted(facts.reachable.items()):
            if why is None:
                out.append(Finding("path", OK, f"{name}: {addr} reachable (TCP)"))
            else:
                out.append(Finding("path", WARNING, f"{name}: {addr} not reachable: {why}",
                                   "check the route and the peer's firewall for this path"))  # fmt: skip
        return out
    paths = ln["paths"]
    down = [p for p, s in sorted(paths.items()) if not s["up"]]
    if not paths:
        return [Finding("path", CRITICAL if ln["active"] else WARNING, f"{name}: no path has connected yet",
                        "check the addresses in the pairing and the network between the stations")]  # fmt: skip
    out = []
    for p in down:
        severity = CRITICAL if len(down) == len(paths) else WARNING
        reason = paths[p]["reason"] or "down"
        out.append(Finding("path", severity, f"{name}: path {p} is down: {reason}",
                           "the line is only as redundant as its paths: fix this route" if severity == WARNING
                           else "no path is up: check the network, the peer station, its firewall"))  # fmt: skip
    up = [f"{p} ({s['rtt_ms']:.1f} ms)" if s["rtt_ms"] is not None else p for p, s in sorted(paths.items()) if s["up"]]
    if up:
        out.append(Finding("path", OK, f"{name}: up: {', '.join(up)}"))
    return out


def _clock(ln: dict[str, Any], name: str, t: Thresholds) -> list[Finding]:
    skews = [abs(s["skew_ms"]) / 1000 for s in ln["paths"].values() if s.get("skew_ms") is not None]
    if not skews:
        return []
    skew = max(skews)
    if skew >= t.skew_critical_seconds:
        severity = CRITICAL
    elif skew >= t.skew_warning_seconds:
        severity = WARNING
    else:
        return [Finding("clock", OK, f"{name}: clock within {skew:.3f} s of the peer's")]
    return [Finding("clock", severity, f"{name}: our clock and the peer's differ by {skew:.1f} s",
                    "check NTP on both stations (timedatectl; chronyc tracking); sent-at times are claims, "
                    "deadlines run on each station's own clock")]  # fmt: skip


def _test_interval_ms(limits: Limits) -> int | None:
    """The longest gap between two scheduled line tests, around the day."""
    minutes = sorted({h * 60 + m for h, m in limits.test_slots})
    if not minutes:
        return None
    gaps = [(b - a) for a, b in zip(minutes, [*minutes[1:], minutes[0] + 1440], strict=True)]
    return max(gaps) * 60_000


def _proof(ln: dict[str, Any], name: str, facts: Facts, limits: Limits, t: Thresholds) -> list[Finding]:
    if not facts.running:
        return []  # ops' state lives in the running station
    interval = _test_interval_ms(limits)
    if interval is None:
        fix = "schedule them in config.json (limits.test_times_utc), or test by hand: redline test LINE"
        return [Finding("line test", WARNING, f"{name}: no scheduled line tests (test_times_utc is empty)", fix)]
    since = ln["since_last_proven_ms"]
    never = since is None
    age = facts.now - ln["created_at"] if never else since
    allowed = interval + limits.test_answer_seconds * 1000 + t.proof_slack_seconds * 1000
    what = "no line test has passed since pairing" if never else "the line was last proven by a passed test"
    text = f"{name}: {what} {backup.age_text(age)} ago"
    if ln.get("last_test") == "missed":
        return [Finding("line test", WARNING, f"{name}: the last line test was MISSED (no answer in time)",
                        "call the other side: is their duty officer at the console?")]  # fmt: skip
    if age > 2 * allowed:
        return [Finding("line test", CRITICAL, text, "run one now and call the other side: redline test LINE")]
    if age > allowed:
        return [Finding("line test", WARNING, text, "run one now: redline test LINE")]
    return [Finding("line test", OK, text)]


def _disk(home: StationDir, facts: Facts, limits: Limits, t: Thresholds) -> list[Finding]:
    out = []
    budget = limits.max_line_disk_bytes
    room = 0
    for ln in facts.lines:
        name = f"line {ln['line'][:8]} ({ln['peer']})"
        for direction, used in (("our", ln["disk_sent"]), ("the peer's", ln["disk_received"])):
            room += max(0, budget - used)
            share = used / budget if budget else 1.0
            text = f"{name}: {direction} envelopes use {used} of {budget} bytes ({share:.0%})"
            fix = "archive the transcript (redline export) and raise limits.max_line_disk_bytes"
            if share >= t.disk_critical_fraction:
                out.append(Finding("disk", CRITICAL, text, fix))
            elif share >= limits.line_disk_warn_fraction:
                out.append(Finding("disk", WARNING, text, fix))
            else:
                out.append(Finding("disk", OK, text))
    try:
        fs = os.statvfs(home.path)
    except OSError as exc:
        return [*out, Finding("disk", WARNING, f"cannot see the file system's free space: {exc}")]
    free = fs.f_bavail * fs.f_frsize
    if free < limits.line_disk_reserve_bytes:
        out.append(Finding("disk", CRITICAL, f"the file system holding the store has {free} bytes free",
                           "free space now: the store will refuse to accept anything when it is full"))  # fmt: skip
    elif free < room:
        out.append(Finding("disk", WARNING, f"the file system has {free} bytes free, less than the {room} bytes the "
                           "lines' budgets still allow", "add space, or lower limits.max_line_disk_bytes"))  # fmt: skip
    else:
        out.append(Finding("disk", OK, f"the file system has {free} bytes free, enough for every budget"))
    return out


def _not_after(pem_or_der: bytes) -> datetime:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem_or_der) if pem_or_der.startswith(b"-----") else (
        x509.load_der_x509_certificate(pem_or_der))  # fmt: skip
    return cert.not_valid_after_utc


def _certificates(home: StationDir, facts: Facts, t: Thresholds) -> list[Finding]:
    now = datetime.fromtimestamp(facts.now / 1000, UTC)
    items: list[tuple[str, bytes | None]] = []
    try:
        items.append(("our TLS certificate (keys/tls.crt)", (home.keys / "tls.crt").read_bytes()))
    except OSError as exc:
        return [Finding("certificate", CRITICAL, f"cannot read keys/tls.crt: {exc.strerror or exc}")]
    for ln in facts.lines:
        with contextlib.suppress(ValueError):
            items.append((f"the pinned TLS certificate of {ln['peer']}", bytes.fromhex(ln["peer_tls_cert"])))
    out = []
    for what, data in items:
        try:
            until = _not_after(data or b"")
        except ValueError as exc:
            out.append(Finding("certificate", CRITICAL, f"{what} cannot be read: {exc}"))
            continue
        days = (until - now).total_seconds() / 86400
        text = f"{what} is valid until {until:%Y-%m-%d} ({days:.0f} days)"
        fix = "rotate the TLS key before it expires (a pinned certificate past its date is refused), then re-pair"
        if days <= 0:
            out.append(Finding("certificate", CRITICAL, f"{what} EXPIRED on {until:%Y-%m-%d}", fix))
        elif days <= t.cert_warning_days:
            out.append(Finding("certificate", WARNING, text, fix))
        else:
            out.append(Finding("certificate", OK, text))
    return out


def _stale_keys(home: StationDir, last: dict[str, Any]) -> str:
    """The roles ("signing and TLS") of the keys in force the last backup does not hold, or ""."""
    try:
        return " and ".join(r if r != "tls" else "TLS" for r in backup.stale_keys(home.keys, last))
    except (RedlineError, OSError, ValueError):
        return ""  # the key files themselves are the keys check's finding


def _backups(home: StationDir, facts: Facts, t: Thresholds) -> list[Finding]:
    last = backup.last_backup(home)
    take = f"take one: redline backup DIR --station {home.path} --secrets encrypt (docs/OPERATIONS.md)"
    if last is None:
        return [Finding("backup", WARNING, "no backup has been taken with 'redline backup'", take)]
    age = facts.now - int(last.get("taken_at", 0))
    where = str(last.get("path"))
    text = f"the latest backup ({where}) is {backup.age_text(age)} old"
    stale = _stale_keys(home, last)
    if stale:  # keys made after the backup cannot be in it: restored, the line is lost (attack finding 2)
        return [Finding("backup", CRITICAL, f"the latest backup ({where}) does not hold this station's {stale} "
                        "key in force (a key rotation since it was taken): restored from it, the peer would "
                        "refuse it or it could never sign again", "take a backup now: " + take[len("take one: "):])]
    if not Path(where).joinpath(backup.MANIFEST).exists():
        return [Finding("backup", WARNING, f"the latest backup ({where}) is no longer there", take)]
    if not last.get("verified"):
        return [Finding("backup", CRITICAL, f"{text}, and it did NOT verify", "run redline verify; " + take)]
    if age > t.backup_critical_hours * 3_600_000:
        return [Finding("backup", CRITICAL, text, take)]
    if age > t.backup_warning_hours * 3_600_000:
        return [Finding("backup", WARNING, text, take)]
    return [Finding("backup", OK, text)]
