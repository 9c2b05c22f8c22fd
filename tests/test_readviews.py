"""The typed views of ops/views.py are the one read model: what the station builds, what the control
socket and the HTTP API answer (``readmodel.to_obj``) and what the CLI reads back
(``readmodel.from_obj``) are the same objects, and a malformed answer is one line, never a
traceback.

Two real stations in this process (redline.testing.StationPair) carry some of everything first: a
line test answered, a FLASH acknowledged, a call request accepted, its record and both readouts, two
conflicting notices and an envelope the receiver refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import nacl.pwhash
import pytest

from redline import persons
from redline.api import ApiConfig, create_app
from redline.cli import common
from redline.errors import ControlError
from redline.ops.notices import Notice
from redline.ops.views import VIEWS, NoticeDetail, NoticesPage
from redline.readmodel import from_obj, to_obj
from redline.testing import StationPair

PASSWORD = "correct horse battery"
FAST = {"ops": nacl.pwhash.argon2id.OPSLIMIT_MIN, "mem": nacl.pwhash.argon2id.MEMLIMIT_MIN}
HOUR = 3_600_000
READ_VIEWS = list(VIEWS)


def square(lon: float, lat: float) -> dict[str, Any]:
    ring = [[lon, lat], [lon + 0.2, lat], [lon + 0.2, lat + 0.2], [lon, lat + 0.2], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


async def signed(sp: StationPair, who: str, name: str, kind: str, content: dict[str, Any]) -> dict[str, Any]:
    """A person at ``who`` files ``kind``: references completed, then signed with their key."""
    st = sp.station(who)
    person = next(p for p in persons.load_users(st.home.path) if p.name == name)
    resolved = st.resolve(sp.line, kind, content)
    key = persons.unlock(st.home.path, name, PASSWORD)
    return await sp.act(who, kind, persons.sign_content(resolved, person, key))


async def traffic(sp: StationPair) -> None:
    """Some of every view's content, decided and shown at both ends."""
    test = await sp.act("a", "TEST", {"text": "Line test. Please answer."}, prio="PRIORITY")
    await signed(sp, "b", "Dezhurny", "TEST_ANSWER", {"test": test["id"], "text": "Test received."})
    flash = await sp.send("a", "FLASH: aircraft near the border", kind="FLASH", prio="FLASH")
    await signed(sp, "b", "Dezhurny", "ACK", {"ref": flash["id"]})
    now = sp.sim.wall
    request = await sp.act("a", "CALL_REQUEST", {"from_role": "Secretary", "to_role": "Minister",
                                                 "subject": "Lines of communication", "windows": [],
                                                 "expires": now + 24 * HOUR})  # fmt: skip
    await sp.act("b", "CALL_REPLY", {"request": request["id"], "answer": "accept", "time": now + HOUR})
    await sp.advance(2 * 3600)
    record = await signed(sp, "a", "Duty EUCOM", "CALL_RECORD", {
        "start": now + HOUR, "end": now + 2 * HOUR, "request": request["id"],
        "principals": ["Secretary", "Minister"], "participants": ["Secretary", "Minister"]})  # fmt: skip
    await signed(sp, "a", "Duty EUCOM", "READOUT", {"call": record["id"], "text": "The Secretary urged a ceasefire."})
    await signed(sp, "b", "Dezhurny", "READOUT", {"call": record["id"], "text": "Обсуждены актуальные вопросы."})
    start = sp.sim.wall
    for who, lon in (("a", 36.0), ("b", 36.1)):  # overlapping squares, the same hours: a conflict
        notice = Notice(ref=f"{who}:1", kind="air", area=square(lon, 50.0), floor_m=0, ceiling_m=3000,
                        start=start, end=start + 4 * HOUR, text="exercise")  # fmt: skip
        await sp.act(who, "NOTICE", notice.to_content())
    # Refused where it is received: NDMC gives Dezhurny a new key; the roster that says so would
    # change a pinned key, and what the new key signs is not Dezhurny's to the pins.
    persons.remove_user(sp.dir_b.path, "Dezhurny")
    persons.add_user(sp.dir_b.path, "Dezhurny", "duty", PASSWORD, **FAST)
    await signed(sp, "b", "Dezhurny", "ACK", {"ref": flash["id"]})


def typed_views(sp: StationPair, who: str) -> dict[str, Any]:
    st = sp.station(who)
    page = st.notices_view(sp.line)
    assert isinstance(page, NoticesPage)
    first = page.active[0].id
    assert first is not None
    return {
        "tests": st.tests_view(sp.line),
        "flash": st.flash_view(sp.line),
        "calls": st.calls_view(sp.line),
        "notices": page,
        "notices?notice": st.notices_view(sp.line, notice=first[:12]),
        "refused": st.refused_view(sp.line),
        "voice": st.voice_view(sp.line),
    }


def with_traffic(tmp_path: Path, body: Callable[[StationPair], Awaitable[None]]) -> None:
    async def main() -> None:
        sp = StationPair(tmp_path)
        persons.add_user(sp.dir_a.path, "Duty EUCOM", "duty", PASSWORD, **FAST)
        persons.add_user(sp.dir_b.path, "Dezhurny", "duty", PASSWORD, **FAST)
        async with sp:
            await traffic(sp)
            await body(sp)

    asyncio.run(main())


