"""``redline status`` reads the station's status back as the typed ``StationStatus`` through
``readmodel.from_obj`` (the dataclasses are the one definition of its shape; no cattrs at CLI time):
exactly what ``to_obj`` writes comes back equal, and any other answer is one error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from redline.errors import ControlError
from redline.home import StationDir
from redline.status import HaView, LineStatus, PathView, StationStatus
from redline.testing import SessionPair
from tests.test_cli_start import _serve_once

PATH = PathView(up=False, rtt_ms=1.25, skew_ms=-3.0, last_rx=1_764_750_000_000, reason="TLS handshake failed")
LINE = LineStatus(
    line="ab" * 16, peer="NDMC", peer_fingerprint="cd" * 32, peer_lang="ru", confirmed_local=True,
    confirmed_peer=False, safety_code="1234-5678", active=False, synced=False, halted=False, our_seq=7,
    their_seq=5, outbox=2, unreceipted=1, paths={"10.0.0.1:7400": PATH, "10.0.0.2:7400": PathView(
        up=True, rtt_ms=None, skew_ms=None, last_rx=None, reason="")},
    revoked=("seq 3-4 of NDMC: signed by a revoked key",), root_code="9999-0000",
)  # fmt: skip
HA = HaView(
    role="standby", holder="h:1:x", term=3, since="2026-12-03T09:00:00Z", expires="2026-12-03T09:00:10Z",
    active_holder="h:2:y", active_address="10.0.0.3:7400", database="primary", store="postgresql://db/x",
)  # fmt: skip
STATUS = StationStatus(station="EUCOM", fingerprint="ef" * 32, listen=("0.0.0.0:7400",), lines=(LINE,),
                       alarms=({"level": "warning", "time": 1, "text": "x"},), ha=HA)  # fmt: skip


def _wire(status: StationStatus) -> Any:
    return json.loads(json.dumps(status.to_obj()))


def test_a_station_status_comes_back_from_its_json_equal() -> None:
    assert StationStatus.from_obj(_wire(STATUS)) == STATUS
    plain = StationStatus(station="EUCOM", fingerprint="ef" * 32, listen=(), lines=(), alarms=())
    assert "ha" not in _wire(plain) and StationStatus.from_obj(_wire(plain)) == plain


def test_a_real_station_s_line_status_comes_back_equal(tmp_path: Path) -> None:
    pair = SessionPair(tmp_path)
    pair.send("a", "hello")
    pair.run()
    line = pair.a.status()
    pair.close()
    status = StationStatus(station="EUCOM", fingerprint="ef" * 32, listen=(), lines=(line,), alarms=())
    assert StationStatus.from_obj(_wire(status)) == status


def _broken(edit: Any) -> Any:
    obj = _wire(STATUS)
    edit(obj)
    return obj


RTT = "expected float, got str @ $.lines[0].paths.10.0.0.1:7400.rtt_ms"
MALFORMED = [
    pytest.param(lambda o: o.pop("station"), "required field missing @ $.station", id="station-missing"),
    pytest.param(lambda o: o.update(extra=1), "extra fields found (extra) @ $", id="an-unknown-key"),
    pytest.param(lambda o: o.update(lines={}), "expected a list, got dict @ $.lines", id="lines-an-object"),
    pytest.param(lambda o: o["lines"][0].update(confirmed="yes"), "'confirmed'", id="confirmed-a-string"),
    pytest.param(lambda o: o["lines"][0].pop("confirmed"), "'confirmed'", id="confirmed-missing"),
    pytest.param(lambda o: o["lines"][0]["confirmed"].update(local="true"), "expected bool, got str @ $.lines[0]",
                 id="confirmed-local-a-string"),
    pytest.param(lambda o: o["lines"][0].update(confirmed_local=True), "extra fields found", id="confirmed-twice"),
    pytest.param(lambda o: o["lines"][0]["paths"]["10.0.0.1:7400"].update(rtt_ms="fast"),
                 RTT, id="a-path-s-rtt-a-string"),
    pytest.param(lambda o: o["lines"][0].update(our_seq=None), "expected int, got NoneType @ $.lines[0].our_seq",
                 id="null-for-a-seq"),
    pytest.param(lambda o: o.update(ha=[]), "expected an object, got list @ $.ha", id="ha-a-list"),
    pytest.param(lambda o: o.update(alarms=[1]), "expected an object, got int @ $.alarms[0]", id="an-alarm-a-number"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "words"), MALFORMED)
def test_a_malformed_status_answer_is_one_control_error_line(edit: Any, words: str) -> None:
    with pytest.raises(ControlError) as caught:
        StationStatus.from_obj(_broken(edit))
    message = str(caught.value)
    assert message.startswith("the station's status answer has an unexpected shape: ")
    assert words in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_redline_status_prints_a_malformed_answer_as_one_error_line(tmp_path: Path) -> None:
    """Before, a status answer without 'station' (an older, newer or broken station) was a KeyError traceback."""
    home = tmp_path / "station"
    home.mkdir()
    answer = json.dumps({"ok": True, "result": _broken(lambda o: o.pop("station"))}).encode() + b"\n"
    thread = _serve_once(StationDir(home).control_path, answer)
    out = subprocess.run([sys.executable, "-m", "redline", "status", "--station", str(home)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    thread.join(timeout=10)
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr == (
        "error: the station's status answer has an unexpected shape: required field missing @ $.station\n"
    )


def test_reading_a_view_back_loads_no_cattrs() -> None:
    code = (
        "import json, sys\n"
        "from redline.ops.views import VIEWS\n"
        "from redline.readmodel import from_obj\n"
        "from redline.status import StationStatus\n"
        "from_obj([], VIEWS['flash'])\n"
        f"StationStatus.from_obj(json.loads({json.dumps(json.dumps(STATUS.to_obj()))}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cattrs', 'attr', 'attrs')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[]\n"
