"""Two things a duty officer reading a paged view must be told, in the API, the CLI and the console:

- "N more": a paged view (flash, tests, calls, requests, translations, notices) used to cut off at
  its page without a word. Each list's count now comes from one place (``views.page_counts``, the
  read model's sizes): the API's ``Redline-Page`` header, the control socket's ``pages`` and so the
  CLI's "3 more FLASH messages; --offset 2 for the next page".
- "acknowledged, sending": our ACK of the peer's FLASH accepted into our outbox (the line down) and
  not signed yet. The FLASH view said "waiting for acknowledgement" and the console kept the
  ACKNOWLEDGE button and the alarm, so the officer who had just acknowledged saw it as not done.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from redline import persons, views
from redline.ops.flash import ACK_SENDING
from redline.testing import StationPair
from tests.test_api import Pair, eventually
from tests.test_api import run as run_api
from tests.test_stations_in_memory import FAST, PASSWORD
from tests.test_stations_in_memory import run as run_pair
from tests.test_views_paged import LINE, _flashes, _Station


def _page_of(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    counts: dict[str, Any] = json.loads(r.headers["Redline-Page"])
    return counts


# -- N more ------------------------------------------------------------------------------------------
def test_the_counts_walk_every_page_of_each_paged_view_to_its_end() -> None:
    """The counts say what the pages hold: following ``more`` from the first page visits every
    item once, and each page is ``shown`` long (flash, tests, translations; 2,000 FLASHes)."""
    ops = _flashes(2000, open_from=1851)
    st = _Station(ops)
    for what, lists in (("flash", None), ("tests", ("tests", "received", "to_answer")), ("translations", None)):
        offset, seen = 0, 0
        while True:
            page = st.view(LINE, what, offset=offset, limit=300)
            counts = views.page_counts(st, LINE, what, offset=offset, limit=300)  # type: ignore[arg-type]
            for name, c in counts.items():
                held = page if lists is None else page[name]
                assert len(held) == c.shown and c.total == c.offset + c.shown + c.more, (what, name, c)
            main = counts[what if lists is None else "tests"]
            seen += main.shown
            if not main.more:
                break
            offset += 300
        assert seen == main.total
    assert views.page_counts(st, LINE, "flash")["flash"].to_obj() == {  # type: ignore[arg-type]
        "total": 2000, "offset": 0, "limit": 100, "shown": 100, "more": 1900}


def test_a_paged_api_answer_says_how_many_more_wait_past_it(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        for i in range(5):
            await p.b.send(p.line, f"FLASH number {i}", kind="FLASH", prio="FLASH")
        await eventually(lambda: len(p.a.view(p.line, "flash")) == 5, "five FLASHes here")
        await p.login()
        url = f"/api/lines/{p.line}"
        r = await p.client.get(f"{url}/flash?limit=2")
        assert [f["text"] for f in r.json()] == ["FLASH number 0", "FLASH number 1"]  # the body as before
        assert _page_of(r) == {"flash": {"total": 5, "offset": 0, "limit": 2, "shown": 2, "more": 3}}
        last = await p.client.get(f"{url}/flash?offset=4&limit=2")
        assert len(last.json()) == 1 and _page_of(last)["flash"] == {
            "total": 5, "offset": 4, "limit": 2, "shown": 1, "more": 0}  # fmt: skip
        assert _page_of(await p.client.get(f"{url}/flash"))["flash"]["limit"] == 100  # the default page
        tests = _page_of(await p.client.get(f"{url}/tests?limit=1"))
        assert set(tests) == {"tests", "received", "to_answer"}
        assert set(_page_of(await p.client.get(f"{url}/notices"))) == {"active", "conflicts"}
        for what in ("calls", "requests", "translations"):  # the console's routes too
            assert _page_of(await p.client.get(f"{url}/{what}?limit=3"))[what]["limit"] == 3
        assert "Redline-Page" not in (await p.client.get(f"{url}/refused")).headers  # not a paged view

    run_api(tmp_path, scenario)


def test_the_cli_says_how_many_more_flashes_wait_past_its_page(tmp_path: Path) -> None:
    from redline.cli import main as cli

    async def body(sp: StationPair) -> None:
        for i in range(5):
            await sp.send("b", f"FLASH number {i}", kind="FLASH", prio="FLASH")
        base = ["flashes", sp.line, "--station", str(sp.dir_a.path)]
        res = await asyncio.to_thread(CliRunner().invoke, cli, [*base, "--limit", "2"])
        assert res.exit_code == 0, res.output
        assert "3 more FLASH messages; --offset 2 for the next page" in res.output
        res = await asyncio.to_thread(CliRunner().invoke, cli, [*base, "--offset", "4"])
        assert res.exit_code == 0 and "│ 5 " in res.output and " more " not in res.output, res.output
        res = await asyncio.to_thread(CliRunner().invoke, cli, ["tests", sp.line, "--station", str(sp.dir_a.path)])
        assert res.exit_code == 0 and " more " not in res.output, res.output  # nothing past the page
        as_json = await asyncio.to_thread(CliRunner().invoke, cli, [*base, "--limit", "2", "--json"])
        assert len(json.loads(as_json.output)) == 2  # --json is the API's body, nothing added

    run_pair(tmp_path, body)


def test_the_cli_says_more_notices_only_while_there_are_more(tmp_path: Path) -> None:
    """'redline notices' said "1 of 3 notices ... shown; --offset 4 for the next page" on the last
    page too (any page shorter than the whole list); now the station's count, as for flashes."""
    from redline.cli import main as cli
    from redline.ops.notices import Notice

    async def body(sp: StationPair) -> None:
        start = sp.sim.wall
        for i in range(3):  # apart: no conflicts
            ring = [[30.0 + i, 50.0], [30.2 + i, 50.0], [30.2 + i, 50.2], [30.0 + i, 50.2], [30.0 + i, 50.0]]
            notice = Notice(ref=f"a:{i}", kind="air", area={"type": "Polygon", "coordinates": [ring]}, floor_m=0,
                            ceiling_m=3000, start=start, end=start + 3_600_000, text=f"exercise {i}")  # fmt: skip
            await sp.act("a", "NOTICE", notice.to_content())
        base = ["notices", sp.line, "--station", str(sp.dir_a.path), "--limit", "2"]
        first = await asyncio.to_thread(CliRunner().invoke, cli, base)
        assert first.exit_code == 0, first.output
        assert "1 more active notices; --offset 2 for the next page" in first.output, first.output
        last = await asyncio.to_thread(CliRunner().invoke, cli, [*base, "--offset", "2"])
        assert last.exit_code == 0 and "exercise" in last.output and "next page" not in last.output, last.output

    run_pair(tmp_path, body)


