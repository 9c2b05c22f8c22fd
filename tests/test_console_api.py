"""The console's own API routes (redline/api/console_routes.py), in-process over httpx.ASGITransport
against two real stations in the test's event loop (tests/test_api.py's pair).

- /watch lists what needs a person now, most urgent first, and each condition clears with its cause;
- every filing route files once per idempotency key, even when the same submit arrives twice at
  once, and refuses the key reused for different content (409, nothing filed);
- call requests, replies, records and translations are filed and read back with their state;
- the console language is per person, defaults to the station's, and is kept at the station;
- the station alarms once when the peer's clock is off by more than max_clock_skew_seconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from redline.ops.notices import MAX_ACTIVE_NOTICES_PER_SIDE
from tests.test_api import SQUARE, Pair, error, eventually, run


def _ours(p: Pair, kind: str) -> list[Any]:
    """Our envelopes of a kind, filed by a person (a scheduled line test is the station's own)."""
    ops = p.a.ops[p.line]
    return [e for e in ops.entries.values() if e.ours and e.kind == kind and "slot" not in e.content]


async def _watch(p: Pair) -> dict[str, Any]:
    r = await p.client.get(f"/api/lines/{p.line}/watch")
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_watch_puts_a_flash_above_a_line_test_and_each_clears_with_its_cause(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        assert (await _watch(p))["conditions"] == []
        flash = (await p.b.send(p.line, "FLASH: aircraft crossing", kind="FLASH", prio="FLASH")).to_obj()
        test = (await p.b.act(p.line, "TEST", {"text": "Line test"}, prio="priority")).to_obj()
        await eventually(lambda: test["id"] in p.a.ops[p.line].tests.theirs, "the test at EUCOM")
        w = await _watch(p)
        codes = [c["code"] for c in w["conditions"]]
        assert codes[0] == "flash" and set(codes[1:]) == {"test_to_answer"}, codes  # (a scheduled test may be there)
        assert f"test:{test['id']}" in [c["key"] for c in w["conditions"]]
        top = w["conditions"][0]
        assert top["params"]["id"] == flash["id"] and top["params"]["lang"] == "ru" and top["level"] == "alarm"
        assert w["skew_limit_ms"] == 30_000 and w["down_since"] is None
        url = f"/api/lines/{p.line}"
        assert (await p.client.post(f"{url}/ack", json={"flash_id": flash["id"]})).status_code == 200
        assert {c["code"] for c in (await _watch(p))["conditions"]} == {"test_to_answer"}
        assert (await p.client.post(f"{url}/answer", json={"test_id": test["id"]})).status_code == 200
        assert f"test:{test['id']}" not in [c["key"] for c in (await _watch(p))["conditions"]]

    run(tmp_path, scenario)


def test_a_missed_test_and_a_skewed_clock_are_conditions_and_the_skew_alarms_once(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        session = p.a.sessions[p.line]
        test = (await p.b.act(p.line, "TEST", {"text": "Line test"}, prio="priority")).to_obj()
        await eventually(lambda: test["id"] in p.a.ops[p.line].tests.theirs, "the test at EUCOM")
        theirs = p.a.ops[p.line].tests.theirs[test["id"]]
        theirs.deadline = p.a.wall() - 1  # our copy of its window closed unanswered: overdue, still to answer
        due = [c for c in (await _watch(p))["conditions"] if c["key"] == f"test:{test['id']}"]
        assert due and due[0]["params"]["overdue"] is True
        theirs.result = "missed"  # the tester's verdict: now a miss here too, and no longer to answer
        w = await _watch(p)
        missed = [c for c in w["conditions"] if c["code"] == "test_missed"]
        assert missed and missed[0]["params"] == {"side": "theirs", "id": test["id"]}
        assert f"test:{test['id']}" not in [c["key"] for c in w["conditions"]]
        # heartbeats measured the peer 4.5 years behind on every path: a condition, and one alarm
        for path in session.paths.values():
            path.skew_ms = -142_000_000_000.0
        w = await _watch(p)
        skew = [c for c in w["conditions"] if c["code"] == "clock_skew"]
        assert skew and skew[0]["params"]["skew_ms"] == -142_000_000_000
        p.a._watch_skew(session)
        p.a._watch_skew(session)
        alarms = [a for a in p.a.alarms if a["text"].startswith("CLOCK SKEW")]
        assert len(alarms) == 1 and "behind ours" in alarms[0]["text"] and "1643 d" in alarms[0]["text"], alarms

    run(tmp_path, scenario)


def test_each_filing_route_files_once_per_idempotency_key(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        now = p.a.wall()
        notice = {"kind": "air", "area": SQUARE, "floor_m": 0, "ceiling_m": 1000, "start": now, "end": now + 3_600_000,
                  "idempotency_key": "notice-1"}  # fmt: skip
        request = {"from_role": "Secretary", "to_role": "Minister", "subject": "A call", "idempotency_key": "req-1"}
        for route, body, kind in (("notice", notice, "NOTICE"), ("call-request", request, "CALL_REQUEST"),
                                  ("test", {"idempotency_key": "test-1"}, "TEST")):  # fmt: skip
            # a double click: the same submit twice at once
            r1, r2 = await asyncio.gather(p.client.post(f"{url}/{route}", json=body),
                                          p.client.post(f"{url}/{route}", json=body))  # fmt: skip
            assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
            assert r1.json()["id"] == r2.json()["id"]
            assert len(_ours(p, kind)) == 1, kind
        # the same key for something else: refused, nothing filed
        other = {**request, "subject": "Another call"}
        assert "was already used" in error(await p.client.post(f"{url}/call-request", json=other), 409)
        assert len(_ours(p, "CALL_REQUEST")) == 1
        notice_id = _ours(p, "NOTICE")[0].id
        for _ in range(2):
            r = await p.client.post(f"{url}/withdraw", json={"notice_id": notice_id[:12], "idempotency_key": "w-1"})
            assert r.status_code == 200, r.text
        assert len(_ours(p, "NOTICE_WITHDRAW")) == 1

    run(tmp_path, scenario)


def test_a_key_reused_for_other_content_is_refused_on_every_filing_route(tmp_path: Path) -> None:
    """The rule lives in the session (``_same_as_before``): the plain send, a console form filed
    through ``act_once`` and the person-signed routes all answer 409 and file nothing."""

    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        now = p.a.wall()
        record = {"start": now - 7_200_000, "end": now - 3_600_000, "principals": "Secretary, Minister",
                  "participants": ["Secretary", "Minister"], "note": "first", "idempotency_key": "rec"}  # fmt: skip
        notice = {"kind": "air", "area": SQUARE, "floor_m": 0, "ceiling_m": 1000, "start": now, "end": now + 3_600_000,
                  "idempotency_key": "n"}  # fmt: skip
        sent = {"text": "Exercise at 12:00Z", "idempotency_key": "s"}
        for route, first, other, kind in (
            ("send", sent, {**sent, "priority": "flash"}, "TEXT"),
            ("notice", notice, {**notice, "ceiling_m": 2000}, "NOTICE"),
            ("call-record", record, {**record, "note": "second"}, "CALL_RECORD"),
        ):
            assert (await p.client.post(f"{url}/{route}", json=first)).status_code == 200
            refused = error(await p.client.post(f"{url}/{route}", json=other), 409)
            assert "already used for a different message" in refused, route
            log = (await p.client.get(f"{url}/log")).json()
            assert [r["kind"] for r in log["rows"] + log["outbox"] if r["kind"] == kind] == [kind], route
        readout = {"call_id": _ours(p, "CALL_RECORD")[0].id, "text": "Agreed.", "idempotency_key": "r"}
        assert (await p.client.post(f"{url}/readout", json=readout)).status_code == 200
        conflict = await p.client.post(f"{url}/readout", json={**readout, "text": "Not agreed."})
        assert "NOT sent" in error(conflict, 409)
        assert [e.content["text"] for e in _ours(p, "READOUT")] == ["Agreed."]
        assert "over 128" in error(await p.client.post(f"{url}/send", json={**sent, "idempotency_key": "k" * 129}), 400)

    run(tmp_path, scenario)


HOUR = 3_600_000


def _disc(lon: float, lat: float, now: int, **kw: Any) -> dict[str, Any]:
    """A notice as a form sends it, and as ``Station.act`` takes it (coordinates as decimal strings)."""
    return {"kind": "air", "area": {"type": "Point", "coordinates": [str(lon), str(lat)]}, "radius_m": 5000,
            "floor_m": 0, "ceiling_m": 10_000, "start": now, "end": now + HOUR, "margin_m": 0, "text": "x",
            **kw}  # fmt: skip


def test_a_call_request_key_reused_with_another_expiry_is_refused(tmp_path: Path) -> None:
    """The station fills in "expires" when the form gives none, so that member is not compared on a
    retry; one the operator gave is: a corrected expiry under the same key was answered 200 with the
    first request, and the correction never went out."""

    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        now = p.a.wall()
        first = {"from_role": "Secretary", "to_role": "Minister", "subject": "A call", "expires": now + HOUR,
                 "idempotency_key": "req-x"}  # fmt: skip
        assert (await p.client.post(f"{url}/call-request", json=first)).status_code == 200
        assert (await p.client.post(f"{url}/call-request", json=first)).status_code == 200  # a retry
        refused = error(await p.client.post(f"{url}/call-request", json={**first, "expires": now + 5 * HOUR}), 409)
        assert "already used for a different message" in refused
        assert [e.content["expires"] for e in _ours(p, "CALL_REQUEST")] == [now + HOUR]

    run(tmp_path, scenario)


def test_a_retried_amendment_or_200th_notice_gets_the_first_acceptance(tmp_path: Path) -> None:
    """A lost answer, and the console submits again under its key: the operator check judged the
    retry by what its first submit changed ("no longer active" for the notice it had amended, "we
    already have 200" for the notice that made 200), so the operator heard NOT FILED for what went
    out, and filing it again put a duplicate on both boards."""

    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        now = p.a.wall()
        notice = (await p.client.post(f"{url}/notice", json=_disc(40.0, 40.0, now))).json()
        amend = {**_disc(40.0, 40.0, now), "ceiling_m": 2000, "amends": notice["id"][:12], "idempotency_key": "am"}
        first = await p.client.post(f"{url}/notice", json=amend)
        assert first.status_code == 200 and first.json()["seq"], first.text  # signed at once: the line is up
        again = await p.client.post(f"{url}/notice", json=amend)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
        for i in range(MAX_ACTIVE_NOTICES_PER_SIDE - 2):
            await p.a.act(p.line, "NOTICE", _disc(-20.0 + (i % 20) * 0.5, 30.0 + (i // 20) * 0.5, now), prio="priority")
        last = {**_disc(10.0, 10.0, now), "idempotency_key": "n-200"}
        r1 = await p.client.post(f"{url}/notice", json=last)
        assert r1.status_code == 200, r1.text
        r2 = await p.client.post(f"{url}/notice", json=last)
        assert r2.status_code == 200 and r2.json()["id"] == r1.json()["id"], r2.text
        assert "already have 200" in error(await p.client.post(f"{url}/notice", json=_disc(12.0, 10.0, now)), 400)

    run(tmp_path, scenario)


def test_every_api_idempotency_key_with_its_scope_fits_the_station_limit() -> None:
    """The longest key the API takes, under the longest kind and person name, is one the station
    takes: otherwise a long name turned a valid request into an error about the key."""
    from redline import kinds
    from redline.api.app import MAX_API_IDEM_CHARS, _idem
    from redline.envelope import KINDS
    from redline.station import MAX_IDEM_CHARS

    longest_name = "N" * 63
    assert kinds.PERSON_NAME.match(longest_name) and not kinds.PERSON_NAME.match(longest_name + "N")
    body = {"idempotency_key": "k" * MAX_API_IDEM_CHARS}
    for kind in KINDS:
        idem = _idem(body, kind, longest_name)
        assert idem is not None and len(idem) <= MAX_IDEM_CHARS, kind


def test_call_request_reply_record_readout_and_translation_through_the_console_routes(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        now = p.a.wall()
        # the peer asks; we reply once, signed off by the form's key
        wanted = {"from_role": "Minister", "to_role": "Secretary", "subject": "Обсуждение", "windows": []}
        asked = (await p.b.act(p.line, "CALL_REQUEST", wanted, prio="priority")).to_obj()
        await eventually(lambda: asked["id"] in p.a.ops[p.line].calls.requests, "the request at EUCOM")
        reqs = (await p.client.get(f"{url}/requests")).json()
        assert reqs[0]["state"] == "open" and not reqs[0]["ours"] and reqs[0]["lang"] == "ru"
        assert "call_request" in [c["code"] for c in (await _watch(p))["conditions"]]
        bad = {"request_id": asked["id"], "answer": "accept"}
        assert "'time' is required" in error(await p.client.post(f"{url}/call-reply", json=bad), 400)
        reply = {"request_id": asked["id"][:10], "answer": "accept", "time": "2030-05-13T12:00Z",
                 "idempotency_key": "k"}
        for _ in range(2):
            assert (await p.client.post(f"{url}/call-reply", json=reply)).status_code == 200
        assert len(_ours(p, "CALL_REPLY")) == 1
        assert (await p.client.get(f"{url}/requests")).json()[0]["state"] == "accepted"
        assert "call_request" not in [c["code"] for c in (await _watch(p))["conditions"]]
        again = {**reply, "idempotency_key": "k2"}
        assert "already accepted" in error(await p.client.post(f"{url}/call-reply", json=again), 409)
        # the call took place: recorded (signed by the person), then our readout
        record = {"start": now - 7_200_000, "end": now - 3_600_000, "principals": "Secretary, Minister",
                  "participants": ["Secretary", "Minister", "interpreters"], "request_id": asked["id"][:8],
                  "idempotency_key": "rec"}  # fmt: skip
        r = await p.client.post(f"{url}/call-record", json=record)
        assert r.status_code == 200, r.text
        assert (await p.client.post(f"{url}/call-record", json=record)).json()["id"] == r.json()["id"]
        rec = _ours(p, "CALL_RECORD")
        assert len(rec) == 1 and rec[0].content["person"]["name"] == "Duty EUCOM"
        assert rec[0].content["principals"] == ["Secretary", "Minister"]
        backwards = {**record, "end": now - 9_000_000, "idempotency_key": "x"}
        assert "ends before it starts" in error(await p.client.post(f"{url}/call-record", json=backwards), 400)
        readout = {"call_id": rec[0].id, "text": "The Secretary urged a ceasefire.", "idempotency_key": "ro"}
        for _ in range(2):
            assert (await p.client.post(f"{url}/readout", json=readout)).status_code == 200
        assert len(_ours(p, "READOUT")) == 1
        # a translation of the peer's request, by this person unless named
        tr = {"ref_id": asked["id"], "text": "Discussion", "lang": "en", "idempotency_key": "t"}
        for _ in range(2):
            assert (await p.client.post(f"{url}/translate", json=tr)).status_code == 200
        got = (await p.client.get(f"{url}/translations")).json()[asked["id"]]
        assert got == [{"lang": "en", "text": "Discussion", "translator": "Duty EUCOM", "ours": True}]
        assert "language" in error(await p.client.post(f"{url}/translate", json={**tr, "lang": "English!"}), 400)
        await eventually(lambda: asked["id"] in p.b.ops[p.line].translations, "the translation at NDMC")

    run(tmp_path, scenario)


def test_the_console_language_is_per_person_and_defaults_to_the_station(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login("Auditor")  # any role may choose its language
        got = (await p.client.get("/api/console/settings")).json()
        assert got == {"lang": "en", "station_lang": "en", "languages": ["en", "ru"]}
        assert (await p.client.post("/api/console/settings", json={"lang": "ru"})).json()["lang"] == "ru"
        assert "not 'de'" in error(await p.client.post("/api/console/settings", json={"lang": "de"}), 400)
        await p.client.post("/api/logout")
        await p.login()
        assert (await p.client.get("/api/console/settings")).json()["lang"] == "en"  # another person's choice
        await p.client.post("/api/logout")
        await p.login("Auditor")
        assert (await p.client.get("/api/console/settings")).json()["lang"] == "ru"  # kept at the station
        assert (p.a.home.path / "console-settings.json").stat().st_mode & 0o077 == 0
        error(await p.client.post(f"/api/lines/{p.line}/call-request", json={"from_role": "a"}), 403)

    run(tmp_path, scenario)


def test_the_console_exports_the_bundle_redline_export_writes_and_it_verifies(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        from redline.bundle import encode_bundle, verify_bundle
        from redline.export import export_line

        await p.login()
        sent = (await p.a.send(p.line, "exported text")).to_obj()
        await eventually(lambda: p.a.sessions[p.line].receipted_seq >= sent["seq"], "the receipt")
        r = await p.client.get(f"/api/lines/{p.line}/export")
        assert r.status_code == 200, r.text
        name = f"redline-{p.line[:8]}-EUCOM.bundle.json"
        assert r.headers["content-disposition"] == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
        bundle = r.json()
        fingerprints = r.headers["x-redline-fingerprints"].split()
        assert verify_bundle(bundle, fingerprints).ok
        # the same code path and file format as the CLI (the line moved on meanwhile: a prefix of it)
        assert r.content == encode_bundle(bundle)
        later = export_line(p.a.home, p.line, now=bundle["exported_at"]).obj
        for got, now in zip(bundle["stations"], later["stations"], strict=True):
            assert got["chain"] == now["chain"][: len(got["chain"])] and got["root"] == now["root"]
        assert sent["id"] in [e["id"] for s in bundle["stations"] for e in s["chain"]]
        # redaction by id; a bad one is one clear line, nothing else
        redacted = await p.client.get(f"/api/lines/{p.line}/export", params={"redact": sent["id"][:12]})
        assert redacted.status_code == 200 and "exported text" not in redacted.text
        assert verify_bundle(redacted.json(), fingerprints).redacted
        assert "\n" not in error(await p.client.get(f"/api/lines/{p.line}/export", params={"redact": "zz"}), 400)
        assert "at most" in error(await p.client.get(f"/api/lines/{p.line}/export",
                                                     params=[("redact", "a" * 8)] * 101), 400)  # fmt: skip

    run(tmp_path, scenario)


def test_the_transcript_search_finds_words_and_kinds_and_is_bounded(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        from redline.api import console_routes

        await p.login()
        await p.a.send(p.line, "Exercise NORTH starts at noon")
        last = (await p.b.send(p.line, "Учения СЕВЕР: принято")).to_obj()
        now = p.a.wall()
        notice = {"kind": "air", "area": SQUARE, "floor_m": 0, "ceiling_m": 1000, "start": now, "end": now + 3_600_000,
                  "text": "north exercise area"}  # fmt: skip
        assert (await p.client.post(f"/api/lines/{p.line}/notice", json=notice)).status_code == 200
        url = f"/api/lines/{p.line}/search"
        for _ in range(400):  # NDMC's text arrives at EUCOM
            if last["id"] in (await p.client.get(f"/api/lines/{p.line}/log")).text:
                break
            await asyncio.sleep(0.05)

        async def ids(**params: str) -> list[str]:
            r = await p.client.get(url, params=params)
            assert r.status_code == 200, r.text
            return [row["kind"] + ":" + row["text"] for row in r.json()["rows"]]

        found = await ids(q="north")  # in a text, and in a notice's text (its body)
        assert [f.split(":")[0] for f in found] == ["TEXT", "NOTICE"] and found[0].endswith("noon"), found
        assert await ids(q="north", kind="text") == ["TEXT:Exercise NORTH starts at noon"]
        assert await ids(q="север") == ["TEXT:Учения СЕВЕР: принято"]  # case-insensitive in Russian too
        assert await ids(q="north noon") == ["TEXT:Exercise NORTH starts at noon"]  # every word
        assert await ids(q="nothing like this") == []
        body = (await p.client.get(url, params={"q": "north"})).json()
        assert body["matched"] == 2 and body["complete"] is True and body["scanned"] == body["total"]
        # bounded: a long query, an unknown kind, a limit out of range are each one line, 400
        assert "characters" in error(await p.client.get(url, params={"q": "x" * 201}), 400)
        assert "kind" in error(await p.client.get(url, params={"kind": "NOPE"}), 400)
        assert "limit" in error(await p.client.get(url, params={"limit": "100000"}), 400)
        # however long the transcript, a search reads at most SEARCH_SCAN envelopes, off the loop
        seen: list[tuple[int | None, bool]] = []
        real = console_routes.views.transcript

        def spy(ledger: Any, record: Any, *, limit: int | None, **kw: Any) -> Any:
            seen.append((limit, ledger is p.a.ledger))
            return real(ledger, record, limit=limit, **kw)

        console_routes.views.transcript = spy  # type: ignore[assignment]
        try:
            await p.client.get(url, params={"q": "a"})
        finally:
            console_routes.views.transcript = real  # type: ignore[assignment]
        assert seen == [(console_routes.SEARCH_SCAN, False)]  # its own read-only connection

    run(tmp_path, scenario)
