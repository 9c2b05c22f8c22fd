"""Attacks from the outside review on text, receipts, quotas, the control socket and secret files.

Each test is named after the attack it replays and asserts that the promise holds afterwards:
everything stored and receipted, the line still flows, the trusted state unchanged.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from redline import canonical, pairing
from redline.bundle import write_bundle
from redline.config import Limits, check_lang, check_station_name
from redline.display import SafeConsole, shown, styled
from redline.errors import ConfigError, LimitError, PairingError
from redline.home import StationDir
from redline.logs import SafeFormatter
from redline.protocol.framing import FrameType
from redline.scenario import PASSWORD, add_demo_users
from redline.station import Station
from redline.testing import SessionPair
from tests.procs import StationProc, free_ports, paired_stations, wait_until
from tests.test_attacks import Pair, attack, log_text

# What a hostile peer, user or file puts in a text field.
HOSTILE = [
    "Agenda items [/draft] to follow",
    "[bold red]FAKE ALARM[/] [link=https://evil.example]click[/link] [/]",
    "\x1b[2J\x1b[31mscreen wiped\x1b]0;title\x07\x1b[0m",
    "controls \x00\x01\x08\r\x0b\x0c\x7f\x85\x9b end",
    "\u202eMOCUE\u202c \u2066isolated\u2069 \u200fRLM",
    ":warning: :skull: emoji codes",
    "W" * 10_000,
]
ESC = "\x1b"


def rl(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "REDLINE_STATION": str(home)}
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env,
                          timeout=60, input=stdin)  # fmt: skip


# -- untrusted text is data --------------------------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE)
def test_markup_and_escapes_in_text_print_as_data(text: str) -> None:
    console = SafeConsole(record=True, width=200, force_terminal=True, color_system="standard")
    console.print(text)
    console.print(styled(("bold", "bold"), " ", text))
    out = console.export_text(styles=False)
    assert ESC not in out and "\u202e" not in out and "\x00" not in out
    if "[/draft]" in text:
        assert "[/draft]" in out  # printed as written, not eaten as markup
    line = SafeFormatter("%(message)s").format(_record(text))
    assert "\n" not in line and "\r" not in line and ESC not in line


def _record(text: str) -> Any:
    import logging

    return logging.LogRecord("t", logging.WARNING, __file__, 1, "peer said: %s", (text,), None)


def test_shown_keeps_ordinary_text_of_both_languages() -> None:
    for text in ("Line test 0800Z from EUCOM.", "НЦУО: проверка связи. Слышим вас хорошо.", "a\tb\nc"):
        assert shown(text) == text
    assert shown("x" * 100, 10) == "x" * 9 + "…"
    assert shown("\x1b[31m") == "\\x1b[31m"


def test_no_console_with_markup_is_made_anywhere_in_the_package() -> None:
    """The class fix: every terminal console is a SafeConsole; nothing enables markup or emoji."""
    root = Path(__file__).resolve().parent.parent / "redline"
    offenders = []
    for path in root.rglob("*.py"):
        src = path.read_text()
        for pattern in (r"\bConsole\(", r"markup\s*=\s*True", r"from_markup", r"emoji\s*=\s*True", r"rich\.print"):
            if re.search(pattern, src) and path.name != "display.py":
                offenders.append(f"{path.relative_to(root)}: {pattern}")
    assert not offenders, offenders


@pytest.mark.parametrize("name", ["NDMC [/b]", "\x1bNDMC", "N" * 65, "\u202eCMDN", " NDMC", "", "[bold]x"])
def test_hostile_station_name_is_refused_at_pairing_and_init(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        check_station_name(name)
    party = {"root": "00" * 32, "signing_cert": {}, "tls_cert": {}, "tls_der": "", "name": name, "lang": "ru",
             "addrs": ["127.0.0.1:1"]}  # fmt: skip
    with pytest.raises(PairingError):
        pairing.Party.from_obj(party)
    with pytest.raises(ConfigError):
        StationDir(tmp_path / "s").init(name=name, lang="en", listen=["127.0.0.1:7401"])
    assert not (tmp_path / "s" / "keys").exists()


def test_hostile_language_and_addresses_are_refused_at_pairing() -> None:
    for lang in ("ru[/b]", "x" * 40, "", "EN"):
        with pytest.raises(ConfigError):
            check_lang(lang)
    assert check_lang("ru") == "ru" and check_station_name("НЦУО (Moscow)") == "НЦУО (Moscow)"
    for addrs in ([], ["not an address"], ["127.0.0.1:1"] * 9, [7]):
        with pytest.raises(PairingError):
            pairing._addrs(addrs)


def test_a_raising_alarm_sink_cannot_stop_storage(tmp_path: Path) -> None:
    """An alarm sink that raises (as Rich did on markup) runs outside the ledger batch, and its
    failure is logged, never propagated."""
    d = StationDir(tmp_path / "st")
    d.init(name="EUCOM", lang="en", listen=["127.0.0.1:7401"])

    def sink(line: str, level: str, text: str) -> None:
        raise RuntimeError(f"sink broke on {text}")

    async def main() -> None:
        st = Station(d, on_alarm=sink)
        try:
            with st.ledger.batch():
                st.alarm("line", "alarm", "Agenda items [/draft] to follow")  # inside a batch: queued
            st.alarm("line", "alarm", "Agenda items [/draft] to follow")  # a repeat counts up
            await asyncio.sleep(0)
            assert st.alarms[-1]["count"] == 2 and len(st.alarms) == 1
        finally:
            await st.close()

    asyncio.run(main())


@pytest.mark.slow
def test_hostile_text_in_every_peer_field_is_stored_receipted_and_rendered(tmp_path: Path) -> None:
    """Hostile strings in every field the peer controls (text, FLASH, call request and reply, call
    record, readout, notice, translation, ERROR frame reason), then 100 more messages each way:
    everything stored and receipted at both ends, and `status` and `log` render without a
    traceback or a raw escape."""

    async def main() -> None:
        a, b, line, _ = await paired_stations(tmp_path, relays=False)
        add_demo_users(a.home, b.home)
        try:
            for text in HOSTILE:
                await b.call({"op": "send", "line": line, "text": text})
                await b.call({"op": "send", "line": line, "text": text[:2000], "kind": "FLASH", "priority": "flash"})
            short = [h[:200] for h in HOSTILE]
            req = await b.call({"op": "act", "line": line, "kind": "CALL_REQUEST", "content": {
                "from_role": short[1], "to_role": short[2], "subject": short[0], "windows": []}})  # fmt: skip
            await a.call({"op": "act", "line": line, "kind": "CALL_REPLY", "content": {
                "request": req["id"], "answer": "decline", "reason": short[3]}})  # fmt: skip
            await b.call({"op": "act", "line": line, "kind": "TRANSLATION", "content": {
                "ref": req["id"], "lang": "en", "text": short[4], "translator": short[5]}})  # fmt: skip
            await b.call({"op": "act", "line": line, "kind": "NOTICE", "content": {
                "kind": "air", "area": {"type": "Point", "coordinates": ["30.0", "50.0"]}, "radius_m": 1000,
                "floor_m": 0, "ceiling_m": 1000, "start": 1_900_000_000_000, "end": 1_900_000_360_000, "margin_m": 0,
                "text": short[0]}})  # fmt: skip
            await wait_until(lambda: _settled(a, b), "hostile traffic receipted both ways", 60)
        finally:
            a.stop()
            b.stop()
        # readouts and call records are person-signed: filed through the CLI, as a person would
        await a.start()
        await b.start()
        try:
            rec = rl(b.home, "call", "record", line, "--start", "2030-01-01T10:00Z", "--end", "2030-01-01T10:30Z",
                     "--principal", short[0], "--principal", short[1], "--participant", short[2],
                     "--user", "Dezhurny Orlov", "--json", stdin=PASSWORD + "\n")  # fmt: skip
            assert rec.returncode == 0, rec.stderr
            call_id = _json(rec.stdout)["id"]
            out = rl(b.home, "readout", line, call_id, short[0] + " " + short[2], "--user", "Dezhurny Orlov",
                     stdin=PASSWORD + "\n")  # fmt: skip
            assert out.returncode == 0, out.stderr
            # an ERROR frame with a hostile reason, sent in NDMC's name (with NDMC's TLS key)
            p = Pair(a, b, line)
            error = (FrameType.ERROR, canonical.encode({"message": HOSTILE[2] + HOSTILE[1]}))
            await asyncio.to_thread(attack, p, error, seconds=1)
            for i in range(100):
                await a.call({"op": "send", "line": line, "text": f"EUCOM after the attack {i} {HOSTILE[i % 6][:50]}"})
                await b.call({"op": "send", "line": line, "text": f"NDMC after the attack {i} {HOSTILE[i % 6][:50]}"})
            await wait_until(lambda: _settled(a, b), "100 more each way, receipted", 60)
            sa, sb = await a.status_line(), await b.status_line()
            assert sa["their_seq"] == sb["our_seq"] and sb["their_seq"] == sa["our_seq"]
            assert sa["our_seq"] >= 101 and sb["our_seq"] >= 100 + 2 * len(HOSTILE)
            for home in (a.home, b.home):
                for args in (("status",), ("log", line, "--all"), ("log", line), ("calls", line), ("notices", line)):
                    res = rl(home, *args)
                    assert res.returncode == 0, (args, res.stderr)
                    assert "Traceback" not in res.stderr + res.stdout and ESC not in res.stdout, args
                    assert "\u202e" not in res.stdout
            assert "MarkupError" not in log_text(a) + log_text(b) and "Traceback" not in log_text(a) + log_text(b)
            assert ESC not in a.log.read_text(errors="replace") and ESC not in b.log.read_text(errors="replace")
        finally:
            a.stop()
            b.stop()

    asyncio.run(main())


def _json(text: str) -> dict[str, Any]:
    import json

    obj: dict[str, Any] = json.loads(text)
    return obj


async def _settled(a: StationProc, b: StationProc) -> bool:
    sa, sb = await a.status_line(), await b.status_line()
    return bool(
        sa["synced"] and sb["synced"] and sa["outbox"] == 0 and sb["outbox"] == 0 and sa["unreceipted"] == 0
        and sb["unreceipted"] == 0 and sa["their_seq"] == sb["our_seq"] and sb["their_seq"] == sa["our_seq"]
    )  # fmt: skip


# -- our quota is not theirs -------------------------------------------------------------------------


def test_our_own_budget_keeps_a_reserve_for_flash_and_acks(tmp_path: Path) -> None:
    limits = Limits(max_line_disk_bytes=400_000, line_disk_reserve_bytes=60_000)
    sp = SessionPair(tmp_path, limits=limits)
    try:
        sp.run()
        with pytest.raises(LimitError, match="line_disk_reserve_bytes"):
            for i in range(100):
                sp.send("a", f"{i} " + "t" * 30_000)
                sp.run()
        sp.send("a", "FLASH still goes out", kind="FLASH", prio="FLASH")  # the reserve is for this
        sp.run()
        assert sp.b.status().to_obj()["their_seq"] == sp.a.status().to_obj()["our_seq"]
        assert any(text.startswith("DISK: our envelopes") for who, _, text in sp.alarms if who == "a")
        sp.send("b", "NDMC's own budget is untouched by EUCOM's")
        sp.run()
    finally:
        sp.close()


# -- receipts are never lost -------------------------------------------------------------------------


def test_receipt_held_in_memory_is_resent_by_the_peer_after_a_crash(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    try:
        sp.run()
        sp.send("a", "one")
        sp.run()  # the first receipt is saved; the next, within a second of it, is held in memory
        sp.send("a", "two")
        sp.run()
        assert sp.a.status().to_obj()["unreceipted"] == 0
        assert sp.a.ledger.latest_receipt(sp.line, sp.b.us)[0] == 1, "held, not yet saved"  # type: ignore[index]
        sp.restart("a")  # kill -9: the held receipt is gone from memory
        assert sp.a.status().to_obj()["unreceipted"] == 1
        sp.run()  # the paths open again: NDMC sends its latest receipt on each
        assert sp.a.status().to_obj()["unreceipted"] == 0
        assert sp.a.ledger.latest_receipt(sp.line, sp.b.us)[0] == 2  # type: ignore[index]
    finally:
        sp.close()


def test_receipt_held_in_memory_is_saved_at_a_clean_stop(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    try:
        sp.run()
        sp.send("a", "one")
        sp.run()
        sp.send("a", "two")
        sp.run()
        sp.a.close(sp.clock.wall)
        assert sp.a.ledger.latest_receipt(sp.line, sp.b.us)[0] == 2  # type: ignore[index]
    finally:
        sp.close()


@pytest.mark.slow
def test_sender_stopped_right_after_its_last_send_ends_receipted(tmp_path: Path) -> None:
    """Stop the sender 0.2 s after its last send, 20 times, kill -9 and SIGTERM in turn: every
    message ends receipted at both ends, and `status` and `log` agree."""

    async def main() -> None:
        a, b, line, _ = await paired_stations(tmp_path, relays=False, redial_max=1.0)
        try:
            for i in range(20):
                res = await a.call({"op": "send", "line": line, "text": f"last before stop {i}"})
                await asyncio.sleep(0.2)
                if i % 2:
                    a.stop()  # SIGTERM
                else:
                    a.kill9()
                await a.start()
                await wait_until(lambda: _settled(a, b), f"receipted after stop {i}", 30)
                assert (await a.status_line())["our_seq"] == res["seq"]
            log = rl(a.home, "log", line, "--json")
            assert log.returncode == 0, log.stderr
            ours = [e for e in _json_list(log.stdout) if e["from"] == "us"]
            assert len(ours) == 20 and all(e.get("receipted") for e in ours), ours[-3:]
        finally:
            a.stop()
            b.stop()

    asyncio.run(main())


def _json_list(text: str) -> list[dict[str, Any]]:
    import json

    obj = json.loads(text)
    rows = obj["rows"]
    assert isinstance(rows, list)
    return rows


# -- the CLI never prints a traceback ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["reset before reading", "closed after reading", "half an answer"])
def test_station_dying_mid_request_gives_one_clear_line(tmp_path: Path, how: str) -> None:
    home = tmp_path / "st"
    StationDir(home).init(name="EUCOM", lang="en", listen=["127.0.0.1:7401"])
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(StationDir(home).control_path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        if how != "reset before reading":
            conn.recv(65536)
        if how == "half an answer":
            conn.sendall(b'{"ok": true, "res')
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = rl(home, "send", "NDMC", "hello")
    finally:
        t.join(5)
        srv.close()
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "may or may not have been accepted" in out.stderr and "redline log" in out.stderr


@pytest.mark.slow
def test_no_station_running_says_nothing_was_sent(tmp_path: Path) -> None:
    home = tmp_path / "st"
    StationDir(home).init(name="EUCOM", lang="en", listen=["127.0.0.1:7401"])
    out = rl(home, "send", "NDMC", "hello")
    assert out.returncode != 0 and "Traceback" not in out.stderr and "redline serve" in out.stderr


# -- secrets and files -------------------------------------------------------------------------------


@pytest.mark.slow
def test_pairing_token_on_the_command_line_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "st"
    StationDir(home).init(name="EUCOM", lang="en", listen=["127.0.0.1:7401"])
    out = rl(home, "pair", "rl1-secret-token-in-argv")
    assert out.returncode != 0 and "command line" in out.stderr and "Traceback" not in out.stderr
    token_file = tmp_path / "token.txt"
    token_file.write_text("rl1-!!!!\n")
    out = rl(home, "pair", "--token-file", str(token_file))  # read from the file: then the station is asked
    assert out.returncode != 0 and "redline serve" in out.stderr


@pytest.mark.parametrize("target", ["keys/signing.key", "keys/tls.key", "keys/root.key", "keys", ".", "users"])
def test_station_with_secrets_open_to_others_refuses_to_start(tmp_path: Path, target: str) -> None:
    home = tmp_path / "st"
    d = StationDir(home)
    d.init(name="EUCOM", lang="en", listen=["127.0.0.1:7401"])
    (home / "users").mkdir(mode=0o700, exist_ok=True)
    path = home / target
    os.chmod(path, 0o755 if path.is_dir() else 0o644)
    with pytest.raises(ConfigError, match=re.escape(f"chmod {'700' if path.is_dir() else '600'} {path}")):
        Station(d)
    out = rl(home, "serve")
    assert out.returncode != 0 and "not private" in out.stderr and "Traceback" not in out.stderr


def test_bundle_temporary_file_does_not_follow_a_planted_symlink(tmp_path: Path, monkeypatch: Any) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "bundle.json"
    monkeypatch.setattr(os, "urandom", lambda n: b"\x00" * n)
    (tmp_path / f".bundle.json.{os.getpid()}.{'00' * 6}.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_bundle(out, {"x": 1})
    assert victim.read_text() == "precious" and not out.exists()
    monkeypatch.undo()
    write_bundle(out, {"x": 1})
    assert out.exists() and victim.read_text() == "precious"


@pytest.mark.slow
def test_sigterm_of_a_station_is_clean(tmp_path: Path) -> None:
    """(The clean stop saves the held receipt: the process exits 0 on SIGTERM.)"""
    d = StationDir(tmp_path / "st")
    d.init(name="EUCOM", lang="en", listen=[f"127.0.0.1:{free_ports(1)[0]}"])
    proc = StationProc(d.path)

    async def main() -> None:
        await proc.start()
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=15) == 0

    asyncio.run(main())


def test_pairing_party_with_certificate_bytes_that_are_not_der_is_refused_cleanly(tmp_path: Path) -> None:
    """A joiner holding a token sends garbage where its TLS certificate goes: a PairingError the
    inviter answers with an error frame, not a crashed handler."""
    d = StationDir(tmp_path / "st")
    keys = d.init(name="NDMC", lang="ru", listen=["127.0.0.1:7401"])
    party = pairing.Party(
        root=keys.root_public, signing_cert=keys.signing_cert, tls_cert=keys.tls_cert, tls_der=b"not a certificate",
        name="NDMC", lang="ru", addrs=("127.0.0.1:7401",),
    )  # fmt: skip
    with pytest.raises(PairingError, match="do not verify"):
        party.check()
    assert pairing.Party(**{**party.__dict__, "tls_der": keys.tls_cert_der}).check() == keys.fingerprint


def test_a_reveal_that_is_not_a_reveal_is_refused() -> None:
    token = pairing.Token(
        id="ab" * 8, name="EUCOM", addrs=("127.0.0.1:1",), pair_addr="127.0.0.1:2", station="00" * 32,
        spki="00" * 32, secret=b"\x00" * 16, commit="00" * 32, expires=0,
    )  # fmt: skip
    join = {"step": "join", "nonce": "00" * 32, "line": "00" * 16}
    for msg in (join, {"step": "reveal", "nonce": "00", "line": "1"}):
        with pytest.raises(PairingError):
            pairing.check_reveal(token, msg)


def test_bidi_and_c1_controls_in_json_output_are_escaped_and_the_json_is_the_same() -> None:
    """`--json` is for scripts but lands on terminals: a bidi override or C1 control in peer text
    is written as a JSON escape (the same value) so it cannot reorder what an operator sees."""
    import json

    from redline.display import json_text

    data = {"text": "EUCOM \u202eMOCUE\u202c \x85\x9b\x7f ok НЦУО", "n": 1}
    out = json_text(data)
    assert json.loads(out) == data
    assert not ({"\u202e", "\u202c", "\x85", "\x9b", "\x7f"} & set(out)) and "НЦУО" in out
