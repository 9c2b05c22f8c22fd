"""THE registry of envelope kinds (PROTOCOL.md sections 5.8 and 5.9) and their typed bodies.

One row per kind (``REGISTRY``) says everything the rest of redline needs to know about it: its
default priority, whether it is operational (followed by a checkpoint), person-signed, allowed the
disk reserve, filed by an operator or decided by the station, reserved (stored and shown, not
acted on: none since REVOKE is specified), what it references and whose, its body type and its
purpose.
Everything else reads this table: ``envelope`` (known kinds, operational and reserve kinds),
``session`` (through ``envelope``), ``persons`` (which kinds a person signs), ``ops`` (parsing,
references, what an operator may file), the station (default priority) and the API and CLI (one-line
summaries). Adding a kind is a body class and a row here, plus its schema and section of the spec.

Rules of this module:

- A body is a frozen keyword-only dataclass built only by ``parse``, which validates exactly what
  ``docs/schemas/<KIND>.json`` says, plus the rules of section 5.9 that a schema cannot express,
  named in each body's docstring (an end after its start, names unique in a roster). Geometry of a
  notice (closed rings, self-intersection, span) is checked by ``ops.notices``, which needs shapely.
- ``parse(strict=True)`` is the sender's rule: a member the schema does not list is refused, as the
  schemas' ``additionalProperties: false`` says. ``strict=False`` is the receiver's rule: unknown
  members are ignored (a newer peer may add some), except in ``NOTICE``, which is always strict.
- ``to_content()`` gives back the content form (absent optional members stay absent); for strictly
  parsed content it is the content itself.
- Pure: no I/O, no clock; imports nothing above ``identity`` and ``config``.
- Each content type is made a dataclass when first used (``firstuse.dataclass_on_first_use``), not
  at import: making all 35 cost 15 ms, a tenth of ``redline log``, which reads two or three kinds.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self

from redline import canonical
from redline.config import LANG_TAG
from redline.errors import SchemaError, VerificationError
from redline.firstuse import dataclass_on_first_use
from redline.identity import HEX64

# --- the protocol's common types (section 5.9) ------------------------------------------------------

MAX_INT: Final = 2**53 - 1  # the largest integer of section 2
ROLES: Final = ("duty", "deputy", "supervisor", "auditor", "admin")  # what each may do: persons.CAPABILITIES
PERSON_NAME: Final = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}\Z")
NOTICE_KINDS: Final = ("air", "strike", "naval", "exercise", "other")
AREA_TYPES: Final = ("Polygon", "MultiPolygon", "Point")
MAX_NOTICE_POSITIONS: Final = 10_000
MAX_NOTICE_WINDOW_MS: Final = 366 * 86_400_000
_HEX128 = re.compile(r"\A[0-9a-f]{128}\Z")
_HEX_BYTES = re.compile(r"\A(?:[0-9a-f]{2})+\Z")
_SLOT = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}Z\Z")
_DECIMAL = re.compile(r"\A-?(0|[1-9][0-9]{0,2})(\.[0-9]{1,7})?\Z")
_NOTICE_REF = re.compile(r"\A[0-9a-f]{64}:[1-9][0-9]*\Z")
_NOT_SPACE = re.compile(r"\S")
_MAX_LANG = 35


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Obj:
    """One JSON object of content being read: each error names the member's path."""

    __slots__ = ("obj", "strict", "where")

    def __init__(self, value: object, where: str, members: tuple[str, ...], strict: bool) -> None:
        if not isinstance(value, dict):
            raise SchemaError(f"{where} must be an object, not {_show(value)}")
        if strict:
            unknown = sorted(str(k) for k in value if k not in members)
            if unknown:
                raise SchemaError(f"{where} has member(s) the protocol does not define: {', '.join(unknown)}")
        self.obj: dict[str, Any] = value
        self.where, self.strict = where, strict

    def at(self, name: str) -> str:
        return f"{self.where}: {name!r}"

    def has(self, name: str) -> bool:
        return name in self.obj

    def get(self, name: str) -> object:
        if name not in self.obj:
            raise SchemaError(f"{self.where} has no {name!r}")
        return self.obj[name]

    def integer(self, name: str, low: int = 0, high: int = MAX_INT) -> int:
        return _int(self.get(name), self.at(name), low, high)

    def time(self, name: str) -> int:
        return _int(self.get(name), self.at(name), 0, MAX_INT, "a time (ms since 1970, UTC)")

    def string(self, name: str, *, min_len: int = 0, max_len: int | None = None, pattern: re.Pattern[str] | None = None,
            what: str = "a string") -> str:  # fmt: skip
        return _str(self.get(name), self.at(name), min_len=min_len, max_len=max_len, pattern=pattern, what=what)

    def text(self, name: str) -> str:
        value = self.string(name, min_len=1, what="text")
        if not _NOT_SPACE.search(value):
            raise SchemaError(f"{self.at(name)} must be text with at least one character that is not white space")
        return value

    def enum(self, name: str, values: tuple[str, ...]) -> str:
        value = self.get(name)
        if not isinstance(value, str) or value not in values:
            raise SchemaError(f"{self.at(name)} must be one of {', '.join(values)}, not {_show(value)}")
        return value

    def ref(self, name: str) -> Ref:
        return Ref.read(self.get(name), self.at(name), self.strict)

    def person(self) -> PersonSig:
        return PersonSig.read(self.get("person"), self.at("person"), self.strict)

    def items(self, name: str, min_items: int = 0, max_items: int | None = None) -> list[Any]:
        return _list(self.get(name), self.at(name), min_items, max_items)


