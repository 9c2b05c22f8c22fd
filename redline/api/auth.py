"""Who is at the console: login with a station user's password, sessions, roles, failed-login guard.

A login proves the password by unlocking the person's sealed signing key (``persons.unlock``,
Argon2id). The unlocked key is kept in this process's memory for that session only, so the person
can acknowledge a FLASH or answer a line test without typing the password again at 3 a.m.; it is
dropped at logout and at expiry (docs/API.md, "The person's key in memory", says what that costs).

The session cookie is ``<session id>.<expiry>.<HMAC-SHA256>`` under a secret drawn afresh at every
start, HttpOnly and SameSite=Strict: a restart logs everyone out, and a cookie cannot be forged or
extended. The session id (32 random bytes) is also looked up server-side, because that is where the
key lives; the HMAC lets a forged or stale cookie be refused before any lookup.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
from starlette.requests import HTTPConnection

from redline import persons
from redline.config import ApiConfig
from redline.errors import ConfigError, RedlineError, SignatureError

__all__ = ["ApiConfig", "ApiError", "LoginGuard", "Proxies", "Session", "Sessions", "Users"]
log = logging.getLogger("redline.api")

COOKIE = "redline_session"

# What each role may do: the one table, in persons.py (the station and ops enforce the same one).
READ, OPERATE, CONFIRM, CAPABILITIES = persons.READ, persons.OPERATE, persons.CONFIRM, persons.CAPABILITIES
WHY_NOT = {
    OPERATE: "only a duty officer, deputy or supervisor may do this",
    CONFIRM: "only a supervisor may confirm a line's safety code",
    READ: "this role may not read the line",
}


class ApiError(RedlineError):
    """An error with its HTTP status, rendered as JSON ``{"error": message}`` in one place."""

    def __init__(self, status: int, message: str, *, close: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.close = close  # answer with Connection: close (the rest of the request is not read)
        # What the console says in its reader's words instead of the message: "removed" (the user is
        # no longer on this station's users list), else nothing (the message is shown as it is).
        self.code = code


@dataclass(kw_only=True)
class Session:
    sid: str
    person: persons.Person
    expires: float  # wall clock, seconds
    key: nacl.signing.SigningKey | None = field(repr=False)

    @property
    def name(self) -> str:
        return self.person.name

    @property
    def role(self) -> str:
        return self.person.role

    def can(self, capability: str) -> bool:
        return capability in CAPABILITIES.get(self.role, frozenset())

    def require(self, capability: str) -> None:
        if not self.can(capability):
            raise ApiError(403, f"{self.name} is logged in as {self.role}: {WHY_NOT[capability]}")

    def signing_key(self) -> nacl.signing.SigningKey:
        if self.key is None:
            raise ApiError(401, "your session has ended; log in again to sign")
        return self.key


class Sessions:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._secret = os.urandom(32)  # per start: a restart ends every session
        self._by_id: dict[str, Session] = {}

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def create(self, person: persons.Person, key: nacl.signing.SigningKey) -> tuple[str, Session]:
        self.sweep()
        sid = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        expires = int(time.time() + self.config.session_seconds)
        session = Session(sid=sid, person=person, expires=expires, key=key)
        self._by_id[sid] = session
        payload = f"{sid}.{expires}"
        return f"{payload}.{self._mac(payload)}", session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        sid, _, rest = cookie.partition(".")
        expires, _, mac = rest.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(f"{sid}.{expires}").encode()):
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        if time.time() >= session.expires:
            self.drop(session)
            return None
        return session

    def drop(self, session: Session) -> None:
        """Forget the session and its key. Python cannot wipe the key's bytes; the last reference goes."""
        session.key = None
        self._by_id.pop(session.sid, None)

    def sweep(self) -> None:
        now = time.time()
        for s in [s for s in self._by_id.values() if now >= s.expires]:
            self.drop(s)

    def __len__(self) -> int:
        return len(self._by_id)