# -- acknowledged, sending ---------------------------------------------------------------------------
def test_an_ack_waiting_in_the_outbox_is_shown_as_acknowledged_sending_not_waiting(tmp_path: Path) -> None:
    """The officer acknowledges while the line is down: the ACK is accepted (durable) into the
    outbox. The API's flash view and log, and the watch, say so; once the line is back it is signed
    and the FLASH is acknowledged by name."""

    async def scenario(p: Pair) -> None:
        flash = (await p.b.send(p.line, "FLASH: aircraft near the border", kind="FLASH", prio="FLASH")).to_obj()
        await p.login()
        url = f"/api/lines/{p.line}"
        await eventually(lambda: any(f["id"] == flash["id"] for f in p.a.view(p.line, "flash")), "the FLASH here")
        conditions = (await p.client.get(f"{url}/watch")).json()["conditions"]
        assert [c["code"] for c in conditions if c["code"] == "flash"] == ["flash"]
        await p.b.close()
        await eventually(lambda: not p.a.sessions[p.line].link.synced, "the line to drop")

        r = await p.client.post(f"{url}/ack", json={"flash_id": flash["id"][:10]})
        assert r.status_code == 200 and r.json()["seq"] is None, r.text  # accepted into the outbox
        [shown] = (await p.client.get(f"{url}/flash")).json()
        assert shown["state"] == ACK_SENDING == "acknowledged, sending" and shown["acked_by"] is None
        row = next(r for r in (await p.client.get(f"{url}/log")).json()["rows"] if r["id"] == flash["id"])
        assert row["ack"]["state"] == ACK_SENDING
        # Nobody here need act on it any more: no FLASH alarm (the line's own condition stays).
        conditions = (await p.client.get(f"{url}/watch")).json()["conditions"]
        assert "flash" not in [c["code"] for c in conditions]

    run_api(tmp_path, scenario)


def test_the_cli_shows_our_ack_in_the_outbox_as_acknowledged_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redline.cli import main as cli
    from redline.cli.common import console

    monkeypatch.setattr(console, "_width", 200)  # the table's state column whole, as COLUMNS=200 gives

    async def body(sp: StationPair) -> None:
        persons.add_user(sp.dir_b.path, "Dezhurny", "duty", PASSWORD, **FAST)
        sent = await sp.send("a", "FLASH: aircraft near the border", kind="FLASH", prio="FLASH")
        await sp.crash("a", start_again=False)  # the line is down
        home = sp.dir_b.path
        person = next(x for x in persons.load_users(home) if x.name == "Dezhurny")
        resolved = await sp.b.control({"op": "resolve", "line": sp.line, "kind": "ACK", "content": {"ref": sent["id"]}})
        content = persons.sign_content(resolved, person, persons.unlock(home, "Dezhurny", PASSWORD))
        accepted = (await sp.b.act(sp.line, "ACK", content)).to_obj()
        assert accepted["seq"] is None  # in the outbox
        args = ["flashes", sp.line, "--station", str(home)]
        res = await asyncio.to_thread(CliRunner().invoke, cli, args)
        assert res.exit_code == 0 and "acknowledged, sending" in res.output, res.output
        assert "waiting" not in res.output
        await sp.start("a")  # the line is back: the ACK is signed and goes
        [flash] = sp.b.view(sp.line, "flash")
        assert flash["state"] == "acknowledged" and flash["acked_by"] == "Dezhurny"

    run_pair(tmp_path, body)