def _int(value: object, where: str, low: int, high: int, what: str = "an integer") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SchemaError(f"{where} must be {what} from {low} to {high}, not {_show(value)}")
    return value


def _str(value: object, where: str, *, min_len: int = 0, max_len: int | None = None,
         pattern: re.Pattern[str] | None = None, what: str = "a string") -> str:  # fmt: skip
    if not isinstance(value, str):
        raise SchemaError(f"{where} must be {what}, not {_show(value)}")
    if len(value) < min_len:
        raise SchemaError(f"{where} must be {what} of at least {min_len} character{'s' if min_len > 1 else ''}")
    if max_len is not None and len(value) > max_len:
        raise SchemaError(f"{where} is {len(value)} characters; at most {max_len}")
    if pattern is not None and not pattern.match(value):
        raise SchemaError(f"{where} is not {what}: {_show(value)}")
    return value


def _list(value: object, where: str, min_items: int = 0, max_items: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise SchemaError(f"{where} must be a list, not {_show(value)}")
    if len(value) < min_items:
        raise SchemaError(f"{where} must hold at least {min_items} item{'s' if min_items > 1 else ''}")
    if max_items is not None and len(value) > max_items:
        raise SchemaError(f"{where} holds {len(value)} items; at most {max_items}")
    return value


def _plain(value: object) -> Any:
    """A body's field as content: dataclasses as objects without their absent (None) members,
    tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(v) for f in dataclasses.fields(value) if (v := getattr(value, f.name)) is not None}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_MEMBERS: dict[type, tuple[str, ...]] = {}


def _members(cls: type) -> tuple[str, ...]:
    """A content class's field names, kept (``dataclasses.fields`` walks them: at every parse, before)."""
    names = _MEMBERS.get(cls)
    if names is None:
        names = _MEMBERS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


@dataclass_on_first_use(frozen=True, kw_only=True)
class Ref:
    """A reference to an envelope of this line (section 5.9): its sender, seq and id."""

    sender: str
    seq: int
    id: str

    @classmethod
    def read(cls, value: object, where: str, strict: bool) -> Ref:
        o = _Obj(value, where, ("sender", "seq", "id"), strict)
        return cls(
            sender=o.string("sender", pattern=HEX64, what="a station fingerprint (64 lower-case hex digits)"),
            seq=o.integer("seq", 1),
            id=o.string("id", pattern=HEX64, what="an envelope id (64 lower-case hex digits)"),
        )

    def to_obj(self) -> dict[str, Any]:
        return {"sender": self.sender, "seq": self.seq, "id": self.id}


@dataclass_on_first_use(frozen=True, kw_only=True)
class PersonSig:
    """The acting person's signature (section 5.10) as carried; ``persons.check_signer`` verifies it."""

    name: str
    role: str
    key: str
    sig: str

    @classmethod
    def read(cls, value: object, where: str, strict: bool) -> PersonSig:
        o = _Obj(value, where, ("name", "role", "key", "sig"), strict)
        return cls(
            name=o.string("name", pattern=PERSON_NAME, what="a person name"),
            role=o.enum("role", ROLES),
            key=o.string("key", pattern=HEX64, what="a public key (64 lower-case hex digits)"),
            sig=o.string("sig", pattern=_HEX128, what="a signature (128 lower-case hex digits)"),
        )


# --- bodies -------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Body:
    """The content of one kind, parsed and validated once (``parse``); frozen and typed."""

    KIND: ClassVar[str]

    @classmethod
    def parse(cls, content: object, *, strict: bool = False) -> Self:
        return cls._read(_Obj(content, f"{cls.KIND} content", _members(cls), strict))

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        raise NotImplementedError

    def to_content(self) -> dict[str, Any]:
        content: dict[str, Any] = _plain(self)
        return content

    def summary(self) -> str:
        """One line for logs and lists."""
        raise NotImplementedError

    def refs(self) -> Iterator[tuple[str, Ref]]:
        """(member, reference) for every envelope this content names."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Ref):
                yield f.name, value


def _by(person: PersonSig | None) -> str:
    return "" if person is None else f" by {person.name}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class Text(Body):
    KIND = "TEXT"
    text: str

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(text=o.text("text"))

    def summary(self) -> str:
        return self.text


@dataclass_on_first_use(frozen=True, kw_only=True)
class Flash(Body):
    KIND = "FLASH"
    text: str
    ack_within_ms: int | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(text=o.text("text"), ack_within_ms=o.integer("ack_within_ms", 1) if o.has("ack_within_ms") else None)

    def summary(self) -> str:
        return self.text


@dataclass_on_first_use(frozen=True, kw_only=True)
class Read(Body):
    KIND = "READ"
    ref: Ref
    by: str

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(ref=o.ref("ref"), by=o.string("by", min_len=1))

    def summary(self) -> str:
        return f"READ of seq {self.ref.seq} by {self.by}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class Escalated(Body):
    """Receivers also take the reference under ``ref`` when ``flash`` is absent (section 5.9)."""

    KIND = "ESCALATED"
    flash: Ref
    level: str
    step: int

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        name = "ref" if not o.strict and not o.has("flash") and o.has("ref") else "flash"
        return cls(flash=o.ref(name), level=o.string("level", min_len=1), step=o.integer("step", 1))

    def summary(self) -> str:
        return f"ESCALATED of seq {self.flash.seq} ({self.level})"


@dataclass_on_first_use(frozen=True, kw_only=True)
class Ack(Body):
    KIND = "ACK"
    ref: Ref
    person: PersonSig

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(ref=o.ref("ref"), person=o.person())

    def summary(self) -> str:
        return f"ACK of seq {self.ref.seq}{_by(self.person)}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class Test(Body):
    KIND = "TEST"
    text: str
    answer_within_ms: int | None = None
    slot: str | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(
            text=o.text("text"),
            answer_within_ms=o.integer("answer_within_ms", 1) if o.has("answer_within_ms") else None,
            slot=o.string("slot", pattern=_SLOT, what="a UTC slot like 2022-05-13T08:00Z") if o.has("slot") else None,
        )

    def summary(self) -> str:
        return self.text


@dataclass_on_first_use(frozen=True, kw_only=True)
class TestAnswer(Body):
    KIND = "TEST_ANSWER"
    test: Ref
    text: str
    person: PersonSig

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(test=o.ref("test"), text=o.text("text"), person=o.person())

    def summary(self) -> str:
        return self.text


@dataclass_on_first_use(frozen=True, kw_only=True)
class TestResult(Body):
    """``answered_by`` and ``answer_ms`` come together or not at all."""

    KIND = "TEST_RESULT"
    test: Ref
    result: str
    answered_by: str | None = None
    answer_ms: int | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        if o.has("answered_by") != o.has("answer_ms"):
            raise SchemaError(f"{o.where} must give both 'answered_by' and 'answer_ms' or neither")
        return cls(
            test=o.ref("test"),
            result=o.enum("result", ("passed", "missed")),
            answered_by=o.string("answered_by", pattern=PERSON_NAME, what="a person name")
            if o.has("answered_by") else None,
            answer_ms=o.integer("answer_ms") if o.has("answer_ms") else None,
        )  # fmt: skip

    def summary(self) -> str:
        by = f", answered by {self.answered_by}" if self.answered_by else ""
        return f"TEST_RESULT of seq {self.test.seq} ({self.result}{by})"


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallRequest(Body):
    """Each proposed window starts before it ends."""

    KIND = "CALL_REQUEST"
    from_role: str
    to_role: str
    subject: str
    windows: tuple[tuple[int, int], ...]
    expires: int

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        windows = []
        for i, w in enumerate(o.items("windows")):
            where = f"{o.at('windows')}[{i}]"
            pair = _list(w, where, 2, 2)
            start, end = (_int(t, where, 0, MAX_INT, "a pair of times") for t in pair)
            if start >= end:
                raise SchemaError(f"{where} must start before it ends")
            windows.append((start, end))
        return cls(
            from_role=o.string("from_role", min_len=1), to_role=o.string("to_role", min_len=1),
            subject=o.string("subject", min_len=1), windows=tuple(windows), expires=o.time("expires"),
        )  # fmt: skip

    def summary(self) -> str:
        return f"call request, {self.from_role} to {self.to_role}: {self.subject}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallReply(Body):
    """``time`` with ``accept`` only; ``reason`` with ``decline`` only."""

    KIND = "CALL_REPLY"
    request: Ref
    answer: str
    time: int | None = None
    reason: str | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        answer = o.enum("answer", ("accept", "decline"))
        if answer == "accept" and (not o.has("time") or o.has("reason")):
            raise SchemaError(f"{o.where}: an accept gives the call 'time' and no 'reason'")
        if answer == "decline" and o.has("time"):
            raise SchemaError(f"{o.where}: a decline gives no 'time'")
        return cls(
            request=o.ref("request"), answer=answer, time=o.time("time") if o.has("time") else None,
            reason=o.string("reason") if o.has("reason") else None,
        )  # fmt: skip

    def summary(self) -> str:
        return f"CALL_REPLY of seq {self.request.seq} ({self.answer})"


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallExpired(Body):
    KIND = "CALL_EXPIRED"
    request: Ref

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(request=o.ref("request"))

    def summary(self) -> str:
        return f"CALL_EXPIRED of seq {self.request.seq}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallRecord(Body):
    """The call starts before it ends."""

    KIND = "CALL_RECORD"
    start: int
    end: int
    principals: tuple[str, ...]
    participants: tuple[str, ...]
    person: PersonSig
    request: Ref | None = None
    note: str | None = None
    voice: Ref | None = None  # the voice call (CALL_RING) this records: its CALL_AUDIO are the audio evidence

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        names = {
            name: tuple(_str(v, f"{o.at(name)}[{i}]", min_len=1) for i, v in enumerate(o.items(name, 1)))
            for name in ("principals", "participants")
        }
        start, end = o.time("start"), o.time("end")
        if start >= end:
            raise SchemaError(f"{o.where}: the call must start before it ends")
        return cls(
            start=start, end=end, principals=names["principals"], participants=names["participants"],
            person=o.person(), request=o.ref("request") if o.has("request") else None,
            note=o.string("note") if o.has("note") else None, voice=o.ref("voice") if o.has("voice") else None,
        )  # fmt: skip

    def summary(self) -> str:
        return f"call record: {' ↔ '.join(self.principals[:4])}{_by(self.person)}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class Readout(Body):
    KIND = "READOUT"
    call: Ref
    text: str
    person: PersonSig

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(call=o.ref("call"), text=o.text("text"), person=o.person())

    def summary(self) -> str:
        return self.text


# --- voice calls (issue 16): signalling on the signed line, the audio evidence at the end ----------


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallRing(Body):
    """A person rings the peer station; with ``test`` the ring is the caller's voice line test."""

    KIND = "CALL_RING"
    person: PersonSig
    test: Ref | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(person=o.person(), test=o.ref("test") if o.has("test") else None)

    def summary(self) -> str:
        return f"voice call ringing{' (voice line test)' if self.test else ''}{_by(self.person)}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallAnswer(Body):
    KIND = "CALL_ANSWER"
    ring: Ref
    person: PersonSig

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(ring=o.ref("ring"), person=o.person())

    def summary(self) -> str:
        return f"voice call of seq {self.ring.seq} picked up{_by(self.person)}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallDecline(Body):
    KIND = "CALL_DECLINE"
    ring: Ref
    reason: str | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(ring=o.ref("ring"), reason=o.string("reason", max_len=500) if o.has("reason") else None)

    def summary(self) -> str:
        return f"voice call of seq {self.ring.seq} declined" + (f": {self.reason}" if self.reason else "")


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallUnanswered(Body):
    KIND = "CALL_UNANSWERED"
    ring: Ref

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(ring=o.ref("ring"))

    def summary(self) -> str:
        return f"voice call of seq {self.ring.seq} unanswered"


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallHangup(Body):
    """``answer`` names the pick-up this hang-up ends; without it the caller cancels a ring. ``reason``
    when the station, not a person, ended it: ``lost`` (it lost the line mid-call) or ``interrupted``
    (it stopped mid-call)."""

    KIND = "CALL_HANGUP"
    ring: Ref
    answer: Ref | None = None
    reason: str | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(
            ring=o.ref("ring"), answer=o.ref("answer") if o.has("answer") else None,
            reason=o.string("reason", max_len=500) if o.has("reason") else None,
        )  # fmt: skip

    def summary(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"voice call of seq {self.ring.seq} {'hung up' if self.answer else 'cancelled before pick-up'}{why}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class AudioDigest:
    """One direction of a call's audio as one station saw it (PROTOCOL.md section 8.9)."""

    digest: str
    packets: int
    ms: int

    @classmethod
    def read(cls, value: object, where: str, strict: bool) -> AudioDigest:
        o = _Obj(value, where, ("digest", "packets", "ms"), strict)
        return cls(
            digest=o.string("digest", pattern=HEX64, what="a SHA-256 digest (64 lower-case hex digits)"),
            packets=o.integer("packets"), ms=o.integer("ms"),
        )  # fmt: skip


@dataclass_on_first_use(frozen=True, kw_only=True)
class CallAudio(Body):
    """Each station's digests of the audio it sent and received on one call, filed after the call
    ended; ``interrupted`` when the station stopped mid-call."""

    KIND = "CALL_AUDIO"
    ring: Ref
    sent: AudioDigest
    received: AudioDigest
    interrupted: bool | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        interrupted = o.get("interrupted") if o.has("interrupted") else None
        if interrupted is not None and not isinstance(interrupted, bool):
            raise SchemaError(f"{o.at('interrupted')} must be true or false, not {_show(interrupted)}")
        return cls(
            ring=o.ref("ring"), sent=AudioDigest.read(o.get("sent"), o.at("sent"), o.strict),
            received=AudioDigest.read(o.get("received"), o.at("received"), o.strict), interrupted=interrupted,
        )  # fmt: skip

    def summary(self) -> str:
        cut = ", interrupted" if self.interrupted else ""
        return (f"audio of call seq {self.ring.seq}: sent {self.sent.packets} packets, received "
                f"{self.received.packets}{cut}")  # fmt: skip


Position = tuple[str, str]
Polygon = tuple[tuple[Position, ...], ...]


@dataclass_on_first_use(frozen=True, kw_only=True)
class Area:
    """A GeoJSON geometry as carried: coordinates are decimal strings, positions ``(lon, lat)``."""

    type: str
    coordinates: Position | Polygon | tuple[Polygon, ...]

    @classmethod
    def read(cls, value: object, where: str) -> Area:
        o = _Obj(value, where, ("type", "coordinates"), True)
        kind = o.enum("type", AREA_TYPES)
        coords = o.get("coordinates")
        where = o.at("coordinates")
        counted = _count_positions(coords, MAX_NOTICE_POSITIONS)  # before anything is built from them
        if counted > MAX_NOTICE_POSITIONS:
            raise SchemaError(f"{where} holds more than {MAX_NOTICE_POSITIONS} positions")
        if kind == "Point":
            return cls(type=kind, coordinates=_position(coords, where))
        if kind == "Polygon":
            return cls(type=kind, coordinates=_polygon(coords, where))
        parts = _list(coords, where, 1)
        return cls(type=kind, coordinates=tuple(_polygon(p, f"{where}[{i}]") for i, p in enumerate(parts)))


def _count_positions(coords: object, limit: int) -> int:
    """Positions in nested coordinates, counted without building anything; stops past ``limit``."""
    count, stack, nodes = 0, [coords], 0
    while stack and count <= limit and nodes <= 4 * limit + 1000:
        node = stack.pop()
        nodes += 1
        if isinstance(node, list) and node and not isinstance(node[0], list):
            count += 1
        elif isinstance(node, list):
            stack.extend(node)
    return count if nodes <= 4 * limit + 1000 else limit + 1


def _position(value: object, where: str) -> Position:
    pair = _list(value, where, 2, 2)
    lon, lat = (_str(v, where, pattern=_DECIMAL, what="a decimal string with at most 7 decimals") for v in pair)
    if not -180 <= float(lon) <= 180 or not -90 <= float(lat) <= 90:
        raise SchemaError(f"{where}: [{lon}, {lat}] is not a longitude and latitude")
    return lon, lat


def _polygon(value: object, where: str) -> Polygon:
    rings = _list(value, where, 1)
    return tuple(
        tuple(_position(p, f"{where}[{i}]") for p in _list(ring, f"{where}[{i}]", 4, MAX_NOTICE_POSITIONS))
        for i, ring in enumerate(rings)
    )


@dataclass_on_first_use(frozen=True, kw_only=True)
class Notice(Body):
    """Always strict (section 5.9: an unknown member makes a notice one that cannot be checked
    safely). Beyond the schema: floor below ceiling, a window of at most 366 days that ends after
    it starts, coordinates within -180..180 and -90..90, at most 10,000 positions in all. The area's
    geometry (closed rings, no self-intersection, span, latitude) is ``ops.notices``'s to check."""

    KIND = "NOTICE"
    kind: str
    area: Area
    floor_m: int
    ceiling_m: int
    start: int
    end: int
    margin_m: int
    text: str
    radius_m: int | None = None
    amends: str | None = None

    @classmethod
    def parse(cls, content: object, *, strict: bool = True) -> Self:
        return cls._read(_Obj(content, f"{cls.KIND} content", _members(cls), True))

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        area = Area.read(o.get("area"), o.at("area"))
        if (area.type == "Point") != o.has("radius_m"):
            raise SchemaError(f"{o.where}: 'radius_m' is given with a Point area, and only with one")
        floor, ceiling = o.integer("floor_m", -12_000, 1_000_000), o.integer("ceiling_m", -12_000, 1_000_000)
        if floor >= ceiling:
            raise SchemaError(f"{o.where}: floor_m {floor} must be below ceiling_m {ceiling}")
        start, end = o.time("start"), o.time("end")
        if not start < end <= start + MAX_NOTICE_WINDOW_MS:
            raise SchemaError(f"{o.where}: the window must end after it starts, at most 366 days later")
        return cls(
            kind=o.enum("kind", NOTICE_KINDS), area=area, floor_m=floor, ceiling_m=ceiling, start=start, end=end,
            margin_m=o.integer("margin_m", 0, 100_000), text=o.string("text", max_len=4000),
            radius_m=o.integer("radius_m", 1, 200_000) if o.has("radius_m") else None,
            amends=o.string("amends", pattern=_NOTICE_REF, what="a notice ref '<fingerprint>:<seq>'")
            if o.has("amends") else None,
        )  # fmt: skip

    def summary(self) -> str:
        return f"{self.kind} notice, {self.floor_m}-{self.ceiling_m} m: {self.text}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class NoticeWithdraw(Body):
    KIND = "NOTICE_WITHDRAW"
    notice: Ref

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(notice=o.ref("notice"))

    @property
    def notice_ref(self) -> str:
        return f"{self.notice.sender}:{self.notice.seq}"

    def summary(self) -> str:
        return f"NOTICE_WITHDRAW of seq {self.notice.seq}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class Translation(Body):
    KIND = "TRANSLATION"
    ref: Ref
    text: str
    lang: str
    translator: str

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(
            ref=o.ref("ref"), text=o.text("text"),
            lang=o.string("lang", max_len=_MAX_LANG, pattern=LANG_TAG, what="a language tag like en or ru"),
            translator=o.string("translator", min_len=1),
        )  # fmt: skip

    def summary(self) -> str:
        return self.text


MAX_TLS_DER = 4096  # bytes: a TLS certificate carried in a KEY (the reference makes ~300)


@dataclass_on_first_use(frozen=True, kw_only=True)
class KeyCertificate:
    data: str
    sig: str


def _signed(value: object, where: str, strict: bool) -> KeyCertificate:
    """A root-signed object as carried in content: ``{"data": hex, "sig": hex128}``."""
    so = _Obj(value, where, ("data", "sig"), strict)
    return KeyCertificate(data=so.string("data", pattern=_HEX_BYTES, what="hex bytes"),
                          sig=so.string("sig", pattern=_HEX128, what="a signature"))  # fmt: skip


@dataclass_on_first_use(frozen=True, kw_only=True)
class Key(Body):
    """Key rotation (section 5.9, guarantee 6): one or two new key certificates, each signed by the
    sender's root; at most one of role ``signing``. The gate (``gate.py``) verifies the certificates
    and moves the sender's key window; this type only reads the form."""

    KIND = "KEY"
    certs: tuple[KeyCertificate, ...]
    tls_der: str | None = None  # hex DER of the new TLS certificate, with a ``tls`` certificate only

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        certs = []
        for i, c in enumerate(o.items("certs", 1, 2)):
            co = _Obj(c, f"{o.at('certs')}[{i}]", ("data", "sig"), o.strict)
            certs.append(KeyCertificate(data=co.string("data", pattern=_HEX_BYTES, what="hex bytes"),
                                        sig=co.string("sig", pattern=_HEX128, what="a signature")))  # fmt: skip
        der = o.string("tls_der", pattern=_HEX_BYTES, max_len=2 * MAX_TLS_DER, what="hex bytes") if o.has(
            "tls_der") else None  # fmt: skip
        return cls(certs=tuple(certs), tls_der=der)

    def summary(self) -> str:
        return f"KEY: {len(self.certs)} new key certificate{'s' if len(self.certs) > 1 else ''}"


@dataclass_on_first_use(frozen=True, kw_only=True)
class CheckpointProof:
    proposal: str  # hex of the checkpoint proposal's statement wire form (section 6.1)
    cosign: str  # hex of its countersignature's


@dataclass_on_first_use(frozen=True, kw_only=True)
class Revoke(Body):
    """Revocation of a signing key after a compromise (section 5.9, guarantee 6): the root's signed
    revocation, the co-signed checkpoint it names (proposal and cosign, in the statement wire
    form) and, when the revoked key still signs, the next key's certificate. The gate
    (``gate.py``) verifies all of it and flags what the key signed after the checkpoint; this type
    only reads the form."""

    KIND = "REVOKE"
    revocation: KeyCertificate  # {data, sig}: the statement signed by the root (revocation.py)
    checkpoint: CheckpointProof
    certs: tuple[KeyCertificate, ...] | None = None  # absent: the revoked key no longer signs

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        ro = _Obj(o.get("revocation"), o.at("revocation"), ("data", "sig"), o.strict)
        revocation = KeyCertificate(data=ro.string("data", pattern=_HEX_BYTES, what="hex bytes"),
                                    sig=ro.string("sig", pattern=_HEX128, what="a signature"))  # fmt: skip
        co = _Obj(o.get("checkpoint"), o.at("checkpoint"), ("proposal", "cosign"), o.strict)
        proof = CheckpointProof(proposal=co.string("proposal", pattern=_HEX_BYTES, what="hex bytes"),
                                cosign=co.string("cosign", pattern=_HEX_BYTES, what="hex bytes"))  # fmt: skip
        certs = []
        for i, c in enumerate(o.items("certs", 1, 2) if o.has("certs") else []):
            eo = _Obj(c, f"{o.at('certs')}[{i}]", ("data", "sig"), o.strict)
            certs.append(KeyCertificate(data=eo.string("data", pattern=_HEX_BYTES, what="hex bytes"),
                                        sig=eo.string("sig", pattern=_HEX128, what="a signature")))  # fmt: skip
        return cls(revocation=revocation, checkpoint=proof, certs=tuple(certs) if o.has("certs") else None)

    def summary(self) -> str:
        try:
            obj = canonical.decode_object(bytes.fromhex(self.revocation.data), "revocation")
        except (VerificationError, ValueError):
            return "REVOKE: a signing key revoked by the station's root"
        cp = obj.get("checkpoint")
        n = cp.get("n") if isinstance(cp, dict) else "?"
        key, reason = str(obj.get("key"))[:12], str(obj.get("reason"))[:200]
        return f"REVOKE: signing key {key} revoked after checkpoint {n} ({reason})"


@dataclass_on_first_use(frozen=True, kw_only=True)
class RootStatement:
    data: str  # hex of the canonical root rotation object (section 5.9, ROOT)
    prev_sig: str  # by the root in force, under the domain ``root``
    root_sig: str  # by the new root, same bytes and domain


@dataclass_on_first_use(frozen=True, kw_only=True)
class Root(Body):
    """Root rotation (section 5.9, guarantee 6): the statement naming the sender's next root, signed
    by the root in force and by the new one. The gate (``gate.py``) checks it and holds the new root
    untrusted until the peer's ROOT_CONFIRM; this type only reads the form."""

    KIND = "ROOT"
    rotation: RootStatement

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        ro = _Obj(o.get("rotation"), o.at("rotation"), ("data", "prev_sig", "root_sig"), o.strict)
        return cls(rotation=RootStatement(
            data=ro.string("data", pattern=_HEX_BYTES, what="hex bytes"),
            prev_sig=ro.string("prev_sig", pattern=_HEX128, what="a signature"),
            root_sig=ro.string("root_sig", pattern=_HEX128, what="a signature"),
        ))  # fmt: skip

    def summary(self) -> str:
        try:
            obj = canonical.decode_object(bytes.fromhex(self.rotation.data), "root rotation")
        except (VerificationError, ValueError):
            return "ROOT: the station names a new root"
        return (f"ROOT: the station names root version {obj.get('version')} ({str(obj.get('root'))[:12]}); not trusted "
                "until the peer confirms the new safety code")  # fmt: skip


@dataclass_on_first_use(frozen=True, kw_only=True)
class RootConfirm(Body):
    """The peer's operator compared the new safety code of a root rotation by voice (section 5.9):
    the ROOT named, and the rotation's digest."""

    KIND = "ROOT_CONFIRM"
    root: Ref
    rotation: str

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        return cls(root=o.ref("root"), rotation=o.string("rotation", pattern=HEX64, what="a digest (64 hex digits)"))

    def summary(self) -> str:
        return f"ROOT_CONFIRM: the peer's new root (ROOT seq {self.root.seq}) confirmed by the safety code"


@dataclass_on_first_use(frozen=True, kw_only=True)
class RosterUser:
    name: str
    role: str
    key: str
    cert: KeyCertificate | None = None  # the root's person certificate (section 5.10), {data, sig}


@dataclass_on_first_use(frozen=True, kw_only=True)
class Roster(Body):
    """Names are unique within one roster. Each person may carry the root's certificate (``cert``),
    and ``removed`` the root's certificates of people removed (section 5.10); ``persons`` checks
    them."""

    KIND = "ROSTER"
    users: tuple[RosterUser, ...]
    removed: tuple[KeyCertificate, ...] | None = None

    @classmethod
    def _read(cls, o: _Obj) -> Self:
        users, seen = [], set()
        for i, u in enumerate(o.items("users", 1)):
            uo = _Obj(u, f"{o.at('users')}[{i}]", ("name", "role", "key", "cert"), o.strict)
            user = RosterUser(
                name=uo.string("name", pattern=PERSON_NAME, what="a person name"), role=uo.enum("role", ROLES),
                key=uo.string("key", pattern=HEX64, what="a public key (64 hex digits)"),
                cert=_signed(uo.get("cert"), uo.at("cert"), o.strict) if uo.has("cert") else None,
            )  # fmt: skip
            if user.name in seen:
                raise SchemaError(f"{o.where} lists {user.name} twice")
            seen.add(user.name)
            users.append(user)
        removed = None
        if o.has("removed"):
            items = o.items("removed", 1)
            removed = tuple(_signed(c, f"{o.at('removed')}[{i}]", o.strict) for i, c in enumerate(items))
        return cls(users=tuple(users), removed=removed)

    def summary(self) -> str:
        shown = ", ".join(f"{u.name} ({u.role})" for u in self.users[:10])
        return "roster: " + shown + (f" and {len(self.users) - 10} more" if len(self.users) > 10 else "")


# --- the registry -------------------------------------------------------------------------------------

PEER, OWN, EITHER = "peer", "own", "either"


@dataclass(frozen=True, kw_only=True)
class RefRule:
    """A member of the content that names another envelope: of which kinds, and whose, from the
    sender's point of view (the peer's, its own, or either side's)."""

    member: str
    targets: tuple[str, ...]
    whose: str
    optional: bool = False


@dataclass(frozen=True, kw_only=True)
class Kind:
    """One row of the registry."""

    name: str
    body: type[Body]
    purpose: str  # one line, as section 5.8's table says it
    sent_by: str  # who sends it (section 5.8)
    priority: str = "PRIORITY"  # the default when the operator names none
    operational: bool = True  # followed by a checkpoint (guarantee 3)
    person: bool = False  # carries the acting person's signature (section 5.10)
    reserve: bool = False  # may use the disk reserve (Limits.line_disk_reserve_bytes)
    operator: bool = False  # an operator files it; the others are decided by the station
    reserved: bool = False  # stored and shown like an unknown kind, not acted on (none in version 1)
    refs: tuple[RefRule, ...] = ()


_FLASHES = ("FLASH", "TEXT")  # a TEXT at priority FLASH is handled as a FLASH
_TRANSLATABLE = ("TEXT", "FLASH", "READOUT", "NOTICE", "CALL_REQUEST", "CALL_REPLY", "TEST")


def _table(*rows: Kind) -> Mapping[str, Kind]:
    for row in rows:
        if row.name != row.body.KIND:
            raise RuntimeError(f"kind {row.name}: body type {row.body.__name__} is for {row.body.KIND}")
    return MappingProxyType({row.name: row for row in rows})


REGISTRY: Final = _table(
    Kind(name="TEXT", body=Text, purpose="a message to be read", sent_by="either", priority="ROUTINE",
         operational=False, operator=True),
    Kind(name="FLASH", body=Flash, purpose="an urgent message whose acknowledgement has a deadline and escalates",
         sent_by="either", priority="FLASH", reserve=True, operator=True),
    Kind(name="READ", body=Read, purpose="the peer's TEXT or FLASH was shown to a person here",
         sent_by="the message's receiver", priority="FLASH", operational=False, reserve=True, operator=True,
         refs=(RefRule(member="ref", targets=_FLASHES, whose=PEER),)),
    Kind(name="ESCALATED", body=Escalated, purpose="a FLASH's acknowledgement is overdue: the next level was "
         "alerted, or the deadline passed", sent_by="the FLASH's receiver", priority="FLASH",
         refs=(RefRule(member="flash", targets=_FLASHES, whose=PEER),)),
    Kind(name="ACK", body=Ack, purpose="a named person accepts the peer's FLASH (or TEXT)",
         sent_by="the message's receiver", priority="FLASH", person=True, reserve=True, operator=True,
         refs=(RefRule(member="ref", targets=_FLASHES, whose=PEER),)),
    Kind(name="TEST", body=Test, purpose="a line test: a challenge a person at the peer must answer within a "
         "deadline", sent_by="the tester", reserve=True, operator=True),
    Kind(name="TEST_ANSWER", body=TestAnswer, purpose="a person's answer to the peer's line test",
         sent_by="the test's receiver", person=True, reserve=True, operator=True,
         refs=(RefRule(member="test", targets=("TEST",), whose=PEER),)),
    Kind(name="TEST_RESULT", body=TestResult, purpose="the tester's verdict on its own line test: passed or "
         "missed", sent_by="the tester", reserve=True, refs=(RefRule(member="test", targets=("TEST",), whose=OWN),)),
    Kind(name="CALL_REQUEST", body=CallRequest, purpose="request for a voice call between two principals",
         sent_by="the requester", operator=True),
    Kind(name="CALL_REPLY", body=CallReply, purpose="the answer to the peer's call request: accept (with a "
         "time) or decline", sent_by="the request's receiver", operator=True,
         refs=(RefRule(member="request", targets=("CALL_REQUEST",), whose=PEER),)),
    Kind(name="CALL_EXPIRED", body=CallExpired, purpose="the requester's own request passed its expiry "
         "unanswered", sent_by="the requester", reserve=True,
         refs=(RefRule(member="request", targets=("CALL_REQUEST",), whose=OWN),)),
    Kind(name="CALL_RECORD", body=CallRecord, purpose="the record of a call held", sent_by="either",
         person=True, operator=True,
         refs=(RefRule(member="request", targets=("CALL_REQUEST",), whose=EITHER, optional=True),
               RefRule(member="voice", targets=("CALL_RING",), whose=EITHER, optional=True))),
    Kind(name="READOUT", body=Readout, purpose="one side's written account of a call, in its own language",
         sent_by="either (one each)", person=True, operator=True,
         refs=(RefRule(member="call", targets=("CALL_RECORD",), whose=EITHER),)),
    Kind(name="NOTICE", body=Notice, purpose="planned activity: kind, area, altitude band, UTC window, margin",
         sent_by="either", operator=True),
    Kind(name="NOTICE_WITHDRAW", body=NoticeWithdraw, purpose="withdraws the sender's own notice",
         sent_by="the notice's filer", operator=True,
         refs=(RefRule(member="notice", targets=("NOTICE",), whose=OWN),)),
    Kind(name="TRANSLATION", body=Translation, purpose="a translation of an envelope's content", sent_by="either",
         priority="ROUTINE", operational=False, operator=True,
         refs=(RefRule(member="ref", targets=_TRANSLATABLE, whose=EITHER),)),
    Kind(name="KEY", body=Key, purpose="key rotation: the next signing key, certified by the sender's root",
         sent_by="the key's station"),
    Kind(name="REVOKE", body=Revoke, purpose="revocation of a stolen signing key by the root, naming the last "
         "checkpoint co-signed before the compromise", sent_by="the key's station", priority="FLASH"),
    Kind(name="ROOT", body=Root, purpose="root rotation: the next root, signed by the root in force and by "
         "itself", sent_by="the root's station", priority="FLASH"),
    Kind(name="ROOT_CONFIRM", body=RootConfirm, purpose="the peer's new root is trusted: the operators compared "
         "its new safety code by voice", sent_by="the peer of the root's station", priority="FLASH",
         refs=(RefRule(member="root", targets=("ROOT",), whose=PEER),)),
    Kind(name="ROSTER", body=Roster, purpose="the names, roles and public keys of a station's people",
         sent_by="the station"),
    Kind(name="CALL_RING", body=CallRing, purpose="a person rings the peer station for a voice call (with a "
         "test: a voice line test)", sent_by="the caller", person=True, operator=True,
         refs=(RefRule(member="test", targets=("TEST",), whose=OWN, optional=True),)),
    Kind(name="CALL_ANSWER", body=CallAnswer, purpose="a person picks up the peer's ring", sent_by="the ring's "
         "receiver", person=True, reserve=True, operator=True,
         refs=(RefRule(member="ring", targets=("CALL_RING",), whose=PEER),)),
    Kind(name="CALL_DECLINE", body=CallDecline, purpose="the peer's ring is declined (by a person, or busy)",
         sent_by="the ring's receiver", operator=True,
         refs=(RefRule(member="ring", targets=("CALL_RING",), whose=PEER),)),
    Kind(name="CALL_UNANSWERED", body=CallUnanswered, purpose="the caller's own ring timed out unanswered",
         sent_by="the caller", reserve=True, refs=(RefRule(member="ring", targets=("CALL_RING",), whose=OWN),)),
    Kind(name="CALL_HANGUP", body=CallHangup, purpose="a voice call is hung up (or the caller cancels its ring)",
         sent_by="either", operator=True,
         refs=(RefRule(member="ring", targets=("CALL_RING",), whose=EITHER),
               RefRule(member="answer", targets=("CALL_ANSWER",), whose=EITHER, optional=True))),
    Kind(name="CALL_AUDIO", body=CallAudio, purpose="digests of the audio a station sent and received on a "
         "call, filed after it ended", sent_by="either (one each)", reserve=True,
         refs=(RefRule(member="ring", targets=("CALL_RING",), whose=EITHER),)),
)  # fmt: skip

NAMES: Final = tuple(REGISTRY)
OPERATIONAL: Final = frozenset(k.name for k in REGISTRY.values() if k.operational)
RESERVE: Final = frozenset(k.name for k in REGISTRY.values() if k.reserve)
PERSON_SIGNED: Final = frozenset(k.name for k in REGISTRY.values() if k.person)
OPERATOR: Final = frozenset(k.name for k in REGISTRY.values() if k.operator)


def spec(kind: str) -> Kind | None:
    """The registry's row for ``kind``, or None for a kind this version does not know."""
    return REGISTRY.get(kind)


def default_priority(kind: str) -> str:
    row = REGISTRY.get(kind)
    return "PRIORITY" if row is None else row.priority


def parse(kind: str, content: object, *, strict: bool = False) -> Body:
    """The body of a known kind (SchemaError when the content is not as section 5.9 says, or the
    kind is not one this version knows)."""
    row = REGISTRY.get(kind)
    if row is None:
        raise SchemaError(f"{kind} is not a kind this station knows (a newer peer's?)")
    return row.body.parse(content, strict=strict)


def summarize(kind: str, content: Mapping[str, Any]) -> str:
    """One line for a log row: the body's summary, or, for an unknown kind or content that does
    not parse, the content itself (without any person signature), cut at 200 characters."""
    row = REGISTRY.get(kind)
    if row is not None:
        try:
            return row.body.parse(content).summary()
        except SchemaError:
            pass
    text = json.dumps({k: v for k, v in content.items() if k != "person"}, ensure_ascii=False)
    return text if len(text) <= 200 else text[:199] + "…"
