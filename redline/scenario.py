"""The seed scenario (SCENARIO.md) replayed in compressed time over two running stations.

From 1 March 2022, when the line is set up, to 13 May: EUCOM tests the line twice a day and an
NDMC duty officer answers each test; the US side requests ministers' and chiefs' calls that go
unanswered and expire; on 13 May the ministers' call is held (the first in 84 days, after the 18
February call) and each side files its own readout; two notices near a border conflict and a
FLASH about them is acknowledged by name. Everything goes through the stations' control sockets,
exactly as operators would; only the stations' clocks are moved (REDLINE_SETTABLE_CLOCK=1).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nacl.signing
from nacl.pwhash.argon2id import MEMLIMIT_MIN, OPSLIMIT_MIN

from redline import keys as keyfiles
from redline import persons
from redline.control import call
from redline.errors import RedlineError
from redline.ops.views import VIEWS, LineTestsView, ToAnswer
from redline.readmodel import from_obj

PASSWORD = "demo-password-1"  # demo users only; real users choose their own
EUCOM_USERS = [("Duty Officer Miller", "duty"), ("Major Brooks", "deputy"), ("Col. Hayes", "supervisor")]
NDMC_USERS = [("Dezhurny Orlov", "duty"), ("Mayor Sokolov", "deputy"), ("Polkovnik Volkov", "supervisor")]
DAY = 86_400_000


async def read_view(home: Path, line: str, what: str) -> Any:
    """A running station's read view, typed as the station built it (``ops.views.VIEWS``)."""
    return from_obj(await call(home, {"op": "view", "line": line, "what": what}), VIEWS[what], f"{what} view")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def iso(value: int) -> str:
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%MZ")


def border_notices() -> tuple[dict[str, Any], dict[str, Any]]:
    """Two notices near the Romania-Ukraine border on 13 May 2022 that conflict (hypothetical)."""
    air = {
        "kind": "air",
        "area": {"type": "Polygon", "coordinates": [[["28.10", "45.10"], ["28.90", "45.10"], ["28.90", "45.60"],
                                                     ["28.10", "45.60"], ["28.10", "45.10"]]]},
        "floor_m": 6000, "ceiling_m": 12000,
        "start": ms("2022-05-13T12:00:00Z"), "end": ms("2022-05-13T16:00:00Z"),
        "margin_m": 10000, "text": "NATO air policing patrol, two aircraft, west of the border.",
    }  # fmt: skip
    strike = {
        "kind": "strike",
        "area": {"type": "Point", "coordinates": ["29.05", "45.45"]}, "radius_m": 15000,
        "floor_m": 0, "ceiling_m": 10000,
        "start": ms("2022-05-13T13:00:00Z"), "end": ms("2022-05-13T15:00:00Z"),
        "margin_m": 5000, "text": "Удары по объектам в районе, вблизи границы.",
    }  # fmt: skip
    return air, strike


