"""What a monitoring system sees of a running station: Prometheus metrics (``/metrics``).

Most of it is read from the station's live state at scrape time (``_StationCollector``): the
lines, their paths, the outbox, ops' FLASH and line-test trackers, the last co-signed checkpoint,
disk budgets. The scrape runs in the station's event loop, like every other reader of that state,
so it needs no locks and sees one consistent moment. What cannot be read after the fact is counted
as it happens: the duration and size of each group commit (the station's ledger is wrapped here,
at the station level, so neither the session nor the ledger carries metrics code), wire bytes per
path (``Station.wire_bytes``) and failed console logins (``StationMetrics.login_failed``).

Conventions (https://prometheus.io/docs/practices/naming/): ``redline_`` prefix, base units
(seconds, bytes), ``_total`` for counters, ``_timestamp_seconds`` for times since 1970. Labels are
the line id, the path address, a direction, a level or a reason: never message content, names of
people or anything a peer wrote, except the peer station's validated name in ``redline_line_info``.
Each station has its own registry, so several stations in one process (tests) never mix.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from redline.errors import StorageError
from redline.ledger.sqlite import Ledger
from redline.statements import Checkpoint

if TYPE_CHECKING:
    from redline.standby import Pair
    from redline.station import Station
    from redline.status import HaView

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# No "<counter>_created" series beside each counter and histogram: a station's counters start with the
# process, which Prometheus sees as a reset anyway; the extra series would only double the exposition.
disable_created_metrics()  # type: ignore[no-untyped-call]
# Group commits take well under a millisecond on a fast disk and tens of ms on a slow one; a commit
# of a second or more means the disk is in trouble.
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# At most group_commit_rows (256) outbox messages are signed per commit; received bursts can be
# larger (a window of 512, a recovery).
COMMIT_ENVELOPES_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
LOGIN_FAILURE_REASONS = ("wrong_password", "unknown_user", "locked_out", "busy")


class StationMetrics:
    """One station's registry: live-state collector, commit histograms, login failures."""

    def __init__(self, station: Station) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.commit_seconds = Histogram(
            "redline_commit_duration_seconds",
            "Time a write transaction of the store took, BEGIN to the end of COMMIT (fsync included); "
            "transactions that changed nothing are not counted",
            buckets=COMMIT_SECONDS_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.commit_envelopes = Histogram(
            "redline_group_commit_envelopes",
            "Envelopes stored by one commit (both directions), for commits that stored any",
            buckets=COMMIT_ENVELOPES_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.commit_failures = Counter(
            "redline_commit_failures", "Write transactions the store refused (disk full, I/O error)",
            registry=self.registry,
        )  # fmt: skip
        self.login_failures = Counter(
            "redline_login_failures", "Console logins refused, by reason", ["reason"], registry=self.registry
        )
        for reason in LOGIN_FAILURE_REASONS:
            self.login_failures.labels(reason)  # present at 0 from the start, so rate() sees the first
        self.last_commit_failed = False  # the latest write transaction failed for the disk's sake
        self.registry.register(_StationCollector(station))
        if isinstance(station.ledger, Ledger):  # SQLite's commit counter; PostgreSQL's: its own views
            _meter_commits(station.ledger, self)

    def login_failed(self, reason: str) -> None:
        self.login_failures.labels(reason if reason in LOGIN_FAILURE_REASONS else "wrong_password").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_by_station: weakref.WeakKeyDictionary[Station, StationMetrics] = weakref.WeakKeyDictionary()


def metrics_for(station: Station) -> StationMetrics:
    """The station's metrics, made (and its ledger metered) on first use: the console listener and
    the metrics-only listener share one registry."""
    found = _by_station.get(station)
    if found is None:
        found = _by_station[station] = StationMetrics(station)
    return found


def _meter_commits(ledger: Ledger, metrics: StationMetrics) -> None:
    """Time every outermost ``ledger.batch()`` that changed something, and count the envelopes it
    stored. Wraps the instance's ``batch`` and ``append`` (the class is untouched): nested batches
    (the ledger's own writes inside a group commit) pass straight through."""
    inner_batch, inner_append = ledger.batch, ledger.append
    db: sqlite3.Connection = ledger._db  # read only: total_changes tells a write from an empty commit
    state = {"depth": 0, "envelopes": 0}

    @contextlib.contextmanager
    def batch() -> Iterator[None]:
        if state["depth"]:
            with inner_batch():
                yield
            return
        start, changes = time.perf_counter(), db.total_changes
        state["depth"], state["envelopes"] = 1, 0
        try:
            with inner_batch():
                yield
        except StorageError as exc:
            if isinstance(exc.__cause__, sqlite3.DatabaseError):  # the disk refused, not a refused seq
                metrics.commit_failures.inc()
                metrics.last_commit_failed = True
            raise
        finally:
            state["depth"] = 0
        if db.total_changes != changes:
            metrics.commit_seconds.observe(time.perf_counter() - start)
            metrics.last_commit_failed = False
        if state["envelopes"]:
            metrics.commit_envelopes.observe(state["envelopes"])

    def append(env: Any, stored_at: int) -> bool:
        stored = inner_append(env, stored_at)
        if stored:
            state["envelopes"] += 1
        return stored

    ledger.batch = batch  # type: ignore[method-assign,assignment]
    ledger.append = append  # type: ignore[method-assign]


def _s(ms: float | int) -> float:
    return ms / 1000.0


class _StationCollector(Collector):
    """Everything read from the station's live state at scrape time."""

    def __init__(self, station: Station) -> None:
        self._station = weakref.ref(station)

    def collect(self) -> Iterable[Metric]:
        station = self._station()
        if station is None:
            return []
        return list(_collect(station))


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _collect(station: Station) -> Iterator[Metric]:
    now = station.wall()
    line_l, path_l, dir_l = ["line"], ["line", "path"], ["line", "direction"]
    info = _gauge("redline_station_info", "This station (value 1)", ["station", "fingerprint"])
    info.add_metric([station.config.name, station.keys.fingerprint], 1)
    yield info
    line_info = _gauge("redline_line_info", "A line and its peer station's name (value 1)", ["line", "peer"])
    active = _gauge("redline_line_active", "1 when the line's safety code is confirmed at both ends", line_l)
    up = _gauge("redline_line_up", "1 when at least one path to the peer is up", line_l)
    in_sync = _gauge("redline_line_in_sync", "1 when both stations agree on both chains' heads", line_l)
    halted = _gauge("redline_line_halted", "1 when a direction is halted by equivocation", line_l)
    outbox = _gauge("redline_line_outbox_messages", "Messages accepted and waiting, unsigned, in the outbox", line_l)
    unreceipted = _gauge("redline_line_unreceipted_envelopes", "Our envelopes the peer has not receipted", line_l)
    envelopes = CounterMetricFamily("redline_envelopes", "Envelopes stored, by direction", labels=dir_l)
    disk = _gauge("redline_line_disk_bytes", "Disk the envelopes of one direction use", dir_l)
    disk_limit = _gauge("redline_line_disk_limit_bytes", "Each direction's budget (max_line_disk_bytes)", dir_l)
    flash_pending = _gauge("redline_flash_pending", "FLASH messages not yet acknowledged by a person", dir_l)
    flash_age = _gauge(
        "redline_flash_pending_oldest_age_seconds", "Age of the oldest unacknowledged FLASH (0: none)", dir_l
    )
    escalations = CounterMetricFamily(
        "redline_flash_escalations", "Escalation steps recorded for FLASH messages (received: by us)", labels=dir_l
    )
    missed = CounterMetricFamily(
        "redline_line_tests_missed", "Line tests not answered in time, by who had to answer",
        labels=["line", "answerer"],
    )  # fmt: skip
    passed = CounterMetricFamily("redline_line_tests_passed", "Our line tests the peer answered in time", labels=line_l)
    proven_at = _gauge(
        "redline_line_last_proven_timestamp_seconds", "When a person at the peer last answered our line test in time",
        line_l,
    )  # fmt: skip
    proven_age = _gauge(
        "redline_line_last_proven_age_seconds",
        "Seconds since the line was last proven by a passed line test (since pairing, if never)", line_l,
    )  # fmt: skip
    checkpoint_at = _gauge(
        "redline_line_last_checkpoint_timestamp_seconds", "Time in the last co-signed checkpoint", line_l
    )
    checkpoint_lag = _gauge(
        "redline_line_checkpoint_lag_seconds",
        "Age of the oldest stored envelope no co-signed checkpoint covers yet (0: all covered)", line_l,
    )  # fmt: skip
    path_up = _gauge("redline_path_up", "1 when the path is up", path_l)
    rtt = _gauge("redline_path_rtt_seconds", "Round trip measured by heartbeats", path_l)
    skew = _gauge("redline_path_clock_skew_seconds", "The peer's clock minus ours, measured by heartbeats", path_l)
    heard = _gauge("redline_path_last_heard_timestamp_seconds", "When a frame last arrived on the path", path_l)
    wire = CounterMetricFamily(
        "redline_path_bytes", "Bytes on the wire, by direction (frames, TLS excluded)",
        labels=["line", "path", "direction"],
    )  # fmt: skip
    limit = float(station.limits.max_line_disk_bytes)
    for line, session in list(station.sessions.items()):
        st = session.status()
        record = session.record
        line_info.add_metric([line, record.peer_name], 1)
        active.add_metric([line], int(st.active))
        up.add_metric([line], int(any(p.up for p in st.paths.values())))
        in_sync.add_metric([line], int(st.synced))
        halted.add_metric([line], int(st.halted))
        outbox.add_metric([line], st.outbox)
        unreceipted.add_metric([line], st.unreceipted)
        envelopes.add_metric([line, "sent"], st.our_seq)
        envelopes.add_metric([line, "received"], st.their_seq)
        for direction, used in (("sent", session.disk_ours), ("received", session.disk_theirs)):
            disk.add_metric([line, direction], used)
            disk_limit.add_metric([line, direction], limit)
        # ops' own read models (the views the CLI and the console show), not its internals
        flashes = station.flash_view(line)
        for direction, ours in (("sent", True), ("received", False)):
            waiting = [f for f in flashes if f.ours == ours and f.state != "acknowledged"]
            flash_pending.add_metric([line, direction], len(waiting))
            oldest = min((f.accepted_at for f in waiting), default=now)
            flash_age.add_metric([line, direction], max(0.0, _s(now - oldest)))
            steps = sum(len(f.escalations) for f in flashes if f.ours == ours)
            escalations.add_metric([line, direction], steps)
        tests = station.tests_view(line)
        missed.add_metric([line, "peer"], tests.missed)
        # "us": the peer's tests that we missed, by the verdicts the peer recorded (tests_view.received)
        missed.add_metric([line, "us"], sum(1 for t in tests.received if t.result == "missed"))
        passed.add_metric([line], tests.passed)
        since = tests.since_last_proven_ms
        if since is not None:
            proven_at.add_metric([line], _s(now - since))
        proven_age.add_metric([line], max(0.0, _s(since if since is not None else now - record.created_at)))
        _checkpoint(station, session.line, session.us, session.peer, now, checkpoint_at, checkpoint_lag)
        for path, p in sorted(st.paths.items()):
            path_up.add_metric([line, path], int(p.up))
            if p.rtt_ms is not None:
                rtt.add_metric([line, path], _s(p.rtt_ms))
            if p.skew_ms is not None:
                skew.add_metric([line, path], _s(p.skew_ms))
            if p.last_rx:
                heard.add_metric([line, path], _s(p.last_rx))
    for (line, path, direction), count in sorted(getattr(station, "wire_bytes", {}).items()):
        wire.add_metric([line, path, direction], count)
    yield from (line_info, active, up, in_sync, halted, outbox, unreceipted, envelopes, disk, disk_limit)
    yield from (flash_pending, flash_age, escalations, missed, passed, proven_at, proven_age)
    yield from (checkpoint_at, checkpoint_lag, path_up, rtt, skew, heard, wire)
    yield from _store(station)
    if station.ha is not None:
        yield from ha_metrics(station.ha.view())


HA_ROLES = ("active", "standby", "deposed")


def ha_metrics(view: HaView) -> Iterator[Metric]:
    """This process in an HA pair (redline/standby.py), the same on the active and the standby:
    alert when no process of a pair is active, or on a term that rose (a takeover)."""
    role = _gauge("redline_ha_role", "This process's role in the HA pair: 1 for the role it has", ["role"])
    for r in HA_ROLES:
        role.add_metric([r], int(view.role == r))
    term = _gauge("redline_ha_term", "The store's lease term as this process last read it (+1 at every takeover)", [])
    if view.term is not None:
        term.add_metric([], view.term)
    active = _gauge("redline_ha_active_process", "1 when a process of the pair holds an unexpired lease", [])
    active.add_metric([], int(bool(view.active_holder)))
    db = _gauge("redline_ha_database_up", "1 when this process reached the database at its last try", [])
    db.add_metric([], int(not view.database.startswith("unreachable")))
    yield from (role, term, active, db)


class _PairCollector(Collector):
    def __init__(self, pair: Pair) -> None:
        self._pair = pair

    def collect(self) -> Iterable[Metric]:
        return list(ha_metrics(self._pair.view()))


def standby_exposition(pair: Pair) -> bytes:
    """``/metrics`` of a standby process: only the pair's gauges (it runs no station)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_PairCollector(pair))
    return generate_latest(registry)


def _checkpoint(
    station: Station, line: str, us: str, peer: str, now: int, at: GaugeMetricFamily, lag: GaugeMetricFamily
) -> None:
    ledger = station.ledger
    last = ledger.last_checkpoint(line)
    covered: dict[str, int] = {}
    if last is not None:
        cp = Checkpoint.peek(last[1])
        at.add_metric([line], _s(cp.time))
        covered = {h.station: h.size for h in cp.heads}
    oldest = now
    for station_fp in (us, peer):
        size = covered.get(station_fp, 0)
        if ledger.head(line, station_fp)[0] > size:
            oldest = min(oldest, ledger.stored_at(line, station_fp, size + 1) or now)
    lag.add_metric([line], max(0.0, _s(now - oldest)))


def _store(station: Station) -> Iterator[Metric]:
    """The store's size and the room left on its file system (a store on a PostgreSQL server: its
    size only; the server's disk is watched there)."""
    store = _gauge("redline_store_bytes", "The store: its database file and write-ahead log, or its database "
                   "on the PostgreSQL server", [])  # fmt: skip
    store.add_metric([], station.ledger.size_bytes())
    yield store
    where = station.ledger.files_dir()
    try:
        fs = os.statvfs(where) if where is not None else None
    except OSError:
        fs = None
    if fs is None:
        return
    free = _gauge("redline_store_filesystem_free_bytes", "Room left for the store on its file system", [])
    free.add_metric([], fs.f_bavail * fs.f_frsize)
    total = _gauge("redline_store_filesystem_size_bytes", "Size of the store's file system", [])
    total.add_metric([], fs.f_blocks * fs.f_frsize)
    yield free
    yield total


def health(station: Station) -> bool:
    """Alive (this runs in the station's event loop, so the loop answered) and the store takes a
    write transaction now, and the latest one that wrote did not fail for the disk's sake."""
    metrics = metrics_for(station)
    try:
        with station.ledger.batch():  # BEGIN IMMEDIATE: takes the write lock; an empty COMMIT writes nothing
            if metrics.last_commit_failed and isinstance(station.ledger, Ledger):
                # Has the disk come back? Only a real write (one page, to the WAL, fsynced) tells; it
                # rewrites a value with itself, so the store's content does not change.
                station.ledger._db.execute("UPDATE meta SET value=value WHERE key='station'")
    except StorageError:
        return False
    return not metrics.last_commit_failed


def ready(station: Station) -> bool:
    """Every line confirmed at both ends, in sync and not halted; a station without a line is not ready."""
    lines = list(station.sessions.values())
    return bool(lines) and all(s.record.active and s.link.synced and not s.halted for s in lines)

