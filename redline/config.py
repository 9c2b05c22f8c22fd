"""Every limit and default in one place (python-tuf's ``ngclient/config.py`` way).

A station keeps its own copy in ``config.json``; unknown keys are refused so a typo cannot
silently leave a default in force.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
from dataclasses import field
from pathlib import Path
from typing import Any

from redline.errors import ConfigError
from redline.firstuse import dataclass_on_first_use


@dataclass_on_first_use(frozen=True, kw_only=True)
class Limits:
    # Sizes. A text message is capped well below the frame cap so headers and receipts always fit.
    max_text_bytes: int = 64 * 1024
    max_body_bytes: int = 256 * 1024
    max_frame_bytes: int = 1024 * 1024
    # Disk per line and direction: the peer's envelopes can never use up the room for ours. The
    # last ``line_disk_reserve_bytes`` of our budget take only what must always get through (FLASH,
    # ACK, a test's answer, our recorded outcomes); an alarm rises at ``line_disk_warn_fraction``.
    max_line_disk_bytes: int = 4 * 1024**3
    line_disk_reserve_bytes: int = 64 * 1024**2
    line_disk_warn_fraction: float = 0.8
    # Flow: envelopes in flight before a receipt, and out-of-order envelopes held for a gap. The
    # window covers what is in flight while the peer stores a group and its receipt comes back
    # under full load (a few hundred envelopes): at 512 the sender stalled on it and its outbox
    # backed up, each message then written, read back and marked instead of signed as accepted
    # (docs/BENCHMARKS.md). It bounds nothing the peer holds: the gap buffer is its own limit.
    window: int = 2048
    max_gap_buffer: int = 4096
    max_gap_buffer_bytes: int = 16 * 1024 * 1024
    max_outbox: int = 100_000
    # Group commit: everything that arrives in one burst shares one fsync; at most this many
    # outbox messages are signed per commit.
    group_commit_rows: int = 256
    # Checkpoints: after every operational message and at least every N envelopes or T seconds.
    checkpoint_every_envelopes: int = 1000
    checkpoint_every_seconds: float = 60.0
    # Liveness (seconds): heartbeat interval, silence that marks a path dead, redial backoff.
    heartbeat_interval: float = 1.0
    path_dead_after: float = 2.5  # two missed heartbeats and slack: a dead path is noticed under 3 s
    # ... and the other way: a path that takes nothing we send for this long (the peer's TCP acknowledges
    # nothing, or keeps its window shut: a peer that reads nothing there) is closed as stalled by the
    # kernel (TCP_USER_TIMEOUT), so what we write to it cannot pile up here for as long as it lives.
    path_stalled_after: float = 10.0
    line_down_alarm_seconds: float = 10.0
    # The peer's clock, as heartbeats measure it, may be off ours by this much before both ends
    # alarm: notice windows and deadlines are read in UTC, so a wrong clock misreads them.
    max_clock_skew_seconds: float = 30.0
    redial_initial: float = 0.2
    redial_max: float = 5.0
    # An HA pair on PostgreSQL (redline/standby.py): the active process's lease lasts this long
    # by the database's clock and is renewed four times in it; a standby asks for it this often.
    lease_seconds: float = 3.0
    lease_poll_seconds: float = 0.25
    # Pre-authentication: handshake deadline and connections per source address.
    handshake_timeout: float = 5.0
    max_preauth_per_source: int = 8
    # Pairing.
    invite_ttl_seconds: float = 600.0
    # Operations (ops/): line tests, FLASH escalation, call requests.
    test_times_utc: tuple[str, ...] = ("08:00", "20:00")
    test_answer_seconds: float = 300.0
    flash_ack_seconds: float = 120.0
    escalation_levels: tuple[str, ...] = ("duty", "deputy", "supervisor")
    call_request_ttl_seconds: float = 7 * 86400.0
    # Voice calls (ops/voice.py, media.py): a ring times out unanswered after ring_seconds on the
    # caller's clock; at most max_calls_per_line ring or talk at once; audio packets are capped in size
    # (AUDIO frame payload) and rate per direction, and what is over is dropped and counted.
    ring_seconds: float = 60.0
    max_calls_per_line: int = 1
    max_audio_packet_bytes: int = 1500
    max_audio_packets_per_second: int = 100
    # A live call with no path up and no audio for call_lost_seconds is ended by this station
    # (CALL_HANGUP reason "lost", CALL_AUDIO filed at once): the survivor of a peer killed mid-call.
    call_lost_seconds: float = 30.0
    # Our deadlines are ours: a peer's FLASH may ask for an acknowledgement within ack_within_ms and
    # its TEST for an answer within answer_within_ms, but that is advisory. The receiving station's
    # deadlines run on the two windows above; only with honour_peer_windows does it take the peer's
    # request, and then clamped to [peer_window_min_seconds, peer_window_max_seconds] (at least 1 s).
    # What our operators file is held to the same bounds.
    honour_peer_windows: bool = False
    peer_window_min_seconds: float = 60.0
    peer_window_max_seconds: float = 3600.0
    # Notice limits are not settings: which notices are on the board may not depend on one
    # (ops.notices.MAX_NOTICE_POINTS, MAX_ACTIVE_NOTICES_PER_SIDE; _NOW_PROTOCOL below).
    # People per ROSTER are not a setting: whose signature counts may not depend on one (the
    # protocol's persons.MAX_ROSTER_PEOPLE; _NOW_PROTOCOL below for config.json that still says it).

    def __post_init__(self) -> None:
        # Every field against its rule (``_LIMIT_RULES``, one table): a field without one is a
        # KeyError here, so a limit added later cannot go unchecked (tests/test_config_ranges.py).
        for f in dataclasses.fields(self):
            _LIMIT_RULES[f.name].check(f"limits.{f.name}", getattr(self, f.name))
        # Sizes only ever lower than the protocol's: every envelope a station signs or takes must
        # be one ``redline verify`` and a bundle's reader accept (at most MAX_ENVELOPE_BYTES). Two
        # stations that raised these co-signed envelopes every verifier called forged.
        most = {"max_frame_bytes": MAX_ENVELOPE_BYTES, "max_body_bytes": MAX_ENVELOPE_BYTES - ENVELOPE_HEADROOM}
        for name, limit in most.items():
            if getattr(self, name) > limit:
                raise ConfigError(
                    f"config.json: limits.{name} may be at most {limit}: an envelope is at most {MAX_ENVELOPE_BYTES} "
                    "bytes (PROTOCOL.md 5.4), and no verifier accepts a larger one"
                )
        for low, high in (("redial_initial", "redial_max"), ("peer_window_min_seconds", "peer_window_max_seconds")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f"config.json: limits.{low} ({getattr(self, low)}) may not be above limits.{high} "
                                  f"({getattr(self, high)})")  # fmt: skip
        # The schedule, parsed once here: the line's tick and doctor use these (hour, minute) pairs.
        object.__setattr__(self, "_test_slots", tuple(_hhmm(t) for t in self.test_times_utc))

    @property
    def test_slots(self) -> tuple[tuple[int, int], ...]:
        """``test_times_utc`` as (hour, minute) pairs, in the order given (checked at load)."""
        slots: tuple[tuple[int, int], ...] = self.__dict__["_test_slots"]
        return slots


_HHMM = re.compile(r"\A([01][0-9]|2[0-3]):([0-5][0-9])\Z")


def _hhmm(text: str) -> tuple[int, int]:
    m = _HHMM.match(text)
    assert m is not None  # checked by the rule of test_times_utc
    return int(m[1]), int(m[2])


@dataclasses.dataclass(frozen=True)
class _Rule:
    """What one setting may hold: a number in [low, high] (``above``: strictly above low), finite;
    or, for a list of strings, ``each`` (a pattern every item matches, all distinct) and ``min_items``.
    The error names the key, the value and the range, in one line."""

    kind: str  # "int", "float", "bool", "names"
    low: float = 0.0
    high: float = 0.0
    above: bool = False
    each: str = ""
    min_items: int = 0
    what: str = ""  # the rule in words, for a list

    def check(self, key: str, value: object) -> None:
        shown = json.dumps(value, default=repr)[:60] if not isinstance(value, float) else repr(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"config.json: {key} must be true or false, not {shown}")
            return
        if self.kind == "names":
            items = list(value) if isinstance(value, tuple | list) else None
            ok = items is not None and all(isinstance(v, str) and re.match(self.each, v) for v in items)
            if items is None or not ok or len(set(items)) != len(items) or len(items) < self.min_items:
                raise ConfigError(f"config.json: {key} must be {self.what}, not {shown}")
            return
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (self.kind == "int" and not isinstance(value, int)):
            raise ConfigError(f"config.json: {key} must be {'a whole number' if self.kind == 'int' else 'a number'}"
                              f" {self._range()}, not {shown}")  # fmt: skip
        assert isinstance(value, int | float)
        low_ok = value > self.low if self.above else value >= self.low
        if not (math.isfinite(value) and low_ok and value <= self.high):  # NaN fails every comparison too
            raise ConfigError(f"config.json: {key} must be {self._range()}, not {shown}")

    def _range(self) -> str:
        high = f"{self.high:g}" if self.kind == "float" else str(int(self.high))
        low = f"{self.low:g}" if self.kind == "float" else str(int(self.low))
        return f"above {low} and at most {high}" if self.above else f"from {low} to {high}"


_DAY = 86400.0
_YEAR = 365 * _DAY
_MANY = float(2**53)  # a count or a size: far beyond any real one, still exact as a float


def _Int(low: int = 1) -> _Rule:
    return _Rule("int", low, _MANY)


def _Seconds(high: float = _YEAR) -> _Rule:
    return _Rule("float", 0, high, above=True)


# One rule for every field of Limits (sizes and counts: whole numbers from 1; durations: seconds
# above 0, finite, at most a year unless said). Limits.__post_init__ refuses a field missing here.
_LIMIT_RULES: dict[str, _Rule] = {
    "max_text_bytes": _Int(),
    "max_body_bytes": _Int(),
    "max_frame_bytes": _Int(),
    "max_line_disk_bytes": _Int(),
    "line_disk_reserve_bytes": _Int(0),
    "line_disk_warn_fraction": _Rule("float", 0, 1, above=True),
    "window": _Int(),
    "max_gap_buffer": _Int(),
    "max_gap_buffer_bytes": _Int(),
    "max_outbox": _Int(),
    "group_commit_rows": _Int(),
    "checkpoint_every_envelopes": _Int(),
    "checkpoint_every_seconds": _Seconds(),
    "heartbeat_interval": _Seconds(3600),
    "path_dead_after": _Seconds(),
    "path_stalled_after": _Seconds(),
    "line_down_alarm_seconds": _Seconds(),
    "max_clock_skew_seconds": _Seconds(),
    "redial_initial": _Seconds(3600),
    "redial_max": _Seconds(3600),
    "lease_seconds": _Seconds(3600),
    "lease_poll_seconds": _Seconds(3600),
    "handshake_timeout": _Seconds(3600),
    "max_preauth_per_source": _Int(),
    "invite_ttl_seconds": _Seconds(),
    "test_times_utc": _Rule("names", each=_HHMM.pattern, what="a list of distinct UTC times HH:MM (00:00 to 23:59)"),
    "test_answer_seconds": _Seconds(),
    "flash_ack_seconds": _Seconds(),
    "escalation_levels": _Rule("names", each=r"\A[^\W_][\w .-]{0,31}\Z(?<!deadline-missed)", min_items=1,
                               what="a non-empty list of distinct level names (1-32 letters, digits, space, "
                                    "'.', '-' or '_', not 'deadline-missed')"),
    "call_request_ttl_seconds": _Seconds(),
    "ring_seconds": _Seconds(),
    "max_calls_per_line": _Int(),
    "max_audio_packet_bytes": _Int(),
    "max_audio_packets_per_second": _Int(),
    "call_lost_seconds": _Seconds(),
    "honour_peer_windows": _Rule("bool"),
    "peer_window_min_seconds": _Rule("float", 1, _YEAR),
    "peer_window_max_seconds": _Rule("float", 1, _YEAR),
}


@dataclass_on_first_use(frozen=True, kw_only=True)
class ApiConfig:
    """Every limit and setting of the HTTP API and console (``config.json``, section ``api``)."""

    session_seconds: float = 12 * 3600.0  # one duty shift; then log in again
    # Login guard. An attempt is counted *before* its password is checked, so parallel guesses
    # beyond a limit are refused (429) without any Argon2 work.
    max_failures: int = 5  # wrong passwords for one user name before it is locked out
    max_failures_per_source: int = 20  # wrong passwords (any user name) from one source address
    failure_window_seconds: float = 900.0  # failures older than this (since the first) are forgotten
    lockout_seconds: float = 60.0  # short: a lockout is also a way to keep the duty officer out
    failure_delay_seconds: float = 1.0  # first wrong password; doubles per failure, capped at 8 s
    max_concurrent_unlocks: int = 2  # Argon2id "moderate" takes 256 MiB per unlock
    max_waiting_logins: int = 4  # logins queued for an unlock slot; beyond: 503 at once
    poll_seconds: float = 0.5  # how often /api/events looks at the station for changes
    max_body_bytes: int = 1024 * 1024  # a request body; a message is capped lower by the station
    # Each HTTP listener (console, metrics): connections open at once, WebSockets included; beyond,
    # a connection is answered 503 and closed. Each holds one of the process's file descriptors.
    max_connections: int = 256
    max_connections_per_source: int = 64  # ... of them from one address (IPv6: one /64); loopback and proxies exempt
    request_head_seconds: float = 5.0  # a connection that has not sent a whole request head by then is closed
    request_body_seconds: float = 30.0  # a request body must have arrived whole this long after its head
    # Who the console is for. Host names it answers to besides the loopback names and the address
    # it listens on ("console.example.org", or "name:port" to allow one port only); Origin is
    # checked against the same list.
    allowed_hosts: tuple[str, ...] = ()
    https: bool = False  # browsers reach the console over https (a TLS proxy): cookies are Secure
    # Reverse proxies (addresses or networks) whose X-Forwarded-For / X-Forwarded-Proto are
    # believed; from anyone else those headers are ignored.
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_failures", "max_failures_per_source", "max_concurrent_unlocks", "max_waiting_logins",
                     "max_connections", "max_connections_per_source"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"config.json: api.{name} must be at least 1")
        for name in ("request_head_seconds", "request_body_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"config.json: api.{name} must be above 0")
        for host in self.allowed_hosts:
            parse_host(host)
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"config.json: api.trusted_proxies: {proxy!r} is not an address or network") from None


_HOST = re.compile(r"\A(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?\Z")


def parse_host(text: str) -> tuple[str, int | None]:
    """A Host header or an ``allowed_hosts`` entry as (lower-case host, port or None); IPv6 in brackets."""
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address, as written in a config
    m = _HOST.match(text.strip())
    if m is None or (m["port"] is not None and not 0 < int(m["port"]) < 65536):
        raise ConfigError(f"{text!r} is not a host name, or NAME:PORT")
    host = f"[{m['v6'].lower()}]" if m["v6"] else m["name"].lower().rstrip(".")
    return host, int(m["port"]) if m["port"] else None


def _addresses(obj: dict[str, Any], key: str, *, needed: bool = False) -> tuple[str, ...]:
    """``listen`` / ``advertise``: a list of HOST:PORT strings (``parse_hostport``), else one line."""
    given = obj[key] if needed else obj.get(key, [])
    if not isinstance(given, list) or not all(isinstance(a, str) for a in given) or (needed and not given):
        raise ConfigError(f"config.json: {key} must be a {'non-empty ' if needed else ''}list of \"HOST:PORT\" "
                          f"strings, not {json.dumps(given)[:60]}")  # fmt: skip
    for addr in given:
        parse_hostport(addr)
    return tuple(given)


def _check_store(store: object) -> str:
    if store == "":
        return ""
    if not isinstance(store, str) or not store.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"config.json: store must be a postgresql:// URL or absent, not {store!r}")
    return store


@dataclass_on_first_use(frozen=True, kw_only=True)
class StationConfig:
    name: str
    lang: str
    listen: tuple[str, ...]
    # Addresses the peer should dial, when they differ from ``listen`` (NAT, a relay, a test proxy).
    advertise: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    api: ApiConfig = field(default_factory=ApiConfig)
    # Where the ledger lives: "" for ledger.sqlite in the station folder, else a postgresql:// URL
    # without a password (libpq reads that from PGPASSFILE, ~/.pgpass or PGPASSWORD).
    store: str = ""

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.advertise or self.listen

    def to_obj(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lang": self.lang,
            "listen": list(self.listen),
            "advertise": list(self.advertise),
            "limits": dataclasses.asdict(self.limits),
            "api": dataclasses.asdict(self.api),
            **({"store": self.store} if self.store else {}),
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> StationConfig:
        if not isinstance(obj, dict):
            raise ConfigError("config.json must hold a JSON object")
        limits = _settings(obj, "limits", Limits)
        api = _settings(obj, "api", ApiConfig)
        try:
            return cls(
                name=check_station_name(obj["name"]),
                lang=check_lang(obj["lang"]),
                listen=_addresses(obj, "listen", needed=True),
                advertise=_addresses(obj, "advertise"),
                limits=Limits(**limits),
                api=ApiConfig(**api),
                store=_check_store(obj.get("store", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"config.json is incomplete or malformed: {exc}") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_obj(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> StationConfig:
        return cls.from_obj(_read(path))

    @staticmethod
    def load_store(path: Path) -> str:
        """Only where the ledger lives (``store``, checked as ``load`` checks it): what a reader of
        the store needs (``redline log``, ``export``), without making the limits and the API's
        settings (three dataclasses, a few ms of a short command)."""
        return _check_store(_read(path).get("store", ""))


# Settings that were a station's own once and are the protocol's now: they decided what a co-signed
# transcript means (whose signature counts), so a station that set its own made it, its peer and
# ``redline verify`` read the same transcript apart. section -> name -> (the protocol's value, what
# the protocol says). Every config.json written before holds them (``save`` writes each field), so
# one that gives the protocol's value is read as if it were not there; any other value cannot hold
# any more, and is refused in one line rather than silently replaced.
_NOW_PROTOCOL: dict[str, dict[str, tuple[int, str]]] = {
    "limits": {
        # persons.MAX_ROSTER_PEOPLE (config is imported before persons; tests/test_roster_limit.py holds them equal)
        "max_roster_people": (
            500,
            "a ROSTER lists at most 500 people and at most 500 are pinned per station (PROTOCOL.md 5.10), the "
            "same for every station and verifier",
        ),
        # ops.notices.MAX_NOTICE_POINTS / MAX_ACTIVE_NOTICES_PER_SIDE (config is imported without shapely;
        # tests/test_notice_limits_protocol.py holds them equal)
        "max_notice_points": (
            2000,
            "a notice's area holds at most 2000 positions on the board (PROTOCOL.md 5.9), the same for every "
            "station and reader of the transcript",
        ),
        "max_active_notices_per_side": (
            200,
            "each side has at most 200 active notices on the board (PROTOCOL.md 5.9), the same for every station "
            "and reader of the transcript",
        ),
    },
}


def _settings(obj: dict[str, Any], section: str, cls: Any) -> dict[str, Any]:
    """``obj[section]`` as keyword arguments for ``cls`` (Limits, ApiConfig): every key one of its
    fields and every value of that field's type, else one line naming it. Without this a string
    where a number belongs was kept ("window": "2048"), and a string where a list of names belongs
    was read as one name per letter ("allowed_hosts": "console")."""
    given = obj.get(section, {})
    if not isinstance(given, dict):
        raise ConfigError(f"config.json: {section} must be an object of settings")
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    retired = _NOW_PROTOCOL.get(section, {})
    for name in sorted(set(given) & set(retired)):
        value, rule = retired[name]
        if given[name] != value or isinstance(given[name], bool):
            raise ConfigError(f"config.json: {section}.{name} is no longer a setting: {rule}; remove it "
                              f"(it says {json.dumps(given[name])[:60]})")  # fmt: skip
    given = {k: v for k, v in given.items() if k not in retired}
    unknown = set(given) - set(types)
    if unknown:
        raise ConfigError(f"config.json: unknown {section} setting(s) {sorted(unknown)}; known: {sorted(types)}")
    out: dict[str, Any] = {}
    for name, value in given.items():
        want = types[name]  # a string: annotations are not evaluated here
        if want == "tuple[str, ...]" and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[name] = tuple(value)
        elif (want == "bool" and isinstance(value, bool)) or (
            want in ("int", "float") and isinstance(value, int | float) and not isinstance(value, bool)
            and (want == "float" or isinstance(value, int))
        ):  # fmt: skip
            out[name] = value
        else:
            what = {"tuple[str, ...]": "a list of strings", "bool": "true or false", "int": "a whole number",
                    "float": "a number"}.get(want, want)  # fmt: skip
            raise ConfigError(f"config.json: {section}.{name} must be {what}, not {json.dumps(value)[:60]}")
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found; create the station with 'redline init'") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # not UTF-8 either: one line, not a traceback
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):  # a list or a number here was an AttributeError in load (a traceback)
        raise ConfigError(f"config.json is incomplete or malformed: not an object but {type(obj).__name__}")
    return obj


# A station's name and language are shown to the other side's operators and written in its
# transcript: letters of any script, digits, space and ``.()-``, 1-64 characters; a BCP 47 tag.
_STATION_NAME = re.compile(r"\A[^\W_][\w .()-]{0,63}\Z")
# The protocol's largest envelope (PROTOCOL.md 5.4): envelope.split refuses a longer one, live, in
# ``redline verify`` and in bundles alike. Here because config is imported before envelope (as
# LANG_TAG is); a body's content leaves ENVELOPE_HEADROOM for the header, salt and signature (under
# 1 KiB at the widest header; session._envelope_bound).
MAX_ENVELOPE_BYTES = 1 << 20
ENVELOPE_HEADROOM = 4096
LANG_TAG = re.compile(r"\A[a-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")  # also the envelope header's ``lang`` rule
MAX_LANG_CHARS = 35  # a station's own tag; RFC 5646 tags in use fit well within it


def check_station_name(name: object, whose: str = "station") -> str:
    """The one rule for station names (ours at init, the peer's at pairing)."""
    if not isinstance(name, str) or not _STATION_NAME.match(name) or name != name.strip():
        shown = repr(name)[:40] + ("…" if len(repr(name)) > 40 else "")
        raise ConfigError(
            f"{whose} name {shown} is not allowed: 1-64 letters, digits, spaces or .()- , starting with a letter "
            "or digit"
        )
    return name


def check_lang(lang: object, whose: str = "station") -> str:
    """The one rule for a station's language: a BCP 47 tag such as en, ru or en-GB."""
    if not isinstance(lang, str) or len(lang) > MAX_LANG_CHARS or not LANG_TAG.match(lang):
        raise ConfigError(f"{whose} language {repr(lang)[:20]} is not a language tag such as en, ru or en-GB")
    return lang


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address {text!r} is not HOST:PORT (for example 127.0.0.1:7401)")
    return host.strip("[]"), int(port)
