"""``redline log`` beside a running station shows the station's own page (control op ``log``,
``views.station_page``: what ``GET /api/lines/{line}/log`` answers), read back into the typed
``Transcript`` (``redline.logview``, ``readmodel.from_obj``) without importing the content registry,
envelopes or the store; with the station stopped, older, or for more than a page, it reads the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from redline import views
from redline.api.app import create_app
from redline.config import ApiConfig
from redline.errors import ControlError, LocalProtocolError
from redline.home import StationDir
from redline.logview import Row, Transcript
from redline.readmodel import from_obj
from redline.testing import SessionPair, StationPair
from tests.test_cli_start import _run, _serve_once
from tests.test_readviews import PASSWORD, with_traffic

HEAVY_FOR_A_PAGE = ("redline.kinds", "redline.envelope", "redline.views", "redline.ledger.sqlite", "sqlite3")


def _page(tmp_path: Path) -> tuple[SessionPair, Transcript]:
    pair = SessionPair(tmp_path / "pair")
    pair.send("a", "hello [bold]not markup[/bold]")
    pair.send("b", "привет")
    pair.run()
    held = views.transcript(pair.a.ledger, pair.a.ledger.find_line(pair.line), limit=50)
    return pair, held


def test_the_station_s_page_after_real_traffic_is_the_api_s_and_comes_back_equal(tmp_path: Path) -> None:
    config = ApiConfig(failure_delay_seconds=0.0, max_failures=3, lockout_seconds=60.0, poll_seconds=0.1,
                       allowed_hosts=("testserver",))  # fmt: skip

    async def body(sp: StationPair) -> None:
        page = await sp.a.control({"op": "log", "line": sp.line[:8], "limit": 50})
        assert [r["kind"] for r in page["rows"]].count("FLASH") == 1
        assert next(r["ack"] for r in page["rows"] if r["kind"] == "FLASH")  # the station's own: who acked
        transport = httpx.ASGITransport(app=create_app(sp.a, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.post("/api/login", json={"user": "Duty EUCOM", "password": PASSWORD})
            assert r.status_code == 200, r.text
            r = await client.get(f"/api/lines/{sp.line}/log", params={"limit": "50"})
            assert r.json() == json.loads(json.dumps(page))  # one page, two doors
        held = from_obj(json.loads(json.dumps(page)), Transcript, "log")
        assert held == views.station_page(sp.station("a"), sp.line, 50)

    with_traffic(tmp_path, body)


def test_the_log_operation_takes_a_page_of_1_to_1000_rows_only(tmp_path: Path) -> None:
    async def body(sp: StationPair) -> None:
        for limit in (None, 0, 1001, "5", 2.0, True):
            with pytest.raises(LocalProtocolError, match="'limit' must be a whole number from 1 to 1000"):
                await sp.a.control({"op": "log", "line": sp.line, **({"limit": limit} if limit is not None else {})})
        assert len((await sp.a.control({"op": "log", "line": sp.line, "limit": 1}))["rows"]) == 1

    with_traffic(tmp_path, body)


def test_a_page_comes_back_from_its_json_equal(tmp_path: Path) -> None:
    pair, held = _page(tmp_path)
    pair.close()
    flagged = Row(ours=False, sender="NDMC", seq=9, id="ab" * 32, kind="FLASH", priority="FLASH", sent_at=1,
                  stored_at=2, lang="ru", text="x", content={"text": "x"}, receipted=True, state="stored",
                  ack={"by": "Dezhurny", "at": 3}, revoked="REVOKE seq 4")  # fmt: skip
    queued = Row(ours=True, sender="us", seq=None, id=None, kind="TEXT", priority="ROUTINE", sent_at=None,
                 stored_at=5, lang=None, text="y", content={"text": "y"}, receipted=False, state="outbox",
                 outbox=7)  # fmt: skip
    for page in (held, Transcript(line=held.line, peer=held.peer, rows=(*held.rows, flagged), outbox=(queued,),
                                  total=9)):  # fmt: skip
        assert from_obj(json.loads(json.dumps(page.to_obj())), Transcript, "log") == page


def _broken(held: Transcript, edit: Any) -> Any:
    obj = json.loads(json.dumps(held.to_obj()))
    edit(obj)
    return obj


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda o: o.pop("shown"), "'shown'"),
        (lambda o: o.update(shown=99), "'shown'"),
        (lambda o: o["rows"][0].update(sender="us"), "extra fields found (sender)"),
        (lambda o: o["rows"][0].pop("from"), "required field missing @ $.rows[0].sender"),
        (lambda o: o["rows"][0].update(seq="1"), "expected int, got str @ $.rows[0].seq"),
        (lambda o: o.update(rows={}), "'shown'"),
    ],
    ids=["shown-missing", "shown-wrong", "sender-as-a-key", "from-missing", "a-string-seq", "rows-an-object"],
)
def test_a_malformed_page_is_one_control_error_line(tmp_path: Path, edit: Any, words: str) -> None:
    pair, held = _page(tmp_path)
    pair.close()
    with pytest.raises(ControlError) as caught:
        from_obj(_broken(held, edit), Transcript, "log")
    message = str(caught.value)
    assert message.startswith("the station's log answer has an unexpected shape: ")
    assert words in message and "\n" not in message


def _served(tmp_path: Path, answer: dict[str, Any], args: list[str]) -> tuple[set[str], str, str]:
    """``redline log`` (and ``args``) against a control socket that answers ``answer`` once."""
    home = tmp_path / "station"
    home.mkdir(exist_ok=True)
    thread = _serve_once(StationDir(home).control_path, json.dumps(answer).encode() + b"\n")
    loaded, _, shown = _run(["log", "--station", str(home), *args])
    thread.join(timeout=10)
    return loaded, shown, str(home)


def test_log_beside_a_running_station_shows_its_page_without_the_store_or_the_registry(tmp_path: Path) -> None:
    pair, held = _page(tmp_path)
    pair.close()
    loaded, shown, _ = _served(tmp_path, {"ok": True, "result": held.to_obj()}, [pair.line])
    assert "hello [bold]not markup[/bold]" in shown and "привет" in shown and "NDMC" in shown
    assert "redline.logview" in loaded and "redline.readmodel" in loaded
    assert not {m for m in loaded for h in HEAVY_FOR_A_PAGE if m == h or m.startswith(h + ".")}
    assert "rich.table" not in loaded and "asyncio" not in loaded and "cattrs" not in loaded


def test_log_beside_an_older_station_reads_the_store(tmp_path: Path) -> None:
    pair, _ = _page(tmp_path)
    pair.close()
    refusal = {"ok": False, "error": "unknown control operation 'log'"}
    home = pair.dir_a.path
    thread = _serve_once(StationDir(home).control_path, json.dumps(refusal).encode() + b"\n")
    loaded, _, shown = _run(["log", "--station", str(home), pair.line])
    thread.join(timeout=10)
    assert "redline.ledger.sqlite" in loaded and "hello [bold]not markup[/bold]" in shown


def test_log_beside_a_station_that_does_not_answer_reads_the_store(tmp_path: Path) -> None:
    pair, _ = _page(tmp_path)
    pair.close()
    home = pair.dir_a.path
    thread = _serve_once(StationDir(home).control_path, None)  # takes the request, closes without a word
    out = subprocess.run([sys.executable, "-m", "redline", "log", "--station", str(home), pair.line],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    thread.join(timeout=10)
    assert out.returncode == 0 and out.stderr == "" and "привет" in out.stdout


def test_a_station_s_refusal_of_the_page_is_its_one_line(tmp_path: Path) -> None:
    home = tmp_path / "station"
    home.mkdir()
    refusal = {"ok": False, "error": "no line matches 'zz'; lines at this station: none yet"}
    thread = _serve_once(StationDir(home).control_path, json.dumps(refusal).encode() + b"\n")
    out = subprocess.run([sys.executable, "-m", "redline", "log", "--station", str(home), "zz"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    thread.join(timeout=10)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == "error: no line matches 'zz'; lines at this station: none yet\n"
