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
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

from redline import persons
from redline.errors import ConfigError, RedlineError, SignatureError

COOKIE = "redline_session"

# What each role may do: the one table, in persons.py (the station and ops enforce the same one).
READ, OPERATE, CONFIRM, CAPABILITIES = persons.READ, persons.OPERATE, persons.CONFIRM, persons.CAPABILITIES
WHY_NOT = {
    OPERATE: "only a duty officer, deputy or supervisor may do this",
    CONFIRM: "only a supervisor may confirm a line's safety code",
    READ: "this role may not read the line",
}


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """Every limit of the HTTP side in one place."""

    session_seconds: float = 12 * 3600.0  # one duty shift; then log in again
    max_failures: int = 5  # consecutive wrong passwords before a user is locked out
    lockout_seconds: float = 60.0  # short: a lockout is also a way to keep the duty officer out
    failure_delay_seconds: float = 1.0  # first wrong password; doubles per failure, capped at 8 s
    max_concurrent_unlocks: int = 2  # Argon2id "moderate" takes 256 MiB per unlock
    poll_seconds: float = 0.5  # how often /api/events looks at the station for changes
    max_body_bytes: int = 1024 * 1024  # a request body; a message is capped lower by the station


class ApiError(RedlineError):
    """An error with its HTTP status, rendered as JSON ``{"error": message}`` in one place."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0


class LoginGuard:
    """Slows and then briefly locks out repeated wrong passwords for one user name.

    Keyed by user name, not address: the console is usually behind one proxy, and the names are not
    secret (they are published to the peer in the ROSTER). The lockout is short on purpose, since
    anyone can trigger it for any user.
    """

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._failures: dict[str, _Failures] = {}
        self._unlocks = asyncio.Semaphore(config.max_concurrent_unlocks)

    def check(self, name: str) -> None:
        f = self._failures.get(name)
        if f is not None and f.locked_until > time.monotonic():
            wait = f.locked_until - time.monotonic()
            raise ApiError(
                429, f"too many wrong passwords for {name}: locked for {wait:.0f} s more; a supervisor can check "
                "who tried (station log)",
            )  # fmt: skip

    async def login(self, home: Path, name: str, password: str) -> tuple[persons.Person, nacl.signing.SigningKey]:
        """The person and their unlocked key, or ApiError 401 (after the failure delay) / 429."""
        self.check(name)
        people = {p.name: p for p in persons.load_users(home)}
        person = people.get(name)
        if person is None:
            raise ApiError(401, f"no user {name!r} at this station (users are added with 'redline user add')")
        try:
            async with self._unlocks:
                key = await asyncio.to_thread(persons.unlock, home, name, password)
        except (SignatureError, ConfigError) as exc:
            await self._failed(name)
            raise ApiError(401, f"{exc}: not logged in") from None
        self._failures.pop(name, None)
        return person, key

    async def _failed(self, name: str) -> None:
        f = self._failures.setdefault(name, _Failures())
        f.count += 1
        if f.count >= self.config.max_failures:
            f.locked_until = time.monotonic() + self.config.lockout_seconds
            f.count = 0
        await asyncio.sleep(min(self.config.failure_delay_seconds * 2 ** (f.count - 1 if f.count else 0), 8.0))