class Users:
    """The station's users as the users folder holds them *now*, for the role check on every request.

    Re-read only when the folder changed: its stamp (``persons.users_stamp``, the one definition of
    a changed users/, which the station's roster reader keeps too) is compared first, so ``redline
    user remove`` or a role edited in a user's file takes effect at the next request, without a
    restart."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._seen: persons.Stamp | None = None
        self._people: dict[str, persons.Person] = {}

    def current(self) -> dict[str, persons.Person]:
        try:
            listing: persons.Stamp | None = persons.users_stamp(self.home)
        except OSError:
            listing = None  # changing as we look: read it
        if listing is None or listing != self._seen:
            try:
                people = {p.name: p for p in persons.load_users(self.home)}
            except (OSError, ValueError, RedlineError) as exc:  # a file being written, or damaged
                raise ApiError(503, f"the station's users cannot be read just now ({exc}); try again") from None
            self._people, self._seen = people, listing
        return self._people


# -- the login guard ----------------------------------------------------------------------------------
@dataclass
class _Count:
    """Attempts of one user name, or from one source address."""

    failures: int = 0
    since: float = 0.0  # when the first counted failure happened
    pending: int = 0  # attempts admitted and not yet decided: they count against the limit already
    locked_until: float = 0.0
    refused: int = 0  # refusals since the last reset (logged at 1, 10, 100, ...)

    def idle(self, now: float) -> bool:
        return not self.pending and self.locked_until <= now and not self.failures


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


class LoginGuard:
    """Bounds password guessing and keeps the login path from being jammed.

    * An attempt is **counted before its password is checked**: one that would take a user name
      (``max_failures``) or a source address (``max_failures_per_source``) past its limit, counting
      the attempts still being checked, is refused with 429 at once. So N parallel guesses get at
      most the limit checked, and the rest cost no Argon2 work.
    * At most ``max_concurrent_unlocks`` Argon2id unlocks run, and at most ``max_waiting_logins``
      wait for one; a login beyond that is 503 at once, so a valid login never waits behind an
      unbounded queue.
    * A limit reached locks the name, or the source, out for ``lockout_seconds`` (short: anyone can
      lock out a user name, which is not secret: it is in the ROSTER the peer gets).
    * Every failure is logged with the user name and the source (never the password); refusals
      during a lockout are logged at the 1st, 10th, 100th..., so a flood cannot fill the disk.

    Time is ``clock`` (monotonic seconds) and the delay after a failure is ``sleep``: both injected
    so tests drive them. An attempt runs as its own task: a client that hangs up cannot cancel the
    accounting, nor free an unlock slot while its Argon2 thread still runs.
    """

    MAX_TRACKED = 4096  # source buckets kept before idle ones are swept

    def __init__(
        self, config: ApiConfig, *, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:  # fmt: skip
        self.config = config
        self.clock, self.sleep = clock, sleep
        self._users: dict[str, _Count] = {}
        self._sources: dict[str, _Count] = {}
        self._unlocks = asyncio.Semaphore(config.max_concurrent_unlocks)
        self._in_unlock = 0  # admitted to an unlock: running, or waiting for a slot
        self._busy_refused = 0
        self._sweep_at = self.MAX_TRACKED
        self.unlocks_started = 0  # Argon2 runs begun (for tests and the station log)
        # Each refused login, by reason (wrong_password, unknown_user, locked_out, busy): metrics.
        self.on_failure: Callable[[str], None] = lambda reason: None

    # -- admission: everything here is synchronous, so parallel requests are counted in order ---------
    def _fresh(self, c: _Count, now: float) -> _Count:
        if c.locked_until and c.locked_until <= now:
            c.locked_until, c.failures, c.refused = 0.0, 0, 0
        if c.failures and now - c.since >= self.config.failure_window_seconds:
            c.failures, c.refused = 0, 0
        return c

    def _refusal(self, c: _Count, limit: int, who: str, now: float) -> str | None:
        if c.locked_until > now:
            return f"too many wrong passwords {who}: locked for {c.locked_until - now:.0f} s more"
        if c.failures + c.pending >= limit:
            return f"too many login attempts {who} at once: wait for them to finish, then try again"
        return None

    def _admit(self, name: str, known: bool, source: str) -> tuple[_Count | None, _Count]:
        now = self.clock()
        cfg = self.config
        src = self._fresh(self._sources.get(source) or _Count(), now)
        # Unknown names get no bucket of their own (a flood of made-up names must not grow memory);
        # they count against their source.
        usr = self._fresh(self._users.get(name) or _Count(), now) if known else None
        why = self._refusal(src, cfg.max_failures_per_source, f"from {source}", now)
        count = src
        if why is None and usr is not None:
            why, count = self._refusal(usr, cfg.max_failures, f"for {name}", now), usr
        if why is not None:
            count.refused += 1
            self.on_failure("locked_out")
            if _is_power_of_ten(count.refused):
                log.warning("console login refused (429): user %r from %s: %s (refusal %d; logged at 1, 10, 100...)",
                            name, source, why, count.refused)  # fmt: skip
            raise ApiError(429, why + "; a supervisor can see who tried in the station log")
        if known and self._in_unlock >= cfg.max_concurrent_unlocks + cfg.max_waiting_logins:
            self._busy_refused += 1
            self.on_failure("busy")
            if _is_power_of_ten(self._busy_refused):
                log.warning("console login refused (503): user %r from %s: %d logins already being checked "
                            "(refusal %d)", name, source, self._in_unlock, self._busy_refused)  # fmt: skip
            busy = f"the station is busy checking {self._in_unlock} other logins; try again in a few seconds"
            raise ApiError(503, busy + " (if this goes on, someone may be flooding the console with logins)")
        if len(self._sources) >= self._sweep_at:
            self._sweep(now)
            self._sweep_at = max(self.MAX_TRACKED, 2 * len(self._sources))  # amortized: not a scan per request
        src.pending += 1
        self._sources[source] = src
        if usr is not None:
            usr.pending += 1
            self._users[name] = usr
            self._in_unlock += 1  # reserved now, released when its unlock is over
        return usr, src

    def _sweep(self, now: float) -> None:
        for table in (self._sources, self._users):
            for key in [k for k, c in table.items() if self._fresh(c, now).idle(now)]:
                del table[key]

    def _failed(self, c: _Count, limit: int, now: float) -> int:
        if not c.failures:
            c.since = now
        c.failures += 1
        failures = c.failures
        if c.failures >= limit:
            c.locked_until, c.failures, c.refused = now + self.config.lockout_seconds, 0, 0
        return failures

    # -- the attempt ---------------------------------------------------------------------------------
    async def login(
        self, home: Path, people: dict[str, persons.Person], name: str, password: str, source: str
    ) -> tuple[persons.Person, nacl.signing.SigningKey]:
        """The person and their unlocked key; or ApiError 401 (after the failure delay), 429 or 503."""
        usr, src = self._admit(name, name in people, source)
        task = asyncio.ensure_future(self._attempt(home, people.get(name), name, password, source, usr, src))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a hung-up client's: retrieved
        return await asyncio.shield(task)

    async def _attempt(
        self, home: Path, person: persons.Person | None, name: str, password: str, source: str,
        usr: _Count | None, src: _Count,
    ) -> tuple[persons.Person, nacl.signing.SigningKey]:  # fmt: skip
        key: nacl.signing.SigningKey | None = None
        why = f"no user {name!r} at this station (users are added with 'redline user add')"
        try:
            if person is not None:
                try:
                    async with self._unlocks:
                        self.unlocks_started += 1
                        key = await asyncio.to_thread(persons.unlock, home, name, password)
                except (SignatureError, ConfigError) as exc:
                    why = str(exc)
                finally:
                    self._in_unlock -= 1
                    if self._in_unlock == 0:
                        self._busy_refused = 0
        finally:
            src.pending -= 1
            if usr is not None:
                usr.pending -= 1
        now = self.clock()
        if key is not None and person is not None:
            if usr is not None:
                usr.failures = 0  # consecutive failures of the name; the source's are not forgiven
            return person, key
        n = self._failed(src, self.config.max_failures_per_source, now)
        if usr is not None:
            n = max(n, self._failed(usr, self.config.max_failures, now))
        log.warning("console login failed: user %r from %s: %s", name, source, why)
        self.on_failure("unknown_user" if person is None else "wrong_password")
        locked = [who for who, c in ((repr(name), usr), (source, src)) if c is not None and c.locked_until > now]
        if locked:
            log.warning("console login: %s locked out for %.0f s", " and ".join(locked), self.config.lockout_seconds)
        await self.sleep(min(self.config.failure_delay_seconds * 2 ** (n - 1), 8.0))
        raise ApiError(401, f"{why}: not logged in")


# -- where a request comes from -------------------------------------------------------------------------
class Proxies:
    """The reverse proxies whose forwarding headers are believed (``trusted_proxies``)."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._nets = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]

    def trusted(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in net for net in self._nets)

    def source(self, conn: HTTPConnection) -> str:
        """The client's address: the TCP peer, or, behind a trusted proxy, the last address in
        X-Forwarded-For that is not a trusted proxy itself. IPv6 counts per /64 (one site's block)."""
        peer = conn.client.host if conn.client else ""
        address = peer
        if self.trusted(peer):
            hops = [h.strip() for h in ",".join(conn.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
            for hop in reversed(hops):
                address = hop
                if not self.trusted(hop):
                    break
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address[:64] or "unknown"
        if ip.version == 6 and not ip.ipv4_mapped:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)

    def https(self, conn: HTTPConnection) -> bool:
        """Whether the browser reached us over https: configured, or said by a trusted proxy."""
        if self.config.https or conn.url.scheme in ("https", "wss"):
            return True
        if not self.trusted(conn.client.host if conn.client else None):
            return False
        proto = conn.headers.get("x-forwarded-proto", "")
        return proto.split(",")[0].strip().lower() == "https"