class Replay:
    def __init__(self, eucom: Path, ndmc: Path, line: str, say: Callable[[str], None]) -> None:
        self.eucom, self.ndmc, self.line, self.say = eucom, ndmc, line, say
        self.rng = random.Random(20220513)
        self.keys: dict[str, Any] = {}

    async def clock(self, at: int) -> None:
        for home in (self.eucom, self.ndmc):
            await call(home, {"op": "clock", "set_ms": at})

    async def act(self, home: Path, kind: str, content: dict[str, Any], user: str | None = None,
                  priority: str | None = None) -> dict[str, Any]:  # fmt: skip
        if user is not None:
            content = await call(home, {"op": "resolve", "line": self.line, "kind": kind, "content": content})
            people = {p.name: p for p in persons.load_users(home)}
            if user not in self.keys:
                self.keys[user] = persons.unlock(home, user, PASSWORD)
            content = persons.sign_content(content, people[user], self.keys[user])
        request = {"op": "act", "line": self.line, "kind": kind, "content": content, "priority": priority}
        result: dict[str, Any] = await call(home, request)
        return result

    async def wait(self, check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = await check()
                if result:
                    return result
            except RedlineError:
                pass
            await asyncio.sleep(0.02)
        raise RedlineError(f"scenario: timed out waiting for {what}")

    async def view(self, home: Path, what: str) -> Any:
        return await read_view(home, self.line, what)

    async def run(self, *, days: int | None = None) -> None:
        await self.opening()
        end = ms("2022-05-12T00:00:00Z")
        day = ms("2022-03-01T00:00:00Z")
        if days is not None:
            end = min(end, day + days * DAY)
        requests = {ms(d): pair for d, pair in REQUESTS}
        while day < end:
            for hour in (8, 20):
                await self.test_answered(day + hour * 3_600_000)
            for at, (frm, to, subject) in requests.items():
                if day <= at < day + DAY:
                    await self.clock(at)
                    content = {"from_role": frm, "to_role": to, "subject": subject, "windows": [],
                               "expires": at + 7 * DAY}  # fmt: skip
                    await self.act(self.eucom, "CALL_REQUEST", content, priority="priority")
                    self.say(f"{iso(at)}  EUCOM requests a call, {frm} to {to}: no answer")
            day += DAY
            if datetime.fromtimestamp(day / 1000, UTC).day == 1:
                self.say(f"{iso(day)}  ... line tested twice a day, every test answered")
        if days is None:
            await self.may_13()

    async def opening(self) -> None:
        await self.act(self.eucom, "TEXT", {"text": "EUCOM: deconfliction line established. First test follows."})
        await self.act(self.ndmc, "TEXT", {"text": "НЦУО: линия установлена. Слышим вас."})
        # The last ministers' call before the line, on record so the next one can be counted from it.
        rec = await self.act(self.eucom, "CALL_RECORD", {
            "start": ms("2022-02-18T15:00:00Z"), "end": ms("2022-02-18T15:45:00Z"),
            "principals": ["Secretary", "Minister"], "participants": ["Secretary", "Minister"],
            "note": "filed for the record: held before the line existed",
        }, user=EUCOM_USERS[2][0])  # fmt: skip
        await self.act(self.eucom, "READOUT", {
            "call": rec["id"], "text": "The Secretary urged his counterpart not to invade Ukraine.",
        }, user=EUCOM_USERS[2][0])  # fmt: skip
        self.say("2022-03-01 06:00Z  line established; the 18 February ministers' call filed for the record")

    async def test_answered(self, at: int) -> None:
        await self.clock(at)
        pending = await self.wait(lambda: self._to_answer(), f"the {iso(at)} test to reach NDMC")
        await self.clock(at + self.rng.randint(40, 200) * 1000)  # a person takes a minute or two
        answer = {"test": pending[0].id, "text": "Проверка принята. Дежурный на связи."}
        await self.act(self.ndmc, "TEST_ANSWER", answer, user=NDMC_USERS[0][0])

    async def _to_answer(self) -> tuple[ToAnswer, ...]:
        view: LineTestsView = await self.view(self.ndmc, "tests")
        return view.to_answer

    async def may_13(self) -> None:
        await self.test_answered(ms("2022-05-12T08:00:00Z"))
        at = ms("2022-05-12T09:00:00Z")
        await self.clock(at)
        req = await self.act(self.eucom, "CALL_REQUEST", {
            "from_role": "Secretary", "to_role": "Minister", "subject": "Ukraine; keeping lines of communication open",
            "windows": [[ms("2022-05-13T10:00:00Z"), ms("2022-05-13T14:00:00Z")]], "expires": at + 3 * DAY,
        }, priority="priority")  # fmt: skip
        self.say(f"{iso(at)}  EUCOM requests a ministers' call for 13 May")
        await self.wait(lambda: self._holds(self.ndmc, req["id"]), "NDMC to hold the request")
        await self.clock(ms("2022-05-12T16:30:00Z"))
        await self.act(self.ndmc, "CALL_REPLY", {"request": req["id"], "answer": "accept",
                                                 "time": ms("2022-05-13T11:00:00Z")}, priority="priority")  # fmt: skip
        self.say("2022-05-12 16:30Z  NDMC accepts: 13 May 11:00Z")
        await self.test_answered(ms("2022-05-12T20:00:00Z"))
        await self.test_answered(ms("2022-05-13T08:00:00Z"))
        await self.clock(ms("2022-05-13T12:05:00Z"))
        rec = await self.act(self.eucom, "CALL_RECORD", {
            "request": req["id"], "start": ms("2022-05-13T11:00:00Z"), "end": ms("2022-05-13T12:00:00Z"),
            "principals": ["Secretary", "Minister"], "participants": ["Secretary", "Minister", "interpreters"],
        }, user=EUCOM_USERS[2][0])  # fmt: skip
        await self.act(self.eucom, "READOUT", {"call": rec["id"], "text": (
            "The Secretary urged an immediate ceasefire in Ukraine and emphasized the importance of maintaining lines "
            "of communication. The call lasted about an hour; the tone was professional. No issue was resolved.")},
            user=EUCOM_USERS[2][0])  # fmt: skip
        await self.wait(lambda: self._holds(self.ndmc, rec["id"]), "NDMC to hold the call record")
        await self.act(self.ndmc, "READOUT", {"call": rec["id"], "text": (
            "Разговор состоялся по инициативе американской стороны. Обсуждены актуальные вопросы международной "
            "безопасности, включая ситуацию на Украине.")}, user=NDMC_USERS[2][0])  # fmt: skip
        self.say("2022-05-13 12:05Z  the call is on record, with both readouts side by side")
        air, strike = border_notices()
        await self.act(self.eucom, "NOTICE", air, priority="priority")
        await self.clock(ms("2022-05-13T12:20:00Z"))
        await self.act(self.ndmc, "NOTICE", strike, priority="priority")
        self.say("2022-05-13 12:20Z  two notices near the border: EUCOM air patrol, NDMC strikes")
        flash = await self.act(self.eucom, "FLASH", {
            "text": "FLASH: your strike notice conflicts with our air patrol near the border 13:00-15:00Z. Confirm."})
        await self.wait(lambda: self._holds(self.ndmc, flash["id"]), "NDMC to hold the FLASH")
        await self.clock(ms("2022-05-13T12:21:10Z"))
        await self.act(self.ndmc, "ACK", {"ref": flash["id"]}, user=NDMC_USERS[0][0])
        self.say("2022-05-13 12:21Z  FLASH acknowledged at NDMC by the duty officer, by name")

    async def _holds(self, home: Path, envelope_id: str) -> bool:
        return bool(await call(home, {"op": "has", "line": self.line, "id": envelope_id}))


REQUESTS: list[tuple[str, tuple[str, str, str]]] = [
    ("2022-03-02T14:00:00Z", ("Secretary", "Minister", "Request for a call: the situation in Ukraine")),
    ("2022-03-03T14:00:00Z", ("Chairman", "Chief of General Staff", "Request for a call")),
    ("2022-03-15T14:00:00Z", ("Secretary", "Minister", "Request for a call")),
    ("2022-03-24T14:00:00Z", ("Secretary", "Minister", "We have sought and still seek a call")),
    ("2022-03-24T14:10:00Z", ("Chairman", "Chief of General Staff", "We have sought and still seek a call")),
    ("2022-04-07T14:00:00Z", ("Secretary", "Minister", "Request for a call")),
    ("2022-04-20T14:00:00Z", ("Chairman", "Chief of General Staff", "Request for a call")),
    ("2022-04-28T14:00:00Z", ("Secretary", "Minister", "Request for a call")),
]


def _demo_root(home: Path) -> nacl.signing.SigningKey | None:
    """The station's root in force, when the demo keeps it in keys/root.key (a real station keeps
    it offline): the demo's people are certified by it, so their ROSTER entries carry the ``cert``
    PROTOCOL.md 5.9 asks senders for and their signatures count up to the root. None (people
    published uncertified, as before) when that file is not the root in force (after a rotation)."""
    path = home / "keys" / "root.key"
    if not path.exists():
        return None
    try:
        return keyfiles.read_root(path, keyfiles.root_in_force(home / "keys")[1])
    except (RedlineError, OSError, ValueError):
        return None


def add_demo_users(eucom: Path, ndmc: Path) -> None:
    for home, users in ((eucom, EUCOM_USERS), (ndmc, NDMC_USERS)):
        existing = {p.name for p in persons.load_users(home)}
        root = _demo_root(home)
        for name, role in users:
            if name not in existing:
                persons.add_user(home, name, role, PASSWORD, ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN, root=root)