def test_every_read_view_after_real_traffic_round_trips_through_json_unchanged(tmp_path: Path) -> None:
    async def body(sp: StationPair) -> None:
        for who in ("a", "b"):
            views = typed_views(sp, who)
            assert {name.split("?")[0] for name in views} == set(READ_VIEWS)  # a view added is a view tested
            # Not empty: each view carries what the traffic made of it, at both ends.
            tests, flash, calls, page = views["tests"], views["flash"], views["calls"], views["notices"]
            shown = [t.result for t in (tests.tests if who == "a" else tests.received)]
            assert shown == ["passed"]  # decided by the tester, shown alike at the answering end
            assert [f.acked_by for f in flash] == ["Dezhurny"]
            [pair] = calls
            assert pair.accepted == 1 and set(pair.calls[0].readouts) == {"ours", "theirs"}
            assert pair.calls[0].days_since_previous is None  # the first call: null on the wire
            assert page.total == 2 and page.conflicts_total == 1
            assert isinstance(views["notices?notice"], NoticeDetail)
            assert [r.kind for r in views["refused"]] == ["ROSTER", "ACK"]
            assert "not the one on the roster" in views["refused"][1].reason
            for name, view in views.items():
                wire = json.loads(json.dumps(to_obj(view)))
                assert from_obj(wire, VIEWS[name.split("?")[0]]) == view, name

    with_traffic(tmp_path, body)


def test_the_api_and_the_control_socket_answer_to_obj_of_the_stations_typed_view(tmp_path: Path) -> None:
    config = ApiConfig(failure_delay_seconds=0.0, max_failures=3, lockout_seconds=60.0, poll_seconds=0.1,
                       allowed_hosts=("testserver",))  # fmt: skip

    async def body(sp: StationPair) -> None:
        views = typed_views(sp, "a")
        transport = httpx.ASGITransport(app=create_app(sp.a, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.post("/api/login", json={"user": "Duty EUCOM", "password": PASSWORD})
            assert r.status_code == 200, r.text
            for name, view in views.items():
                what, _, query = name.partition("?")
                notice = view.notice.id[:12] if isinstance(view, NoticeDetail) and view.notice.id else None
                params = {"notice": notice} if query else {}
                expected = json.loads(json.dumps(to_obj(view)))  # as JSON: a tuple is a list there
                r = await client.get(f"/api/lines/{sp.line}/{what}", params=params)
                assert r.status_code == 200, (name, r.text)
                got = r.json()
                if what == "voice":  # the API adds what its own consoles sent (console_voice.py)
                    assert isinstance(got.pop("console"), dict)
                assert got == expected, name
                control = await sp.a.control({"op": "view", "line": sp.line, "what": what, **params})
                assert json.loads(json.dumps(control)) == expected, name

    with_traffic(tmp_path, body)


REFUSED = {"kind": "ACK", "seq": 1, "ours": True, "reason": "x"}
MALFORMED = [
    pytest.param("tests", {"sent": 1}, "passed", id="a-required-field-missing"),
    pytest.param("flash", [{**REFUSED, "id": "x"}], "unexpected shape", id="another-views-fields"),
    pytest.param("flash", [{"id": "x", "seq": "one"}], "unexpected shape", id="a-wrong-type-inside"),
    pytest.param("refused", [{**REFUSED, "extra": 1}], "extra", id="an-unknown-key"),
    pytest.param("calls", [{"principals": ["A"]}], "unexpected shape", id="a-pair-cut-short"),
    pytest.param("notices", {"total": "many"}, "unexpected shape", id="neither-a-page-nor-one-notice"),
    pytest.param("notices", None, "unexpected shape", id="null-for-notices"),
    pytest.param("flash", {"id": "x"}, "unexpected shape", id="an-object-for-a-list"),
    pytest.param("tests", [], "unexpected shape", id="a-list-for-an-object"),
    pytest.param("tests", None, "unexpected shape", id="null-for-an-object"),
    pytest.param("flash", {}, "unexpected shape", id="an-empty-object-for-a-list"),
    pytest.param(
        "refused", [{**REFUSED, "ours": "false"}], "unexpected shape", id="a-string-for-a-bool"
    ),
    pytest.param("refused", [{**REFUSED, "reason": None}], "unexpected shape", id="null-for-a-string"),
    pytest.param("refused", [{**REFUSED, "seq": "12"}], "unexpected shape", id="a-string-for-a-number"),
]


@pytest.mark.parametrize(("what", "answer", "words"), MALFORMED)
def test_a_malformed_view_answer_is_one_line_control_error_without_a_traceback(
    what: str, answer: Any, words: str
) -> None:
    with pytest.raises(ControlError) as caught:
        from_obj(answer, VIEWS[what], f"{what} view")
    message = str(caught.value)
    assert message.startswith(f"the station's {what} view answer has an unexpected shape: ")
    assert words in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained traceback


def test_the_cli_prints_a_malformed_view_answer_as_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A station (older, newer or broken) answers a view the CLI cannot read: one line, exit 1."""
    monkeypatch.setattr(common, "control", lambda station, request: {"sent": "many", "passed": []})
    with pytest.raises(SystemExit) as caught:
        common.read_view(None, "0" * 32, "tests")
    assert caught.value.code == 1
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
    assert out.err.strip().startswith("error: the station's tests view answer has an unexpected shape")
    assert len(out.err.strip().splitlines()) == 1


def test_an_accepted_reply_is_every_field_of_the_view_by_name() -> None:
    """``Accepted.to_obj`` is written out for speed: it must stay exactly ``asdict``, field for field."""
    from dataclasses import asdict

    from redline.status import Accepted

    for seq, envelope_id in ((None, None), (7, "ab" * 32)):
        view = Accepted(line="c" * 32, outbox=3, seq=seq, id=envelope_id, kind="TEXT", state="signed")
        assert view.to_obj() == asdict(view)
