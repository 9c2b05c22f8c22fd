"""Two processes of one station on one PostgreSQL store: one active, one standby (an HA pair).

``redline serve`` on a station whose ledger is in PostgreSQL runs through ``Pair``:

1. **Standby.** Ask the store for the lease (``ledger.lease``) every ``lease_poll_seconds``;
   meanwhile listen on no path (a peer's handshake with this host is refused at TCP, so it
   completes only with the active one) and answer only ``status`` on the control socket.
2. **Active.** The lease was won with a new term: the station is built from the store (every
   cache starts empty: nothing of an earlier run in this process is kept), its ledger writes only
   under that term (``PgLedger.hold``), and ``keep`` renews the lease four times per
   ``lease_seconds``. A takeover is an alarm on every line and a line in the log.
3. **Deposed.** A write refused by the fence (``FencedError``), a renewal refused, or a lease not
   renewed in time by this process's own monotonic clock: the station steps down (an alarm and a
   log line, every connection dropped, the listeners closed, nothing more committed or sent) and
   the process goes back to 1.

A clean stop releases the lease, so the standby takes over at its next poll instead of waiting
for the lease to lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from redline import jsonin
from redline.alarmtext import AlarmCode, Param, render
from redline.errors import EncodingError, FencedError, StorageError
from redline.ledger import lease
from redline.ledger.postgres import store_station
from redline.ledger.rows import check_station
from redline.ledger.stores import shown_url
from redline.status import HaView, StationStatus

if TYPE_CHECKING:
    from redline.home import StationDir
    from redline.ledger.interface import LedgerStore
    from redline.station import Station

log = logging.getLogger("redline.standby")


class Closing(Protocol):
    """A server the standby runs while it waits (api.HttpServer): stopped when it takes over."""

    async def stop(self) -> None: ...


class Pair:
    """This process's part in the pair: its name in the lease, its role, what it last read."""

    def __init__(self, home: StationDir) -> None:
        self.home = home
        config = home.config()
        self.url = config.store
        self.name, self.listen = config.name, tuple(config.listen)
        self.address = ", ".join(config.addresses)
        self.seconds, self.poll = config.limits.lease_seconds, config.limits.lease_poll_seconds
        self.holder = lease.new_holder()
        self.station = home.fingerprint()  # the store must be this station's before its lease is asked for
        self.role = "standby"
        self.state: lease.LeaseState | None = None
        self.database = ""
        self.alarms: list[dict[str, Any]] = []  # what happened here while no station ran (standby)
        self._won: tuple[lease.LeaseState, float, lease.LeaseState | None] | None = None
        self._ledger: LedgerStore | None = None
        self.monitor_closed: asyncio.Future[None] | None = None  # the standby's --metrics address, closing

    # -- standby ----------------------------------------------------------------------------------
    async def wait_active(
        self, stopping: asyncio.Event, monitor: Callable[[], Awaitable[Closing]] | None = None
    ) -> bool:
        """Poll for the lease until it is ours (True) or the process is told to stop (False),
        answering ``status`` on the control socket meanwhile, and serving ``monitor`` (the
        ``--metrics`` address of a standby) if given."""
        self.role, self._ledger = "standby", None
        server: asyncio.Server | None = None  # opened once the lease is not ours at the first try
        http: Closing | None = None
        db: psycopg.Connection[Any] | None = None
        try:
            while not stopping.is_set():
                try:
                    if db is None or db.closed:
                        db = psycopg.connect(self.url, autocommit=True, application_name="redline standby")
                        # Another station's store (a copied config): its pair's lease is not ours to
                        # take, nor its outbox to sign. Refused before the lease table is even made.
                        check_station(store_station(db), self.station, shown_url(self.url))
                        lease.ensure_table(db)
                    before = lease.read(db)
                    sent = time.monotonic()
                    won = lease.try_acquire(db, self.holder, self.address, self.seconds)
                    self.database = _db_role(db)
                    if won is not None:
                        self._won, self.state = (won, sent, before), won
                        return True
                    self.state = lease.read(db)
                except psycopg.Error as exc:
                    self.database = f"unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"
                    if db is not None:
                        db.close()
                    db = None
                if server is None:
                    server = await self._serve_status()
                    if monitor is not None:
                        http = await monitor()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await stopping.wait()
            return False
        finally:
            if db is not None:
                db.close()
            if server is not None:
                server.close()  # the station's own control socket takes the path over
            if http is not None:
                # Stopped while the station is built, not before (uvicorn takes a while to wind
                # down); the station's own monitoring waits for ``monitor_closed`` to take the address.
                self.monitor_closed = asyncio.ensure_future(http.stop())

    # -- active -----------------------------------------------------------------------------------
    def attach(self, ledger: LedgerStore) -> None:
        """The station's ledger writes under the term just won (called as the station is built)."""
        from redline.ledger.postgres import PgLedger

        assert self._won is not None and isinstance(ledger, PgLedger)
        won, sent, _ = self._won
        ledger.hold(self.holder, won.term, self.seconds, sent)
        self._ledger, self.role = ledger, "active"

    @property
    def term(self) -> int | None:
        """The lease term this process won and writes under (told to peers in HELLO, §8.3)."""
        return self._won[0].term if self._won is not None and self.role == "active" else None

    async def keep(self, st: Station) -> None:
        """Renew the lease while the station runs; step down when it is lost."""
        from redline.ledger.postgres import PgLedger

        ledger = self._ledger
        assert isinstance(ledger, PgLedger) and self._won is not None
        won, _, before = self._won
        said: dict[str, Param] = {"holder": self.holder, "term": won.term}
        code: AlarmCode
        if before is None:  # the first process of a station is no failover
            level, code = "info", "ha.active"
        elif before.released:  # the other process stopped cleanly: a planned switchover
            level, code = "info", "ha.switchover"
            said |= {"before": before.holder, "before_term": before.term}
        else:
            level, code = "alarm", "ha.failover"
            said |= {"before": before.holder, "address": before.address, "before_term": before.term}
        text = render(code, said)
        log.log(logging.WARNING if level == "alarm" else logging.INFO, "%s", text,
                extra={"event": "ha_active", "term": won.term})  # fmt: skip
        if before is not None:
            for line in list(st.sessions):
                st.alarm(line, level, code, **said)
        first = True
        while True:
            # The first renewal at once: building the station from the store took part of the term.
            await asyncio.sleep(0 if first else self.seconds / 4)
            first = False
            try:
                state = ledger.renew_lease()
                if state is not None:
                    self.state = state
                    self.database = ledger.database_role()
            except FencedError as exc:
                st.step_down(str(exc))
                return
            except StorageError as exc:
                if ledger.deposed:
                    st.step_down(ledger.deposed)
                    return
                self.database = f"unreachable: {exc}"
                # Not renewed: the next write finds out by the clock whether the lease ran out.
                with contextlib.suppress(FencedError):
                    ledger.lease_still_ours()
                    continue
                st.step_down(ledger.deposed)
                return

    def may_serve(self, st: Station) -> bool:
        """Whether a path may open now: only while the lease is ours by this process's own clock
        (a process resumed after a pause finds out here, before a single frame is exchanged)."""
        from redline.ledger.postgres import PgLedger

        if self.role != "active" or not isinstance(self._ledger, PgLedger):
            return False
        try:
            self._ledger.lease_still_ours()
        except FencedError as exc:
            st.step_down(str(exc))
            return False
        return True

    def stepped_down(self, reason: str) -> None:
        """The station steps down: kept here too, so the standby this process becomes shows it."""
        self.role = "deposed"
        log.error("%s", reason, extra={"event": "ha_deposed"})
        now = int(time.time() * 1000)
        self.alarms.append({"time": now, "line": "", "level": "alarm", "code": "ha.deposed",
                            "params": {"reason": reason}, "text": reason, "count": 1, "last": now})  # fmt: skip

    def release(self) -> None:
        from redline.ledger.postgres import PgLedger

        if isinstance(self._ledger, PgLedger) and self.role == "active":
            self._ledger.release_lease()

    # -- status -----------------------------------------------------------------------------------
    def view(self) -> HaView:
        s = self.state
        ours = self.role == "active" and s is not None and s.holder == self.holder
        return HaView(
            role=self.role, holder=self.holder, term=s.term if s else None, since=s.since if s else "",
            expires=s.expires if s else "", active_holder=(s.holder if s and (ours or not s.lapsed) else ""),
            active_address=(s.address if s and (ours or not s.lapsed) else ""), database=self.database,
            store=shown_url(self.url),
        )  # fmt: skip

    async def _serve_status(self) -> asyncio.Server:
        """The control socket of a standby: ``status`` only; anything else says where the active is."""
        from redline.control_client import CONTROL_LIMIT

        fingerprint = self.home.load_keys().fingerprint
        path = self.home.control_path

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ValueError, asyncio.LimitOverrunError):
                while line := await reader.readline():
                    try:
                        op = jsonin.loads(line).get("op")
                    except (EncodingError, AttributeError):
                        op = None
                    if op == "status":
                        status = StationStatus(
                            station=self.name, fingerprint=fingerprint, listen=self.listen, lines=(),
                            alarms=tuple(self.alarms[-20:]), ha=self.view(),
                        )  # fmt: skip
                        reply: dict[str, Any] = {"ok": True, "result": status.to_obj()}
                    else:
                        v = self.view()
                        where = f"{v.active_holder} at {v.active_address}" if v.active_holder else "none yet"
                        reply = {"ok": False, "error": f"this process is the standby of the pair (active: {where}): "
                                 "it answers only 'status'; ask the active process"}  # fmt: skip
                    writer.write(json.dumps(reply).encode() + b"\n")
                    await writer.drain()
            writer.close()

        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)  # as the station's own control socket: only its owner
        try:
            return await asyncio.start_unix_server(client, path=str(path), limit=CONTROL_LIMIT)
        finally:
            os.umask(old)


def _db_role(db: psycopg.Connection[Any]) -> str:
    row = db.execute("SELECT pg_is_in_recovery()").fetchone()
    return "standby" if row and row[0] else "primary"
